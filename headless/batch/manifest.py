"""The batch manifest: one edit per row, read from JSON Lines or CSV and checked whole before anything runs.

Columns (JSONL keys): ``image`` (required), ``instruction``, ``prompt``, ``negative``, ``reference``,
``seed``, ``steps``, ``text_cfg``, ``image_cfg``, ``output`` and free overrides: a ``set`` object
(``{"NODE.INPUT": value}``) in JSONL, ``set:NODE.INPUT`` columns in CSV (an empty cell sets nothing).
Image paths are relative to the manifest's folder. Rows are numbered from 1 in file order (blank
lines and ``#`` comment lines of a JSONL file are not rows).

Every problem of every row is collected, so the user fixes the manifest in one go
(``ManifestError.problems``). Rows then become API prompts through the runner's own override
function (the same a single run uses); input images stay tokens until the worker that runs the row
places them (``add_image``) and fills in its names (``fill_tokens``).
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

TEXT_FIELDS = ("instruction", "prompt", "negative")
IMAGE_FIELDS = ("image", "reference")
INT_FIELDS = {"seed": 0, "steps": 1}  # name -> smallest allowed value
FLOAT_FIELDS = ("text_cfg", "image_cfg")
FIELDS = (*IMAGE_FIELDS, *TEXT_FIELDS, *INT_FIELDS, *FLOAT_FIELDS, "output", "set")
CSV_SET_PREFIX = "set:"
SEED_LIMIT = 1 << 48  # derived seeds stay well inside every sampler's seed range
TOKEN_PREFIX = "@instruct-batch-input/"  # stands for an input image until a worker has placed it


class ManifestError(Exception):
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
    sets: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    """A row ready for any backend: its API prompt and the input files the prompt names."""

    row: Row
    prompt: dict
    files: dict[str, Path]  # token standing in the prompt for an input image -> the file on this machine


def derive_seed(base: int, row_number: int) -> int:
    """The seed of a row that has none: a hash of ``--seed`` and the row number, so a batch is
    reproducible and neighbouring rows (or batches with neighbouring seeds) do not share noise."""
    digest = hashlib.sha256(f"instruct-batch/{base}/{row_number}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % SEED_LIMIT


def default_output(row_number: int, image: str) -> str:
    return f"{row_number:05d}_{Path(image).stem or 'image'}.png"


def fill_tokens(prompt: dict, names: dict[str, str]) -> dict:
    """The prompt with each input-image token replaced by the worker's name for that image."""
    out = copy.deepcopy(prompt)
    for node in out.values():
        for key, value in node.get("inputs", {}).items():
            if isinstance(value, str) and value in names:
                node["inputs"][key] = names[value]
    return out


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
            sets[key[len(CSV_SET_PREFIX) :]] = value  # plain text; the runner parses it like --set
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


def check_row(number: int, record: Any, base_dir: Path, base_seed: int) -> tuple[Optional[Row], list[str]]:
    """The row, or the list of what is wrong with it (each message names the row and the fix)."""
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
    for target in sets:
        node, dot, name = str(target).rpartition(".")
        if not dot or not node or not name:
            problems.append(f"{where}: set {target!r}: use NODE.INPUT (a node id or title, a dot, the input name)")
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
    row = Row(number=number, output=output, seed=derive_seed(base_seed, number) if seed is None else seed, sets=dict(sets), **values)
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
    for number, record in records:
        row, row_problems = check_row(number, record, path.parent, base_seed)
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


# ---- rows as prompts ----------------------------------------------------------------------------


def row_options(base: argparse.Namespace, row: Row) -> argparse.Namespace:
    """The single-run options for this row: the command line's, with the row's values on top."""
    opts = copy.copy(base)
    opts.image = str(row.image)
    opts.reference = str(row.reference) if row.reference else getattr(base, "reference", None)
    for name in (*TEXT_FIELDS, "steps", "text_cfg", "image_cfg"):
        value = getattr(row, name)
        if value is not None:
            setattr(opts, name, value)
    opts.seed = row.seed
    opts.set = list(getattr(base, "set", None) or []) + [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in row.sets.items()]
    return opts


def build_jobs(
    api: dict,
    rows: list[Row],
    base: argparse.Namespace,
    apply_overrides: Callable[[dict, argparse.Namespace, Callable[[str], str]], dict],
    error_type: type = Exception,
    source: str = "manifest",
) -> list[Job]:
    """Every row's API prompt, made by the runner's ``apply_overrides``; every row's refusal listed."""
    jobs, problems = [], []
    for row in rows:
        files: dict[str, Path] = {}

        def place(path: str, files: dict[str, Path] = files) -> str:  # placed later, by the worker
            token = f"{TOKEN_PREFIX}{row.number}/{len(files)}"
            files[token] = Path(path)
            return token

        try:
            prompt = apply_overrides(api, row_options(base, row), place)
        except error_type as exc:
            problems.append(f"row {row.number}: {exc}")
            continue
        jobs.append(Job(row=row, prompt=prompt, files=files))
    if problems:
        raise ManifestError(source, problems)
    return jobs
