"""ComfyUI's execution status messages as the error they mean (the same in-process and on a server)."""

from __future__ import annotations

from typing import Iterable, Optional

from ..errors import ExecutionError, HeadlessError, InputError, RunInterrupted
from ..prompts.checks import node_label

#: Exception types (last dotted part of ComfyUI's ``exception_type``) that mean the user's input is
#: wrong, not that execution broke: the pack's typed errors and a missing file.
INPUT_EXCEPTIONS = ("InstructInputError", "InstructModelError", "FileNotFoundError")


def failure(messages: Iterable, api: dict, where: str = "") -> Optional[HeadlessError]:
    """The error of a run from its status messages, or None when it succeeded. Input errors raised while
    executing (the pack's typed errors) are the user's to fix, not execution failures."""
    for event, data in messages or ():
        if event == "execution_interrupted":
            return RunInterrupted(f"the run was interrupted{where}")
        if event == "execution_error":
            node_id = data.get("node_id")
            kind = str(data.get("exception_type") or "").rsplit(".", 1)[-1]
            error = InputError if kind in INPUT_EXCEPTIONS else ExecutionError
            label = node_label(api, node_id)
            node = f"node {node_id} ({label})" if label and label != f"node {node_id}" else f"node {node_id} ({data.get('node_type')})"
            return error(f"{node} failed: {str(data.get('exception_message', '')).strip()}")
    return None
