"""``models``: the model files a workflow needs (with its ``--model`` / ``--set`` choices), where ComfyUI
finds each, and the missing ones fetched with ``--download-missing``: the same check and the same
message as a run, without running anything."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..model_files.check import ensure_models, present
from ..model_files.manifest import ModelManifest
from ..prompts.checks import check_prompt
from ..prompts.overrides import apply_overrides
from ..prompts.workflow import is_ui, load_workflow, to_api
from ..runner.session import shared_session
from .exit_codes import EXIT_OK
from .parser import extra_model_paths, models_manifest, overrides_from


def _no_images(path: Path) -> str:
    return str(path)  # the models subcommand takes no images; a workflow's own names stay


def run(opts: argparse.Namespace) -> int:
    overrides = overrides_from(opts)
    manifest = ModelManifest.load(models_manifest(opts))
    workflow = load_workflow(opts.workflow)
    if not is_ui(workflow):
        check_prompt(workflow)
    session = shared_session(extra_model_paths(opts), opts.verbose)
    api = check_prompt(to_api(workflow, session.schema, "this in-process ComfyUI (core nodes + this pack)"))
    session.check_types(api)
    api = apply_overrides(api, overrides, _no_images, session.schema)
    found = present([api], session.model_folders)
    if not found:
        print("the workflow names no model files")
    for f, where in found:
        if where is not None:
            print(f"ok       {f.folder}/{f.name}  ({where})")
    for path in ensure_models([api], session.model_folders, opts.download_missing, manifest, progress=not opts.quiet):
        print(f"fetched  {path}")
    return EXIT_OK
