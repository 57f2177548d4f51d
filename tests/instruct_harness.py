"""Run real ComfyUI in-process on the CPU, the way its server does, with this pack loaded as a
custom node. One instance per test process (ComfyUI's registries are module globals).

Where ComfyUI is found (first match): ``$COMFYUI_PATH``; the ComfyUI whose ``custom_nodes``
holds this pack; ``~/ComfyUI``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

PACK_DIR = Path(__file__).resolve().parents[1]
MODEL_FOLDERS = ("checkpoints", "diffusion_models", "vae", "text_encoders", "loras", "controlnet",
                 "diffusers", "clip_vision", "ipadapter", "embeddings")


def is_comfyui(path: Optional[Path]) -> bool:
    return bool(path) and (path / "comfy").is_dir() and (path / "nodes.py").is_file() and (path / "folder_paths.py").is_file()


def find_comfyui() -> tuple[Optional[Path], str]:
    """(path, how it was found) or (None, why not)."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        p = Path(env).expanduser().resolve()
        return (p, "COMFYUI_PATH") if is_comfyui(p) else (None, f"COMFYUI_PATH={env} is not a ComfyUI checkout")
    holder = PACK_DIR.parent.parent
    if PACK_DIR.parent.name == "custom_nodes" and is_comfyui(holder):
        return holder, "the ComfyUI holding this pack"
    home = Path.home() / "ComfyUI"
    if is_comfyui(home):
        return home, "~/ComfyUI"
    return None, "no ComfyUI found: set COMFYUI_PATH to a ComfyUI 0.8+ checkout (or clone one to ~/ComfyUI)"


class StubServer:
    """What PromptExecutor needs of PromptServer; records every event it is sent."""

    def __init__(self) -> None:
        self.client_id = "tests"
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict = {}
        self.events: list[tuple[str, Any]] = []

    def send_sync(self, event: str, data: Any, sid: Any = None) -> None:
        self.events.append((event, data))

    def queue_updated(self) -> None:
        pass


class PromptFailed(AssertionError):
    pass


@dataclass
class RunResult:
    executor: Any
    prompt_id: str
    events: list = field(default_factory=list)

    def output(self, node_id: str, slot: int = 0) -> Any:
        """Raw Python output of any executed node (first item of the slot's list)."""
        cached = self.executor.caches.outputs.get(str(node_id))
        if cached is None:
            raise KeyError(f"node {node_id} produced no cached output")
        return cached.outputs[slot][0]

    @property
    def ui(self) -> dict:
        return self.executor.history_result["outputs"]


class ComfyHarness:
    def __init__(self, root: Path, work_dir: Path, models_dir: Path, cpu: bool = True) -> None:
        self.root = root
        self.work_dir = work_dir
        self.models_dir = models_dir
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        from comfy.cli_args import args

        args.cpu = cpu  # set before comfy.model_management is imported (it probes the device at import)
        args.disable_api_nodes = True
        import folder_paths

        for sub in ("input", "output", "temp", "user"):
            (work_dir / sub).mkdir(parents=True, exist_ok=True)
        folder_paths.set_input_directory(str(work_dir / "input"))
        folder_paths.set_output_directory(str(work_dir / "output"))
        folder_paths.set_temp_directory(str(work_dir / "temp"))
        folder_paths.set_user_directory(str(work_dir / "user"))
        for kind in MODEL_FOLDERS:
            (models_dir / kind).mkdir(parents=True, exist_ok=True)
            if kind in folder_paths.folder_names_and_paths:
                folder_paths.add_model_folder_path(kind, str(models_dir / kind), is_default=True)
        import utils.install_util  # noqa: F401  (must precede `nodes`: see testing_against_comfyui.md §3)
        import execution
        import nodes

        self.nodes = nodes
        self.execution = execution
        self.folder_paths = folder_paths
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        self.core_ids = set(nodes.NODE_CLASS_MAPPINGS)
        self.pack_loaded = asyncio.run(nodes.load_custom_node(str(PACK_DIR), ignore=self.core_ids))
        test_nodes = Path(__file__).resolve().parent / "instruct_test_nodes.py"
        assert asyncio.run(nodes.load_custom_node(str(test_nodes), ignore=self.core_ids))
        self.test_nodes = sys.modules[str(test_nodes.with_suffix(""))]
        # ComfyUI names the package after its path; submodules hang below that name.
        self.pack_module_name = str(PACK_DIR).replace(".", "_x_")
        self.pack_node_ids = sorted(set(nodes.NODE_CLASS_MAPPINGS) - self.core_ids - set(self.test_nodes.NODE_CLASS_MAPPINGS))
        # "ipadapter" exists only after the pack registered it
        (models_dir / "ipadapter").mkdir(parents=True, exist_ok=True)
        folder_paths.add_model_folder_path("ipadapter", str(models_dir / "ipadapter"), is_default=True)

    def pack(self, submodule: str) -> Any:
        """A module of the pack as ComfyUI loaded it, e.g. ``pack('samplers.guider')``."""
        import importlib

        return importlib.import_module(f"{self.pack_module_name}.{submodule}")

    def input_image(self, name: str, height: int = 64, width: int = 64, seed: int = 0) -> str:
        """Write a smooth random RGB test picture into ComfyUI's input folder; returns its name."""
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(seed)
        coarse = rng.random((4, 4, 3))
        ys = np.linspace(0, 3, height)[:, None]
        xs = np.linspace(0, 3, width)[None, :]
        y0, x0 = np.floor(ys).astype(int).clip(0, 2), np.floor(xs).astype(int).clip(0, 2)
        fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
        img = (coarse[y0, x0] * (1 - fy) * (1 - fx) + coarse[y0 + 1, x0] * fy * (1 - fx)
               + coarse[y0, x0 + 1] * (1 - fy) * fx + coarse[y0 + 1, x0 + 1] * fy * fx)
        Image.fromarray((img * 255).round().astype("uint8")).save(self.work_dir / "input" / name)
        return name

    def graph(self):
        from comfy_execution.graph_utils import GraphBuilder

        return GraphBuilder(prefix="")  # keep the ids the test chose

    def validate(self, prompt: dict) -> tuple:
        return asyncio.run(self.execution.validate_prompt(str(uuid.uuid4()), prompt, None))

    def run(self, prompt: dict, expect_success: bool = True) -> RunResult:
        ok, error, outputs, node_errors = self.validate(prompt)
        if not ok:
            raise PromptFailed(f"validation failed: {error} {node_errors}")
        server = StubServer()
        executor = self.execution.PromptExecutor(server, cache_type=self.execution.CacheType.CLASSIC,
                                                 cache_args={"lru": 0, "ram": 0})
        prompt_id = str(uuid.uuid4())
        executor.execute(prompt, prompt_id, {"client_id": server.client_id}, outputs)
        result = RunResult(executor, prompt_id, server.events)
        if expect_success and not executor.success:
            errors = [data for event, data in executor.status_messages if event == "execution_error"]
            message = errors[0].get("exception_message") if errors else executor.status_messages
            raise PromptFailed(f"execution failed: {message}")
        return result

    def execution_error(self, result: RunResult) -> Optional[dict]:
        for event, data in result.executor.status_messages:
            if event == "execution_error":
                return data
        return None


class LogCapture(logging.Handler):
    """Collects root-logger records (ComfyUI logs there when its setup_logger is not called)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.WARNING) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]
