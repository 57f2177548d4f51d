"""Run a workflow headless: in this process, or against a running ComfyUI server.

    # in-process (ComfyUI found through COMFYUI_PATH, or the ComfyUI holding this pack, or ~/ComfyUI)
    python scripts/run_workflow.py workflows/api/instruct_edit_sd15.json \\
        --image photo.jpg --instruction "make it a snowy winter day" --seed 7 --output winter.png

    # against a server started with `python main.py` (default http://127.0.0.1:8188)
    python scripts/run_workflow.py workflows/api/instruct_edit_sd15.json --server http://127.0.0.1:8188 \\
        --image photo.jpg --instruction "make it a snowy winter day" --output winter.png

The workflow may be API format or UI format (converted with the node schemas). Overrides find their
nodes by title (Instruction, Prompt, Negative, Input image, Reference image, Save) or by input
name (seed, steps, text_cfg, image_cfg); ``--set NODE.INPUT=VALUE`` sets any input the node has
(NODE is an id or a title, VALUE is JSON or plain text); ``--model`` takes the loader's list entry
or a bare file name. The output is checked before the run and written only when it succeeded,
through a temporary file. Ctrl-C stops the run (in-process at the next step; on a server the
prompt is interrupted or taken off the queue).

Exit codes: 0 ok; 2 bad workflow, input or --output (validation, missing node type or model
file, NaN/inf, an unknown --set input, an input error raised while running); 3 execution error or
--timeout; 4 server unreachable, gone mid-run, or not a ComfyUI server; 130 interrupted.

The CLI is a thin layer: ``runner_session.InProcessSession`` and ``server_client.ServerClient`` do
the runs; ``workflow_overrides`` applies the options.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Optional


from ..model_files import check as model_files
from ..runner.outputs import check_output, write_outputs  # noqa: F401  (write_outputs: re-exported)
from ..prompts.checks import (  # noqa: F401  (re-exported for callers of the old module)
    EXIT_EXECUTION,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    RunError,
    check_prompt,
)
from ..prompts.formats import is_ui
from ..prompts.overrides import add_override_arguments, apply_overrides, to_api  # noqa: F401


class Progress:
    """A one-line text progress bar on stderr, naming the node; ``end_line`` before any message."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream
        self._open = False

    @property
    def stream(self) -> Any:
        return self._stream or sys.stderr

    def __call__(self, value: int, total: int, node_id: Any = None, label: str = "") -> None:
        width = 30
        filled = int(width * value / max(total, 1))
        name = label or (f"node {node_id}" if node_id is not None else "")
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {value}/{total} {name}".rstrip())
        self._open = value < total
        if not self._open:
            self.stream.write("\n")
        self.stream.flush()

    def end_line(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


# ---- command line (every option is declared here) -----------------------------------------------


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflow", help="workflow JSON (API or UI format)")
    ap.add_argument("--output", "-o", required=True, help="where to write the image (batches: name_0.png, name_1.png, …)")
    ap.add_argument("--server", help="URL of a running ComfyUI (e.g. http://127.0.0.1:8188); default: run in-process")
    ap.add_argument("--image", help="input image (node titled 'Input image')")
    ap.add_argument("--seed", type=int)
    add_override_arguments(ap)
    ap.add_argument(
        "--timeout", type=float, help="seconds before the run is cancelled (exit 3); default: 3600 on a server, none in-process"
    )
    model_files.add_arguments(ap)
    opts = ap.parse_args(argv)
    if opts.timeout is not None and not opts.timeout > 0:
        ap.error("--timeout must be a positive number of seconds")
    if opts.server and opts.download_missing:
        ap.error("--download-missing fetches into this machine's ComfyUI folders; with --server, download on the server's machine")
    return opts


def load_workflow(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:  # missing, unreadable, not UTF-8, not JSON
        raise RunError(f"cannot read workflow {path}: {exc}", EXIT_INPUT) from exc


def _run_on_server(opts: argparse.Namespace, workflow: Any, progress: Optional[Progress]) -> list[Path]:
    from ..runner.server import ServerClient

    client = ServerClient(opts.server)
    client.check()
    api = check_prompt(to_api(workflow, client.schema, f"the server at {opts.server}"))
    missing = client.missing_types(api)
    if missing:
        raise RunError(
            f"the server at {opts.server} lacks node types: {', '.join(missing)}. Install ComfyUI-Instruct "
            "(or the pack that provides them) into its custom_nodes and restart it.",
            EXIT_INPUT,
        )
    api = apply_overrides(api, opts, client.add_image, client.schema)
    timeout = opts.timeout if opts.timeout is not None else 3600.0
    return client.run(api, output=Path(opts.output), progress=progress, timeout=timeout).written


_SESSION: Any = None


def release_models() -> None:
    """Let the process's session drop the models it keeps between ``main`` calls (ComfyUI stays booted;
    the next call loads them again). For a long-lived process that is done with editing for a while."""
    global _SESSION
    if _SESSION is not None:
        _SESSION.close()
        _SESSION = None  # the next call opens a new session on the ComfyUI that stays booted


def _session(opts: argparse.Namespace) -> Any:
    """One InProcessSession per process: calling ``main`` again (scripts, tests) reuses ComfyUI and
    the models in its cache instead of loading them again."""
    global _SESSION
    from ..runner.session import InProcessSession

    extra = (opts.extra_model_paths,) if opts.extra_model_paths else ()
    if _SESSION is None:
        _SESSION = InProcessSession(extra_model_paths=extra, verbose=opts.verbose)
    else:
        _SESSION.add_model_paths(extra)
    return _SESSION


def _run_in_process(opts: argparse.Namespace, workflow: Any, progress: Optional[Progress]) -> list[Path]:
    session = _session(opts)
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        session.interrupt()

    timer = threading.Timer(opts.timeout, stop) if opts.timeout is not None else None
    try:
        api = check_prompt(to_api(workflow, session.schema, "this in-process ComfyUI (core nodes + this pack)"))
        api = apply_overrides(api, opts, session.add_image, session.schema)
        import folder_paths  # ComfyUI's, importable once the session has booted it

        try:
            model_files.ensure_models(api, folder_paths, opts.download_missing, opts.models_manifest)
        except model_files.ModelFilesError as exc:
            raise RunError(str(exc), EXIT_INPUT) from exc
        if timer is not None:
            timer.start()
        try:
            return session.run(api, output=Path(opts.output), progress=progress).written
        except RunError as exc:
            if exc.code == EXIT_INTERRUPTED and timed_out.is_set():
                raise RunError(f"the run did not finish within {opts.timeout:g} s; it was stopped", EXIT_EXECUTION) from exc
            raise
    finally:
        if timer is not None:
            timer.cancel()
        session.remove_images()


def main(argv: Optional[list[str]] = None) -> int:
    if "--batch" in (sys.argv[1:] if argv is None else argv):  # many edits: see batch_cli
        from ..batch.run import main as batch_main

        return batch_main(argv)
    opts = parse_args(argv)
    progress = None if opts.quiet else Progress()
    try:
        workflow = load_workflow(opts.workflow)
        if not (isinstance(workflow, dict) and is_ui(workflow)):
            check_prompt(workflow)  # a malformed file is refused before ComfyUI is booted or reached
        check_output(Path(opts.output))  # an unwritable target is refused before any time is spent
        if opts.verbose:
            logging.basicConfig(level=logging.INFO, format="%(message)s")
        written = (_run_on_server if opts.server else _run_in_process)(opts, workflow, progress)
        for path in written:
            print(f"wrote {path}")
        return EXIT_OK
    except RunError as exc:
        if progress is not None:
            progress.end_line()
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        if progress is not None:
            progress.end_line()
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug, not the user's input: one line, the traceback only with --verbose
        if progress is not None:
            progress.end_line()
        if opts.verbose:
            traceback.print_exc()
        print(f"error: unexpected {type(exc).__name__}: {exc} (run with --verbose for the traceback)", file=sys.stderr)
        return EXIT_EXECUTION


if __name__ == "__main__":
    sys.exit(main())
