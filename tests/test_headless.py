"""The headless runner: in-process (function and real command line) and against a real ComfyUI
server (POST /prompt, websocket progress, /history, /view), with every failure it must report."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from instruct_harness import PACK_DIR

sys.path.insert(0, str(PACK_DIR / "scripts"))
import run_workflow as runner  # noqa: E402

WORKFLOW = PACK_DIR / "workflows" / "api" / "instruct_edit_sd15.json"
TINY = "checkpoints/tiny-ip2p-sd15.safetensors"


def opts(*extra: str, output: str = "out.png") -> object:
    return runner.parse_args([str(WORKFLOW), "--output", output, *extra])


def picture(tmp_path: Path, seed: int = 0) -> str:
    import numpy as np
    from PIL import Image

    path = tmp_path / f"in{seed}.png"
    Image.fromarray((np.random.default_rng(seed).random((48, 64, 3)) * 255).astype("uint8")).save(path)
    return str(path)


def test_overrides_land_on_the_titled_nodes(tmp_path):
    api = json.loads(WORKFLOW.read_text())
    placed = []
    out = runner.apply_overrides(
        api,
        opts(
            "--instruction",
            "add fireworks",
            "--negative",
            "blurry",
            "--seed",
            "5",
            "--steps",
            "3",
            "--text-cfg",
            "6.5",
            "--image-cfg",
            "1.2",
            "--model",
            TINY,
            "--image",
            picture(tmp_path),
            "--set",
            "Save.filename_prefix=x",
        ),
        lambda p: placed.append(p) or "placed.png",
    )
    by_title = {n.get("_meta", {}).get("title"): n for n in out.values()}
    assert by_title["Instruction"]["inputs"]["text"] == "add fireworks"
    assert by_title["Negative"]["inputs"]["text"] == "blurry"
    assert by_title["Input image"]["inputs"]["image"] == "placed.png" and placed
    assert by_title["Save"]["inputs"]["filename_prefix"] == "x"
    sampler = next(n for n in out.values() if n["class_type"] == "InstructKSampler")
    assert (sampler["inputs"]["seed"], sampler["inputs"]["steps"], sampler["inputs"]["text_cfg"], sampler["inputs"]["image_cfg"]) == (
        5,
        3,
        6.5,
        1.2,
    )
    assert next(n for n in out.values() if n["class_type"] == "InstructUNetLoader")["inputs"]["model_name"] == TINY
    assert api["2"]["inputs"]["text"] != "add fireworks"  # the loaded workflow is not modified


def test_override_errors_name_what_is_missing(tmp_path):
    api = json.loads(WORKFLOW.read_text())
    with pytest.raises(runner.RunError, match="no node titled 'Reference image'"):
        runner.apply_overrides(api, opts("--reference", picture(tmp_path)), lambda p: p)
    with pytest.raises(runner.RunError, match="image file not found"):
        runner.apply_overrides(api, opts("--image", str(tmp_path / "nope.png")), lambda p: p)
    with pytest.raises(runner.RunError, match="use NODE.INPUT=VALUE"):
        runner.apply_overrides(api, opts("--set", "seed"), lambda p: p)


def test_outputs_are_written_atomically(tmp_path):
    target = tmp_path / "a" / "out.png"
    assert runner.write_outputs([b"one"], target) == [target] and target.read_bytes() == b"one"
    paths = runner.write_outputs([b"x", b"y"], tmp_path / "batch.png")
    assert [p.name for p in paths] == ["batch_0.png", "batch_1.png"]
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left behind


def test_in_process_run_of_a_shipped_workflow(comfy, tiny, tmp_path):
    import folder_paths

    def place(path):
        name = Path(path).name
        (Path(folder_paths.get_input_directory()) / name).write_bytes(Path(path).read_bytes())
        return name

    api = runner.apply_overrides(
        json.loads(WORKFLOW.read_text()), opts("--model", TINY, "--image", picture(tmp_path), "--steps", "1"), place
    )
    steps = []
    images = runner.run_in_process(comfy, api, progress=lambda v, t, n: steps.append((v, t)))
    assert len(images) == 1 and images[0][:4] == b"\x89PNG"
    assert (1, 1) in steps


def test_in_process_validation_and_missing_model_errors(comfy, tiny):
    api = json.loads(WORKFLOW.read_text())
    with pytest.raises(runner.RunError) as info:
        runner.run_in_process(comfy, api)  # the published model file is not installed here
    assert info.value.code == runner.EXIT_INPUT
    assert "instruct-pix2pix-00-22000.safetensors" in str(info.value) and "InstructUNetLoader" in str(info.value)
    api["6"]["class_type"] = "NoSuchSampler"
    with pytest.raises(runner.RunError, match="not available in this ComfyUI: NoSuchSampler"):
        runner.run_in_process(comfy, api)


def test_command_line_in_process(comfy, tiny, tmp_path):
    yaml = tmp_path / "paths.yaml"
    yaml.write_text(f"tests:\n  base_path: {comfy.models_dir}\n  checkpoints: checkpoints\n")
    out = tmp_path / "cli.png"
    env = {**os.environ, "COMFYUI_PATH": str(comfy.root)}
    proc = subprocess.run(
        [
            sys.executable,
            str(PACK_DIR / "scripts" / "run_workflow.py"),
            str(WORKFLOW),
            "--model",
            TINY,
            "--image",
            picture(tmp_path),
            "--instruction",
            "make it night",
            "--steps",
            "1",
            "--quiet",
            "--extra-model-paths",
            str(yaml),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run(
        [
            sys.executable,
            str(PACK_DIR / "scripts" / "run_workflow.py"),
            str(WORKFLOW),
            "--quiet",
            "--extra-model-paths",
            str(yaml),
            "--output",
            str(tmp_path / "bad.png"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert bad.returncode == runner.EXIT_INPUT and "instruct-pix2pix-00-22000.safetensors" in bad.stderr
    assert not (tmp_path / "bad.png").exists()


# ---- against a real server ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(comfy, tiny, tmp_path_factory):
    base = tmp_path_factory.mktemp("server")
    packs = base / "packs"
    packs.mkdir()
    (packs / "ComfyUI-Instruct").symlink_to(PACK_DIR)
    for d in ("out", "in", "user", "tmp"):
        (base / d).mkdir()
    yaml = base / "paths.yaml"
    yaml.write_text(
        f"tests:\n  base_path: {comfy.models_dir}\n  checkpoints: checkpoints\n  controlnet: controlnet\n"
        f"  loras: loras\n  custom_nodes: {packs}\n"
    )
    port = free_port()
    log = open(base / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(port),
            "--disable-api-nodes",
            "--extra-model-paths-config",
            str(yaml),
            "--output-directory",
            str(base / "out"),
            "--input-directory",
            str(base / "in"),
            "--user-directory",
            str(base / "user"),
            "--temp-directory",
            str(base / "tmp"),
        ],
        cwd=comfy.root,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI server exited: {(base / 'server.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url + "/object_info/InstructKSampler", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("ComfyUI server did not start")
        yield url, base
    finally:
        proc.terminate()  # by its own PID, never by name
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_server_run_writes_the_image(server, tmp_path, capsys):
    url, base = server
    out = tmp_path / "server.png"
    code = runner.main(
        [
            str(WORKFLOW),
            "--server",
            url,
            "--model",
            TINY,
            "--image",
            picture(tmp_path, 3),
            "--instruction",
            "make it autumn",
            "--steps",
            "2",
            "--output",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert "2/2" in captured.err  # progress from the websocket
    info = json.loads(urllib.request.urlopen(url + "/object_info").read())
    for node_id in (
        "InstructUNetLoader",
        "InstructImageConditioning",
        "InstructKSampler",
        "InstructGuider",
        "IPAdapterInstructLoader",
        "IPAdapterInstructApply",
    ):
        assert info[node_id]["description"] and all(info[node_id]["output_tooltips"])
    log = (base / "server.log").read_text()
    pack_lines = [line for line in log.splitlines() if "ComfyUI-Instruct" in line or "/work/" in line]
    assert any("seconds:" in line for line in pack_lines)  # listed among the imported custom nodes
    assert not [line for line in pack_lines if "IMPORT FAILED" in line or "Error" in line or "WARNING" in line.upper()]


@pytest.mark.parametrize(
    "extra,expect",
    [
        (["--text-cfg", "500"], "node 6 (InstructKSampler)"),
        ([], "instruct-pix2pix-00-22000.safetensors"),
        (["--set", "6.sampler_name=no_such_sampler"], "no_such_sampler"),
    ],
)
def test_server_refusals_show_the_node_level_messages(server, tmp_path, capsys, extra, expect):
    url, _ = server
    model = [] if not extra else ["--model", TINY]
    out = tmp_path / "x.png"
    code = runner.main([str(WORKFLOW), "--server", url, *model, "--image", picture(tmp_path), *extra, "--output", str(out)])
    err = capsys.readouterr().err
    assert code == runner.EXIT_INPUT and expect in err
    assert not out.exists()


def test_server_missing_node_type(server, tmp_path, capsys):
    url, _ = server
    api = json.loads(WORKFLOW.read_text())
    api["6"]["class_type"] = "NotInstalledNode"
    wf_path = tmp_path / "wf.json"
    wf_path.write_text(json.dumps(api))
    code = runner.main([str(wf_path), "--server", url, "--output", str(tmp_path / "x.png")])
    assert code == runner.EXIT_INPUT and "lacks node types: NotInstalledNode" in capsys.readouterr().err


def test_server_down_is_reported(tmp_path, capsys):
    code = runner.main([str(WORKFLOW), "--server", f"http://127.0.0.1:{free_port()}", "--output", str(tmp_path / "x.png")])
    assert code == runner.EXIT_UNREACHABLE and "not reachable" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_interrupted_run_leaves_no_output(server, tmp_path, capsys):
    url, _ = server

    def interrupt_soon():
        time.sleep(3.0)
        urllib.request.urlopen(urllib.request.Request(url + "/interrupt", data=b"{}", headers={"Content-Type": "application/json"}))

    threading.Thread(target=interrupt_soon, daemon=True).start()
    out = tmp_path / "never.png"
    code = runner.main(
        [str(WORKFLOW), "--server", url, "--model", TINY, "--image", picture(tmp_path), "--steps", "400", "--quiet", "--output", str(out)]
    )
    assert code == runner.EXIT_INTERRUPTED and "interrupted" in capsys.readouterr().err
    assert not out.exists()
