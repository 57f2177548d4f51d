"""Run many API prompts in this process through one ComfyUI: the in-process half of the runner.

``InProcessSession`` boots ComfyUI once per process (a second session reuses it: ComfyUI's
registries are module globals) with this pack loaded, and keeps one ``PromptExecutor`` the way
ComfyUI's server does, so ComfyUI's own cache keeps a loader's model between runs: a thousand
prompts on one model load it once, and memory stays flat. ``run`` validates and executes one
prompt and raises ``RunError(message, code)`` with the CLI's exit codes::

    session = InProcessSession()
    name = session.add_image("photo.png")           # a name LoadImage accepts
    result = session.run(prompt, output=Path("out.png"))   # RunResult: images (PNG bytes), written
    session.close()

Interrupts: ``session.interrupt()`` (from any thread) stops the run at the next sampling step with
ComfyUI's own interrupt; ``run`` then raises exit 130 and writes nothing. Called from the main
thread, ``run`` turns the first Ctrl-C into that interrupt and a second into KeyboardInterrupt.
Runs are serialised per process (ComfyUI's interrupt flag and model management are global).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import shutil
import signal
import tempfile
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional


from . import comfyui as comfy_inprocess
from .outputs import check_output, write_outputs
from ..prompts.checks import (
    EXIT_INPUT,
    UPLOAD_SUBFOLDER,
    EXIT_INTERRUPTED,
    ProgressFn,
    RunError,
    RunResult,
    check_prompt,
    content_name,
    failure,
    format_node_errors,
    missing_types,
    node_label,
    save_node,
)

_loaded_path_files: set[str] = set()
_run_lock = threading.Lock()


@contextlib.contextmanager
def quiet_startup(verbose: bool) -> Iterator[None]:
    """Hide ComfyUI's start-up log (device banner, optional-node import warnings, missing optional
    packages, which it logs as errors) and Python warnings unless ``verbose``. A start-up failure
    that matters (the pack did not load) is reported by the session itself."""
    if verbose:
        yield
        return
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(old_level)


class InProcessSession:
    """ComfyUI in this process, booted once, running one API prompt per ``run`` (see module doc)."""

    def __init__(self, *, comfyui_path: Optional[Path] = None, extra_model_paths: tuple = (), verbose: bool = False) -> None:
        self.verbose = verbose
        with quiet_startup(verbose):
            self.comfy = comfy_inprocess.active() or self._boot(comfyui_path)
            self._load_path_files(extra_model_paths)
        if not getattr(self.comfy, "pack_loaded", True):
            raise RunError("ComfyUI could not load the ComfyUI-Instruct nodes (run with --verbose to see why)", EXIT_INPUT)
        import comfy.model_management
        import comfy.utils

        self._mm = comfy.model_management
        self._utils = comfy.utils
        self._executor = self.comfy.execution.PromptExecutor(
            comfy_inprocess.StubServer(), cache_type=self.comfy.execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0}
        )
        self._interrupted = threading.Event()
        self._placed: set[Path] = set()

    # ---- set-up --------------------------------------------------------------------------------

    @staticmethod
    def _boot(comfyui_path: Optional[Path]) -> Any:
        import os

        if comfyui_path is not None:
            root: Optional[Path] = Path(comfyui_path).expanduser().resolve()
            if not comfy_inprocess.is_comfyui(root):
                raise RunError(f"{comfyui_path} is not a ComfyUI checkout (no comfy/, nodes.py, folder_paths.py)", EXIT_INPUT)
        else:
            root, how = comfy_inprocess.find_comfyui()
            if root is None:
                raise RunError(f"cannot run in-process: {how}; or pass --server", EXIT_INPUT)
        work = Path(tempfile.mkdtemp(prefix="instruct-run-"))
        import atexit

        atexit.register(shutil.rmtree, work, True)
        import torch

        comfy = comfy_inprocess.InProcessComfy(root, work, cpu=not torch.cuda.is_available())
        own_yaml = root / "extra_model_paths.yaml"
        if own_yaml.is_file() and os.environ.get("INSTRUCT_RUNNER_NO_COMFY_YAML") != "1":
            InProcessSession._load_path_files((own_yaml,))
        return comfy

    @staticmethod
    def _load_path_files(paths: tuple) -> None:
        """Register extra_model_paths.yaml files, each once per process."""
        import utils.extra_config

        for path in paths:
            key = str(Path(path).resolve())
            if key in _loaded_path_files:
                continue
            if not Path(path).is_file():
                raise RunError(f"extra model paths file not found: {path}", EXIT_INPUT)
            try:
                utils.extra_config.load_extra_path_config(key)
            except Exception as exc:  # a YAML or layout error is the user's file
                raise RunError(f"cannot read extra model paths file {path}: {exc}", EXIT_INPUT) from exc
            _loaded_path_files.add(key)

    def add_model_paths(self, extra_model_paths: tuple) -> None:
        """Register more extra_model_paths.yaml files (each once per process)."""
        self._load_path_files(extra_model_paths)

    # ---- what a caller needs to build prompts ---------------------------------------------------

    def schema(self, class_type: str) -> dict:
        """The ``/object_info`` entry of a node type (its inputs, their combo lists); {} if unknown."""
        if class_type not in self.comfy.nodes.NODE_CLASS_MAPPINGS:
            return {}
        return self.comfy.object_info(class_type)  # not cached: model lists change as files are added

    def node_types(self) -> set[str]:
        return set(self.comfy.nodes.NODE_CLASS_MAPPINGS)

    def all_schemas(self) -> dict:
        return {name: self.schema(name) for name in self.node_types()}

    def add_image(self, path: Path | str) -> str:
        """Copy an image into ComfyUI's input folder under its content hash; the name for LoadImage.

        Same bytes, same name (no duplicate copies); different bytes never share a name. The copies
        are removed by ``close``."""
        path = Path(path)
        if not path.is_file():
            raise RunError(f"image file not found: {path}", EXIT_INPUT)
        name = content_name(path)
        folder = Path(self.comfy.folder_paths.get_input_directory()) / UPLOAD_SUBFOLDER
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        if not target.exists():
            tmp = folder / f".{name}.{uuid.uuid4().hex}"
            shutil.copyfile(path, tmp)
            tmp.replace(target)
            self._placed.add(target)
        return f"{UPLOAD_SUBFOLDER}/{name}"

    # ---- running --------------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Stop the current run at its next step (ComfyUI's own interrupt); safe from any thread."""
        self._interrupted.set()
        self._mm.interrupt_current_processing(True)

    def run(self, prompt: dict, *, output: Optional[Path] = None, progress: Optional[ProgressFn] = None) -> RunResult:
        """Validate and execute one API prompt; the save node's images, written to ``output`` if given.

        Raises RunError: 2 bad prompt or input (also input errors raised while executing), 3
        execution error, 130 interrupted. Nothing is written unless the run succeeded."""
        api = check_prompt(prompt)
        missing = missing_types(api, self.node_types())
        if missing:
            raise RunError(
                f"node types not available in this ComfyUI: {', '.join(missing)}. In-process runs load ComfyUI's core "
                "nodes and this pack only; run against a server that has the other packs (--server URL).",
                EXIT_INPUT,
            )
        save = save_node(api)
        if output is not None:
            check_output(Path(output))
        _run_lock.acquire()  # one prompt at a time per process, as ComfyUI's own queue does
        try:
            self._interrupted.clear()
            with self._sigint_interrupts():
                ok, error, outputs, node_errors = self.comfy.validate(api)
                if not ok:
                    message = error.get("message", error) if isinstance(error, dict) else error
                    raise RunError(f"the workflow failed validation: {message}\n{format_node_errors(node_errors, api)}", EXIT_INPUT)
                prompt_id = uuid.uuid4().hex
                self._execute(api, prompt_id, outputs, progress)
        finally:
            _run_lock.release()
        self._executor.server.events.clear()  # the stub server records every event; a long session must not
        messages = self._executor.status_messages
        problem = failure(messages, api)
        if problem is None and self._interrupted.is_set():
            problem = RunError("the run was interrupted", EXIT_INTERRUPTED)
        if problem is not None:
            self._discard_outputs(self._executor.history_result.get("outputs", {}) if hasattr(self._executor, "history_result") else {})
            raise problem
        ui = self._executor.history_result["outputs"]
        cached = next((d.get("nodes", []) for e, d in messages if e == "execution_cached"), [])
        images = self._read_images(ui.get(save, {}).get("images", []))
        self._discard_outputs(ui)
        result = RunResult(prompt_id=prompt_id, images=images, outputs=ui, cached=list(cached))
        if output is not None:
            if not images:
                raise RunError("the run produced no image", EXIT_INPUT)
            result.written = write_outputs(images, Path(output))
        return result

    def _execute(self, api: dict, prompt_id: str, outputs: list, progress: Optional[ProgressFn]) -> None:
        from comfy_execution.utils import get_executing_context

        mm = self._mm

        def hook(value: int, total: int, preview: Any = None, prompt_id: Any = None, node_id: Any = None) -> None:
            if self._interrupted.is_set():
                mm.interrupt_current_processing(True)  # ComfyUI clears the flag when a prompt starts
            mm.throw_exception_if_processing_interrupted()
            if progress is not None:
                if node_id is None:
                    context = get_executing_context()
                    node_id = context.node_id if context is not None else None
                progress(value, total, node_id, node_label(api, node_id))

        if self._interrupted.is_set():
            raise RunError("the run was interrupted", EXIT_INTERRUPTED)
        previous, console_bar = self._utils.PROGRESS_BAR_HOOK, self._utils.PROGRESS_BAR_ENABLED
        self._utils.set_progress_bar_global_hook(hook)
        self._utils.set_progress_bar_enabled(self.verbose)  # the caller shows progress; no second (tqdm) bar
        try:
            self._executor.execute(api, prompt_id, {"client_id": None}, outputs)
        finally:
            self._utils.set_progress_bar_global_hook(previous)
            self._utils.set_progress_bar_enabled(console_bar)

    @contextlib.contextmanager
    def _sigint_interrupts(self) -> Iterator[None]:
        """First Ctrl-C: ComfyUI's interrupt (the run stops at its next step); second: KeyboardInterrupt.

        A process started with SIGINT ignored (``cmd &`` in a script, nohup) keeps ignoring it, as the
        server mode and every other program does: its launcher asked for that."""
        if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            yield
            return

        def on_sigint(signum: int, frame: Any) -> None:
            if self._interrupted.is_set():
                raise KeyboardInterrupt
            self.interrupt()

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        except KeyboardInterrupt as exc:
            raise RunError("the run was interrupted", EXIT_INTERRUPTED) from exc
        finally:
            signal.signal(signal.SIGINT, previous)

    def _read_images(self, images: list) -> list[bytes]:
        out = []
        for img in images:
            folder = self.comfy.folder_paths.get_directory_by_type(img.get("type", "output"))
            out.append((Path(folder) / img.get("subfolder", "") / img["filename"]).read_bytes())
        return out

    def _discard_outputs(self, ui: dict) -> None:
        """Remove the files this run's save nodes wrote into ComfyUI's folders (they were read),
        so thousands of runs do not fill the disk."""
        for node_out in ui.values():
            for img in node_out.get("images", []) if isinstance(node_out, dict) else []:
                folder = self.comfy.folder_paths.get_directory_by_type(img.get("type", "output"))
                if folder:
                    (Path(folder) / img.get("subfolder", "") / img["filename"]).unlink(missing_ok=True)

    def remove_images(self) -> None:
        """Delete the images ``add_image`` placed (their names stop working)."""
        for path in self._placed:
            path.unlink(missing_ok=True)
        self._placed.clear()

    def close(self) -> None:
        """Drop this session's cached node outputs (its models) and placed images. ComfyUI stays
        booted for the next session in this process."""
        self.remove_images()
        self._executor.reset()
        gc.collect()
        self._mm.cleanup_models_gc()
        self._mm.soft_empty_cache()

    def __enter__(self) -> "InProcessSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
