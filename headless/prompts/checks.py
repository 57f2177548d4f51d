"""Checks of an API prompt that must read the same in-process and on a server: its shape, finite inputs,
the node whose images are the result, and ComfyUI's node-level validation messages.

Pure Python (no ComfyUI import), so the server client works on a machine without ComfyUI.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from ..errors import InputError
from . import titles


def node_label(api: dict, node_id: Any) -> str:
    """The node's title, else its type, else its id: what a user recognises in a progress line."""
    node = api.get(str(node_id)) if node_id is not None else None
    if not isinstance(node, dict):
        return "" if node_id is None else f"node {node_id}"
    return node.get("_meta", {}).get("title") or node.get("class_type") or f"node {node_id}"


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    return False


def check_prompt(api: Any) -> dict:
    """Refuse what is not an API prompt ComfyUI can take: not an object of node id → node, a node
    without a ``class_type``, ``inputs`` that are not an object, NaN/inf in any input."""
    if not isinstance(api, dict) or not api:
        kind = type(api).__name__ if not isinstance(api, dict) else "an empty object"
        raise InputError(
            f"the workflow is {kind}, not a workflow: expected a JSON object of node id → node (API format, "
            "ComfyUI's 'Export (API)') or a UI workflow with a 'nodes' list"
        )
    for node_id, node in api.items():
        if not isinstance(node, dict):
            raise InputError(f"workflow node {node_id} is {type(node).__name__}, not an object with class_type and inputs")
        if not isinstance(node.get("class_type"), str) or not node["class_type"]:
            raise InputError(f'workflow node {node_id} has no class_type (the node type, e.g. "KSampler")')
        if not isinstance(node.get("inputs", {}), dict):
            raise InputError(f"workflow node {node_id} ({node['class_type']}): 'inputs' must be an object of input name → value")
        node.setdefault("inputs", {})
        for name, value in node["inputs"].items():
            if _non_finite(value):
                raise InputError(f"node {node_id} ({node_label(api, node_id)}).{name} is {value!r}: inputs must be finite numbers")
    return api


def save_node(api: dict) -> str:
    """The node whose images are the run's result: the one titled Save, else the first SaveImage."""
    titled = [
        k for k, n in api.items() if n.get("_meta", {}).get("title") == titles.SAVE and n["class_type"] in ("SaveImage", "PreviewImage")
    ]
    saves = titled or [k for k, n in api.items() if n["class_type"] == "SaveImage"]
    if not saves:
        raise InputError("the workflow has no SaveImage node, so there is no image to write")
    return saves[0]


def node_types(api: dict) -> set[str]:
    return {n["class_type"] for n in api.values()}


def format_node_errors(node_errors: Any, api: dict) -> str:
    """ComfyUI's node-level validation errors, one line each, naming the node."""
    lines = []
    for node_id, info in (node_errors or {}).items() if isinstance(node_errors, dict) else ():
        kind = info.get("class_type") or api.get(node_id, {}).get("class_type", "?")
        for err in info.get("errors", []):
            detail = err.get("details") or ""
            lines.append(f"  node {node_id} ({kind}): {err.get('message', '')}{': ' + detail if detail else ''}")
    return "\n".join(lines)


def lacking(api: dict, known: Iterable[str]) -> list[str]:
    """The prompt's node types that are not in ``known``, sorted."""
    return sorted(node_types(api) - set(known))
