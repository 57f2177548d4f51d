"""``run_workflow.py WORKFLOW --batch MANIFEST --output-dir DIR``: many edits, one command.

    python scripts/run_workflow.py workflows/api/instruct_edit_sd15.json \\
        --batch edits.jsonl --output-dir edited/ --steps 20 --seed 1
    # a pool of ComfyUI servers (one per GPU), two rows in flight on each
    ... --server http://gpu0:8188 --server http://gpu1:8188 --per-server 2
    # Ray: a local cluster, or a running one (ray start --head ...; --ray auto / --ray ray://head:10001)
    ... --ray [ADDRESS] [--workers N]

The manifest (JSON Lines or CSV, see batch_manifest) is checked whole before anything runs; the
command-line overrides apply to every row and a row's own values win. A row without a seed gets
one derived from ``--seed`` (default 0) and its row number. ``DIR/results.jsonl`` records each
finished row; ``--resume`` skips the rows recorded ok whose image is there.

Exit codes: 0 every row succeeded; 1 the batch ran to its end but some rows failed (see
results.jsonl); 2 bad manifest, workflow or options (nothing ran); 4 no ComfyUI server reachable
(at the start, or all of them for --server-wait seconds; rerun with --resume); 130 interrupted
(rerun with --resume).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional


from .manifest import ManifestError, build_jobs, load_manifest
from .results import Outcome, ResultsLog, RowProgress, record_for
from ..runner.outputs import write_outputs
from ..prompts.checks import EXIT_EXECUTION, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, RunError, check_prompt
from ..prompts.overrides import add_override_arguments, apply_overrides, to_api

EXIT_ROWS_FAILED = 1


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="run_workflow.py WORKFLOW --batch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("workflow", help="workflow JSON (API or UI format)")
    ap.add_argument("--batch", required=True, metavar="MANIFEST", help="the edits: JSON Lines (.jsonl) or CSV (.csv), one per row")
    ap.add_argument("--output-dir", required=True, help="folder for the images and results.jsonl")
    ap.add_argument("--resume", action="store_true", help="skip the rows results.jsonl records ok whose image is there; run the rest")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--server", action="append", metavar="URL", help="a ComfyUI server of the pool (repeat for several)")
    where.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS", help="run on Ray: a local cluster, or ADDRESS (auto, ray://host:10001)"
    )
    ap.add_argument("--per-server", type=int, default=1, help="rows in flight on each server (default 1)")
    ap.add_argument("--server-wait", type=float, default=60.0, help="seconds to wait for a server when all are down (default 60)")
    ap.add_argument("--workers", type=int, help="Ray actors (default: one per GPU of the cluster, else 1)")
    ap.add_argument("--seed", type=int, default=0, help="base of the seeds of rows without one (default 0)")
    add_override_arguments(ap, every_row=True)
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds a row may take on a server")
    opts = ap.parse_args(argv)
    opts.image = None
    if opts.workers is not None and opts.workers < 1:
        ap.error("--workers must be at least 1")
    if opts.per_server < 1:
        ap.error("--per-server must be at least 1")
    return opts


def make_backend(opts: argparse.Namespace) -> Any:
    from . import pool as batch_backends

    extra = (opts.extra_model_paths,) if opts.extra_model_paths else ()
    if opts.server:
        return batch_backends.ServerPool(opts.server, per_server=opts.per_server, timeout=opts.timeout, wait_s=opts.server_wait)
    if opts.ray:
        return batch_backends.RayBackend(opts.ray, opts.workers, extra, opts.verbose)
    return batch_backends.InProcessBackend(extra, opts.verbose)


class Driver:
    """Writes each finished row: the image first (atomically), then its results.jsonl line."""

    def __init__(self, out_dir: Path, log: ResultsLog, rows: dict[int, Any], progress: Optional[RowProgress]) -> None:
        self.out_dir = out_dir
        self.log = log
        self.rows = rows
        self.progress = progress
        self.failed: list[int] = []

    def __call__(self, outcome: Outcome) -> None:
        row = self.rows[outcome.row]
        files: list[str] = []
        if outcome.error is None:
            try:
                files = [p.name for p in write_outputs(outcome.images, self.out_dir / row.output)]
            except RunError as exc:
                outcome.error, outcome.code = str(exc), exc.code
        self.log.append(record_for(row, outcome, files))
        if outcome.error is not None:
            self.failed.append(row.number)
        if self.progress is not None:
            self.progress.update(outcome.error is None)


def run(opts: argparse.Namespace, backend: Any = None) -> int:
    out_dir = Path(opts.output_dir)
    rows = load_manifest(Path(opts.batch), opts.seed)  # ManifestError: nothing has started
    try:
        workflow = json.loads(Path(opts.workflow).read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"cannot read workflow {opts.workflow}: {exc}", EXIT_INPUT) from exc
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"--output-dir {out_dir} is a file; give a folder", EXIT_INPUT)
    log = ResultsLog(out_dir)
    if log.path.exists() and not opts.resume:
        raise RunError(f"{log.path} exists: pass --resume to continue that batch, or choose another --output-dir", EXIT_INPUT)
    backend = backend or make_backend(opts)
    backend.start()
    try:
        api = check_prompt(to_api(workflow, backend.schema, f"the {backend.name} ComfyUI"))
        jobs = build_jobs(api, rows, opts, lambda a, o, place: apply_overrides(a, o, place, backend.schema), RunError, opts.batch)
        skip = log.finished_ok(rows) if opts.resume else set()
        todo = [job for job in jobs if job.row.number not in skip]
        progress = None if opts.quiet else RowProgress(len(rows), skipped=len(skip))
        if progress is not None:
            print(f"{len(todo)} row(s) to run on {backend.name}" + (f", {len(skip)} already done" if skip else ""), file=sys.stderr)
            progress.show()
        driver = Driver(out_dir, log, {row.number: row for row in rows}, progress)
        log.open()
        started = time.monotonic()
        try:
            backend.run(todo, driver)
        finally:
            log.close()
    finally:
        backend.close()
    if not opts.quiet:
        seconds = time.monotonic() - started
        print(f"{len(todo) - len(driver.failed)} ok, {len(driver.failed)} failed in {seconds:.1f} s; see {log.path}", file=sys.stderr)
    if driver.failed:
        print(f"error: {len(driver.failed)} row(s) failed: {', '.join(map(str, driver.failed[:20]))}; see {log.path}", file=sys.stderr)
        return EXIT_ROWS_FAILED
    return EXIT_OK


def main(argv: Optional[list[str]] = None, backend: Any = None) -> int:
    opts = parse_args(argv)
    try:
        return run(opts, backend)
    except ManifestError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except RunError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("\nerror: interrupted; rerun with --resume to finish the batch", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug, not the user's input: one line, the traceback only with --verbose
        if opts.verbose:
            traceback.print_exc()
        print(f"\nerror: unexpected {type(exc).__name__}: {exc} (run with --verbose for the traceback)", file=sys.stderr)
        return EXIT_EXECUTION


if __name__ == "__main__":
    sys.exit(main())
