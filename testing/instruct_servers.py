"""Servers the tests start: real ComfyUI servers (``main.py`` with this pack and the test models, on their
own folders) and a local HTTP file server with Range requests (the model downloads' far end).

Every process is stopped by its own PID, never by name.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

from headless.runner.comfyui import PACK_DIR

#: The test models' folders a server sees, from the harness's models directory.
SERVER_MODEL_FOLDERS = ("checkpoints", "controlnet", "loras")


class ServerFailed(AssertionError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- ComfyUI servers ----------------------------------------------------------------------------


def launch_comfyui(comfy: Any, base: Path, port: int) -> subprocess.Popen:
    """Start a ComfyUI server (``main.py``) with this pack and the test models in ``base``'s own folders;
    ``wait_ready`` waits for it. ``base`` may be reused (a server started again on the same port)."""
    packs = base / "packs"
    if not packs.exists():
        packs.mkdir(parents=True)
        (packs / "ComfyUI-Instruct").symlink_to(PACK_DIR)
    for d in ("out", "in", "user", "tmp"):
        (base / d).mkdir(exist_ok=True)
    yaml = base / "paths.yaml"
    folders = "".join(f"  {kind}: {kind}\n" for kind in SERVER_MODEL_FOLDERS)
    yaml.write_text(f"tests:\n  base_path: {comfy.models_dir}\n{folders}  custom_nodes: {packs}\n")
    args = ["--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-api-nodes", "--extra-model-paths-config", str(yaml)]
    for flag, d in (("--output-directory", "out"), ("--input-directory", "in"), ("--user-directory", "user"), ("--temp-directory", "tmp")):
        args += [flag, str(base / d)]
    log = open(base / "server.log", "a")
    proc = subprocess.Popen([sys.executable, "main.py", *args], cwd=comfy.root, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc


def wait_ready(proc: subprocess.Popen, base: Path, port: int, limit_s: float = 240.0) -> str:
    """The server's URL once it answers with this pack's nodes; fails with its log if it exits or hangs."""
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise ServerFailed(f"ComfyUI server exited: {(base / 'server.log').read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url + "/object_info/InstructKSampler", timeout=2).read()
            return url
        except OSError:
            time.sleep(0.5)
    stop(proc, signal.SIGKILL)
    raise ServerFailed("ComfyUI server did not start")


def start_comfyui(comfy: Any, base: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    port = port or free_port()
    proc = launch_comfyui(comfy, base, port)
    return proc, wait_ready(proc, base, port)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a server by its own PID (SIGKILL: as a crash would)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- a file server with HTTP Range ----------------------------------------------------------------


class FileServer(ThreadingHTTPServer):
    """Serves ``files`` (path → bytes) on 127.0.0.1 with HTTP Range. ``drop_after`` cuts the next response
    of a path after that many bytes (the connection closes mid-file), ``drop_always`` every response;
    ``ignore_range`` answers every request with the whole file; ``needs_token`` answers 401 unless the
    request carries ``Authorization: Bearer <token>``; ``redirects`` (path → URL) answers 302 to the URL
    first. ``requests`` records (path, Range, Authorization)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RangeHandler)
        self.files: dict[str, bytes] = {}
        self.drop_after: dict[str, int] = {}
        self.drop_always: dict[str, int] = {}
        self.ignore_range = False
        self.needs_token: str | None = None
        self.redirects: dict[str, str] = {}
        self.requests: list[tuple[str, str | None, str | None]] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _RangeHandler(BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        range_header = self.headers.get("Range")
        auth = self.headers.get("Authorization")
        self.server.requests.append((self.path, range_header, auth))
        if self.path in self.server.redirects:
            self.send_response(302)
            self.send_header("Location", self.server.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.server.needs_token is not None and auth != f"Bearer {self.server.needs_token}":
            self.send_error(401)
            return
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if range_header and not self.server.ignore_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.server.drop_after.pop(self.path, self.server.drop_always.get(self.path))
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@contextmanager
def file_server() -> Iterator[FileServer]:
    srv = FileServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)  # shutdown() waits one poll
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
