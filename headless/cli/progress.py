"""Progress on stderr, drawn by tqdm: a run's sampling steps named by the node, a batch's rows with their
rate, the time left, the failed rows and the node sampling now. Closing a bar ends its line, so an error
message that follows always starts a line of its own."""

from __future__ import annotations

import sys
from typing import Optional

from tqdm import tqdm

NODE_FORMAT = "{desc}: {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"
ROWS_FORMAT = "rows: {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class NodeProgress:
    """A run's progress callback (``ProgressFn``): one bar per sampling node, named by its title."""

    def __init__(self) -> None:
        self._bar: Optional[tqdm] = None
        self._key: Optional[tuple] = None

    def __call__(self, value: int, total: int, node_id: Optional[str], label: str) -> None:
        key = (node_id, total)
        if self._bar is None or key != self._key or value < self._bar.n:
            self.close()
            self._bar = tqdm(total=total, desc=label or "running", unit="step", bar_format=NODE_FORMAT, file=sys.stderr)
            self._key = key
        self._bar.update(value - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "NodeProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BatchBar:
    """A batch's progress (``BatchProgress``): rows done of all (skipped rows count as done), the rate and
    the time left, how many failed, and the node the latest row is sampling."""

    def __init__(self) -> None:
        self._bar: Optional[tqdm] = None
        self.failed = 0
        self._node = ""

    def started(self, total: int, skipped: int, backend: str) -> None:
        done = f", {skipped} already done" if skipped else ""
        print(f"{total - skipped} row(s) to run on {backend}{done}", file=sys.stderr)
        self._bar = tqdm(total=total, initial=skipped, unit="row", bar_format=ROWS_FORMAT, file=sys.stderr)

    def _postfix(self) -> None:
        parts = [f"{self.failed} failed"] if self.failed else []
        parts += [self._node] if self._node else []
        if self._bar is not None:
            self._bar.set_postfix_str(", ".join(parts), refresh=False)

    def row_done(self, ok: bool) -> None:
        if not ok:
            self.failed += 1
        self._node = ""
        self._postfix()
        if self._bar is not None:
            self._bar.update(1)

    def node(self, value: int, total: int, node_id: Optional[str], label: str) -> None:
        self._node = f"{label} {value}/{total}"
        self._postfix()
        if self._bar is not None:
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
