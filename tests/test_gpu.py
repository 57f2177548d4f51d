"""The GPU tier: ``python -m pytest -m gpu`` (deselected from the normal run by pyproject's addopts).

Runs the graphs of gpu_tier_graphs.py on CUDA in fp16 and bf16 under ComfyUI's normal, --lowvram and
--novram modes, each mode in its own process (ComfyUI reads those flags once, at import; the cases
are in gpu_tier_cases.py), against a CPU fp32 reference made by a CPU ComfyUI in another process.

INSTRUCT_GPU_DEVICE=cpu dry-runs the plumbing on a CPU (normal mode only, placement checks off);
INSTRUCT_GPU_OUT names a folder for the per-mode logs and the error report (errors.jsonl).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import COMFY_HOW, COMFY_ROOT
from instruct_tiny_models import cache_dir

TESTS = Path(__file__).resolve().parent
DEVICE = os.environ.get("INSTRUCT_GPU_DEVICE", "cuda")
MODES = ("normal", "lowvram", "novram") if DEVICE == "cuda" else ("normal",)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="GPU tier: no CUDA device (torch.cuda is unavailable)"),
    pytest.mark.skipif(COMFY_ROOT is None, reason=f"GPU tier: {COMFY_HOW}"),
]


def out_dir() -> Path:
    path = Path(os.environ.get("INSTRUCT_GPU_OUT") or cache_dir() / "gpu-tier-out")
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_logged(cmd: list[str], log: Path, timeout: int, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run with the output streamed into ``log`` (kept when the run times out), then read back."""
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, cwd=TESTS.parent, env=env, timeout=timeout, stdout=f, stderr=subprocess.STDOUT).returncode
        except subprocess.TimeoutExpired:
            rc = f"timeout after {timeout} s"
    text = log.read_text(errors="replace")
    return subprocess.CompletedProcess(cmd, 0 if rc == 0 else 1, stdout=f"[exit: {rc}]\n{text}")


@pytest.fixture(scope="module")
def reference() -> Path:
    """The CPU fp32 outputs, made once per version of the graphs (cached next to the model files)."""
    digest = hashlib.sha256((TESTS / "gpu_tier_graphs.py").read_bytes()).hexdigest()[:12]
    path = cache_dir() / f"gpu-tier-reference-{digest}.pt"
    if not path.exists():
        import pack_paths

        cmd = [sys.executable, str(TESTS / "gpu_tier_reference.py"), str(path)]
        done = run_logged(cmd, out_dir() / "reference.log", timeout=200, env=dict(os.environ, PYTHONPATH=pack_paths.python_path()))
        assert done.returncode == 0 and path.exists(), f"the CPU reference failed:\n{done.stdout[-6000:]}"
    return path


@pytest.mark.parametrize("mode", MODES)
def test_memory_mode(reference, mode):
    env = dict(os.environ, INSTRUCT_GPU_MODE=mode, INSTRUCT_GPU_REF=str(reference), INSTRUCT_GPU_REPORT=str(out_dir() / "errors.jsonl"))
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-m", "pytest", str(TESTS / "gpu_tier_cases.py"), "-q", "-rA", "-p", "no:cacheprovider", "-m", ""]
    done = run_logged(cmd, out_dir() / f"gpu-{mode}.log", timeout=300, env=env)
    print(done.stdout[-4000:])  # noqa: T201  (shown with -rA: the per-case errors)
    assert done.returncode == 0, f"GPU tier, {mode} mode: cases failed (log {out_dir() / f'gpu-{mode}.log'}):\n{done.stdout[-8000:]}"
    # pytest's own closing line ("8 passed in 31.1s") names nothing but passes when every case ran; the
    # conftest's "ComfyUI-backed tests: … skipped" line must not be mistaken for it.
    closing = re.search(r"^(\d+) passed in [\d.]+s", done.stdout, re.M)
    assert closing and int(closing.group(1)) >= 8, f"{mode}: cases did not all run:\n{done.stdout[-3000:]}"
