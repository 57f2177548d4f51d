"""Rows per minute of one batch of edits, four ways, and the peak memory of each worker process.

    python benchmarks/bench_batch.py                       # 24 rows, tiny models, CPU
    python benchmarks/bench_batch.py --device cuda --model checkpoints/my-ip2p.safetensors \\
        --models-dir /path/to/ComfyUI/models --steps 20 --size 512

1. a loop of single-run commands (``run_workflow.py ... --output``), each booting ComfyUI;
2. ``--batch`` in-process: one ComfyUI, models loaded once;
3. ``--batch`` on a pool of 2 ComfyUI servers (started before the clock starts: servers are long-lived);
4. ``--batch --ray --workers 2``: a local Ray cluster with 2 actors (Ray's and the actors' start-up counted).

Every mode is a real command in a subprocess; its wall time is what a user waits, start-up included.
Peak memory is each process's maximum resident set (``wait4``; Ray actors report their own in
results.jsonl). By default the tiny random-weight test models (made by the test suite into
``~/.cache/comfyui-instruct-tests``) are used, so the figures are about the batch machinery, not the UNet.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # where the one bootstrap lives
import pack_paths  # noqa: E402

pack_paths.install(dev=True)

PACK_DIR = Path(__file__).resolve().parents[1]
RUNNER = PACK_DIR / "scripts" / "run_workflow.py"
WORKFLOW = PACK_DIR / "workflows" / "api" / "instruct_edit_sd15.json"


def run(cmd: list[str], env: dict, cwd: Path | None = None) -> tuple[float, float]:
    """(seconds, peak MiB) of one command; fails loudly when it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_inputs(work: Path, rows: int, size: int) -> Path:
    import numpy as np
    from PIL import Image

    (work / "img").mkdir()
    lines = []
    for n in range(rows):
        Image.fromarray((np.random.default_rng(n).random((size, size, 3)) * 255).astype("uint8")).save(work / "img" / f"p{n}.png")
        lines.append(json.dumps({"image": f"img/p{n}.png", "instruction": ("make it night", "add snow", "paint it")[n % 3]}))
    manifest = work / "edits.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def start_servers(comfy: Path, work: Path, yaml: Path, count: int, device: str, env: dict) -> list[tuple[subprocess.Popen, str]]:
    packs = work / "packs"
    packs.mkdir()
    (packs / "ComfyUI-Instruct").symlink_to(PACK_DIR)
    yaml_text = yaml.read_text() + f"  custom_nodes: {packs}\n"
    servers = []
    for i in range(count):
        base = work / f"server{i}"
        base.mkdir()
        (base / "paths.yaml").write_text(yaml_text)
        port = free_port()
        args = [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(port), "--disable-api-nodes"]
        args += ["--extra-model-paths-config", str(base / "paths.yaml"), "--output-directory", str(base), "--input-directory", str(base)]
        if device == "cpu":
            args.append("--cpu")
        else:
            args += ["--cuda-device", str(i)]
        log = open(base / "log.txt", "w")
        servers.append((subprocess.Popen(args, cwd=comfy, env=env, stdout=log, stderr=subprocess.STDOUT), f"http://127.0.0.1:{port}"))
        log.close()
    for proc, url in servers:
        for _ in range(600):
            if proc.poll() is not None:
                sys.exit(f"a ComfyUI server exited; see {work}")
            try:
                urllib.request.urlopen(url + "/system_stats", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
    return servers


def stop_servers(servers: list[tuple[subprocess.Popen, str]]) -> list[float]:
    peaks = []
    for proc, _ in servers:
        proc.terminate()  # by its own PID
        _, _, usage = os.wait4(proc.pid, 0)
        peaks.append(usage.ru_maxrss / 1024)
    return peaks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--rows", type=int, default=24)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=64, help="input image side in pixels")
    ap.add_argument("--model", default="checkpoints/tiny-ip2p-sd15.safetensors")
    ap.add_argument("--models-dir", type=Path, help="folder holding checkpoints/ (default: the test suite's tiny-model cache)")
    ap.add_argument("--modes", default="single,inprocess,pool,ray", help="comma-separated subset to run")
    opts = ap.parse_args()
    from headless.runner.comfyui import find_comfyui
    from instruct_tiny_models import cache_dir

    comfy, how = find_comfyui()
    if comfy is None:
        sys.exit(how)
    models = opts.models_dir or cache_dir()
    if not (models / opts.model).is_file():
        sys.exit(f"{models / opts.model} not found: run the test suite once (it makes the tiny models) or pass --models-dir/--model")
    env = {**os.environ, "COMFYUI_PATH": str(comfy)}
    if opts.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    modes = opts.modes.split(",")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        work = Path(tmp)
        manifest = make_inputs(work, opts.rows, opts.size)
        yaml = work / "paths.yaml"
        yaml.write_text(f"bench:\n  base_path: {models}\n  checkpoints: checkpoints\n")
        common = [str(WORKFLOW), "--model", opts.model, "--steps", str(opts.steps), "--quiet"]
        batch = [sys.executable, str(RUNNER), *common, "--batch", str(manifest)]
        if "single" in modes:
            total, peak = 0.0, 0.0
            for n in range(opts.rows):
                row = json.loads(manifest.read_text().splitlines()[n])
                cmd = [sys.executable, str(RUNNER), *common, "--image", str(work / row["image"]), "--instruction", row["instruction"]]
                cmd += ["--seed", str(n), "--extra-model-paths", str(yaml), "--output", str(work / "single" / f"{n}.png")]
                seconds, mb = run(cmd, env)
                total, peak = total + seconds, max(peak, mb)
            results.append(("single-run loop", total, f"{peak:.0f}"))
        if "inprocess" in modes:
            seconds, peak = run([*batch, "--extra-model-paths", str(yaml), "--output-dir", str(work / "inprocess")], env)
            results.append(("batch, in-process", seconds, f"{peak:.0f}"))
        if "pool" in modes:
            servers = start_servers(comfy, work, yaml, 2, opts.device, env)
            try:
                urls = [a for _, url in servers for a in ("--server", url)]
                seconds, driver = run([*batch, *urls, "--output-dir", str(work / "pool")], env)
            finally:
                peaks = stop_servers(servers)
            results.append(("batch, 2-server pool", seconds, f"{max(peaks):.0f} per server (driver {driver:.0f})"))
        if "ray" in modes:
            out = work / "ray"
            seconds, driver = run([*batch, "--ray", "--workers", "2", "--extra-model-paths", str(yaml), "--output-dir", str(out)], env)
            records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
            actor = max(r["peak_mb"] or 0 for r in records)
            results.append(("batch, Ray 2 actors", seconds, f"{actor:.0f} per actor (driver {driver:.0f})"))
    print(f"{opts.rows} rows, {opts.steps} steps, {opts.size}x{opts.size}, {opts.model}, {opts.device}")
    print(f"{'mode':<24} {'seconds':>8} {'rows/min':>9}  peak MiB")
    for name, seconds, peak in results:
        print(f"{name:<24} {seconds:8.1f} {opts.rows / seconds * 60:9.1f}  {peak}")


if __name__ == "__main__":
    main()
