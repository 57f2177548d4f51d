"""The pack's ComfyExtension: thin V3 node classes, registered one by one.

Each node module is imported and each schema built inside its own try block, so one broken node is
logged and skipped instead of taking the rest of the pack (or ComfyUI's start-up) down with it.
"""

from __future__ import annotations

import importlib
import logging

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from ..models.folders import register_ipadapter_folder

log = logging.getLogger(__name__)

#: (module, class) of every node, in menu order.
NODE_CLASSES: tuple[tuple[str, str], ...] = (
    ("loaders", "InstructUNetLoader"),
    ("conditioning", "InstructImageConditioning"),
    ("qwen_text", "InstructTextEncodeQwenImageEdit"),
    ("sampling", "InstructKSampler"),
    ("sampling", "InstructGuider"),
    ("regions", "InstructKSamplerEditMask"),
    ("regions", "InstructRegionComposite"),
    ("merge", "InstructMerge"),
    ("ipadapter", "IPAdapterInstructLoader"),
    ("ipadapter", "IPAdapterInstructApply"),
)


def _load_nodes() -> list[type[io.ComfyNode]]:
    nodes: list[type[io.ComfyNode]] = []
    for module_name, class_name in NODE_CLASSES:
        try:
            module = importlib.import_module(f".{module_name}", __name__)
            node = getattr(module, class_name)
            node.GET_SCHEMA()  # a schema that fails here would abort ComfyUI's registration loop
        except Exception:
            log.exception("ComfyUI-Instruct: node %s could not be loaded and is skipped", class_name)
            continue
        nodes.append(node)
    return nodes


class InstructExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        try:
            register_ipadapter_folder()
        except Exception:
            log.exception("ComfyUI-Instruct: could not register the 'ipadapter' model folder")
        return _load_nodes()
