"""Run ComfyUI in this process, the way its server does, with this pack loaded as a custom node.

Used by the in-process session, the tests, the benchmarks and the workflow generator. One instance per
process: ComfyUI's registries are module globals.

Where ComfyUI is found (first match): ``$COMFYUI_PATH``; the ComfyUI whose ``custom_nodes`` holds
this pack; ``~/ComfyUI``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Optional

PACK_DIR = Path(__file__).resolve().parents[2]


def put_on_path(root: Path) -> None:
    """Make ComfyUI's own modules (``comfy``, ``nodes``, ``folder_paths``) importable, as its ``main.py`` is.

    ComfyUI is a checkout, not an installed package: its root on ``sys.path`` is how it runs at all,
    so this is the one place the tools put it there.
    """
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


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
        self.client_id = "in-process"
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict = {}
        self.events: list[tuple[str, Any]] = []

    def send_sync(self, event: str, data: Any, sid: Any = None) -> None:
        self.events.append((event, data))

    def queue_updated(self) -> None:
        pass


_ACTIVE: Optional["InProcessComfy"] = None


def active() -> Optional["InProcessComfy"]:
    """The InProcessComfy this process already booted, if any (there can be only one)."""
    return _ACTIVE


class InProcessComfy:
    """ComfyUI core nodes + comfy_extras + this pack, executing API-format prompts without HTTP."""

    def __init__(
        self,
        root: Path,
        work_dir: Optional[Path] = None,
        cpu: bool = True,
        model_dirs: Optional[dict[str, list[str]]] = None,
    ) -> None:
        self.root = Path(root)
        put_on_path(self.root)
        from comfy.cli_args import args

        args.cpu = cpu  # set before comfy.model_management is imported (it probes the device at import)
        args.disable_api_nodes = True
        import folder_paths

        self.folder_paths = folder_paths
        if work_dir is not None:
            for sub in ("input", "output", "temp", "user"):
                (Path(work_dir) / sub).mkdir(parents=True, exist_ok=True)
            folder_paths.set_input_directory(str(Path(work_dir) / "input"))
            folder_paths.set_output_directory(str(Path(work_dir) / "output"))
            folder_paths.set_temp_directory(str(Path(work_dir) / "temp"))
            folder_paths.set_user_directory(str(Path(work_dir) / "user"))
        # Folders ComfyUI knows now are added before the pack loads; the pack's own (ipadapter) after.
        pending = self._add_model_dirs(model_dirs or {})
        import utils.install_util  # noqa: F401  (must precede `nodes`, or comfy/utils.py shadows the package)
        import execution
        import nodes

        self.nodes = nodes
        self.execution = execution
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        self.core_ids = set(nodes.NODE_CLASS_MAPPINGS)
        self.pack_loaded = asyncio.run(nodes.load_custom_node(str(PACK_DIR), ignore=self.core_ids))
        #: The node ids the pack registered (its list: NODE_CLASSES in nodes/__init__.py).
        self.pack_node_ids = sorted(set(nodes.NODE_CLASS_MAPPINGS) - self.core_ids)
        # ComfyUI names the package after its path; its submodules hang below that name.
        self.pack_module_name = str(PACK_DIR).replace(".", "_x_")
        self._add_model_dirs(pending)
        global _ACTIVE
        _ACTIVE = self

    def _add_model_dirs(self, model_dirs: dict[str, list[str]]) -> dict[str, list[str]]:
        """Register the folders of every known kind; return those of kinds not registered yet."""
        pending = {}
        for kind, dirs in model_dirs.items():
            if kind not in self.folder_paths.folder_names_and_paths:
                pending[kind] = dirs
                continue
            for d in dirs:
                Path(d).mkdir(parents=True, exist_ok=True)
                self.folder_paths.add_model_folder_path(kind, str(d), is_default=True)
        return pending

    def object_info(self, class_type: str) -> dict:
        """The ``/object_info`` entry of a node type (V3 and V1 nodes)."""
        cls = self.nodes.NODE_CLASS_MAPPINGS[class_type]
        if hasattr(cls, "GET_NODE_INFO_V1"):
            return cls.GET_NODE_INFO_V1()
        inputs = cls.INPUT_TYPES()
        return {
            "input": {k: inputs.get(k, {}) for k in ("required", "optional")},
            "output": list(cls.RETURN_TYPES),
            "output_node": getattr(cls, "OUTPUT_NODE", False),
        }

    def all_object_info(self) -> dict:
        return {name: self.object_info(name) for name in self.nodes.NODE_CLASS_MAPPINGS}

    def validate(self, prompt: dict) -> tuple:
        return asyncio.run(self.execution.validate_prompt(str(uuid.uuid4()), prompt, None))

    def execute(self, prompt: dict, outputs: list, server: Optional[StubServer] = None) -> tuple[Any, StubServer]:
        server = server or StubServer()
        executor = self.execution.PromptExecutor(server, cache_type=self.execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0})
        executor.execute(prompt, str(uuid.uuid4()), {"client_id": server.client_id}, outputs)
        return executor, server
