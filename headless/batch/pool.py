"""A batch on a pool of ComfyUI servers (``--server URL`` given several times, one per GPU or machine).

Each server has at most ``per_server`` rows in flight. A server that stops answering is marked down and
its row goes back to the queue for another server (at most ``attempts`` tries per row); a down server is
probed and used again once it answers. If no server answers for ``wait_s`` seconds, the batch stops
(unreachable). The servers check their own model files.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from typing import Callable, Optional

from ..errors import InputError, RunInterrupted, UnreachableError
from ..model_files.manifest import ModelManifest
from ..runner.protocol import ProgressFn, Runner
from ..runner.server import ServerClient
from .backend import OnOutcome, run_one
from .jobs import Job
from .results import Outcome


class _Server:
    """A server's shared state: up or down, since when, and a lock-free probe."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.up = False
        self.down_since = time.monotonic()
        self.lock = threading.Lock()

    def probe(self, client_factory: Callable[[str], ServerClient]) -> bool:
        try:
            client_factory(self.url).check()
        except UnreachableError:
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
        wait_s: float = 60.0,
        probe_s: float = 1.0,
        attempts: int = 3,
        client_factory: Callable[[str], ServerClient] = ServerClient,
    ) -> None:
        if per_server < 1:
            raise InputError(f"--per-server must be at least 1, not {per_server}")
        self.servers = [_Server(u) for u in dict.fromkeys(urls)]
        self.per_server = per_server
        self.wait_s = wait_s
        self.probe_s = probe_s
        self.attempts = attempts
        self.client_factory = client_factory
        self.name = f"pool of {len(self.servers)} server(s)"
        self._clients: dict[str, Runner] = {}

    def start(self) -> None:
        for server in self.servers:
            server.probe(self.client_factory)
        if not any(s.up for s in self.servers):
            raise UnreachableError(
                f"no ComfyUI server of the pool is reachable: {', '.join(s.url for s in self.servers)}; start them or fix the addresses"
            )

    def schema(self, class_type: str) -> dict:
        """A node schema from the first server that answers (the pool's servers run the same packs)."""
        for server in self.servers:
            if server.up:
                try:
                    if server.url not in self._clients:
                        self._clients[server.url] = self.client_factory(server.url)
                    return self._clients[server.url].schema(class_type)
                except UnreachableError:
                    server.mark_down()
        raise UnreachableError("no ComfyUI server of the pool is reachable")

    def check_models(self, prompts: list[dict], download_missing: bool, manifest: ModelManifest) -> None:
        """The servers check their own model files (and refuse a row whose file is missing), as a single
        ``--server`` run leaves them to its server."""

    def run(self, jobs: list[Job], on_outcome: OnOutcome, timeout: Optional[float], progress: Optional[ProgressFn]) -> None:
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
                    outcome = run_one(client, job, job.files, name, timeout, progress)
                except RunInterrupted as exc:  # the batch stops
                    fatal.append(exc)
                    stop.set()
                    return
                except UnreachableError as exc:
                    server.mark_down()
                    if tries + 1 >= self.attempts:
                        why = f"{self.attempts} servers went away while running this row: {exc}"
                        outcome = Outcome(job.row.number, [], 0.0, name, why)
                    else:
                        with lock:
                            todo.appendleft((job, tries + 1))
                        continue
                except Exception as exc:  # noqa: BLE001  a client bug must not hang the batch
                    outcome = Outcome(job.row.number, [], 0.0, name, f"{type(exc).__name__}: {exc}")
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
                            raise UnreachableError(
                                f"every ComfyUI server of the pool has been unreachable for {self.wait_s:.0f} s; "
                                f"{remaining} row(s) not run (rerun with --resume once a server is back)"
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
