"""What a batch leaves behind: ``DIR/results.jsonl``, the outputs, and what ``--resume`` may skip.

``results.jsonl`` gets one line per finished row (row, output, seed, status ``ok``/``error``,
seconds, worker, error), appended and flushed to disk as each row finishes, *after* the row's image
was renamed into place. So whatever stops the batch (Ctrl-C, a killed process, a power cut):
a row recorded ``ok`` has its image, and a row whose image was half-written has no file and no
record. ``--resume`` skips exactly the rows recorded ``ok`` with the same output name and seed whose
file is still there, and runs the rest: every row ends with exactly one image, written once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TextIO

RESULTS_NAME = "results.jsonl"


@dataclass
class Outcome:
    """A finished row, as a backend reports it to the driver."""

    row: int
    images: list[bytes]
    seconds: float
    worker: str
    error: Optional[str] = None  # why the row failed, in the runner's words
    peak_mb: Optional[float] = None  # the worker process's peak resident memory so far (in-process, Ray)


class ResultsLog:
    """``DIR/results.jsonl``: read for ``--resume``, appended to as rows finish."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = Path(out_dir)
        self.path = self.dir / RESULTS_NAME
        self._file: Optional[TextIO] = None

    def records(self) -> list[dict]:
        """The lines written so far (a line cut short by a kill is ignored)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def finished_ok(self, rows: list[Any]) -> set[int]:
        """Numbers of the rows ``--resume`` skips: last record ok, same output and seed, file present."""
        last = {r.get("row"): r for r in self.records()}
        done = set()
        for row in rows:
            record = last.get(row.number)
            if (
                record
                and record.get("status") == "ok"
                and record.get("output") == row.output
                and record.get("seed") == row.seed
                and all((self.dir / name).is_file() for name in record.get("files") or [row.output])
            ):
                done.add(row.number)
        return done

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb") as f:  # a line cut short by a kill must not swallow the next one
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            if torn:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write("\n")
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        assert self._file is not None, "open() first"
        self._file.write(json.dumps(record, sort_keys=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def record_for(row: Any, outcome: Outcome, files: list[str]) -> dict:
    return {
        "row": row.number,
        "output": row.output,
        "seed": row.seed,
        "status": "error" if outcome.error else "ok",
        "seconds": round(outcome.seconds, 3),
        "worker": outcome.worker,
        "error": outcome.error,
        "peak_mb": outcome.peak_mb,
        **({"files": files} if len(files) > 1 else {}),
    }
