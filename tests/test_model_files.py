"""Model files of a prompt (headless/model_files): which are missing, the message that says where
to get them, and --download-missing against a real HTTP server on 127.0.0.1 (Range requests, a
dropped connection resumed, a corrupt download refused)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from instruct_harness import PACK_DIR
from instruct_servers import file_server

from headless.errors import InputError
from headless.model_files import check as mf
from headless.model_files import download as dl
from headless.model_files.manifest import DEFAULT_MANIFEST, ModelEntry, ModelManifest

PAYLOAD = bytes(range(256)) * 1024 + b"tail"  # 262 148 bytes: several chunks
SD15 = PACK_DIR / "workflows" / "api" / "instruct_edit_sd15.json"
LORA = PACK_DIR / "workflows" / "api" / "instruct_edit_lora.json"


@pytest.fixture
def server():
    with file_server() as srv:
        yield srv


def source(server, data: bytes = PAYLOAD, **changes) -> ModelEntry:
    fields = dict(url=server.url("/tiny.bin"), page="https://example.invalid/tiny", sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    fields.update(changes)
    return ModelEntry(name="tiny.bin", directory="loras", gated=False, note="", **fields)


# ---- downloads ---------------------------------------------------------------------------------------


def test_a_complete_download_is_verified_and_renamed(server, tmp_path, capsys):
    server.files["/tiny.bin"] = PAYLOAD
    target = tmp_path / "loras" / "tiny.bin"
    assert dl.download(server.url("/tiny.bin"), target, source(server)) == target
    assert target.read_bytes() == PAYLOAD
    assert not (tmp_path / "loras" / "tiny.bin.part").exists()
    assert server.requests == [("/tiny.bin", None, None)]
    bar = capsys.readouterr().err.rsplit("\r", 1)[-1]
    assert bar.startswith("downloading tiny.bin: 100%") and "256k/256k" in bar, bar  # tqdm's bar, in KiB


def test_a_dropped_connection_is_resumed_with_a_range_request(server, tmp_path):
    server.files["/tiny.bin"] = PAYLOAD
    server.drop_after["/tiny.bin"] = 100_000
    target = tmp_path / "tiny.bin"
    dl.download(server.url("/tiny.bin"), target, source(server))
    assert target.read_bytes() == PAYLOAD
    assert server.requests == [("/tiny.bin", None, None), ("/tiny.bin", "bytes=100000-", None)]


def test_a_part_left_by_an_earlier_run_is_continued(server, tmp_path):
    """A run whose every attempt is cut leaves <name>.part (nothing under the real name); the next run
    asks only for the rest."""
    server.files["/tiny.bin"] = PAYLOAD
    server.drop_always["/tiny.bin"] = 50_000
    target, part = tmp_path / "tiny.bin", tmp_path / "tiny.bin.part"
    with pytest.raises(mf.ModelFilesError, match="rerun with --download-missing to resume"):
        dl.download(server.url("/tiny.bin"), target, source(server))
    received = dl.ATTEMPTS * 50_000
    assert not target.exists() and part.stat().st_size == received
    assert part.read_bytes() == PAYLOAD[:received]
    server.drop_always.clear()
    server.requests.clear()
    dl.download(server.url("/tiny.bin"), target, source(server))
    assert target.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests == [("/tiny.bin", f"bytes={received}-", None)]


def test_a_server_without_range_support_restarts_from_the_start(server, tmp_path):
    server.files["/tiny.bin"] = PAYLOAD
    server.ignore_range = True
    (tmp_path / "tiny.bin.part").write_bytes(PAYLOAD[:1000])
    dl.download(server.url("/tiny.bin"), tmp_path / "tiny.bin", source(server))
    assert (tmp_path / "tiny.bin").read_bytes() == PAYLOAD


def test_a_corrupt_download_is_refused_and_deleted(server, tmp_path):
    corrupt = bytearray(PAYLOAD)
    corrupt[5000] ^= 0xFF
    server.files["/tiny.bin"] = bytes(corrupt)
    target = tmp_path / "tiny.bin"
    with pytest.raises(mf.ModelFilesError) as err:
        dl.download(server.url("/tiny.bin"), target, source(server))
    assert f"its SHA-256 is {hashlib.sha256(bytes(corrupt)).hexdigest()}, the published one {hashlib.sha256(PAYLOAD).hexdigest()}" in str(
        err.value
    )
    assert "The partial file was deleted" in str(err.value)
    assert not target.exists() and not (tmp_path / "tiny.bin.part").exists()


def test_a_download_of_the_wrong_size_is_refused(server, tmp_path):
    server.files["/tiny.bin"] = PAYLOAD[:-1]
    with pytest.raises(mf.ModelFilesError, match=f"it is {len(PAYLOAD) - 1} bytes, the published file {len(PAYLOAD)}"):
        dl.download(server.url("/tiny.bin"), tmp_path / "tiny.bin", source(server, sha256=None))
    assert not list(tmp_path.iterdir())


def test_a_missing_url_is_an_error_naming_the_url(server, tmp_path):
    with pytest.raises(mf.ModelFilesError, match=r"cannot download http://127\.0\.0\.1:\d+/nothing\.bin: HTTP 404"):
        dl.download(server.url("/nothing.bin"), tmp_path / "nothing.bin", None)


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
        mf.ensure_models([api], folder_paths, manifest=ModelManifest.load(manifest))
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
    assert mf.ensure_models([api], folder_paths, manifest=ModelManifest.load(manifest)) == []


def gated_manifest(server, tmp_path: Path, data: bytes) -> Path:
    entry = {"directory": "checkpoints", "url": server.url("/cosxl"), "page": "https://host.invalid/cosxl", "gated": True}
    return manifest_file(tmp_path, {"cosxl-fresh.safetensors": {**entry, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}})


GATED = {"1": {"class_type": "InstructUNetLoader", "inputs": {"model_name": "checkpoints/cosxl-fresh.safetensors"}}}


def test_a_gated_file_without_a_token_says_where_to_accept_the_licence(comfy, server, tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.delenv(dl.TOKEN_ENV, raising=False)
    manifest = ModelManifest.load(gated_manifest(server, tmp_path, PAYLOAD))
    with pytest.raises(mf.ModelFilesError) as err:
        mf.ensure_models([GATED], folder_paths, download_missing=True, manifest=manifest)
    assert "It is gated: log in on https://host.invalid/cosxl, accept the licence" in str(err.value)
    assert "or set HF_TOKEN to a Hugging Face token of the account that accepted it and rerun with --download-missing" in str(err.value)
    assert server.requests == []
    monkeypatch.setenv(dl.TOKEN_ENV, "hf_secret")  # a token, but the file is not on Hugging Face: never sent there
    with pytest.raises(mf.ModelFilesError, match="It is gated"):
        mf.ensure_models([GATED], folder_paths, download_missing=True, manifest=manifest)
    assert server.requests == []


def test_a_gated_file_is_fetched_with_the_hf_token_which_never_follows_a_redirect(comfy, server, tmp_path, monkeypatch):
    """The file server stands in for Hugging Face (its host is allowed the token for this test only)."""
    import folder_paths

    monkeypatch.setattr(dl, "TOKEN_HOSTS", dl.TOKEN_HOSTS | {"127.0.0.1"})
    monkeypatch.setenv(dl.TOKEN_ENV, "hf_wrong")
    server.files["/cosxl"] = PAYLOAD
    server.needs_token = "hf_secret"
    manifest = ModelManifest.load(gated_manifest(server, tmp_path, PAYLOAD))
    with pytest.raises(
        mf.ModelFilesError, match="Hugging Face refused the token in HF_TOKEN .*HTTP 401.*accept the licence on https://host.invalid/cosxl"
    ):
        mf.ensure_models([GATED], folder_paths, download_missing=True, manifest=manifest, progress=False)
    monkeypatch.setenv(dl.TOKEN_ENV, "hf_secret")
    (fetched,) = mf.ensure_models([GATED], folder_paths, download_missing=True, manifest=manifest, progress=False)
    try:
        assert fetched.read_bytes() == PAYLOAD and fetched.parent == Path(folder_paths.get_folder_paths("checkpoints")[0])
        assert server.requests[-1] == ("/cosxl", None, "Bearer hf_secret")
    finally:
        fetched.unlink()
    server.needs_token = None  # Hugging Face answers with a signed CDN address, which must not see the token
    server.redirects["/cosxl"] = server.url("/cdn/cosxl")
    server.files["/cdn/cosxl"] = PAYLOAD
    server.requests.clear()
    (fetched,) = mf.ensure_models([GATED], folder_paths, download_missing=True, manifest=manifest, progress=False)
    fetched.unlink()
    assert server.requests == [("/cosxl", None, "Bearer hf_secret"), ("/cdn/cosxl", None, None)]


def test_a_file_not_in_the_manifest_says_so(comfy, tmp_path):
    import folder_paths

    api = {"1": {"class_type": "LoraLoader", "inputs": {"lora_name": "unknown-lora.safetensors"}}}
    with pytest.raises(mf.ModelFilesError, match="'unknown-lora.safetensors' .*'loras' folder.*\n  It is not in the pack's model manifest"):
        mf.ensure_models([api], folder_paths, download_missing=True, manifest=ModelManifest.load(manifest_file(tmp_path, {})))


def test_the_shipped_manifest_covers_the_main_job_and_puts_files_where_the_loaders_look():
    """Where the manifest exists: every published file of the shipped API workflows that it lists sits in the
    folder its loader searches, and the main job's files are all listed (placeholders such as the merge's
    'my_sd15_finetune' are the user's own files)."""
    if not DEFAULT_MANIFEST.is_file():
        pytest.skip(f"{DEFAULT_MANIFEST} is not in this checkout")
    manifest = ModelManifest.load()
    for path in sorted((PACK_DIR / "workflows" / "api").glob("*.json")):
        for f in mf.referenced_files(json.loads(path.read_text())):
            entry = manifest.source_of(f.name)
            if entry is not None:
                assert entry.directory == f.folder, f"{path.name}: {f.name}"
    for f in mf.referenced_files(json.loads(SD15.read_text())):
        source = manifest.source_of(f.name)
        assert source is not None and source.url and not source.gated, f"the main job's {f.name} cannot be fetched"


# ---- the runner ------------------------------------------------------------------------------------------


def run_cli(comfy, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMFYUI_PATH": str(comfy.root)}
    return subprocess.run(
        [sys.executable, str(PACK_DIR / "scripts" / "run_workflow.py"), *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.mark.subprocess
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

    ran = run_cli(comfy, tmp_path, *common, "--download-missing")
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert (fresh / "loras" / "fresh-lora.safetensors").read_bytes() == lora
    assert not (fresh / "loras" / "fresh-lora.safetensors.part").exists()
    assert "downloading fresh-lora.safetensors: 100%" in ran.stderr
    assert (tmp_path / "out.png").read_bytes()[:4] == b"\x89PNG"


# ---- the manifest ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry, expect",
    [
        ({"url": "https://x.invalid/a"}, r"models\['a.bin'\].directory must name a ComfyUI model folder"),
        ({"directory": "loras", "sha256": "abc"}, r"models\['a.bin'\].sha256 must be 64 hex digits or null, not 'abc'"),
        ({"directory": "loras", "size": "2 GB"}, r"models\['a.bin'\].size must be a positive number of bytes or null"),
        ({"directory": "loras", "url": 5}, r"models\['a.bin'\].url must be text or null"),
    ],
)
def test_a_malformed_manifest_entry_is_named_with_its_file(tmp_path, entry, expect):
    with pytest.raises(InputError, match=expect):  # the user's file: exit 2
        ModelManifest.load(manifest_file(tmp_path, {"a.bin": entry}))


def test_the_shipped_manifest_is_typed_and_its_published_hashes_are_sha256():
    manifest = ModelManifest.load()
    assert len(list(manifest)) >= 6 and manifest.path == DEFAULT_MANIFEST
    main_job = manifest["instruct-pix2pix-00-22000.safetensors"]
    assert main_job.directory == "checkpoints" and main_job.size == 7703416451 and len(main_job.sha256) == 64
    assert manifest.match("checkpoints/instruct-pix2pix-00-22000.safetensors") is main_job
    assert manifest.match("loras/instruct-pix2pix-00-22000.safetensors") is None  # another folder: not this file
