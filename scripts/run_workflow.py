"""Run a workflow headless: in this process, or against a running ComfyUI server.

    # in-process (ComfyUI found through COMFYUI_PATH, or the ComfyUI holding this pack, or ~/ComfyUI)
    python scripts/run_workflow.py workflows/api/instruct_edit_sd15.json \\
        --image photo.jpg --instruction "make it a snowy winter day" --seed 7 --output winter.png

    # against a server started with `python main.py` (default http://127.0.0.1:8188)
    python scripts/run_workflow.py workflows/api/instruct_edit_sd15.json --server http://127.0.0.1:8188 \\
        --image photo.jpg --instruction "make it a snowy winter day" --output winter.png

The workflow may be API format or UI format (converted with the node schemas). Overrides find their
nodes by title (Instruction, Prompt, Negative, Input image, Reference image, Save) or by input
name (seed, steps, text_cfg, image_cfg); ``--set NODE.INPUT=VALUE`` sets anything (NODE is an id or a
title, VALUE is JSON or plain text). The output is written only when the run succeeded, through a
temporary file, so a failed or interrupted run never leaves a half-written image. Exit codes: 0 ok,
2 bad workflow or input (validation, missing node type or model file), 3 execution error,
4 server unreachable, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import model_files  # noqa: E402
import workflow_format as wf  # noqa: E402

EXIT_OK, EXIT_INPUT, EXIT_EXECUTION, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 2, 3, 4, 130
SEED_INPUTS = ("seed", "noise_seed")
SAMPLER_TYPES = ("InstructKSampler", "InstructGuider")


class RunError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# ---- overrides ----------------------------------------------------------------------------------


def _by_title(api: dict, title: str) -> list[str]:
    return [k for k, n in api.items() if n.get("_meta", {}).get("title") == title]


def _set_titled(api: dict, title: str, name: str, value: Any, required: bool = True) -> None:
    ids = _by_title(api, title)
    if not ids and required:
        raise RunError(f"the workflow has no node titled '{title}' to take this option", EXIT_INPUT)
    for node_id in ids:
        api[node_id]["inputs"][name] = value


def _set_inputs(api: dict, names: tuple[str, ...], value: Any, types: Optional[tuple[str, ...]] = None) -> int:
    count = 0
    for node in api.values():
        if types is not None and node["class_type"] not in types:
            continue
        for name in names:
            if name in node["inputs"] and not isinstance(node["inputs"][name], list):
                node["inputs"][name] = value
                count += 1
    return count


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(api: dict, opts: argparse.Namespace, place_image: Callable[[str], str]) -> dict:
    """Apply the command-line overrides; ``place_image(path)`` makes a file loadable and returns its name."""
    api = json.loads(json.dumps(api))
    adapters = [n for n in api.values() if n["class_type"] == "IPAdapterInstructApply"]
    if opts.instruction is not None:
        _set_titled(api, "Instruction", "text", opts.instruction)
        if not _by_title(api, "Prompt"):
            for node in adapters:  # the adapter reads the same text as the generation
                node["inputs"]["prompt"] = opts.instruction
    if opts.prompt is not None:
        _set_titled(api, "Prompt", "text", opts.prompt, required=not adapters)
        for node in adapters:
            node["inputs"]["prompt"] = opts.prompt
    if opts.negative is not None:
        _set_titled(api, "Negative", "text", opts.negative)
        for node in adapters:
            node["inputs"]["negative_prompt"] = opts.negative
    for flag, title in ((opts.image, "Input image"), (opts.reference, "Reference image")):
        if flag is not None:
            if not Path(flag).is_file():
                raise RunError(f"image file not found: {flag}", EXIT_INPUT)
            _set_titled(api, title, "image", place_image(flag))
    if opts.seed is not None and not _set_inputs(api, SEED_INPUTS, opts.seed):
        raise RunError("the workflow has no seed input", EXIT_INPUT)
    if opts.steps is not None and not _set_inputs(api, ("steps",), opts.steps):
        raise RunError("the workflow has no steps input", EXIT_INPUT)
    if opts.text_cfg is not None and not _set_inputs(api, ("text_cfg",), opts.text_cfg, SAMPLER_TYPES):
        raise RunError("the workflow has no Instruct KSampler / Instruct Guider for --text-cfg", EXIT_INPUT)
    if opts.image_cfg is not None and not _set_inputs(api, ("image_cfg",), opts.image_cfg, SAMPLER_TYPES):
        raise RunError("the workflow has no Instruct KSampler / Instruct Guider for --image-cfg", EXIT_INPUT)
    if opts.model is not None:
        loaders = [n for n in api.values() if n["class_type"] in ("InstructUNetLoader", "CheckpointLoaderSimple")]
        if not loaders:
            raise RunError("the workflow has no model loader for --model", EXIT_INPUT)
        key = "model_name" if loaders[0]["class_type"] == "InstructUNetLoader" else "ckpt_name"
        loaders[0]["inputs"][key] = opts.model
    for item in opts.set or []:
        target, sep, value = item.partition("=")
        node_ref, dot, name = target.rpartition(".")
        if not sep or not dot:
            raise RunError(f"--set {item!r}: use NODE.INPUT=VALUE", EXIT_INPUT)
        ids = [node_ref] if node_ref in api else _by_title(api, node_ref)
        if not ids:
            raise RunError(f"--set {item!r}: no node with id or title '{node_ref}'", EXIT_INPUT)
        for node_id in ids:
            api[node_id]["inputs"][name] = _parse_value(value)
    return api


def save_node(api: dict) -> str:
    titled = [k for k in _by_title(api, "Save") if api[k]["class_type"] in ("SaveImage", "PreviewImage")]
    saves = titled or [k for k, n in api.items() if n["class_type"] == "SaveImage"]
    if not saves:
        raise RunError("the workflow has no SaveImage node, so there is no image to write", EXIT_INPUT)
    return saves[0]


def write_outputs(images: list[bytes], output: Path) -> list[Path]:
    """Write atomically: a temporary file beside the target, renamed once complete."""
    output.parent.mkdir(parents=True, exist_ok=True)
    targets = [output] if len(images) == 1 else [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(len(images))]
    for data, target in zip(images, targets):
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=str(target.parent))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    return targets


def format_node_errors(node_errors: dict, api: dict) -> str:
    lines = []
    for node_id, info in (node_errors or {}).items():
        kind = info.get("class_type") or api.get(node_id, {}).get("class_type", "?")
        for err in info.get("errors", []):
            detail = err.get("details") or ""
            lines.append(f"  node {node_id} ({kind}): {err.get('message', '')}{': ' + detail if detail else ''}")
    return "\n".join(lines)


class Progress:
    """A one-line text progress bar on stderr."""

    def __init__(self, stream=None) -> None:
        self._stream = stream

    @property
    def stream(self):
        return self._stream or sys.stderr

    def __call__(self, value: int, total: int, node: Any = None) -> None:
        width = 30
        filled = int(width * value / max(total, 1))
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {value}/{total} (node {node})")
        if value >= total:
            self.stream.write("\n")
        self.stream.flush()


# ---- in-process ---------------------------------------------------------------------------------


def run_in_process(comfy: Any, api: dict, progress: Optional[Callable] = None) -> list[bytes]:
    """Validate and execute on an InProcessComfy; the saved images' bytes."""
    import comfy.utils as comfy_utils

    missing = sorted({n["class_type"] for n in api.values()} - set(comfy.nodes.NODE_CLASS_MAPPINGS))
    if missing:
        raise RunError(
            f"node types not available in this ComfyUI: {', '.join(missing)}. In-process runs load ComfyUI's core "
            "nodes and this pack only; run against a server that has the other packs (--server URL).",
            EXIT_INPUT,
        )
    ok, error, outputs, node_errors = comfy.validate(api)
    if not ok:
        raise RunError(f"the workflow failed validation: {error.get('message', error)}\n{format_node_errors(node_errors, api)}", EXIT_INPUT)
    if progress is not None:
        comfy_utils.set_progress_bar_global_hook(lambda value, total, preview=None, node_id=None: progress(value, total, node_id))
    try:
        executor, server = comfy.execute(api, outputs)
    finally:
        comfy_utils.set_progress_bar_global_hook(None)
    for event, data in executor.status_messages:
        if event == "execution_interrupted":
            raise RunError("the run was interrupted", EXIT_INTERRUPTED)
        if event == "execution_error":
            raise RunError(
                f"node {data.get('node_id')} ({data.get('node_type')}) failed: {data.get('exception_message', '').strip()}", EXIT_EXECUTION
            )
    save = save_node(api)
    images = executor.history_result["outputs"].get(save, {}).get("images", [])
    out_dir = Path(comfy.folder_paths.get_output_directory())
    return [(out_dir / img["subfolder"] / img["filename"]).read_bytes() for img in images]


def in_process_main(workflow: dict, opts: argparse.Namespace) -> list[bytes]:
    from comfy_inprocess import InProcessComfy, find_comfyui

    root, how = find_comfyui()
    if root is None:
        raise RunError(f"cannot run in-process: {how}; or pass --server", EXIT_INPUT)
    work = Path(tempfile.mkdtemp(prefix="instruct-run-"))
    try:
        import torch

        comfy = InProcessComfy(root, work, cpu=not torch.cuda.is_available())
        for path in [p for p in (opts.extra_model_paths, str(root / "extra_model_paths.yaml")) if p and Path(p).is_file()]:
            import utils.extra_config

            utils.extra_config.load_extra_path_config(path)
        api = workflow if not wf.is_ui(workflow) else wf.ui_to_api(workflow, comfy.all_object_info())

        def place(path: str) -> str:
            name = f"{uuid.uuid4().hex[:8]}_{Path(path).name}"
            shutil.copy(path, Path(comfy.folder_paths.get_input_directory()) / name)
            return name

        api = apply_overrides(api, opts, place)
        try:
            model_files.ensure_models(api, comfy.folder_paths, opts.download_missing, opts.models_manifest)
        except model_files.ModelFilesError as exc:
            raise RunError(str(exc), EXIT_INPUT) from exc
        return run_in_process(comfy, api, None if opts.quiet else Progress())
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- server -------------------------------------------------------------------------------------


class Server:
    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.timeout_total = timeout
        self.client_id = uuid.uuid4().hex

    def request(self, path: str, data: Optional[bytes] = None, headers: Optional[dict] = None) -> Any:
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                payload = json.loads(body)
            except ValueError:
                payload = {"error": {"message": body.decode(errors="replace")}}
            payload["_status"] = exc.code
            return payload
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            raise RunError(
                f"ComfyUI server at {self.url} is not reachable ({exc}): start it, check the address, "
                "or run without --server to run in-process",
                EXIT_UNREACHABLE,
            ) from exc
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def upload(self, path: str) -> str:
        boundary = uuid.uuid4().hex
        name = Path(path).name
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + Path(path).read_bytes()
            + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n'.encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        result = self.request("/upload/image", b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        if not isinstance(result, dict) or "name" not in result:
            raise RunError(f"uploading {path} failed: {result}", EXIT_INPUT)
        return f"{result['subfolder']}/{result['name']}" if result.get("subfolder") else result["name"]

    def wait(self, prompt_id: str, progress: Optional[Callable], deadline: float) -> dict:
        """Follow the run over the websocket when websocket-client is installed, else poll /history."""
        try:
            import websocket  # websocket-client
        except ImportError:
            websocket = None
        if websocket is not None:
            ws_url = self.url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
            ws = websocket.create_connection(ws_url, timeout=self.timeout)
            try:
                while time.time() < deadline:
                    try:
                        message = ws.recv()
                    except websocket.WebSocketTimeoutException:
                        if self._finished(prompt_id):
                            break
                        continue
                    if not isinstance(message, str):
                        continue  # binary frames are previews
                    event = json.loads(message)
                    data = event.get("data", {})
                    if data.get("prompt_id") not in (None, prompt_id):
                        continue
                    kind = event.get("type")
                    if kind == "progress" and progress is not None:
                        progress(data["value"], data["max"], data.get("node"))
                    elif kind in ("execution_error", "execution_interrupted"):
                        break
                    elif kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                        break
            finally:
                ws.close()
        while time.time() < deadline:
            history = self._finished(prompt_id)
            if history:
                return history
            time.sleep(0.25)
        raise RunError(f"the run did not finish within {self.timeout_total:.0f} s", EXIT_EXECUTION)

    def _finished(self, prompt_id: str) -> Optional[dict]:
        history = self.request(f"/history/{prompt_id}")
        entry = history.get(prompt_id) if isinstance(history, dict) else None
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        if entry and entry.get("status", {}).get("status_str") in ("error", "success"):
            return entry
        return None


def server_main(workflow: dict, opts: argparse.Namespace) -> list[bytes]:
    server = Server(opts.server, timeout=30.0)
    object_info = server.request("/object_info")
    api = workflow if not wf.is_ui(workflow) else wf.ui_to_api(workflow, object_info)
    missing = sorted({n["class_type"] for n in api.values()} - set(object_info))
    if missing:
        raise RunError(
            f"the server at {opts.server} lacks node types: {', '.join(missing)}. Install ComfyUI-Instruct "
            "into its custom_nodes (and restart it).",
            EXIT_INPUT,
        )
    api = apply_overrides(api, opts, server.upload)
    save = save_node(api)
    answer = server.request(
        "/prompt", json.dumps({"prompt": api, "client_id": server.client_id}).encode(), {"Content-Type": "application/json"}
    )
    if "prompt_id" not in answer:
        error = answer.get("error", {})
        message = error.get("message", error) if isinstance(error, dict) else error
        raise RunError(f"the server refused the workflow: {message}\n{format_node_errors(answer.get('node_errors', {}), api)}", EXIT_INPUT)
    prompt_id = answer["prompt_id"]
    server.timeout_total = opts.timeout
    try:
        entry = server.wait(prompt_id, None if opts.quiet else Progress(), time.time() + opts.timeout)
    except KeyboardInterrupt:
        server.request("/interrupt", json.dumps({"prompt_id": prompt_id}).encode(), {"Content-Type": "application/json"})
        raise RunError("interrupted; the server was asked to stop the run", EXIT_INTERRUPTED)
    for event, data in entry.get("status", {}).get("messages", []):
        if event == "execution_interrupted":
            raise RunError("the run was interrupted on the server", EXIT_INTERRUPTED)
        if event == "execution_error":
            raise RunError(
                f"node {data.get('node_id')} ({data.get('node_type')}) failed: {data.get('exception_message', '').strip()}", EXIT_EXECUTION
            )
    images = entry.get("outputs", {}).get(save, {}).get("images", [])
    out = []
    for img in images:
        query = urllib.parse.urlencode({"filename": img["filename"], "subfolder": img["subfolder"], "type": img["type"]})
        out.append(server.request(f"/view?{query}"))
    return out


# ---- command line -------------------------------------------------------------------------------


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflow", help="workflow JSON (API or UI format)")
    ap.add_argument("--output", "-o", required=True, help="where to write the image (batches: name_0.png, name_1.png, …)")
    ap.add_argument("--server", help="URL of a running ComfyUI (e.g. http://127.0.0.1:8188); default: run in-process")
    ap.add_argument("--image", help="input image (node titled 'Input image')")
    ap.add_argument("--reference", help="reference image for IPAdapter-Instruct (node titled 'Reference image')")
    ap.add_argument("--instruction", help="the edit instruction (node titled 'Instruction')")
    ap.add_argument("--prompt", help="the prompt (node titled 'Prompt'; also IPAdapter-Instruct's prompt)")
    ap.add_argument("--negative", help="the negative prompt (node titled 'Negative')")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--text-cfg", type=float)
    ap.add_argument("--image-cfg", type=float)
    ap.add_argument("--model", help="model file name as the loader lists it, e.g. checkpoints/my-ip2p.safetensors")
    ap.add_argument("--set", action="append", metavar="NODE.INPUT=VALUE", help="set any input (repeatable)")
    ap.add_argument("--extra-model-paths", help="extra_model_paths.yaml for in-process runs")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for a server run")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    model_files.add_arguments(ap)
    return ap.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    opts = parse_args(argv)
    try:
        try:
            workflow = json.loads(Path(opts.workflow).read_text())
        except (OSError, ValueError) as exc:
            raise RunError(f"cannot read workflow {opts.workflow}: {exc}", EXIT_INPUT) from exc
        images = (server_main if opts.server else in_process_main)(workflow, opts)
        if not images:
            raise RunError("the run produced no image", EXIT_EXECUTION)
        for path in write_outputs(images, Path(opts.output)):
            print(f"wrote {path}")
        return EXIT_OK
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
