"""A batch on Ray actors (``--ray [ADDRESS]``): a local cluster, or a running one.

One actor per worker (one GPU each when the cluster has GPUs, else one CPU each), each holding an
in-process session; Ray restarts a dead actor and retries its row. Rows travel to the actors with their
images' bytes and come back as Outcomes, so the driver's files need not exist on the actors' machines.
Ray is imported only here, only with the flag. Actors start through the bootstrap
(``pack_paths.Bootstrapped``): a fresh worker must find the actor's class before any of its code runs.
"""

from __future__ import annotations

import collections
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional

from ..errors import HeadlessError, InputError, RunInterrupted
from ..model_files.check import ensure_models
from ..model_files.manifest import ModelManifest
from ..runner.protocol import ProgressFn
from ..runner.session import InProcessSession
from .backend import OnOutcome, run_one
from .jobs import Job
from .results import Outcome


class RayWorker:
    """What each Ray actor holds: an in-process session; rows arrive with their images' bytes, so
    the driver's files need not exist on the actor's machine."""

    def __init__(self, extra_model_paths: tuple = (), verbose: bool = False, threads: Optional[int] = None) -> None:
        if threads:
            # Byte-identity across backends depends on this: Ray starts an actor of 1 CPU with
            # OMP_NUM_THREADS=1, and torch's CPU kernels split their reductions by the intra-op thread
            # count, so an actor with fewer threads than the driver gives (slightly) different pixels.
            # The driver passes its own torch.get_num_threads(); the actor uses the same.
            import torch

            torch.set_num_threads(threads)
        self.session = InProcessSession(extra_model_paths=extra_model_paths, verbose=verbose)
        self.inputs = Path(tempfile.mkdtemp(prefix="instruct-batch-ray-"))
        self.name = f"ray:{socket.gethostname()}:{os.getpid()}"

    def schema(self, class_type: str) -> dict:
        return self.session.schema(class_type)

    def check_models(self, prompts: list[dict], download_missing: bool, manifest: ModelManifest) -> None:
        ensure_models(prompts, self.session.model_folders, download_missing, manifest, progress=False)

    def run(self, job: Job, files: dict[str, tuple[str, bytes]], timeout: Optional[float]) -> Outcome:
        local = {}
        for i, (token, (suffix, data)) in enumerate(files.items()):
            path = self.inputs / f"{job.row.number}_{i}{suffix}"
            path.write_bytes(data)
            local[token] = path
        try:
            return run_one(self.session, job, local, self.name, timeout)
        finally:
            for path in local.values():
                path.unlink(missing_ok=True)
            self.session.remove_images()


class RayBackend:
    """Rows spread over Ray actors (see the module doc)."""

    def __init__(
        self, address: Optional[str], workers: Optional[int], extra_model_paths: Iterable[str] = (), verbose: bool = False
    ) -> None:
        self.address = address
        self.workers = workers
        self.extra_model_paths = tuple(str(Path(p).resolve()) for p in extra_model_paths)
        self.verbose = verbose
        self.actors: list[Any] = []
        self._started_ray = False
        self._schemas: dict[str, dict] = {}
        self.name = "ray"

    def start(self) -> None:
        try:
            import ray
        except ImportError as exc:
            raise InputError("--ray needs Ray: pip install ray (on the driver and on every machine of the cluster)") from exc
        self.ray = ray
        import pack_paths  # the bootstrap: a fresh Ray worker imports headless through it

        env: dict[str, str] = {}
        if os.environ.get("COMFYUI_PATH"):
            env["COMFYUI_PATH"] = os.environ["COMFYUI_PATH"]
        if not ray.is_initialized():
            address = None if self.address in (None, "", "local") else self.address
            init: dict[str, Any] = {"address": address, "log_to_driver": self.verbose}
            if address is None and self.workers:
                init["num_cpus"] = max(self.workers, 1)
            ray.init(**init)
            self._started_ray = True
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = self.workers or gpus or 1
        resources = {"num_gpus": 1, "num_cpus": 0} if gpus else {"num_cpus": 1}
        import torch  # the driver's intra-op thread count, the one a single in-process run uses

        threads = torch.get_num_threads()
        env["OMP_NUM_THREADS"] = str(threads)  # else Ray sets 1 for a 1-CPU actor (see RayWorker)
        actor = ray.remote(max_restarts=1, max_task_retries=1)(pack_paths.Bootstrapped)
        factory = f"{RayWorker.__module__}:{RayWorker.__name__}"
        self.actors = [
            actor.options(runtime_env=pack_paths.ray_runtime_env(env), **resources).remote(
                factory, self.extra_model_paths, self.verbose, threads
            )
            for _ in range(count)
        ]
        self.name = f"ray ({count} actor{'s' if count > 1 else ''}, {'1 GPU' if gpus else '1 CPU'} each)"

    def schema(self, class_type: str) -> dict:
        if class_type not in self._schemas:
            self._schemas[class_type] = self._call(self.actors[0], "schema", class_type)
        return self._schemas[class_type]

    def _call(self, actor: Any, method: str, *args: Any) -> Any:
        """A method of one actor, waited for; an error of ours raised in the actor comes back as itself."""
        try:
            return self.ray.get(actor.call.remote(method, *args))
        except self.ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, HeadlessError):
                raise exc.cause from None
            raise

    def check_models(self, prompts: list[dict], download_missing: bool, manifest: ModelManifest) -> None:
        """Each actor checks its own machine's folders, one after another (two actors of one machine
        must not fetch the same file at once; the second finds it there)."""
        for actor in self.actors:
            self._call(actor, "check_models", prompts, download_missing, manifest)

    def run(self, jobs: list[Job], on_outcome: OnOutcome, timeout: Optional[float], progress: Optional[ProgressFn]) -> None:
        ray = self.ray
        waiting = collections.deque(jobs)
        running: dict[Any, tuple[Any, Job]] = {}

        def submit(actor: Any) -> None:
            if waiting:
                job = waiting.popleft()
                files = {token: (path.suffix.lower(), path.read_bytes()) for token, path in job.files.items()}
                running[actor.call.remote("run", job, files, timeout)] = (actor, job)

        for actor in self.actors:
            submit(actor)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            ref = ready[0]
            actor, job = running.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the actor died past its restarts, or the task broke
                cause = getattr(exc, "cause", None)
                if isinstance(cause, RunInterrupted):
                    raise cause from exc
                outcome = Outcome(job.row.number, [], 0.0, "ray", f"Ray worker failed: {str(exc).strip().splitlines()[0]}")
            on_outcome(outcome)
            submit(actor)

    def close(self) -> None:
        if getattr(self, "ray", None) is None:
            return
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001  already gone
                pass
        self.actors = []
        if self._started_ray:
            self.ray.shutdown()
