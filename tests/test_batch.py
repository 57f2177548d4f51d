"""Batch editing against a real ComfyUI on the tiny models: the same 12-row manifest run in-process,
resumed after a kill, on a two-server pool that loses a server, and on Ray with 2 actors, always
giving the bytes of 12 single runs; a manifest with bad rows refused whole before any run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from instruct_harness import PACK_DIR
from instruct_pictures import write_picture
from instruct_servers import free_port, launch_comfyui, start_comfyui, stop, wait_ready

from headless import cli
from headless.cli import exit_codes as codes

WORKFLOW = PACK_DIR / "workflows" / "api" / "instruct_edit_sd15.json"
TINY = "checkpoints/tiny-ip2p-sd15.safetensors"
ROWS = 12
INSTRUCTIONS = ("make it night", "add snow", "turn it into a painting")


def picture(path: Path, seed: int) -> None:
    write_picture(path, seed, (40, 48))


@pytest.fixture(scope="module")
def batch(comfy, tiny, tmp_path_factory):
    """A 12-row manifest (some rows with their own seed, steps, cfg or --set; two rows share an
    image) and the model paths file every process of these tests reads."""
    base = tmp_path_factory.mktemp("batch")
    (base / "img").mkdir()
    rows = []
    for n in range(ROWS):
        name = f"img/photo{n % 10}.png"  # rows 11 and 12 reuse photo0 and photo1
        if n < 10:
            picture(base / name, n)
        row = {"image": name, "instruction": INSTRUCTIONS[n % 3]}
        if n % 4 == 1:
            row["seed"] = 100 + n
        if n % 5 == 2:
            row["steps"] = 3
        if n == 7:
            row.update(text_cfg=5.0, image_cfg=1.2, output="row-eight.png", set={"6.sampler_name": "euler"})
        rows.append(row)
    manifest = base / "edits.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    yaml = base / "paths.yaml"
    yaml.write_text(f"tests:\n  base_path: {comfy.models_dir}\n  checkpoints: checkpoints\n")
    return {"dir": base, "manifest": manifest, "yaml": yaml, "rows": rows}


def common_args(batch: dict) -> list[str]:
    return [str(WORKFLOW), "--batch", str(batch["manifest"]), "--model", TINY, "--steps", "2", "--seed", "11", "--quiet"]


@pytest.fixture(scope="module")
def singles(batch, tmp_path_factory) -> dict[str, bytes]:
    """The 12 rows as 12 single runs of the runner (in this process), by output name."""
    from headless.batch import manifest as batch_manifest

    out = tmp_path_factory.mktemp("singles")
    images = {}
    for number, row in enumerate(batch["rows"], 1):
        seed = row.get("seed", batch_manifest.derive_seed(11, number))
        name = row.get("output", batch_manifest.default_output(number, row["image"]))
        args = [str(WORKFLOW), "--model", TINY, "--image", str(batch["dir"] / row["image"]), "--instruction", row["instruction"]]
        args += ["--seed", str(seed), "--steps", str(row.get("steps", 2)), "--quiet", "--output", str(out / name)]
        for flag in ("text_cfg", "image_cfg"):
            if flag in row:
                args += [f"--{flag.replace('_', '-')}", str(row[flag])]
        for target, value in row.get("set", {}).items():
            args += ["--set", f"{target}={value}"]
        assert cli.main(args) == 0
        images[name] = (out / name).read_bytes()
    assert len(set(images.values())) == ROWS  # every row is its own picture
    return images


def outputs(out_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out_dir.glob("*.png")}


def records(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines() if line.strip()]


def assert_complete(out_dir: Path, singles: dict[str, bytes]) -> list[dict]:
    """Every row once, ok, and every image byte-identical to its single run; nothing else left."""
    found = records(out_dir)
    ok = [r for r in found if r["status"] == "ok"]
    assert sorted(r["row"] for r in ok) == list(range(1, ROWS + 1)), found
    assert outputs(out_dir) == singles
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".")]  # no temporary files
    return found


def run_cli(comfy, args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "COMFYUI_PATH": str(comfy.root)}
    return subprocess.Popen(
        [sys.executable, str(PACK_DIR / "scripts" / "run_workflow.py"), *args], env=env, stderr=subprocess.PIPE, text=True, **kwargs
    )


def wait_for_records(out_dir: Path, count: int, proc_alive, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = out_dir / "results.jsonl"
        if path.exists() and len([x for x in path.read_text().splitlines() if x.strip()]) >= count:
            return
        assert proc_alive(), "the batch ended before the test could interrupt it"
        time.sleep(0.2)
    pytest.fail(f"fewer than {count} rows finished in {timeout:.0f} s")


@pytest.mark.subprocess
def test_in_process_batch_equals_single_runs(comfy, batch, singles, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(comfy, [*common_args(batch), "--extra-model-paths", str(batch["yaml"]), "--output-dir", str(out)])
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    found = assert_complete(out, singles)
    assert len(found) == ROWS and {r["worker"] for r in found} == {"in-process"}
    first = next(r for r in found if r["row"] == 2)
    assert first == {
        "row": 2,
        "output": "00002_photo1.png",
        "seed": 101,
        "status": "ok",
        "seconds": first["seconds"],
        "worker": "in-process",
        "error": None,
        "peak_mb": first["peak_mb"],
    }
    assert first["peak_mb"] > 100


@pytest.mark.subprocess
def test_resume_after_a_kill_runs_every_row_once(comfy, batch, singles, tmp_path):
    out = tmp_path / "out"
    args = [*common_args(batch), "--extra-model-paths", str(batch["yaml"]), "--output-dir", str(out)]
    proc = run_cli(comfy, args)
    try:
        wait_for_records(out, 3, lambda: proc.poll() is None)
    finally:
        proc.send_signal(signal.SIGKILL)  # by its own PID
        proc.communicate(timeout=60)
    before = records(out)
    assert 3 <= len(before) < ROWS
    again = run_cli(comfy, [*args, "--resume"])
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    found = assert_complete(out, singles)
    assert len(found) == ROWS  # the rows done before the kill were skipped, not run again
    assert found[: len(before)] == before
    refused = run_cli(comfy, args)  # without --resume, an existing batch is not clobbered
    _, err = refused.communicate(timeout=300)
    assert refused.returncode == 2 and "--resume" in err


def test_bad_manifest_is_refused_whole_before_any_run(batch, tmp_path, capsys):
    manifest = tmp_path / "bad.csv"
    manifest.write_text(
        "image,instruction,seed,steps,set:6.denoise\n"
        f"{batch['dir'] / 'img/photo0.png'},ok,1,2,\n"
        "missing.png,no file,,,\n"
        f"{batch['dir'] / 'img/photo1.png'},bad numbers,-3,two,\n"
        f"{batch['dir'] / 'img/photo2.png'},bad cfg,,,\n"
    )
    manifest.write_text(manifest.read_text().replace("bad cfg,,,", "bad cfg,,,nan"))
    out = tmp_path / "out"
    dead = f"http://127.0.0.1:{free_port()}"  # never contacted: the manifest is refused first
    code = cli.main([str(WORKFLOW), "--batch", str(manifest), "--output-dir", str(out), "--server", dead])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "row 2: image file not found" in err and "row 3: seed must be at least 0" in err and "row 3: steps must be an integer" in err
    assert "nothing was run" in err and not out.exists()


def test_rows_the_workflow_refuses_are_listed_before_any_run(comfy, tiny, batch, tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    img = batch["dir"] / "img"
    rows = [
        {"image": str(img / "photo0.png")},
        {"image": str(img / "photo1.png"), "set": {"6.no_such_input": 1}},
        {"image": str(img / "photo2.png"), "set": {"Nobody.text": "x"}},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    code = cli.main([str(WORKFLOW), "--batch", str(manifest), "--output-dir", str(out), "--model", TINY])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "row 2:" in err and "no_such_input" in err and "row 3:" in err and "Nobody" in err and "row 1" not in err
    assert not out.exists() or not list(out.iterdir())


def test_a_failing_row_does_not_stop_the_batch(comfy, tiny, batch, tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    img = batch["dir"] / "img"
    rows = [
        {"image": str(img / "photo0.png")},
        {"image": str(img / "photo1.png"), "set": {"6.sampler_name": "nope"}},
        {"image": str(img / "photo2.png")},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    args = [str(WORKFLOW), "--batch", str(manifest), "--output-dir", str(out), "--model", TINY, "--steps", "1"]
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == codes.EXIT_ROWS_FAILED, err
    found = records(out)
    assert [(r["row"], r["status"]) for r in found] == [(1, "ok"), (2, "error"), (3, "ok")]
    assert "nope" in found[1]["error"] and sorted(outputs(out)) == ["00001_photo0.png", "00003_photo2.png"]
    assert re.search(r"rows: 100%\|[^\n]*\| 3/3 \[[^\n]*(s/row|row/s), 1 failed", err), err  # rows, time left, rate, failures


# ---- a pool of two servers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_servers():
    """Servers a test leaves running for a later one, as (process, port, folder): a boot costs about 8 s.
    Stopped at the end of the file."""
    live: list = []
    yield live
    for proc, _, _ in live:
        stop(proc)


@pytest.mark.subprocess
def test_server_pool_survives_a_server_killed_mid_batch(comfy, tiny, batch, singles, tmp_path, live_servers):
    ports = [free_port(), free_port()]
    bases = [tmp_path / f"server{i}" for i in range(2)]
    procs = [launch_comfyui(comfy, base, port) for base, port in zip(bases, ports)]  # both boot at once
    try:
        for proc, base, port in zip(procs, bases, ports):
            wait_ready(proc, base, port)
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        out = tmp_path / "out"
        args = [*common_args(batch), "--output-dir", str(out), "--server", urls[0], "--server", urls[1]]
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(code=cli.main(args)))
        thread.start()
        wait_for_records(out, 2, thread.is_alive)
        stop(procs[0], signal.SIGKILL)  # dies with a row in flight
        killed_at = len(records(out))
        thread.join(timeout=600)
        assert result.get("code") == 0
        found = assert_complete(out, singles)
        assert len(found) == ROWS
        assert {r["worker"].split("#")[0] for r in found[:killed_at]} <= set(urls)
        assert {r["worker"].split("#")[0] for r in found[killed_at + 1 :]} == {urls[1]}  # the survivor took over
        live_servers.append((procs.pop(1), ports[1], bases[1]))  # idle again: the next test's server
    finally:
        for proc in procs:
            stop(proc)


@pytest.mark.subprocess
def test_a_server_that_comes_back_is_used_again(comfy, tiny, batch, singles, tmp_path, live_servers):
    """A pool of one: its server is killed mid-batch and started again on the same port. The batch
    can only finish if the pool probes it, finds it back, and gives it the remaining rows (and the
    row it lost). The server is the previous test's survivor when there is one."""
    if live_servers:
        proc, port, base = live_servers.pop()
    else:
        port, base = free_port(), tmp_path / "server"
        proc, _ = start_comfyui(comfy, base, port)
    url = f"http://127.0.0.1:{port}"
    try:
        out = tmp_path / "out"
        result: dict = {}
        args = [*common_args(batch), "--output-dir", str(out), "--server", url]
        thread = threading.Thread(target=lambda: result.update(code=cli.main(args)))
        thread.start()
        wait_for_records(out, 2, thread.is_alive)
        stop(proc, signal.SIGKILL)
        killed_at = len(records(out))
        assert killed_at < ROWS - 1, "the batch ended before the server was killed"
        proc, _ = start_comfyui(comfy, base, port)  # back, same address
        thread.join(timeout=600)
        assert result.get("code") == 0
        found = assert_complete(out, singles)
        assert len(found) == ROWS and {r["worker"].split("#")[0] for r in found} == {url}
    finally:
        stop(proc)


def test_server_pool_with_no_reachable_server_exits_4(batch, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main([*common_args(batch), "--output-dir", str(out), "--server", f"http://127.0.0.1:{free_port()}"])
    assert code == 4 and "no ComfyUI server of the pool is reachable" in capsys.readouterr().err


# ---- Ray ----------------------------------------------------------------------------------------


@pytest.fixture
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install ray): the --ray backend is not tested")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_ray_with_two_actors_equals_in_process(comfy, tiny, batch, singles, tmp_path, ray_cluster):
    out = tmp_path / "out"
    args = [*common_args(batch), "--output-dir", str(out), "--ray", "--workers", "2", "--extra-model-paths", str(batch["yaml"])]
    assert cli.main(args) == 0
    found = assert_complete(out, singles)
    assert len(found) == ROWS
    workers = {r["worker"] for r in found}
    assert len(workers) == 2 and all(w.startswith("ray:") for w in workers)
