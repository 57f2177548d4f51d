"""The GPU tier's CPU fp32 reference: runs the tier's graphs on a CPU ComfyUI and saves the outputs.

    python tests/gpu_tier_reference.py OUT.pt

Its own process, because ComfyUI picks its device once per process (tests/test_gpu.py starts it).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pack_paths
import torch

pack_paths.install(dev=True)

import instruct_harness  # noqa: E402  (testing/ is on the path once the bootstrap ran)


def main(out: str) -> None:
    from instruct_tiny_models import cache_dir

    root, how = instruct_harness.find_comfyui()
    if root is None:
        sys.exit(f"no ComfyUI: {how}")
    harness = instruct_harness.ComfyHarness(root, Path(tempfile.mkdtemp(prefix="gpu-tier-ref-")), cache_dir(), cpu=True)
    import gpu_tier_graphs as graphs

    graphs.prepare(harness)
    torch.save(graphs.reference_outputs(harness, "fp32"), out)


if __name__ == "__main__":
    main(sys.argv[1])
