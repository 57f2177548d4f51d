"""The batch manifest: one edit per row, read from JSON Lines or CSV and checked whole before anything runs.

Columns (JSONL keys): ``image`` (required), ``instruction``, ``prompt``, ``negative``, ``reference``,
``seed``, ``steps``, ``text_cfg``, ``image_cfg``, ``output`` and free overrides: a ``set`` object
(``{"NODE.INPUT": value}``) in JSONL, ``set:NODE.INPUT`` columns in CSV (an empty cell sets nothing).
Image paths are relative to the manifest's folder. Rows are numbered from 1 in file order (blank
lines and ``#`` comment lines of a JSONL file are not rows).

Every problem of every row is collected, so the user fixes the manifest in one go
(``ManifestError.problems``). A row's values keep their types: JSON Lines values as written, CSV
cells as text that the input they set types when the row becomes a prompt (``jobs``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import InputError
from ..prompts.overrides import Overrides, Setting

TEXT_FIELDS = ("instruction", "prompt", "negative")
IMAGE_FIELDS = ("image", "reference")
INT_FIELDS = {"seed": 0, "steps": 1}  # name -> smallest allowed value
FLOAT_FIELDS = ("text_cfg", "image_cfg")
FIELDS = (*IMAGE_FIELDS, *TEXT_FIELDS, *INT_FIELDS, *FLOAT_FIELDS, "output", "set")
CSV_SET_PREFIX = "set:"
SEED_LIMIT = 1 << 48  # derived seeds stay well inside every sampler's seed range


class ManifestError(InputError):
    """The manifest (or the rows as prompts) cannot run; ``problems`` lists every one, row by row."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: {len(problems)} problem(s), nothing was run:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


@dataclass
class Row:
    """One edit, checked: image paths resolved, numbers typed, the output name and seed decided."""

    number: int
    image: Path
    output: str
    seed: int
    reference: Optional[Path] = None
    instruction: Optional[str] = None
    prompt: Optional[str] = None
    negative: Optional[str] = None
    steps: Optional[int] = None
    text_cfg: Optional[float] = None
    image_cfg: Optional[float] = None
    settings: tuple[Setting, ...] = ()

    def overrides(self) -> Overrides:
        """What this row changes in the workflow (applied over the command line's overrides)."""
        return Overrides(
            image=self.image,
            reference=self.reference,
            instruction=self.instruction,
            prompt=self.prompt,
            negative=self.negative,
            seed=self.seed,
            steps=self.steps,
            text_cfg=self.text_cfg,
            image_cfg=self.image_cfg,
            settings=self.settings,
        )


def derive_seed(base: int, row_number: int) -> int:
    """The seed of a row that has none: a hash of ``--seed`` and the row number, so a batch is
    reproducible and neighbouring rows (or batches with neighbouring seeds) do not share noise."""
    digest = hashlib.sha256(f"instruct-batch/{base}/{row_number}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % SEED_LIMIT


def default_output(row_number: int, image: str) -> str:
    return f"{row_number:05d}_{Path(image).stem or 'image'}.png"


# ---- reading ------------------------------------------------------------------------------------


def read_records(path: Path) -> list[tuple[int, Any]]:
    """(row number, raw record) for each row; a line that is not JSON is a record the checks refuse."""
    text = Path(path).read_text(encoding="utf-8-sig")
    if Path(path).suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        rows = []
        for number, record in enumerate(reader, 1):
            rows.append((number, _from_csv(record)))
        return rows
    records, number = [], 0
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        number += 1
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            records.append((number, _Unreadable(f"not valid JSON ({exc.msg} at column {exc.colno})")))
    return records


class _Unreadable:
    def __init__(self, why: str) -> None:
        self.why = why


def _from_csv(record: dict) -> dict:
    """A CSV row as a JSONL-style record: empty cells dropped, ``set:`` columns gathered."""
    out: dict[str, Any] = {}
    sets: dict[str, Any] = {}
    for key, value in record.items():
        if key is None:  # more cells than header columns
            out.setdefault("__extra__", value)
            continue
        if value is None or value == "":
            continue
        if key.startswith(CSV_SET_PREFIX):
            sets[key[len(CSV_SET_PREFIX) :]] = value  # text, typed by the input it sets
        else:
            out[key.strip()] = value
    if sets:
        out["set"] = sets
    return out


# ---- checking -----------------------------------------------------------------------------------


def _number(value: Any, kind: type, name: str) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, not {value!r}")
    if isinstance(value, str):
        value = value.strip()
        try:
            value = int(value) if kind is int else float(value)
        except ValueError:
            raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, not {value!r}") from None
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind is int and not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    if kind is float and not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, not {value!r}")
    if kind is float and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return kind(value)


def check_row(number: int, record: Any, base_dir: Path, base_seed: int, text_cells: bool = False) -> tuple[Optional[Row], list[str]]:
    """The row, or the list of what is wrong with it (each message names the row and the fix). With
    ``text_cells`` (a CSV row) the ``set`` values are text that the input they set will type."""
    where = f"row {number}"
    if isinstance(record, _Unreadable):
        return None, [f"{where}: {record.why}"]
    if not isinstance(record, dict):
        return None, [f"{where}: a row must be an object of column -> value, not {type(record).__name__}"]
    problems = []
    unknown = sorted(k for k in record if k not in FIELDS)
    if unknown:
        extra = " (more cells than the header has columns)" if "__extra__" in unknown else ""
        problems.append(f"{where}: unknown column(s) {', '.join(unknown)}{extra}; known: {', '.join(FIELDS)} and set:NODE.INPUT")
    values: dict[str, Any] = {}
    for name in IMAGE_FIELDS:
        if name not in record:
            if name == "image":
                problems.append(f"{where}: 'image' is required (the input image's path, relative to the manifest)")
            continue
        if not isinstance(record[name], str) or not record[name].strip():
            problems.append(f"{where}: {name} must be a file path, not {record[name]!r}")
            continue
        path = (base_dir / record[name].strip()).resolve()
        if not path.is_file():
            problems.append(f"{where}: {name} file not found: {path}")
        values[name] = path
    for name in TEXT_FIELDS:
        if name in record:
            if isinstance(record[name], str):
                values[name] = record[name]
            else:
                problems.append(f"{where}: {name} must be text, not {record[name]!r}")
    for name, low in INT_FIELDS.items():
        if name in record:
            try:
                values[name] = _number(record[name], int, name)
                if values[name] < low:
                    raise ValueError(f"{name} must be at least {low}, not {values[name]}")
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
    for name in FLOAT_FIELDS:
        if name in record:
            try:
                values[name] = _number(record[name], float, name)
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
    sets = record.get("set", {})
    if not isinstance(sets, dict):
        problems.append(f"{where}: 'set' must be an object of \"NODE.INPUT\": value, not {type(sets).__name__}")
        sets = {}
    settings = []
    for target, value in sets.items():
        origin = f"column set:{target}" if text_cells else f"set {target!r}"
        try:
            settings.append(Setting.of_target(str(target), value, origin, text=text_cells))
        except InputError as exc:
            problems.append(f"{where}: {exc}")
    output = record.get("output")
    if output is None:
        output = default_output(number, str(record.get("image", "")))
    elif not isinstance(output, str) or not output.strip() or Path(output).name != output or output in (".", ".."):
        problems.append(f"{where}: output {output!r} must be a plain file name in --output-dir (no folders)")
    elif Path(output).suffix.lower() != ".png":
        problems.append(f"{where}: output {output!r} must end in .png (ComfyUI saves PNG)")
    if problems:
        return None, problems
    seed = values.pop("seed", None)
    seed = derive_seed(base_seed, number) if seed is None else seed
    row = Row(number=number, output=output, seed=seed, settings=tuple(settings), **values)
    return row, []


def load_manifest(path: Path, base_seed: int = 0) -> list[Row]:
    """Every row checked; ``ManifestError`` lists all problems when any row has one."""
    path = Path(path)
    try:
        records = read_records(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(str(path), [f"cannot read the manifest: {exc}"]) from exc
    if not records:
        raise ManifestError(str(path), ["the manifest has no rows (JSON Lines: one object per line; CSV: a header and rows)"])
    rows, problems = [], []
    text_cells = path.suffix.lower() == ".csv"
    for number, record in records:
        row, row_problems = check_row(number, record, path.parent, base_seed, text_cells)
        problems += row_problems
        if row is not None:
            rows.append(row)
    seen: dict[str, int] = {}
    for row in rows:
        key = row.output.lower()
        if key in seen:
            problems.append(f"row {row.number}: output {row.output!r} is also row {seen[key]}'s; give each row its own output")
        seen.setdefault(key, row.number)
    if problems:
        raise ManifestError(str(path), problems)
    return rows
