"""The headless runner: its pure parts, the in-process session (function, real command line,
interrupts, memory over many runs) and the server client against real ComfyUI servers started
here (concurrent runs, cancellation, stalls, a server that dies, an address that is not ComfyUI),
with every failure it must report and the exit code it must give."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
from typing import Any
import time
import urllib.request
from pathlib import Path

import pytest

from instruct_harness import PACK_DIR
from instruct_pictures import pixels, write_picture
from instruct_servers import free_port, start_comfyui, stop

from headless import cli
from headless.cli import exit_codes as codes
from headless.cli.parser import overrides_from, parse
from headless.errors import HeadlessError, InputError
from headless.prompts.overrides import Overrides, apply_overrides, resolve_model
from headless.runner import outputs as output_files
from headless.runner import server as server_client
from headless.runner import session as sessions

WORKFLOW = PACK_DIR / "workflows" / "api" / "instruct_edit_sd15.json"
SCRIPT = PACK_DIR / "scripts" / "run_workflow.py"
TINY = "checkpoints/tiny-ip2p-sd15.safetensors"


def opts(*extra: str, output: str = "out.png") -> Overrides:
    """The overrides a single run's command line gives (``--set`` parsed there, once)."""
    return overrides_from(parse([str(WORKFLOW), "--output", output, *extra]))


def picture(tmp_path: Path, seed: int = 0, size: tuple[int, int] = (48, 64), name: str | None = None) -> str:
    return str(write_picture(tmp_path / (name or f"in{seed}.png"), seed, size))


def write_workflow(tmp_path: Path, content) -> str:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(content))
    return str(path)


# ---- pure parts -----------------------------------------------------------------------------------


def test_overrides_land_on_the_titled_nodes(tmp_path):
    api = json.loads(WORKFLOW.read_text())
    placed = []
    out = apply_overrides(
        api,
        opts(
            *("--instruction", "add fireworks", "--negative", "blurry", "--seed", "5", "--steps", "3"),
            *("--text-cfg", "6.5", "--image-cfg", "1.2", "--model", TINY, "--image", picture(tmp_path)),
            *("--set", "Save.filename_prefix=x"),
        ),
        lambda p: placed.append(p) or "placed.png",
    )
    by_title = {n.get("_meta", {}).get("title"): n for n in out.values()}
    assert by_title["Instruction"]["inputs"]["text"] == "add fireworks"
    assert by_title["Negative"]["inputs"]["text"] == "blurry"
    assert by_title["Input image"]["inputs"]["image"] == "placed.png" and placed
    assert by_title["Save"]["inputs"]["filename_prefix"] == "x"
    sampler = next(n for n in out.values() if n["class_type"] == "InstructKSampler")
    assert [sampler["inputs"][k] for k in ("seed", "steps", "text_cfg", "image_cfg")] == [5, 3, 6.5, 1.2]
    assert next(n for n in out.values() if n["class_type"] == "InstructUNetLoader")["inputs"]["model_name"] == TINY
    assert api["2"]["inputs"]["text"] != "add fireworks"  # the loaded workflow is not modified


def test_override_errors_name_what_is_missing(tmp_path):
    api = json.loads(WORKFLOW.read_text())
    with pytest.raises(HeadlessError, match="no node titled 'Reference image'"):
        apply_overrides(api, opts("--reference", picture(tmp_path)), lambda p: p)
    with pytest.raises(HeadlessError, match="image file not found"):
        apply_overrides(api, opts("--image", str(tmp_path / "nope.png")), lambda p: p)
    with pytest.raises(HeadlessError, match="use NODE.INPUT=VALUE"):
        apply_overrides(api, opts("--set", "seed"), lambda p: p)


def test_bare_model_names_resolve_only_when_unique():
    choices = ["checkpoints/a/edit.safetensors", "checkpoints/b/edit.safetensors", "checkpoints/photo-edit.safetensors", "x.ckpt"]
    assert resolve_model("photo-edit.safetensors", choices) == "checkpoints/photo-edit.safetensors"
    assert resolve_model("x.ckpt", choices) == "x.ckpt"
    assert resolve_model("b/edit.safetensors", choices) == "checkpoints/b/edit.safetensors"
    with pytest.raises(HeadlessError, match="ambiguous.*checkpoints/a/edit.safetensors, checkpoints/b/edit.safetensors") as info:
        resolve_model("edit.safetensors", choices)
    assert isinstance(info.value, InputError)
    with pytest.raises(HeadlessError, match="no such model.*photo-edit.safetensors"):
        resolve_model("photo-edt.safetensors", choices)


@pytest.mark.parametrize(
    "content,expect",
    [
        ([{"class_type": "KSampler"}], "is list, not a workflow"),
        ({"1": {"inputs": {}}}, "node 1 has no class_type"),
        ({"1": {"class_type": "KSampler", "inputs": [1, 2]}}, r"node 1 \(KSampler\): 'inputs' must be an object"),
        ({"1": "KSampler"}, "node 1 is str"),
        ({"1": {"class_type": "KSampler", "inputs": {"cfg": float("nan")}}}, r"\.cfg is nan: inputs must be finite"),
    ],
)
def test_malformed_workflow_files_exit_2_with_a_message(tmp_path, capsys, content, expect):
    code = cli.main([write_workflow(tmp_path, content), "--output", str(tmp_path / "x.png"), "--quiet"])
    err = capsys.readouterr().err
    assert code == codes.EXIT_INPUT and re.search(expect, err), err
    assert "Traceback" not in err and not (tmp_path / "x.png").exists()


def test_unwritable_output_is_refused_before_anything_runs(tmp_path, capsys):
    assert cli.main([str(WORKFLOW), "--output", str(tmp_path)]) == codes.EXIT_INPUT  # a directory
    assert "is a directory" in capsys.readouterr().err
    blocker = tmp_path / "file.png"
    blocker.write_bytes(b"x")
    assert cli.main([str(WORKFLOW), "--output", str(blocker / "out.png")]) == codes.EXIT_INPUT  # parent is a file
    assert "cannot write --output" in capsys.readouterr().err


def test_outputs_are_written_atomically_with_the_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        target = tmp_path / "a" / "out.png"
        assert output_files.write_outputs([b"one"], target) == [target] and target.read_bytes() == b"one"
        assert stat.S_IMODE(target.stat().st_mode) == 0o640  # not mkstemp's 0600
        os.umask(0o022)
        existing = tmp_path / "existing.png"
        existing.write_bytes(b"old")
        existing.chmod(0o644)
        output_files.write_outputs([b"new"], existing)
        assert existing.read_bytes() == b"new" and stat.S_IMODE(existing.stat().st_mode) == 0o644
        paths = output_files.write_outputs([b"x", b"y"], tmp_path / "batch.png")
        assert [p.name for p in paths] == ["batch_0.png", "batch_1.png"]
    finally:
        os.umask(old)
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left behind


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "became-a-directory.png"
    target.mkdir()  # after the check, before the rename: the rename fails
    with pytest.raises(IsADirectoryError):
        output_files._write_one(b"data", target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["became-a-directory.png"]


# ---- in-process -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session(comfy, tiny):
    """The process's shared session, the one the command line's in-process runs below use too: one copy of the
    models in ComfyUI's cache for the whole file."""
    yield sessions.shared_session()
    sessions.release_shared()


def edit_prompt(session, tmp_path, *extra, seed=0, size=(48, 64)):
    return apply_overrides(
        json.loads(WORKFLOW.read_text()),
        opts("--model", TINY, "--image", picture(tmp_path, seed, size), "--steps", "1", *extra),
        session.add_image,
        session.schema,
    )


def test_session_runs_a_shipped_workflow_and_names_the_node_in_progress(session, comfy, tmp_path):
    steps = []
    result = session.run(edit_prompt(session, tmp_path), progress=lambda v, t, n, label: steps.append((v, t, n, label)))
    assert len(result.images) == 1 and result.images[0][:4] == b"\x89PNG"
    assert (1, 1, "6", "InstructKSampler") in steps  # the node's title (this one has none: its type)
    assert not list(Path(comfy.folder_paths.get_output_directory()).rglob(result.outputs["8"]["images"][0]["filename"]))


def test_session_refusals_are_exit_2(session, comfy, tmp_path):
    api = json.loads(WORKFLOW.read_text())
    with pytest.raises(HeadlessError) as info:
        session.run(api)  # the published model file is not installed here
    assert isinstance(info.value, InputError)
    assert "instruct-pix2pix-00-22000.safetensors" in str(info.value) and "InstructUNetLoader" in str(info.value)
    api["6"]["class_type"] = "NoSuchSampler"
    with pytest.raises(HeadlessError, match="not available in this ComfyUI: NoSuchSampler"):
        session.run(api)
    tiny_image = edit_prompt(session, tmp_path, size=(4, 4))  # refused while executing: still the user's input
    with pytest.raises(HeadlessError, match=r"at least 8x8 pixels") as info:
        session.run(tiny_image)
    assert isinstance(info.value, InputError)


def test_set_of_an_unknown_input_lists_the_node_inputs(session, tmp_path):
    with pytest.raises(HeadlessError, match=r"node 6 \(InstructKSampler\) has no input 'sead'; its inputs: model, .*seed, steps") as info:
        edit_prompt(session, tmp_path, "--set", "6.sead=3")
    assert isinstance(info.value, InputError)
    for bad in (["--text-cfg", "nan"], ["--set", "6.denoise=Infinity"], ["--image-cfg=-inf"]):
        with pytest.raises(HeadlessError, match="inputs must be finite") as info:
            session.run(edit_prompt(session, tmp_path, *bad))
        assert isinstance(info.value, InputError)


def test_bare_model_name_resolves_against_the_loader_list(session, tmp_path):
    api = edit_prompt(session, tmp_path, "--model", "tiny-ip2p-sd15.safetensors")
    assert api["1"]["inputs"]["model_name"] == TINY
    with pytest.raises(HeadlessError, match=r"no such model file.*similar: .*tiny-ip2p-sd15\.safetensors"):
        edit_prompt(session, tmp_path, "--model", "tiny-ip2p-sd16.safetensors")


def resident_bytes() -> int:
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_twenty_runs_load_the_model_once_and_memory_stays_flat(session, tmp_path):
    """ComfyUI's own cache keeps the loader's output: runs 2-20 report the loader as cached and get
    the same model object; resident memory after warm-up grows by less than 64 MiB over 15 runs
    (reloading the tiny checkpoint, CLIP and VAE alone would add hundreds of MiB)."""
    rss, cached_loader, models = [], [], set()
    for i in range(20):
        result = session.run(edit_prompt(session, tmp_path, seed=i))  # a new image and seed each run
        assert len(result.images) == 1
        cached_loader.append("1" in result.cached)
        models.add(id(session._executor.caches.outputs.get("1").outputs[0][0]))
        rss.append(resident_bytes())
    assert cached_loader == [cached_loader[0]] + [True] * 19
    assert len(models) == 1
    growth = rss[-1] - rss[4]
    assert growth < 64 << 20, f"resident memory grew {growth / 2**20:.0f} MiB over runs 5-20: {[r >> 20 for r in rss]}"


def test_the_entry_point_reuses_one_comfyui_per_process(comfy, tiny, tmp_path, capsys):
    from headless.runner import comfyui as comfy_inprocess

    booted = comfy_inprocess.active()
    for i in range(2):
        out = tmp_path / f"cli{i}.png"
        code = cli.main([str(WORKFLOW), "--model", TINY, "--image", picture(tmp_path, i), "--steps", "1", "--output", str(out)])
        assert code == 0, capsys.readouterr().err
        assert out.read_bytes()[:4] == b"\x89PNG"
    assert comfy_inprocess.active() is booted


def test_timeout_in_process_stops_the_run_and_the_error_has_its_own_line(comfy, tiny, tmp_path, capsys):
    warm = [str(WORKFLOW), "--model", TINY, "--image", picture(tmp_path), "--quiet", "--output", str(tmp_path / "warm.png")]
    assert cli.main(warm + ["--steps", "1"]) == 0  # the CLI's session keeps the model: the next run samples at once
    out = tmp_path / "slow.png"
    args = [str(WORKFLOW), "--model", TINY, "--image", picture(tmp_path), "--steps", "10000", "--timeout", "3", "--output", str(out)]
    assert cli.main(args) == codes.EXIT_EXECUTION
    err = capsys.readouterr().err
    assert "did not finish within 3 s" in err and re.search(r"InstructKSampler: [^\n]*\d+/10000 \[[^\n]*\n+error: ", err), err[-500:]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert "1" in sessions._SHARED._executor.caches.outputs.all_node_ids()  # the loader's model stayed cached


def spawn(*args: str, root: Path | None = None, sigint: Any = signal.SIG_DFL) -> subprocess.Popen:
    """The runner as a user starts it in a terminal: SIGINT at its default even when this pytest runs
    in the background (``cmd &`` and nohup start it, and so its children, with SIGINT ignored)."""
    env = {**os.environ, "COMFYUI_PATH": str(root)} if root is not None else None
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )


def paths_yaml(comfy, tmp_path) -> str:
    yaml = tmp_path / "paths.yaml"
    yaml.write_text(f"tests:\n  base_path: {comfy.models_dir}\n  checkpoints: checkpoints\n")
    return str(yaml)


@pytest.mark.subprocess
def test_command_line_in_process_is_quiet(comfy, tiny, tmp_path):
    out = tmp_path / "cli.png"
    common = ["--extra-model-paths", paths_yaml(comfy, tmp_path), "--quiet"]
    proc = spawn(
        str(WORKFLOW), "--model", TINY, "--image", picture(tmp_path), "--steps", "1", *common, "--output", str(out), root=comfy.root
    )
    bad = spawn(str(WORKFLOW), *common, "--output", str(tmp_path / "bad.png"), root=comfy.root)  # both start up at once
    _, stderr = proc.communicate(timeout=600)
    _, bad_stderr = bad.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-2000:]
    assert out.read_bytes()[:4] == b"\x89PNG" and stat.S_IMODE(out.stat().st_mode) == 0o666 & ~current_umask()
    assert stderr.decode().strip() == "", stderr[-2000:]  # no start-up log, no import warnings
    assert bad.returncode == codes.EXIT_INPUT and b"instruct-pix2pix-00-22000.safetensors" in bad_stderr
    assert b"Traceback" not in bad_stderr and not (tmp_path / "bad.png").exists()


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_until(stream, pattern: bytes, limit_s: float) -> bytes:
    """Read a child's stream (in a thread) until ``pattern`` shows up; what was read."""
    seen = bytearray()
    found = threading.Event()

    def pump():
        while True:
            chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(1)
            if not chunk:
                break
            seen.extend(chunk)
            if pattern in seen:
                found.set()
        found.set()

    threading.Thread(target=pump, daemon=True).start()
    found.wait(limit_s)
    return bytes(seen)


@pytest.mark.subprocess
def test_ctrl_c_in_process_stops_sampling_exit_130_no_output(comfy, tiny, tmp_path):
    out_dir = tmp_path / "out"
    out = out_dir / "never.png"
    args = [str(WORKFLOW), "--model", TINY, "--image", picture(tmp_path), "--steps", "10000", "--verbose"]
    proc = spawn(*args, "--extra-model-paths", paths_yaml(comfy, tmp_path), "--output", str(out), root=comfy.root)
    seen = read_until(proc.stderr, b"/10000 [", 600)  # sampling has started
    assert b"/10000 [" in seen, seen[-2000:]
    assert b"Total VRAM" in seen  # --verbose shows ComfyUI's start-up log
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)  # at the next step; 10000 steps would take hours
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run did not stop after Ctrl-C")
    assert proc.returncode == codes.EXIT_INTERRUPTED
    assert not out.exists() and not (out_dir.exists() and list(out_dir.iterdir()))


@pytest.mark.subprocess
def test_a_run_started_with_sigint_ignored_keeps_ignoring_it(comfy, tiny, tmp_path):
    """``cmd &`` in a script and nohup start the runner with SIGINT ignored: a Ctrl-C meant for the
    terminal's foreground job must not stop it (in-process, as in server mode and every other program)."""
    out = tmp_path / "done.png"
    args = [str(WORKFLOW), "--model", TINY, "--image", picture(tmp_path), "--steps", "40"]
    proc = spawn(*args, "--extra-model-paths", paths_yaml(comfy, tmp_path), "--output", str(out), root=comfy.root, sigint=signal.SIG_IGN)
    seen = read_until(proc.stderr, b"/40 [", 600)
    assert b"/40 [" in seen, seen[-2000:]
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run did not finish")
    assert proc.returncode == codes.EXIT_OK and out.is_file()


# ---- against a real server --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def comfyui_server(comfy, tiny, tmp_path_factory):
    base = tmp_path_factory.mktemp("server")
    proc, url = start_comfyui(comfy, base)
    try:
        yield url, base
    finally:
        stop(proc)


def post(url: str, path: str, payload) -> object:
    req = urllib.request.Request(url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    body = urllib.request.urlopen(req, timeout=30).read()
    return json.loads(body) if body[:1] == b"{" else body


def get(url: str, path: str) -> object:
    return json.loads(urllib.request.urlopen(url + path, timeout=30).read())


def wait_idle(url: str, limit_s: float = 120) -> None:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        queue = get(url, "/queue")
        if not queue["queue_running"] and not queue["queue_pending"]:
            return
        time.sleep(0.2)
    pytest.fail(f"the server is still busy: {get(url, '/queue')}")


def test_server_run_writes_the_image(comfyui_server, tmp_path, capsys):
    url, base = comfyui_server
    out = tmp_path / "server.png"
    code = cli.main(
        [str(WORKFLOW), "--server", url, "--model", TINY, "--image", picture(tmp_path, 3), "--instruction", "make it autumn"]
        + ["--steps", "2", "--output", str(out)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert re.search(r"InstructKSampler: [^\n]*2/2 \[", captured.err), captured.err  # progress from the websocket, naming the node
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
        (["--set", "6.sead=1"], "has no input 'sead'; its inputs: model,"),
        (["--text-cfg", "inf"], "inputs must be finite"),
        (["--model", "tiny-ip2p-sd15.ckpt"], "no such model file"),
    ],
)
def test_server_refusals_show_the_node_level_messages(comfyui_server, tmp_path, capsys, extra, expect):
    url, _ = comfyui_server
    model = [] if not extra else ["--model", TINY]
    out = tmp_path / "x.png"
    code = cli.main([str(WORKFLOW), "--server", url, *model, "--image", picture(tmp_path), *extra, "--output", str(out)])
    err = capsys.readouterr().err
    assert code == codes.EXIT_INPUT and expect in err, err
    assert not out.exists()


def test_server_input_error_while_executing_is_exit_2(comfyui_server, tmp_path, capsys):
    url, _ = comfyui_server
    small = picture(tmp_path, 1, size=(4, 4))
    code = cli.main([str(WORKFLOW), "--server", url, "--model", TINY, "--image", small, "--quiet", "--output", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == codes.EXIT_INPUT and "at least 8x8 pixels" in err, err


def test_server_missing_node_type(comfyui_server, tmp_path, capsys):
    url, _ = comfyui_server
    api = json.loads(WORKFLOW.read_text())
    api["6"]["class_type"] = "NotInstalledNode"
    code = cli.main([write_workflow(tmp_path, api), "--server", url, "--output", str(tmp_path / "x.png")])
    assert code == codes.EXIT_INPUT and "lacks node types: NotInstalledNode" in capsys.readouterr().err


def test_server_down_is_reported(tmp_path, capsys):
    code = cli.main([str(WORKFLOW), "--server", f"http://127.0.0.1:{free_port()}", "--output", str(tmp_path / "x.png")])
    assert code == codes.EXIT_UNREACHABLE and "not reachable" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_an_http_server_that_is_not_comfyui_is_named(tmp_path, capsys):
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{web.server_address[1]}"
        code = cli.main([str(WORKFLOW), "--server", url, "--output", str(tmp_path / "x.png")])
    finally:
        web.shutdown()
        web.server_close()
    err = capsys.readouterr().err
    assert code == codes.EXIT_UNREACHABLE and "is not a ComfyUI server" in err and "Traceback" not in err


def test_concurrent_runs_with_same_named_images_never_cross(comfyui_server, tmp_path, capsys):
    """Three runs at once, each with its own photo.png (different pixels), same seed: each result
    equals that image run alone (computed afresh after the server's cache is cleared); a photo.png
    the server already had is left as it was."""
    url, base = comfyui_server
    theirs = base / "in" / "photo.png"
    theirs.write_bytes(b"somebody else's file")
    photos = [picture(tmp_path / d, seed, name="photo.png") for seed, d in enumerate("abc")]
    outs = [tmp_path / f"together{i}.png" for i in range(3)]
    codes = [None] * 3

    def run(i):
        args = [str(WORKFLOW), "--server", url, "--model", TINY, "--image", photos[i], "--seed", "11", "--steps", "2", "--quiet"]
        codes[i] = cli.main(args + ["--output", str(outs[i])])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert codes == [0, 0, 0], capsys.readouterr().err
    post(url, "/free", {"free_memory": True})  # the runs alone below compute everything again
    time.sleep(1.0)
    client = server_client.ServerClient(url)
    for i in range(3):
        api = apply_overrides(
            json.loads(WORKFLOW.read_text()),
            opts(*("--model", TINY, "--image", photos[i], "--seed", "11", "--steps", "2")),
            client.add_image,
        )
        alone = client.run(api)
        history = get(url, f"/history/{alone.prompt_id}")[alone.prompt_id]
        cached = next(d["nodes"] for e, d in history["status"]["messages"] if e == "execution_cached")
        assert "6" not in cached  # really sampled again
        assert (pixels(alone.images[0]) == pixels(outs[i].read_bytes())).all(), f"run {i} got another run's image"
    assert not (pixels(outs[0].read_bytes()) == pixels(outs[1].read_bytes())).all()  # the pictures do matter
    assert theirs.read_bytes() == b"somebody else's file"


def blocker(url: str, tmp_path: Path) -> str:
    """Queue a long prompt straight through the API; its id."""
    client = server_client.ServerClient(url)
    api = apply_overrides(
        json.loads(WORKFLOW.read_text()), opts("--model", TINY, "--image", picture(tmp_path, 9), "--steps", "10000"), client.add_image
    )
    return post(url, "/prompt", {"prompt": api, "client_id": "blocker"})["prompt_id"]


def test_timeout_cancels_a_queued_prompt_so_it_never_runs(comfyui_server, tmp_path, capsys):
    url, base = comfyui_server
    wait_idle(url)
    first = blocker(url, tmp_path)
    args = [str(WORKFLOW), "--server", url, "--model", TINY, "--image", picture(tmp_path, 5), "--steps", "1", "--quiet"]
    code = cli.main(args + ["--set", "Save.filename_prefix=cancelled_queued", "--timeout", "3", "--output", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == codes.EXIT_EXECUTION and "did not finish within 3 s; it was cancelled on the server" in err, err
    assert [item[1] for item in get(url, "/queue")["queue_running"]] == [first]
    assert get(url, "/queue")["queue_pending"] == []  # taken off the queue
    post(url, "/interrupt", {"prompt_id": first})
    wait_idle(url)
    assert not list((base / "out").rglob("cancelled_queued*"))
    assert not (tmp_path / "x.png").exists()


def test_timeout_interrupts_a_running_prompt(comfyui_server, tmp_path, capsys):
    url, _ = comfyui_server
    wait_idle(url)
    args = [str(WORKFLOW), "--server", url, "--model", TINY, "--image", picture(tmp_path, 6), "--steps", "10000"]
    code = cli.main(args + ["--timeout", "5", "--output", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == codes.EXIT_EXECUTION and "cancelled on the server" in err, err
    assert re.search(r"InstructKSampler: [^\n]*/10000 \[[^\n]*\n+error: ", err), err[-300:]  # the error starts its own line
    queue = get(url, "/queue")
    assert queue["queue_running"] == [] and queue["queue_pending"] == []
    interrupted = [h for h in get(url, "/history").values() if any(e == "execution_interrupted" for e, _ in h["status"]["messages"])]
    assert interrupted


def test_ctrl_c_in_server_mode_cancels_the_prompt(comfyui_server, tmp_path):
    url, _ = comfyui_server
    wait_idle(url)
    proc = spawn(
        str(WORKFLOW),
        "--server",
        url,
        "--model",
        TINY,
        "--image",
        picture(tmp_path, 7),
        "--steps",
        "10000",
        "--output",
        str(tmp_path / "x.png"),
    )
    seen = read_until(proc.stderr, b"/10000 [", 300)
    assert b"/10000 [" in seen, seen[-2000:]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert proc.returncode == codes.EXIT_INTERRUPTED
    queue = get(url, "/queue")
    assert queue["queue_running"] == [] and queue["queue_pending"] == []
    assert not (tmp_path / "x.png").exists()


def test_cached_and_failing_prompts_return_at_once(comfyui_server, tmp_path, monkeypatch):
    """With the /history fallback pushed to a minute, a fully cached prompt still returns in
    seconds: the websocket was connected before the POST, so its end events were not missed."""
    url, _ = comfyui_server
    wait_idle(url)
    client = server_client.ServerClient(url)
    api = apply_overrides(
        json.loads(WORKFLOW.read_text()), opts("--model", TINY, "--image", picture(tmp_path, 8), "--steps", "1"), client.add_image
    )
    first = client.run(api)
    monkeypatch.setattr(server_client, "POLL_S", 60.0)
    start = time.monotonic()
    again = client.run(api)
    assert time.monotonic() - start < 20 and again.images == first.images
    small = apply_overrides(
        json.loads(WORKFLOW.read_text()), opts("--model", TINY, "--image", picture(tmp_path, 1, size=(4, 4))), client.add_image
    )
    start = time.monotonic()
    with pytest.raises(HeadlessError, match="at least 8x8"):
        client.run(small)
    assert time.monotonic() - start < 20


@pytest.mark.subprocess
def test_a_server_that_dies_mid_run_is_exit_4_in_one_line(comfy, tiny, tmp_path, capsys):
    proc, url = start_comfyui(comfy, tmp_path / "doomed")
    try:

        def kill_when_sampling():
            end = time.monotonic() + 300
            while time.monotonic() < end:
                try:
                    if get(url, "/queue")["queue_running"]:
                        time.sleep(2.0)
                        proc.kill()
                        return
                except OSError:
                    return
                time.sleep(0.2)

        threading.Thread(target=kill_when_sampling, daemon=True).start()
        args = [str(WORKFLOW), "--server", url, "--model", TINY, "--image", picture(tmp_path), "--steps", "10000", "--quiet"]
        code = cli.main(args + ["--output", str(tmp_path / "x.png")])
    finally:
        stop(proc)
    err = capsys.readouterr().err
    assert code == codes.EXIT_UNREACHABLE, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "stopped responding" in err, err
