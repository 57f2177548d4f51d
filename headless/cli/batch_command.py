"""``batch``: many edits from a manifest (JSON Lines or CSV), in-process, on a pool of servers, or on Ray.

The command line's overrides apply to every row and a row's own values win; the library does the rest
(``headless.batch.run``). Exit 0 every row succeeded, 1 some rows failed (listed, and in results.jsonl).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..batch.backend import Backend
from ..batch.in_process import InProcessBackend
from ..batch.pool import ServerPool
from ..batch.run import BatchRequest, run_batch
from ..errors import RunInterrupted
from .exit_codes import EXIT_OK, EXIT_ROWS_FAILED
from .parser import extra_model_paths, models_manifest, overrides_from
from .progress import BatchBar

RESUME_HINT = "rerun with --resume to finish the batch"


def make_backend(opts: argparse.Namespace) -> Backend:
    if opts.server:
        return ServerPool(opts.server, per_server=opts.per_server, wait_s=opts.server_wait)
    if opts.ray:
        from ..batch.ray_actors import RayBackend  # Ray is imported only with --ray

        return RayBackend(opts.ray, opts.workers, extra_model_paths(opts), opts.verbose)
    return InProcessBackend(extra_model_paths(opts), opts.verbose)


def run(opts: argparse.Namespace) -> int:
    request = BatchRequest(
        workflow=Path(opts.workflow),
        manifest=Path(opts.manifest),
        output_dir=Path(opts.output_dir),
        overrides=overrides_from(opts),
        base_seed=opts.seed if opts.seed is not None else 0,
        resume=opts.resume,
        timeout=opts.timeout,
        download_missing=opts.download_missing,
        models_manifest=models_manifest(opts),
    )
    bar = None if opts.quiet else BatchBar()
    started = time.monotonic()
    try:
        report = run_batch(request, make_backend(opts), bar)
    except (RunInterrupted, KeyboardInterrupt) as exc:
        raise RunInterrupted(f"interrupted; {RESUME_HINT}") from exc
    finally:
        if bar is not None:
            bar.close()
    if not opts.quiet:
        ok = report.ran - len(report.failed)
        print(f"{ok} ok, {len(report.failed)} failed in {time.monotonic() - started:.1f} s; see {report.results}", file=sys.stderr)
    if report.failed:
        listed = ", ".join(map(str, report.failed[:20])) + (" …" if len(report.failed) > 20 else "")
        print(f"error: {len(report.failed)} row(s) failed: {listed}; see {report.results}", file=sys.stderr)
        return EXIT_ROWS_FAILED
    return EXIT_OK
