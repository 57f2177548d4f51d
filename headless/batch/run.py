"""A batch from request to results: the manifest checked whole, the rows as prompts, the model files
checked (and fetched) once, then every row run on a backend, each image written before its results line.

Nothing runs unless the whole manifest is good: every bad row is listed (``ManifestError``), a missing
model file stops the batch with the message a single run gives. A row without a seed gets one derived
from the base seed and its row number. ``DIR/results.jsonl`` records each finished row; ``resume`` skips
the rows recorded ok whose image is there. A failing row is recorded and the batch goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol

from ..errors import InputError
from ..model_files.manifest import ModelManifest
from ..prompts.checks import check_prompt, lacking
from ..prompts.overrides import Overrides
from ..prompts.workflow import load_workflow, to_api
from ..runner.outputs import write_outputs
from ..runner.protocol import ProgressFn
from .backend import Backend
from .jobs import build_jobs
from .manifest import Row, load_manifest
from .results import Outcome, ResultsLog, record_for


@dataclass(frozen=True)
class BatchRequest:
    """What a batch is asked to do (the command line builds it)."""

    workflow: Path
    manifest: Path
    output_dir: Path
    overrides: Overrides = Overrides()  # for every row; a row's own values win
    base_seed: int = 0
    resume: bool = False
    timeout: Optional[float] = None  # per row
    download_missing: bool = False
    models_manifest: Optional[Path] = None


class BatchProgress(Protocol):
    """What a batch reports while it runs (the command line shows it)."""

    def started(self, total: int, skipped: int, backend: str) -> None: ...

    def row_done(self, ok: bool) -> None: ...

    def node(self, value: int, total: int, node_id: Optional[str], label: str) -> None: ...


@dataclass
class BatchReport:
    rows: int
    ran: int
    skipped: int
    failed: list[int] = field(default_factory=list)
    results: Optional[Path] = None


class _Driver:
    """Writes each finished row: the image first (atomically), then its results.jsonl line."""

    def __init__(self, out_dir: Path, log: ResultsLog, rows: dict[int, Row], progress: Optional[BatchProgress]) -> None:
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
            except InputError as exc:
                outcome.error = str(exc)
        self.log.append(record_for(row, outcome, files))
        if outcome.error is not None:
            self.failed.append(row.number)
        if self.progress is not None:
            self.progress.row_done(outcome.error is None)


def run_batch(request: BatchRequest, backend: Backend, progress: Optional[BatchProgress] = None) -> BatchReport:
    """Run the batch (see the module doc); raises the ``headless.errors`` types when nothing could run or
    the batch had to stop (its rows so far are recorded)."""
    out_dir = Path(request.output_dir)
    rows = load_manifest(Path(request.manifest), request.base_seed)
    workflow = load_workflow(request.workflow)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--output-dir {out_dir} is a file; give a folder")
    log = ResultsLog(out_dir)
    if log.path.exists() and not request.resume:
        raise InputError(f"{log.path} exists: pass --resume to continue that batch, or choose another --output-dir")
    models = ModelManifest.load(request.models_manifest)
    backend.start()
    try:
        api = check_prompt(to_api(workflow, backend.schema, f"the {backend.name} ComfyUI"))
        missing = [t for t in lacking(api, ()) if not backend.schema(t)]
        if missing:
            raise InputError(f"the {backend.name} ComfyUI lacks node types: {', '.join(missing)}. Install the pack that provides them.")
        jobs = build_jobs(api, rows, request.overrides, backend.schema, str(request.manifest))
        backend.check_models([job.prompt for job in jobs], request.download_missing, models)
        skip = log.finished_ok(rows) if request.resume else set()
        todo = [job for job in jobs if job.row.number not in skip]
        if progress is not None:
            progress.started(len(rows), len(skip), backend.name)
        driver = _Driver(out_dir, log, {row.number: row for row in rows}, progress)
        log.open()
        node_progress: Optional[ProgressFn] = progress.node if progress is not None else None
        try:
            backend.run(todo, driver, request.timeout, node_progress)
        finally:
            log.close()
    finally:
        backend.close()
    return BatchReport(rows=len(rows), ran=len(todo), skipped=len(skip), failed=driver.failed, results=log.path)
