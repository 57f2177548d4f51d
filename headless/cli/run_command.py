"""``run``: one workflow, its overrides applied, run in this process or on a server, its image written.

The output is checked before anything runs and written only when the run succeeded (through a temporary
file); a missing model file stops the run in-process (``--download-missing`` fetches it; a server run
leaves model files to the server).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Union

from ..model_files.check import ensure_models
from ..model_files.manifest import ModelManifest
from ..prompts.checks import check_prompt
from ..prompts.overrides import apply_overrides
from ..prompts.workflow import is_ui, load_workflow, to_api
from ..runner.outputs import check_output, write_outputs
from ..runner.server import ServerClient
from ..runner.session import InProcessSession, shared_session
from .exit_codes import EXIT_OK
from .parser import extra_model_paths, models_manifest, overrides_from
from .progress import NodeProgress


def run(opts: argparse.Namespace) -> int:
    overrides = overrides_from(opts)
    workflow = load_workflow(opts.workflow)
    if not is_ui(workflow):
        check_prompt(workflow)  # a malformed file is refused before ComfyUI is booted or reached
    output = Path(opts.output)
    check_output(output)  # an unwritable target is refused before any time is spent
    if opts.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    runner: Union[ServerClient, InProcessSession]
    if opts.server:
        runner = ServerClient(opts.server[0])
        runner.check()
        where = f"the server at {runner.url}"
    else:
        runner = shared_session(extra_model_paths(opts), opts.verbose)
        where = "this in-process ComfyUI (core nodes + this pack)"
    try:
        api = check_prompt(to_api(workflow, runner.schema, where))
        runner.check_types(api)
        api = apply_overrides(api, overrides, runner.add_image, runner.schema)
        if isinstance(runner, InProcessSession):
            manifest = ModelManifest.load(models_manifest(opts))
            ensure_models([api], runner.model_folders, opts.download_missing, manifest, progress=not opts.quiet)
        if opts.quiet:
            result = runner.run(api, timeout=opts.timeout)
        else:
            with NodeProgress() as bar:
                result = runner.run(api, progress=bar, timeout=opts.timeout)
    finally:
        if isinstance(runner, InProcessSession):
            runner.remove_images()
    for path in write_outputs(result.images, output):
        print(f"wrote {path}")
    sys.stdout.flush()
    return EXIT_OK
