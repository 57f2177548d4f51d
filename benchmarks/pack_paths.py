"""The benchmarks' one bootstrap: make the pack's tool modules importable.

``python benchmarks/bench_x.py`` (the documented command) puts only ``benchmarks/`` on ``sys.path``;
the benchmarks also need ``scripts/`` (the runner, the in-process ComfyUI) and ``testing/`` (the
tiny-model factory and harness the test suite uses). The pack root itself is never added: its
``nodes/`` package would shadow ComfyUI's ``nodes.py``. The test suite gets the same roots from
``pythonpath`` in pyproject.toml; ``scripts/*.py`` need nothing (Python puts their folder first).
"""

from __future__ import annotations

import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]

for _sub in ("scripts", "testing"):
    if str(PACK_DIR / _sub) not in sys.path:
        sys.path.append(str(PACK_DIR / _sub))
