"""Model files of a prompt (scripts/model_files.py): which are missing, the message that says where
to get them, and --download-missing against a real HTTP server on 127.0.0.1 (Range requests, a
dropped connection resumed, a corrupt download refused)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from instruct_harness import PACK_DIR

from headless.model_files import check as mf

PAYLOAD = bytes(range(256)) * 1024 + b"tail"  # 262 148 bytes: several chunks
SD15 = PACK_DIR / "workflows" / "api" / "instruct_edit_sd15.json"
LORA = PACK_DIR / "workflows" / "api" / "instruct_edit_lora.json"


class FileServer(ThreadingHTTPServer):
    """Serves ``files`` with HTTP Range; ``drop_after`` cuts the next response of a path after that many
    bytes (the connection closes mid-file), ``drop_always`` every response; ``ignore_range`` answers
    every request with the whole file."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.files: dict[str, bytes] = {}
        self.drop_after: dict[str, int] = {}
        self.drop_always: dict[str, int] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class RangeHandler(BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        range_header = self.headers.get("Range")
        self.server.requests.append((self.path, range_header))
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


@pytest.fixture
def server():
    srv = FileServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)  # shutdown() waits one poll
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def source(server: FileServer, data: bytes = PAYLOAD, **changes) -> mf.Source:
    fields = dict(url=server.url("/tiny.bin"), page="https://example.invalid/tiny", sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    fields.update(changes)
    return mf.Source(gated=False, note="", **fields)


# ---- downloads ---------------------------------------------------------------------------------------


def test_a_complete_download_is_verified_and_renamed(server, tmp_path):
    server.files["/tiny.bin"] = PAYLOAD
    bar = io.StringIO()
    target = tmp_path / "loras" / "tiny.bin"
    assert mf.download(server.url("/tiny.bin"), target, source(server), stream=bar) == target
    assert target.read_bytes() == PAYLOAD
    assert not (tmp_path / "loras" / "tiny.bin.part").exists()
    assert server.requests == [("/tiny.bin", None)]
    assert "downloading tiny.bin [" in bar.getvalue() and f"{len(PAYLOAD) / 1e6:.1f}/{len(PAYLOAD) / 1e6:.1f} MB" in bar.getvalue()


def test_a_dropped_connection_is_resumed_with_a_range_request(server, tmp_path):
    server.files["/tiny.bin"] = PAYLOAD
    server.drop_after["/tiny.bin"] = 100_000
    target = tmp_path / "tiny.bin"
    mf.download(server.url("/tiny.bin"), target, source(server), stream=io.StringIO())
    assert target.read_bytes() == PAYLOAD
    assert server.requests == [("/tiny.bin", None), ("/tiny.bin", "bytes=100000-")]


def test_a_part_left_by_an_earlier_run_is_continued(server, tmp_path):
    """A run whose every attempt is cut leaves <name>.part (nothing under the real name); the next run
    asks only for the rest."""
    server.files["/tiny.bin"] = PAYLOAD
    server.drop_always["/tiny.bin"] = 50_000
    target, part = tmp_path / "tiny.bin", tmp_path / "tiny.bin.part"
    with pytest.raises(mf.ModelFilesError, match="rerun with --download-missing to resume"):
        mf.download(server.url("/tiny.bin"), target, source(server), stream=io.StringIO())
    received = mf.ATTEMPTS * 50_000
    assert not target.exists() and part.stat().st_size == received
    assert part.read_bytes() == PAYLOAD[:received]
    server.drop_always.clear()
    server.requests.clear()
    mf.download(server.url("/tiny.bin"), target, source(server), stream=io.StringIO())
    assert target.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests == [("/tiny.bin", f"bytes={received}-")]


def test_a_server_without_range_support_restarts_from_the_start(server, tmp_path):
    server.files["/tiny.bin"] = PAYLOAD
    server.ignore_range = True
    (tmp_path / "tiny.bin.part").write_bytes(PAYLOAD[:1000])
    mf.download(server.url("/tiny.bin"), tmp_path / "tiny.bin", source(server), stream=io.StringIO())
    assert (tmp_path / "tiny.bin").read_bytes() == PAYLOAD


def test_a_corrupt_download_is_refused_and_deleted(server, tmp_path):
    corrupt = bytearray(PAYLOAD)
    corrupt[5000] ^= 0xFF
    server.files["/tiny.bin"] = bytes(corrupt)
    target = tmp_path / "tiny.bin"
    with pytest.raises(mf.ModelFilesError) as err:
        mf.download(server.url("/tiny.bin"), target, source(server), stream=io.StringIO())
    assert f"its SHA-256 is {hashlib.sha256(bytes(corrupt)).hexdigest()}, the published one {hashlib.sha256(PAYLOAD).hexdigest()}" in str(
        err.value
    )
    assert "The partial file was deleted" in str(err.value)
    assert not target.exists() and not (tmp_path / "tiny.bin.part").exists()


def test_a_download_of_the_wrong_size_is_refused(server, tmp_path):
    server.files["/tiny.bin"] = PAYLOAD[:-1]
    with pytest.raises(mf.ModelFilesError, match=f"it is {len(PAYLOAD) - 1} bytes, the published file {len(PAYLOAD)}"):
        mf.download(server.url("/tiny.bin"), tmp_path / "tiny.bin", source(server, sha256=None), stream=io.StringIO())
    assert not list(tmp_path.iterdir())


def test_a_missing_url_is_an_error_naming_the_url(server, tmp_path):
    with pytest.raises(mf.ModelFilesError, match=r"cannot download http://127\.0\.0\.1:\d+/nothing\.bin: HTTP 404"):
        mf.download(server.url("/nothing.bin"), tmp_path / "nothing.bin", None, stream=io.StringIO())


# ---- which files, and the message for a missing one -----------------------------------------------------


def test_every_loader_of_the_shipped_workflows_is_known():
    """A loader the table does not know would be skipped silently: every shipped one must be in it."""
    for path in sorted((PACK_DIR / "workflows" / "api").glob("*.json")):
        for node in json.loads(path.read_text()).values():
            if "Loader" in node["class_type"]:
                assert node["class_type"] in mf.LOADER_INPUTS, f"{path.name}: {node['class_type']}"


def test_referenced_files_read_the_folder_prefix_and_skip_links():
    api = {
        "1": {"class_type": "InstructUNetLoader", "inputs": {"model_name": "checkpoints/a.safetensors"}},
        "2": {"class_type": "InstructUNetLoader", "inputs": {"model_name": "diffusers/pipe"}},
        "3": {"class_type": "LoraLoader", "inputs": {"lora_name": ["9", 0], "model": ["1", 0]}},
        "4": {"class_type": "VAELoader", "inputs": {"vae_name": "taesd"}},
        "5": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "l.safetensors", "clip_name2": "g.safetensors"}},
        "6": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
    }
    got = [(f.node_id, f.folder, f.name) for f in mf.referenced_files(api)]
    assert got == [
        ("1", "checkpoints", "a.safetensors"),
        ("2", "diffusers", "pipe"),
        ("5", "text_encoders", "l.safetensors"),
        ("5", "text_encoders", "g.safetensors"),
    ]


def manifest_file(tmp_path: Path, entries: dict) -> Path:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": entries}))
    return path


def test_a_missing_file_names_the_file_the_folder_and_where_to_get_it(comfy, tiny, tmp_path):
    import folder_paths

    api = json.loads(SD15.read_text())
    loader = next(k for k, n in api.items() if n["class_type"] == "InstructUNetLoader")
    api[loader]["inputs"]["model_name"] = "checkpoints/fresh-ip2p.safetensors"
    manifest = manifest_file(
        tmp_path,
        {
            "fresh-ip2p.safetensors": {
                "directory": "checkpoints",
                "url": "https://host.invalid/fresh-ip2p.safetensors",
                "page": "https://host.invalid/p",
                "sha256": None,
                "size": 2_000_000_000,
                "gated": False,
            }
        },
    )
    with pytest.raises(mf.ModelFilesError) as err:
        mf.ensure_models(api, folder_paths, manifest_path=manifest)
    message = str(err.value)
    checkpoints = folder_paths.get_folder_paths("checkpoints")
    assert (
        f"missing model file 'fresh-ip2p.safetensors' (node {loader} (InstructUNetLoader.model_name)): "
        "not in ComfyUI's 'checkpoints' folder" in message
    )
    assert all(d in message for d in checkpoints)
    assert "Get it from https://host.invalid/fresh-ip2p.safetensors, 2.00 GB (page: https://host.invalid/p)" in message
    assert f"save it as {Path(checkpoints[0]) / 'fresh-ip2p.safetensors'}" in message and "rerun with --download-missing" in message
    # present files pass: the tiny checkpoint is in the folder
    api[loader]["inputs"]["model_name"] = "checkpoints/tiny-ip2p-sd15.safetensors"
    assert mf.ensure_models(api, folder_paths, manifest_path=manifest) == []


def test_a_gated_file_says_so_and_is_not_fetched(comfy, server, tmp_path):
    import folder_paths

    api = {"1": {"class_type": "InstructUNetLoader", "inputs": {"model_name": "checkpoints/cosxl-fresh.safetensors"}}}
    manifest = manifest_file(
        tmp_path,
        {
            "cosxl-fresh.safetensors": {
                "directory": "checkpoints",
                "url": server.url("/cosxl"),
                "page": "https://host.invalid/cosxl",
                "gated": True,
            }
        },
    )
    with pytest.raises(mf.ModelFilesError) as err:
        mf.ensure_models(api, folder_paths, download_missing=True, manifest_path=manifest)
    assert "It is gated: log in on https://host.invalid/cosxl, accept the licence" in str(err.value)
    assert "--download-missing cannot fetch gated files" in str(err.value)
    assert server.requests == []


def test_a_file_not_in_the_manifest_says_so(comfy, tmp_path):
    import folder_paths

    api = {"1": {"class_type": "LoraLoader", "inputs": {"lora_name": "unknown-lora.safetensors"}}}
    with pytest.raises(mf.ModelFilesError, match="'unknown-lora.safetensors' .*'loras' folder.*\n  It is not in the pack's model manifest"):
        mf.ensure_models(api, folder_paths, download_missing=True, manifest_path=manifest_file(tmp_path, {}))


def test_the_shipped_manifest_covers_the_main_job_and_puts_files_where_the_loaders_look():
    """Where the manifest exists: every published file of the shipped API workflows that it lists sits in the
    folder its loader searches, and the main job's files are all listed (placeholders such as the merge's
    'my_sd15_finetune' are the user's own files)."""
    manifest_path = mf.DEFAULT_MANIFEST
    if not manifest_path.is_file():
        pytest.skip(f"{manifest_path} is not in this checkout")
    manifest = mf.load_manifest(manifest_path)
    raw = json.loads(manifest_path.read_text())["models"]
    for path in sorted((PACK_DIR / "workflows" / "api").glob("*.json")):
        for f in mf.referenced_files(json.loads(path.read_text())):
            if mf.source_of(f, manifest) is not None:
                assert raw[Path(f.name).name]["directory"] == f.folder, f"{path.name}: {f.name}"
    for f in mf.referenced_files(json.loads(SD15.read_text())):
        source = mf.source_of(f, manifest)
        assert source is not None and source.url and not source.gated, f"the main job's {f.name} cannot be fetched"


# ---- the runner ------------------------------------------------------------------------------------------


def run_cli(comfy, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMFYUI_PATH": str(comfy.root)}
    return subprocess.run(
        [sys.executable, str(PACK_DIR / "scripts" / "run_workflow.py"), *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_the_runner_exits_2_for_a_missing_file_and_downloads_it_when_asked(comfy, tiny, server, tmp_path):
    """A fresh machine: the LoRA the workflow names is nowhere; the runner says where to get it (exit 2),
    then fetches it from the manifest's URL into the default loras folder and runs the workflow."""
    lora = (comfy.models_dir / "loras" / "tiny-lora-sd15.safetensors").read_bytes()
    server.files["/fresh-lora.safetensors"] = lora
    manifest = manifest_file(
        tmp_path,
        {
            "fresh-lora.safetensors": {
                "directory": "loras",
                "url": server.url("/fresh-lora.safetensors"),
                "page": "https://host.invalid/lora",
                "sha256": hashlib.sha256(lora).hexdigest(),
                "size": len(lora),
                "gated": False,
            }
        },
    )
    fresh = tmp_path / "fresh-models"
    yaml = tmp_path / "paths.yaml"  # the fresh folder is the default one (where downloads go); the tests' models after it
    yaml.write_text(
        f"fresh:\n  base_path: {fresh}\n  is_default: true\n  loras: loras\n"
        f"tests:\n  base_path: {comfy.models_dir}\n  checkpoints: checkpoints\n"
    )
    api = json.loads(LORA.read_text())
    lora_node = next(k for k, n in api.items() if n["class_type"] == "LoraLoader")
    picture = comfy.input_image("fresh.png")
    common = [
        str(LORA),
        "--model",
        "checkpoints/tiny-ip2p-sd15.safetensors",
        "--set",
        f"{lora_node}.lora_name=fresh-lora.safetensors",
        "--image",
        str(comfy.work_dir / "input" / picture),
        "--steps",
        "1",
        "--extra-model-paths",
        str(yaml),
        "--models-manifest",
        str(manifest),
        "--output",
        str(tmp_path / "out.png"),
    ]
    missing = run_cli(comfy, tmp_path, *common, "--quiet")
    assert missing.returncode == 2, missing.stderr[-2000:]
    assert "missing model file 'fresh-lora.safetensors'" in missing.stderr and f"{fresh / 'loras'}" in missing.stderr
    assert f"Get it from {server.url('/fresh-lora.safetensors')}" in missing.stderr
    assert not server.requests and not (tmp_path / "out.png").exists()

    ran = run_cli(comfy, tmp_path, *common, "--quiet", "--download-missing")
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert (fresh / "loras" / "fresh-lora.safetensors").read_bytes() == lora
    assert not (fresh / "loras" / "fresh-lora.safetensors.part").exists()
    assert "downloading fresh-lora.safetensors [" in ran.stderr
    assert (tmp_path / "out.png").read_bytes()[:4] == b"\x89PNG"
