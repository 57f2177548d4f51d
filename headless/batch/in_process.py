"""The batch in this process: the process's one in-process session, rows one after another, models
loaded once for the whole batch."""

from __future__ import annotations

from typing import Iterable, Optional

from ..model_files.check import ensure_models
from ..model_files.manifest import ModelManifest
from ..runner.protocol import ProgressFn
from ..runner.session import InProcessSession, shared_session
from .backend import OnOutcome, run_one
from .jobs import Job


class InProcessBackend:
    name = "in-process"

    def __init__(self, extra_model_paths: Iterable[str] = (), verbose: bool = False) -> None:
        self.extra_model_paths = tuple(extra_model_paths)
        self.verbose = verbose
        self.session: Optional[InProcessSession] = None

    def start(self) -> None:
        self.session = shared_session(self.extra_model_paths, self.verbose)

    def schema(self, class_type: str) -> dict:
        return self.session.schema(class_type)

    def check_models(self, prompts: list[dict], download_missing: bool, manifest: ModelManifest) -> None:
        ensure_models(prompts, self.session.model_folders, download_missing, manifest)

    def run(self, jobs: list[Job], on_outcome: OnOutcome, timeout: Optional[float], progress: Optional[ProgressFn]) -> None:
        try:
            for job in jobs:
                on_outcome(run_one(self.session, job, job.files, self.name, timeout, progress))
        finally:
            self.session.remove_images()

    def close(self) -> None:
        """The shared session stays: its models serve the next run or batch of this process."""
