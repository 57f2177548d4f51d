"""The one parser: subcommands ``run``, ``batch`` and ``models``, every shared option declared once (in
the parent parsers below), and the typed requests the commands hand to the library.

Without a subcommand the command is ``run``, or ``batch`` when ``--batch MANIFEST`` is given: the forms
the README has always shown (``run_workflow.py WORKFLOW --image … --output …``, ``run_workflow.py
WORKFLOW --batch edits.jsonl --output-dir …``) keep working.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from ..errors import InputError
from ..model_files.manifest import DEFAULT_MANIFEST
from ..prompts import titles
from ..prompts.overrides import Overrides, Setting

SUBCOMMANDS = ("run", "batch", "models")
DESCRIPTION = """Run a ComfyUI workflow without the browser: one edit (run), many (batch), or check and
fetch the model files it needs (models). In-process by default (ComfyUI found through COMFYUI_PATH, the
ComfyUI holding this pack, or ~/ComfyUI); --server URL sends the work to a running ComfyUI instead.

Exit codes: 0 done; 1 a batch finished but some rows failed; 2 bad workflow, input, option, manifest or a
missing model file; 3 an execution error or --timeout; 4 a server unreachable, gone, or not ComfyUI;
130 interrupted."""


def _options_of_every_command() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("workflow", help="workflow JSON (API or UI format)")
    p.add_argument("--extra-model-paths", metavar="YAML", help="extra_model_paths.yaml for in-process (and Ray) runs")
    p.add_argument(
        "--download-missing",
        action="store_true",
        help="fetch missing model files (from the model manifest) into the right ComfyUI model folder, resumably and verified",
    )
    p.add_argument("--models-manifest", metavar="PATH", help=f"model manifest to read sources from (default: {DEFAULT_MANIFEST})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true", help="show ComfyUI's start-up log and import warnings")
    return p


def _model_choice() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--model", help="model as the loader lists it (checkpoints/my-ip2p.safetensors) or its bare file name when unique")
    p.add_argument(
        "--set",
        action="append",
        metavar="NODE.INPUT=VALUE",
        help="set any input of a node (NODE: id or title; VALUE: JSON, else text; repeatable)",
    )
    return p


def _edit_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    rows = " (a batch: rows without their own)"
    p.add_argument("--reference", help=f"reference image for IPAdapter-Instruct (node titled '{titles.REFERENCE}'){rows}")
    p.add_argument("--instruction", help=f"the edit instruction (node titled '{titles.INSTRUCTION}'){rows}")
    p.add_argument("--prompt", help=f"the prompt (node titled '{titles.PROMPT}'; also IPAdapter-Instruct's prompt){rows}")
    p.add_argument("--negative", help=f"the negative prompt (node titled '{titles.NEGATIVE}'){rows}")
    p.add_argument("--seed", type=int, help="the seed (a batch: the base of the seeds of rows without one; default 0)")
    p.add_argument("--steps", type=int)
    p.add_argument("--text-cfg", type=float)
    p.add_argument("--image-cfg", type=float)
    p.add_argument(
        "--server",
        action="append",
        metavar="URL",
        help="a running ComfyUI (e.g. http://127.0.0.1:8188) instead of in-process; a batch takes several (a pool)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="seconds a run (a batch: each row) may take before it is stopped (exit 3); default: none in-process, 3600 on a server",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    every, choice, edit = _options_of_every_command(), _model_choice(), _edit_options()
    top = argparse.ArgumentParser(prog="run_workflow.py", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", metavar="{run,batch,models}")
    run = sub.add_parser("run", parents=[every, choice, edit], help="one edit: the workflow with its overrides, one image written")
    run.add_argument("--output", "-o", required=True, help="where to write the image (several: name_0.png, name_1.png, …)")
    run.add_argument("--image", help=f"input image (node titled '{titles.IMAGE}')")
    batch = sub.add_parser("batch", parents=[every, choice, edit], help="many edits from a manifest, models loaded once")
    batch.add_argument(
        "--batch", "--manifest", dest="manifest", required=True, metavar="MANIFEST", help="the edits: JSON Lines (.jsonl) or CSV (.csv)"
    )
    batch.add_argument("--output-dir", required=True, help="folder for the images and results.jsonl")
    batch.add_argument("--resume", action="store_true", help="skip the rows results.jsonl records ok whose image is there; run the rest")
    batch.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS", help="run on Ray: a local cluster, or ADDRESS (auto, ray://host:10001)"
    )
    batch.add_argument("--workers", type=int, help="Ray actors (default: one per GPU of the cluster, else 1)")
    batch.add_argument("--per-server", type=int, default=1, help="rows in flight on each server (default 1)")
    batch.add_argument("--server-wait", type=float, default=60.0, help="seconds to wait for a server when all are down (default 60)")
    sub.add_parser("models", parents=[every, choice], help="check the model files the workflow needs; fetch them with --download-missing")
    return top


def with_subcommand(argv: list[str]) -> list[str]:
    """The README's forms without a subcommand: ``batch`` when ``--batch`` is given, else ``run``."""
    if not argv or argv[0] in SUBCOMMANDS or argv[0] in ("-h", "--help"):
        return argv
    batch = any(a == "--batch" or a.startswith("--batch=") for a in argv)
    return ["batch" if batch else "run", *argv]


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse and check the options; argparse's own error (exit 2, with the usage) for what it cannot be."""
    parser = build_parser()
    opts = parser.parse_args(with_subcommand(argv))
    if opts.command is None:
        parser.error("give a subcommand (run, batch, models) or a workflow")
    timeout = getattr(opts, "timeout", None)
    if timeout is not None and not timeout > 0:
        parser.error("--timeout must be a positive number of seconds")
    servers = getattr(opts, "server", None) or []
    if opts.command == "run" and len(servers) > 1:
        parser.error("run takes one --server; a batch spreads its rows over several")
    if servers and opts.download_missing:
        parser.error("--download-missing fetches into this machine's ComfyUI folders; with --server, download on the server's machine")
    if opts.command == "batch":
        if opts.ray and servers:
            parser.error("--ray and --server exclude each other: pick where the rows run")
        if opts.workers is not None and opts.workers < 1:
            parser.error("--workers must be at least 1")
        if opts.per_server < 1:
            parser.error("--per-server must be at least 1")
    return opts


def overrides_from(opts: argparse.Namespace) -> Overrides:
    """The run's typed overrides: ``--set`` parsed here, once."""

    def path(name: str) -> Optional[Path]:
        value = getattr(opts, name, None)
        return Path(value) if value else None

    return Overrides(
        image=path("image"),
        reference=path("reference"),
        instruction=getattr(opts, "instruction", None),
        prompt=getattr(opts, "prompt", None),
        negative=getattr(opts, "negative", None),
        seed=getattr(opts, "seed", None) if opts.command == "run" else None,  # a batch's --seed is the base of derived seeds
        steps=getattr(opts, "steps", None),
        text_cfg=getattr(opts, "text_cfg", None),
        image_cfg=getattr(opts, "image_cfg", None),
        model=opts.model,
        settings=tuple(Setting.parse(item) for item in opts.set or ()),
    )


def extra_model_paths(opts: argparse.Namespace) -> tuple[str, ...]:
    return (opts.extra_model_paths,) if opts.extra_model_paths else ()


def models_manifest(opts: argparse.Namespace) -> Optional[Path]:
    if opts.models_manifest and not Path(opts.models_manifest).is_file():
        raise InputError(f"--models-manifest {opts.models_manifest}: no such file")
    return Path(opts.models_manifest) if opts.models_manifest else None
