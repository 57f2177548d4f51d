"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import time

import torch


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def best_of(fn, device: str, repeat: int) -> float:
    """Best wall-clock seconds of ``repeat`` runs of ``fn`` after one warm-up run (GPU synchronised)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best
