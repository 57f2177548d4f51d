"""Run many API prompts in this process through one ComfyUI: the in-process ``Runner``.

``InProcessSession`` boots ComfyUI once per process (a second session reuses it: ComfyUI's
registries are module globals) with this pack loaded, and keeps one ``PromptExecutor`` the way
ComfyUI's server does, so ComfyUI's own cache keeps a loader's model between runs: a thousand
prompts on one model load it once, and memory stays flat::

    session = InProcessSession()
    name = session.add_image("photo.png")           # a name LoadImage accepts
    result = session.run(prompt)                     # RunResult: images (PNG bytes)
    session.close()

Interrupts: ``session.interrupt()`` (from any thread) stops the run at the next sampling step with
ComfyUI's own interrupt; ``run`` then raises ``RunInterrupted``. Called from the main thread, ``run``
turns the first Ctrl-C into that interrupt and a second into KeyboardInterrupt; ``timeout`` stops the
run the same way and raises ``RunTimeout``. Runs are serialised per process (ComfyUI's interrupt flag
and model management are global). ``shared_session()`` is the process's one session for callers that
come back (the command line called again, a batch after a run).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import signal
import tempfile
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import InputError, RunInterrupted, RunTimeout
from ..prompts.checks import format_node_errors, node_label
from . import comfyui
from .images import UPLOAD_SUBFOLDER, content_name
from .protocol import ProgressFn
from .sequence import Finished, PromptRunner

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


class InProcessSession(PromptRunner):
    """ComfyUI in this process, booted once, running one API prompt per ``run`` (see module doc)."""

    name = "in-process"
    runs_here = True

    def __init__(self, *, comfyui_path: Optional[Path] = None, extra_model_paths: tuple = (), verbose: bool = False) -> None:
        self.verbose = verbose
        with quiet_startup(verbose):
            self.comfy = comfyui.active() or self._boot(comfyui_path)
            self._load_path_files(extra_model_paths)
        if not getattr(self.comfy, "pack_loaded", True):
            raise InputError("ComfyUI could not load the ComfyUI-Instruct nodes (run with --verbose to see why)")
        import comfy.model_management
        import comfy.utils

        self._mm = comfy.model_management
        self._utils = comfy.utils
        self._executor = self.comfy.execution.PromptExecutor(
            comfyui.StubServer(), cache_type=self.comfy.execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0}
        )
        self._interrupted = threading.Event()
        self._timed_out = threading.Event()
        self._placed: set[Path] = set()

    # ---- set-up --------------------------------------------------------------------------------

    @staticmethod
    def _boot(comfyui_path: Optional[Path]) -> Any:
        if comfyui_path is not None:
            root: Optional[Path] = Path(comfyui_path).expanduser().resolve()
            if not comfyui.is_comfyui(root):
                raise InputError(f"{comfyui_path} is not a ComfyUI checkout (no comfy/, nodes.py, folder_paths.py)")
        else:
            root, how = comfyui.find_comfyui()
            if root is None:
                raise InputError(f"cannot run in-process: {how}; or pass --server")
        work = Path(tempfile.mkdtemp(prefix="instruct-run-"))
        import atexit

        atexit.register(shutil.rmtree, work, True)
        import torch

        comfy = comfyui.InProcessComfy(root, work, cpu=not torch.cuda.is_available())
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
                raise InputError(f"extra model paths file not found: {path}")
            try:
                utils.extra_config.load_extra_path_config(key)
            except Exception as exc:  # a YAML or layout error is the user's file
                raise InputError(f"cannot read extra model paths file {path}: {exc}") from exc
            _loaded_path_files.add(key)

    def add_model_paths(self, extra_model_paths: tuple) -> None:
        """Register more extra_model_paths.yaml files (each once per process)."""
        self._load_path_files(extra_model_paths)

    @property
    def model_folders(self) -> Any:
        """ComfyUI's ``folder_paths``: where this ComfyUI looks for model files (extra_model_paths included)."""
        return self.comfy.folder_paths

    # ---- what a caller needs to build prompts ---------------------------------------------------

    def schema(self, class_type: str) -> dict:
        """The ``/object_info`` entry of a node type (its inputs, their combo lists); {} if unknown."""
        if class_type not in self.comfy.nodes.NODE_CLASS_MAPPINGS:
            return {}
        return self.comfy.object_info(class_type)  # not cached: model lists change as files are added

    def lacks_types_message(self, missing: list[str]) -> str:
        return (
            f"node types not available in this ComfyUI: {', '.join(missing)}. In-process runs load ComfyUI's core "
            "nodes and this pack only; run against a server that has the other packs (--server URL)."
        )

    def add_image(self, path: Path | str) -> str:
        """Copy an image into ComfyUI's input folder under its content hash; the name for LoadImage.

        Same bytes, same name (no duplicate copies); different bytes never share a name. The copies
        are removed by ``remove_images`` and ``close``."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"image file not found: {path}")
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

    def _stop_for_timeout(self) -> None:
        self._timed_out.set()
        self.interrupt()

    def _execute(self, api: dict, progress: Optional[ProgressFn], timeout: Optional[float]) -> Finished:
        timer = threading.Timer(timeout, self._stop_for_timeout) if timeout is not None else None
        _run_lock.acquire()  # one prompt at a time per process, as ComfyUI's own queue does
        try:
            self._interrupted.clear()
            self._timed_out.clear()
            with self._sigint_interrupts():
                ok, error, outputs, node_errors = self.comfy.validate(api)
                if not ok:
                    message = error.get("message", error) if isinstance(error, dict) else error
                    raise InputError(f"the workflow failed validation: {message}\n{format_node_errors(node_errors, api)}")
                prompt_id = uuid.uuid4().hex
                if timer is not None:
                    timer.start()
                self._run_executor(api, prompt_id, outputs, progress)
        finally:
            if timer is not None:
                timer.cancel()
            _run_lock.release()
        self._executor.server.events.clear()  # the stub server records every event; a long session must not
        messages = list(self._executor.status_messages)
        ui = self._executor.history_result.get("outputs", {}) if hasattr(self._executor, "history_result") else {}
        if self._timed_out.is_set():
            self._discard(ui)
            raise RunTimeout(f"the run did not finish within {timeout:g} s; it was stopped")
        if self._interrupted.is_set() and not any(event == "execution_error" for event, _ in messages):
            messages.append(("execution_interrupted", {}))
        cached = next((d.get("nodes", []) for e, d in messages if e == "execution_cached"), [])
        return Finished(prompt_id=prompt_id, messages=messages, outputs=ui, cached=list(cached))

    def _run_executor(self, api: dict, prompt_id: str, outputs: list, progress: Optional[ProgressFn]) -> None:
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
            raise RunInterrupted("the run was interrupted")
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
            raise RunInterrupted("the run was interrupted") from exc
        finally:
            signal.signal(signal.SIGINT, previous)

    def _read_images(self, images: list[dict]) -> list[bytes]:
        out = []
        for img in images:
            folder = self.comfy.folder_paths.get_directory_by_type(img.get("type", "output"))
            out.append((Path(folder) / img.get("subfolder", "") / img["filename"]).read_bytes())
        return out

    def _discard(self, outputs: dict) -> None:
        """Remove the files this run's save nodes wrote into ComfyUI's folders (they were read),
        so thousands of runs do not fill the disk."""
        for node_out in outputs.values():
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


_SHARED: Optional[InProcessSession] = None


def shared_session(extra_model_paths: tuple = (), verbose: bool = False) -> InProcessSession:
    """The process's one session: calling the command line again (scripts, tests), or a batch after a
    run, reuses ComfyUI and the models in its cache instead of loading them again."""
    global _SHARED
    if _SHARED is None:
        _SHARED = InProcessSession(extra_model_paths=extra_model_paths, verbose=verbose)
    else:
        _SHARED.add_model_paths(extra_model_paths)
    return _SHARED


def release_shared() -> None:
    """Let the shared session drop the models it keeps (ComfyUI stays booted; the next call loads them
    again). For a long-lived process that is done with editing for a while."""
    global _SHARED
    if _SHARED is not None:
        _SHARED.close()
        _SHARED = None
