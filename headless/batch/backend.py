"""What every batch backend is, and the one way a row runs on a worker.

A backend (``InProcessBackend``, ``ServerPool``, ``RayBackend``) takes the ``Job`` list and reports one
``Outcome`` per row to the driver, in the driver's thread, which writes the image and the results line.
A worker is a ``Runner`` (an in-process session or a server client): ``run_one`` places the row's input
images on it under content-addressed names, which are the same on every worker, so the prompt, and the
PNG that embeds it, is byte-for-byte the same whichever backend ran it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Protocol

from ..errors import HeadlessError, RunInterrupted, UnreachableError
from ..model_files.manifest import ModelManifest
from ..runner.protocol import ProgressFn, Runner
from .jobs import Job, fill_tokens
from .results import Outcome

OnOutcome = Callable[[Outcome], None]


class Backend(Protocol):
    """Where a batch's rows run."""

    name: str

    def start(self) -> None: ...

    def schema(self, class_type: str) -> dict: ...

    def check_models(self, prompts: list[dict], download_missing: bool, manifest: ModelManifest) -> None:
        """Stop the batch before any row when a model file is missing (fetch it when asked); the same
        message a single run gives. Backends whose workers are servers leave it to the servers."""
        ...

    def run(self, jobs: list[Job], on_outcome: OnOutcome, timeout: Optional[float], progress: Optional[ProgressFn]) -> None: ...

    def close(self) -> None: ...


def peak_mb() -> Optional[float]:
    """This process's peak resident memory in MiB (None where the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


def run_one(
    worker: Runner,
    job: Job,
    files: dict[str, Path],
    name: str,
    timeout: Optional[float] = None,
    progress: Optional[ProgressFn] = None,
) -> Outcome:
    """Place the inputs on ``worker``, run the row's prompt; an error of the row becomes an error Outcome.

    An error that means the worker itself is gone (unreachable) or the user interrupted is raised: those
    are the backend's business, not the row's."""
    start = time.monotonic()
    try:
        names = {token: worker.add_image(path) for token, path in files.items()}
        result = worker.run(fill_tokens(job.prompt, names), progress=progress, timeout=timeout)
        memory = peak_mb() if worker.runs_here else None  # a server's memory is its own process's, not ours
        return Outcome(row=job.row.number, images=result.images, seconds=time.monotonic() - start, worker=name, peak_mb=memory)
    except (UnreachableError, RunInterrupted):
        raise
    except HeadlessError as exc:
        return Outcome(row=job.row.number, images=[], seconds=time.monotonic() - start, worker=name, error=str(exc))
