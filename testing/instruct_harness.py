"""Run real ComfyUI in-process on the CPU, the way its server does, with this pack loaded as a
custom node. One instance per test process (ComfyUI's registries are module globals).

Where ComfyUI is found (first match): ``$COMFYUI_PATH``; the ComfyUI whose ``custom_nodes``
holds this pack; ``~/ComfyUI``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from headless.runner.comfyui import PACK_DIR, InProcessComfy, StubServer, find_comfyui, is_comfyui  # noqa: F401

MODEL_FOLDERS = (
    "checkpoints",
    "diffusion_models",
    "vae",
    "text_encoders",
    "loras",
    "controlnet",
    "diffusers",
    "clip_vision",
    "ipadapter",
    "embeddings",
)


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


class ComfyHarness(InProcessComfy):
    """InProcessComfy on temporary folders and the test model cache, plus a test-only node file."""

    def __init__(self, root: Path, work_dir: Path, models_dir: Path, cpu: bool = True) -> None:
        self.work_dir = work_dir
        self.models_dir = models_dir
        super().__init__(root, work_dir, cpu=cpu, model_dirs={kind: [str(models_dir / kind)] for kind in MODEL_FOLDERS})
        test_nodes = Path(__file__).resolve().parent / "instruct_test_nodes.py"
        assert asyncio.run(self.nodes.load_custom_node(str(test_nodes), ignore=self.core_ids))
        self.test_nodes = sys.modules[str(test_nodes.with_suffix(""))]
        self.pack_node_ids = sorted(set(self.nodes.NODE_CLASS_MAPPINGS) - self.core_ids - set(self.test_nodes.NODE_CLASS_MAPPINGS))

    def pack(self, submodule: str) -> Any:
        """A module of the pack as ComfyUI loaded it, e.g. ``pack('samplers.guider')``."""
        import importlib

        return importlib.import_module(f"{self.pack_module_name}.{submodule}")

    def input_image(
        self, name: str, height: int = 64, width: int = 64, seed: int = 0, painted: tuple[int, int, int, int] | None = None
    ) -> str:
        """Write a smooth random RGB test picture into ComfyUI's input folder; returns its name.

        ``painted=(top, bottom, left, right)`` makes that box transparent, as MaskEditor paints a region:
        LoadImage's MASK output is 1 there."""
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(seed)
        coarse = rng.random((4, 4, 3))
        ys = np.linspace(0, 3, height)[:, None]
        xs = np.linspace(0, 3, width)[None, :]
        y0, x0 = np.floor(ys).astype(int).clip(0, 2), np.floor(xs).astype(int).clip(0, 2)
        fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
        img = (
            coarse[y0, x0] * (1 - fy) * (1 - fx)
            + coarse[y0 + 1, x0] * fy * (1 - fx)
            + coarse[y0, x0 + 1] * (1 - fy) * fx
            + coarse[y0 + 1, x0 + 1] * fy * fx
        )
        pixels = (img * 255).round().astype("uint8")
        if painted is not None:
            top, bottom, left, right = painted
            alpha = np.full((height, width, 1), 255, dtype="uint8")
            alpha[top:bottom, left:right] = 0
            pixels = np.concatenate([pixels, alpha], axis=-1)
        Image.fromarray(pixels).save(self.work_dir / "input" / name)
        return name

    def graph(self):
        from comfy_execution.graph_utils import GraphBuilder

        return GraphBuilder(prefix="")  # keep the ids the test chose

    def run(self, prompt: dict, expect_success: bool = True) -> RunResult:
        ok, error, outputs, node_errors = self.validate(prompt)
        if not ok:
            raise PromptFailed(f"validation failed: {error} {node_errors}")
        executor, server = self.execute(prompt, outputs)
        result = RunResult(executor, "", server.events)
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
