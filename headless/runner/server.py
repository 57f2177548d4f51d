"""Run API prompts on a running ComfyUI server: the server ``Runner``.

``ServerClient(url).run(prompt)`` uploads nothing by itself; ``add_image(path)`` uploads an image
under its content hash in an ``instruct-runner/`` subfolder without ``overwrite``, so concurrent
runs never get each other's pictures and no file the client did not create is replaced. ``run``
connects the websocket with its client id *before* ``POST /prompt`` (no event can be missed) and
falls back to ``/history`` every second, so a prompt that is answered from the cache or fails at
once returns at once. A timeout or Ctrl-C cancels the prompt on the server whether it is running
(targeted ``/interrupt``) or still queued (deleted from ``/queue``): nothing cancelled runs later.

Needs only the standard library (``websocket-client`` for progress; without it, ``/history`` is
polled). A pool of servers holds one client per server.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Optional


from ..errors import ExecutionError, InputError, RunInterrupted, RunTimeout, UnreachableError
from ..prompts.checks import format_node_errors, node_label
from .images import UPLOAD_SUBFOLDER, content_name
from .protocol import ProgressFn
from .sequence import Finished, PromptRunner

POLL_S = 1.0
CANCEL_WAIT_S = 10.0
#: How long a run may take on a server when the caller gives no timeout: a server left alone never hangs a client.
DEFAULT_TIMEOUT_S = 3600.0


class ServerClient(PromptRunner):
    """One ComfyUI server (see the module doc)."""

    where = " on the server"
    runs_here = False

    def __init__(self, url: str, *, request_timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.name = self.url
        self.request_timeout = request_timeout
        self.client_id = uuid.uuid4().hex
        self._schemas: dict[str, dict] = {}
        self._checked = False

    # ---- HTTP -----------------------------------------------------------------------------------

    def _unreachable(self, exc: BaseException, during: str = "") -> UnreachableError:
        reason = getattr(exc, "reason", None) or exc
        if during:
            return UnreachableError(f"the ComfyUI server at {self.url} stopped responding {during} ({reason})")
        return UnreachableError(
            f"ComfyUI server at {self.url} is not reachable ({reason}): start it, check the address, "
            "or run without --server to run in-process"
        )

    def request(
        self,
        path: str,
        payload: Any = None,
        *,
        data: Optional[bytes] = None,
        headers: Optional[dict] = None,
        during: str = "",
        timeout: Optional[float] = None,
    ) -> tuple[int, Any]:
        """(HTTP status, JSON value or bytes). ``payload`` is sent as JSON."""
        if payload is not None:
            data, headers = json.dumps(payload).encode(), {"Content-Type": "application/json"}
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.request_timeout) as resp:
                status, body, kind = resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, body, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "") if exc.headers else ""
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out, DNS
            raise self._unreachable(exc, during) from exc
        if "json" in kind:
            try:
                return status, json.loads(body)
            except ValueError:
                return status, body
        return status, body

    def json(self, path: str, payload: Any = None, during: str = "", timeout: Optional[float] = None) -> Any:
        """A JSON answer from an endpoint every ComfyUI has; anything else is not a ComfyUI server."""
        status, value = self.request(path, payload, during=during, timeout=timeout)
        if status != 200 or not isinstance(value, (dict, list)):
            raise self._not_comfyui(f"{path} answered HTTP {status}")
        return value

    def _not_comfyui(self, why: str) -> UnreachableError:
        return UnreachableError(f"{self.url} is not a ComfyUI server ({why}); check the address and port")

    def check(self) -> None:
        """Refuse an address that answers but is not ComfyUI (exit 4)."""
        if self._checked:
            return
        status, stats = self.request("/system_stats")
        if status != 200 or not isinstance(stats, dict) or "system" not in stats:
            raise self._not_comfyui(f"/system_stats answered HTTP {status}")
        self._checked = True

    # ---- what a caller needs to build prompts ---------------------------------------------------

    def schema(self, class_type: str) -> dict:
        """The server's ``/object_info`` entry for a node type ({} when it lacks the type)."""
        if class_type not in self._schemas:
            self.check()
            info = self.json(f"/object_info/{urllib.parse.quote(class_type, safe='')}")
            self._schemas[class_type] = info.get(class_type, {}) if isinstance(info, dict) else {}
        return self._schemas[class_type]

    def all_schemas(self) -> dict:
        self.check()
        info = self.json("/object_info")
        self._schemas.update(info)
        return info

    def lacks_types_message(self, missing: list[str]) -> str:
        return (
            f"the server at {self.url} lacks node types: {', '.join(missing)}. Install ComfyUI-Instruct "
            "(or the pack that provides them) into its custom_nodes and restart it."
        )

    def add_image(self, path: Path | str) -> str:
        """Upload an image under its content hash (see the module doc); the name for LoadImage."""
        self.check()
        path = Path(path)
        if not path.is_file():
            raise InputError(f"image file not found: {path}")
        boundary = uuid.uuid4().hex
        fields = [
            (f'name="image"; filename="{content_name(path)}"\r\nContent-Type: application/octet-stream', path.read_bytes()),
            ('name="subfolder"', UPLOAD_SUBFOLDER.encode()),
            ('name="type"', b"input"),
        ]
        body = b"".join(
            f"--{boundary}\r\nContent-Disposition: form-data; {head}\r\n\r\n".encode() + value + b"\r\n" for head, value in fields
        )
        body += f"--{boundary}--\r\n".encode()
        status, result = self.request("/upload/image", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        if status != 200 or not isinstance(result, dict) or "name" not in result:
            raise InputError(f"uploading {path} failed: HTTP {status} {result!r:.200}")
        return f"{result['subfolder']}/{result['name']}" if result.get("subfolder") else result["name"]

    # ---- running --------------------------------------------------------------------------------

    def _execute(self, api: dict, progress: Optional[ProgressFn], timeout: Optional[float]) -> Finished:
        """Queue the prompt, follow it until /history has it; a timeout or Ctrl-C cancels it on the server."""
        timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
        self.check()
        ws = self._connect_websocket()  # before the POST, so no event of this prompt is missed
        prompt_id = uuid.uuid4().hex  # chosen here, so a Ctrl-C during the POST can still cancel it
        try:
            status, answer = self.request("/prompt", {"prompt": api, "client_id": self.client_id, "prompt_id": prompt_id})
            if not isinstance(answer, dict) or "prompt_id" not in answer:
                error = answer.get("error", {}) if isinstance(answer, dict) else answer
                message = error.get("message", error) if isinstance(error, dict) else error
                details = format_node_errors(answer.get("node_errors", {}) if isinstance(answer, dict) else {}, api)
                if status == 404:
                    raise self._not_comfyui("POST /prompt answered HTTP 404")
                raise InputError(f"the server refused the workflow: {message!s:.500}\n{details}".rstrip())
            entry = self._wait(ws, prompt_id, api, progress, time.monotonic() + timeout)
        except KeyboardInterrupt as exc:
            ws = _close(ws)  # first: a server blocked on sending us progress serves the cancel sooner
            self.cancel(prompt_id)
            raise RunInterrupted("interrupted; the prompt was cancelled on the server") from exc
        except TimeoutError as exc:
            ws = _close(ws)
            self.cancel(prompt_id)
            raise RunTimeout(f"the run did not finish within {timeout:g} s; it was cancelled on the server") from exc
        finally:
            _close(ws)
        return Finished(prompt_id=prompt_id, messages=entry.get("status", {}).get("messages", []), outputs=entry.get("outputs", {}))

    def _read_images(self, images: list[dict]) -> list[bytes]:
        out = []
        for img in images:
            query = urllib.parse.urlencode(
                {"filename": img["filename"], "subfolder": img.get("subfolder", ""), "type": img.get("type", "output")}
            )
            status, data = self.request(f"/view?{query}", during="while sending the image")
            if status != 200 or not isinstance(data, bytes):
                raise ExecutionError(f"the server could not send the image {img['filename']} (HTTP {status})")
            out.append(data)
        return out

    def close(self) -> None:
        """Nothing to release: every request is its own connection."""

    def _connect_websocket(self) -> Any:
        try:
            import websocket  # websocket-client
        except ImportError:
            return None
        ws_url = self.url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        try:
            return websocket.create_connection(ws_url, timeout=self.request_timeout)
        except Exception:  # no websocket here: /history polling still works
            return None

    def _history(self, prompt_id: str, during: str = "during the run") -> Optional[dict]:
        """The prompt's history entry once it has finished, else None."""
        history = self.json(f"/history/{prompt_id}", during=during)
        entry = history.get(prompt_id) if isinstance(history, dict) else None
        if entry and (entry.get("status", {}).get("completed") is not None or entry.get("status", {}).get("status_str")):
            return entry
        return None

    def _wait(self, ws: Any, prompt_id: str, api: dict, progress: Optional[ProgressFn], deadline: float) -> dict:
        """Follow the prompt until it is in /history; TimeoutError past ``deadline``."""
        import importlib

        websocket = importlib.import_module("websocket") if ws is not None else None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if ws is None:
                entry = self._history(prompt_id)
                if entry is not None:
                    return entry
                time.sleep(min(0.25, remaining))
                continue
            ws.settimeout(min(POLL_S, remaining))
            try:
                message = ws.recv()
            except websocket.WebSocketTimeoutException:
                entry = self._history(prompt_id)  # the fallback: never wait on a silent socket
                if entry is not None:
                    return entry
                continue
            except (websocket.WebSocketException, OSError):
                self._history(prompt_id)  # exit 4 when the server is gone, else poll without the socket
                ws = None
                continue
            if not isinstance(message, str):
                continue  # binary frames are previews
            try:
                event = json.loads(message)
            except ValueError:
                continue
            data = event.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            kind = event.get("type")
            if kind == "progress" and progress is not None:
                progress(data.get("value", 0), data.get("max", 0), data.get("node"), node_label(api, data.get("node")))
            elif kind in ("execution_success", "execution_error", "execution_interrupted") or (
                kind == "executing" and data.get("node") is None
            ):
                ws = None  # finished: /history has (or will have in a moment) the result

    def cancel(self, prompt_id: str) -> bool:
        """Make sure the prompt never runs (again): delete it from the queue, interrupt it if it
        is running, until the server lists it in neither. False when the server is gone."""
        end = time.monotonic() + CANCEL_WAIT_S
        try:
            while (left := end - time.monotonic()) > 0:
                wait = max(left, 1.0)  # each call bounded too, so a sluggish server cannot hold Ctrl-C for long
                # Delete first: a queued prompt that starts between the two calls is then running
                # and the targeted interrupt catches it (the queue and the running set share a lock).
                self.request("/queue", {"delete": [prompt_id]}, timeout=wait)
                self.request("/interrupt", {"prompt_id": prompt_id}, timeout=wait)
                queue = self.json("/queue", timeout=wait)
                listed = [item for key in ("queue_running", "queue_pending") for item in queue.get(key, [])]
                if not any(len(item) > 1 and item[1] == prompt_id for item in listed):
                    return True
                time.sleep(0.2)
        except UnreachableError:
            return False
        return False


def _close(ws: Any) -> None:
    """Close a websocket (or None) quietly; returns None to clear the caller's reference."""
    if ws is not None:
        try:
            ws.close(timeout=1)
        except Exception:  # closing a dead socket can fail in many ways; nothing to do
            pass
    return None
