"""Where batch rows run: one in-process ComfyUI, a pool of ComfyUI servers, or Ray actors.

Every backend takes the same ``Job`` list (API prompts the driver built, whose input images are
still tokens) and reports one ``Outcome`` per row to the driver, in the driver's thread, which
writes the image and the ``results.jsonl`` line. A worker (an ``InProcessSession`` or a
``ServerClient`` of the runner) turns the tokens into its own content-addressed input names with
``add_image`` and runs the prompt with ``run``. Content-addressed names are the same on every
worker, so the prompt, and the PNG that embeds it, is byte-for-byte the same whichever backend ran it.

* ``InProcessBackend``: one session in this process; models loaded once for the whole batch.
* ``ServerPool``: ``--server URL`` given several times, ``per_server`` rows in flight on each. A
  server that stops answering is marked down and its row goes back to the queue for another server
  (at most ``attempts`` tries per row); a down server is probed and used again once it answers. If
  no server answers for ``wait_s`` seconds, the batch stops with exit 4.
* ``RayBackend``: ``--ray [ADDRESS]``; one actor per worker (one GPU each when the cluster has GPUs,
  else one CPU each), each holding an in-process session; Ray restarts a dead actor and retries its
  row. Ray is imported only here, only with the flag.
"""

from __future__ import annotations

import collections
import os
import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from .manifest import Job, fill_tokens
from .results import Outcome
from ..prompts.checks import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_UNREACHABLE, RunError

OnOutcome = Callable[[Outcome], None]


def peak_mb() -> Optional[float]:
    """This process's peak resident memory in MiB (None where the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


def run_one(worker: Any, prompt: dict, files: dict[str, Path], row: int, name: str, timeout: Optional[float] = None) -> Outcome:
    """Place the inputs on ``worker``, run the prompt; a RunError of the row becomes an error Outcome.

    A RunError meaning the worker itself is gone (exit 4) or the user interrupted (130) is raised:
    those are the backend's business, not the row's."""
    start = time.monotonic()
    try:
        names = {token: worker.add_image(path) for token, path in files.items()}
        kwargs = {"timeout": timeout} if timeout is not None else {}
        result = worker.run(fill_tokens(prompt, names), **kwargs)
        if not result.images:
            raise RunError("the run produced no image", EXIT_INPUT)
        local = not hasattr(worker, "url")  # a server's memory is its own process's, not ours
        return Outcome(row=row, images=result.images, seconds=time.monotonic() - start, worker=name, peak_mb=peak_mb() if local else None)
    except RunError as exc:
        if exc.code in (EXIT_UNREACHABLE, EXIT_INTERRUPTED):
            raise
        return Outcome(row=row, images=[], seconds=time.monotonic() - start, worker=name, error=str(exc), code=exc.code)


# ---- in-process ---------------------------------------------------------------------------------


class InProcessBackend:
    """One ComfyUI session in this process, rows one after another."""

    name = "in-process"

    def __init__(self, extra_model_paths: Iterable[str] = (), verbose: bool = False, session: Any = None) -> None:
        self.extra_model_paths = tuple(extra_model_paths)
        self.verbose = verbose
        self.session = session
        self._own = session is None

    def start(self) -> None:
        if self.session is None:
            from ..runner.session import InProcessSession

            self.session = InProcessSession(extra_model_paths=self.extra_model_paths, verbose=self.verbose)

    def schema(self, class_type: str) -> dict:
        return self.session.schema(class_type)

    def run(self, jobs: list[Job], on_outcome: OnOutcome) -> None:
        for job in jobs:
            on_outcome(run_one(self.session, job.prompt, job.files, job.row.number, self.name))

    def close(self) -> None:
        if self._own and self.session is not None:
            self.session.close()


# ---- a pool of servers --------------------------------------------------------------------------


class _Server:
    """A server's shared state: up or down, since when, and a lock-free probe."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.up = False
        self.down_since = time.monotonic()
        self.lock = threading.Lock()

    def probe(self, client_factory: Callable[[str], Any]) -> bool:
        try:
            client_factory(self.url).check()
        except RunError:
            return False
        with self.lock:
            self.up = True
        return True

    def mark_down(self) -> None:
        with self.lock:
            if self.up:
                self.up = False
                self.down_since = time.monotonic()


class ServerPool:
    """Rows spread over several ComfyUI servers (see the module doc)."""

    def __init__(
        self,
        urls: list[str],
        per_server: int = 1,
        timeout: float = 3600.0,
        wait_s: float = 60.0,
        probe_s: float = 1.0,
        attempts: int = 3,
        client_factory: Optional[Callable[[str], Any]] = None,
    ) -> None:
        if per_server < 1:
            raise RunError(f"--per-server must be at least 1, not {per_server}", EXIT_INPUT)
        self.servers = [_Server(u) for u in dict.fromkeys(urls)]
        self.per_server = per_server
        self.timeout = timeout
        self.wait_s = wait_s
        self.probe_s = probe_s
        self.attempts = attempts
        if client_factory is None:
            from ..runner.server import ServerClient

            client_factory = ServerClient
        self.client_factory = client_factory
        self.name = f"pool of {len(self.servers)} server(s)"
        self._clients: dict[str, Any] = {}

    def start(self) -> None:
        for server in self.servers:
            server.probe(self.client_factory)
        if not any(s.up for s in self.servers):
            raise RunError(
                f"no ComfyUI server of the pool is reachable: {', '.join(s.url for s in self.servers)}; start them or fix the addresses",
                EXIT_UNREACHABLE,
            )

    def schema(self, class_type: str) -> dict:
        """A node schema from the first server that answers (the pool's servers run the same packs)."""
        for server in self.servers:
            if server.up:
                try:
                    if server.url not in self._clients:
                        self._clients[server.url] = self.client_factory(server.url)
                    return self._clients[server.url].schema(class_type)
                except RunError:
                    server.mark_down()
        raise RunError("no ComfyUI server of the pool is reachable", EXIT_UNREACHABLE)

    def run(self, jobs: list[Job], on_outcome: OnOutcome) -> None:
        todo: collections.deque = collections.deque((job, 0) for job in jobs)
        lock = threading.Lock()
        done: queue.Queue = queue.Queue()
        stop = threading.Event()
        fatal: list[BaseException] = []

        def slot(server: _Server, index: int) -> None:
            client = self.client_factory(server.url)
            name = f"{server.url}#{index}"
            while not stop.is_set():
                if not server.up:
                    if not server.probe(self.client_factory):
                        stop.wait(self.probe_s)
                    continue
                with lock:
                    item = todo.popleft() if todo else None
                if item is None:
                    stop.wait(0.1)  # a row may come back from a server that died
                    continue
                job, tries = item
                try:
                    outcome = run_one(client, job.prompt, job.files, job.row.number, name, timeout=self.timeout)
                except RunError as exc:
                    if exc.code != EXIT_UNREACHABLE:  # interrupted: the batch stops
                        fatal.append(exc)
                        stop.set()
                        return
                    server.mark_down()
                    if tries + 1 >= self.attempts:
                        why = f"{self.attempts} servers went away while running this row: {exc}"
                        outcome = Outcome(job.row.number, [], 0.0, name, why, exc.code)
                    else:
                        with lock:
                            todo.appendleft((job, tries + 1))
                        continue
                except Exception as exc:  # noqa: BLE001  a client bug must not hang the batch
                    outcome = Outcome(job.row.number, [], 0.0, name, f"{type(exc).__name__}: {exc}", 3)
                done.put(outcome)

        threads = [
            threading.Thread(target=slot, args=(server, i), daemon=True, name=f"batch {server.url}#{i}")
            for server in self.servers
            for i in range(self.per_server)
        ]
        for thread in threads:
            thread.start()
        try:
            remaining = len(jobs)
            while remaining:
                try:
                    outcome = done.get(timeout=0.25)
                except queue.Empty:
                    if fatal:
                        raise fatal[0]
                    if not any(s.up for s in self.servers):
                        gone = time.monotonic() - max(s.down_since for s in self.servers)
                        if gone > self.wait_s:
                            raise RunError(
                                f"every ComfyUI server of the pool has been unreachable for {self.wait_s:.0f} s; "
                                f"{remaining} row(s) not run (rerun with --resume once a server is back)",
                                EXIT_UNREACHABLE,
                            )
                    continue
                on_outcome(outcome)
                remaining -= 1
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=1.0)

    def close(self) -> None:
        pass


# ---- Ray ----------------------------------------------------------------------------------------


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
        from ..runner.session import InProcessSession

        self.session = InProcessSession(extra_model_paths=extra_model_paths, verbose=verbose)
        self.inputs = Path(tempfile.mkdtemp(prefix="instruct-batch-ray-"))
        import socket

        self.name = f"ray:{socket.gethostname()}:{os.getpid()}"

    def schema(self, class_type: str) -> dict:
        return self.session.schema(class_type)

    def run(self, prompt: dict, files: dict[str, tuple[str, bytes]], row: int) -> Outcome:
        local = {}
        for i, (token, (suffix, data)) in enumerate(files.items()):
            path = self.inputs / f"{row}_{i}{suffix}"
            path.write_bytes(data)
            local[token] = path
        try:
            return run_one(self.session, prompt, local, row, self.name)
        finally:
            for path in local.values():
                path.unlink(missing_ok=True)


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
            raise RunError("--ray needs Ray: pip install ray (on the driver and on every machine of the cluster)", EXIT_INPUT) from exc
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
            self._schemas[class_type] = self.ray.get(self.actors[0].call.remote("schema", class_type))
        return self._schemas[class_type]

    def run(self, jobs: list[Job], on_outcome: OnOutcome) -> None:
        ray = self.ray
        waiting = collections.deque(jobs)
        running: dict[Any, tuple[Any, Job]] = {}

        def submit(actor: Any) -> None:
            if waiting:
                job = waiting.popleft()
                files = {token: (path.suffix.lower(), path.read_bytes()) for token, path in job.files.items()}
                running[actor.call.remote("run", job.prompt, files, job.row.number)] = (actor, job)

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
                if isinstance(cause, RunError) and cause.code == EXIT_INTERRUPTED:
                    raise cause from exc
                outcome = Outcome(job.row.number, [], 0.0, "ray", f"Ray worker failed: {str(exc).strip().splitlines()[0]}", 3)
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
