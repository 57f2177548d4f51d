"""What the in-process session, the server client and the CLI share: the exit codes, the error type,
the run result, and the checks and messages that must read the same in both modes.

Pure Python (no ComfyUI import), so the server client works on a machine without ComfyUI.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from . import titles

EXIT_OK, EXIT_INPUT, EXIT_EXECUTION, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 2, 3, 4, 130

#: Exception types (last dotted part of ComfyUI's ``exception_type``) that mean the user's input is
#: wrong, not that execution broke: the pack's typed errors and a missing file.
INPUT_EXCEPTIONS = ("InstructInputError", "InstructModelError", "FileNotFoundError")

#: Where the runner puts input images inside ComfyUI's input folder (content-hash names).
UPLOAD_SUBFOLDER = "instruct-runner"

#: ``progress(value, total, node_id, label)``; ``label`` is the node's title (or its type).
ProgressFn = Callable[[int, int, Optional[str], str], None]


class RunError(Exception):
    """A run that did not produce its images; ``code`` is the exit code the CLI returns."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class RunResult:
    """One finished prompt: the save node's images (PNG bytes) and what ComfyUI reported."""

    prompt_id: str
    images: list[bytes]
    outputs: dict = field(default_factory=dict)  # ComfyUI's ui outputs by node id (history "outputs")
    cached: list[str] = field(default_factory=list)  # nodes ComfyUI's cache answered without running
    written: list[Path] = field(default_factory=list)  # files written for ``output=``


def content_name(path: Path) -> str:
    """A file name no other content can have: the SHA-256 of the bytes, with the file's suffix."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:32]
    return f"{digest}{Path(path).suffix.lower()}"


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
    """Refuse (exit 2) what is not an API prompt ComfyUI can take: not an object of node id → node,
    a node without a ``class_type``, ``inputs`` that are not an object, NaN/inf in any input."""
    if not isinstance(api, dict) or not api:
        kind = type(api).__name__ if not isinstance(api, dict) else "an empty object"
        raise RunError(
            f"the workflow is {kind}, not a workflow: expected a JSON object of node id → node (API format, "
            "ComfyUI's 'Export (API)') or a UI workflow with a 'nodes' list",
            EXIT_INPUT,
        )
    for node_id, node in api.items():
        if not isinstance(node, dict):
            raise RunError(f"workflow node {node_id} is {type(node).__name__}, not an object with class_type and inputs", EXIT_INPUT)
        if not isinstance(node.get("class_type"), str) or not node["class_type"]:
            raise RunError(f'workflow node {node_id} has no class_type (the node type, e.g. "KSampler")', EXIT_INPUT)
        if not isinstance(node.get("inputs", {}), dict):
            raise RunError(f"workflow node {node_id} ({node['class_type']}): 'inputs' must be an object of input name → value", EXIT_INPUT)
        node.setdefault("inputs", {})
        for name, value in node["inputs"].items():
            if _non_finite(value):
                raise RunError(
                    f"node {node_id} ({node_label(api, node_id)}).{name} is {value!r}: inputs must be finite numbers", EXIT_INPUT
                )
    return api


def save_node(api: dict) -> str:
    """The node whose images are the run's result: the one titled Save, else the first SaveImage."""
    titled = [
        k for k, n in api.items() if n.get("_meta", {}).get("title") == titles.SAVE and n["class_type"] in ("SaveImage", "PreviewImage")
    ]
    saves = titled or [k for k, n in api.items() if n["class_type"] == "SaveImage"]
    if not saves:
        raise RunError("the workflow has no SaveImage node, so there is no image to write", EXIT_INPUT)
    return saves[0]


def missing_types(api: dict, known: Iterable[str]) -> list[str]:
    return sorted({n["class_type"] for n in api.values()} - set(known))


def format_node_errors(node_errors: Any, api: dict) -> str:
    """ComfyUI's node-level validation errors, one line each, naming the node."""
    lines = []
    for node_id, info in (node_errors or {}).items() if isinstance(node_errors, dict) else ():
        kind = info.get("class_type") or api.get(node_id, {}).get("class_type", "?")
        for err in info.get("errors", []):
            detail = err.get("details") or ""
            lines.append(f"  node {node_id} ({kind}): {err.get('message', '')}{': ' + detail if detail else ''}")
    return "\n".join(lines)


def failure(messages: Iterable, api: dict, where: str = "") -> Optional[RunError]:
    """The RunError for ComfyUI's execution status messages, or None when the run succeeded.

    Input errors raised while executing (the pack's typed errors) are exit 2, not 3: the fix is
    the user's, not a bug."""
    for event, data in messages or ():
        if event == "execution_interrupted":
            return RunError(f"the run was interrupted{where}", EXIT_INTERRUPTED)
        if event == "execution_error":
            node_id = data.get("node_id")
            kind = str(data.get("exception_type") or "").rsplit(".", 1)[-1]
            code = EXIT_INPUT if kind in INPUT_EXCEPTIONS else EXIT_EXECUTION
            label = node_label(api, node_id)
            node = f"node {node_id} ({label})" if label and label != f"node {node_id}" else f"node {node_id} ({data.get('node_type')})"
            return RunError(f"{node} failed: {str(data.get('exception_message', '')).strip()}", code)
    return None
