"""A workflow file as an API prompt: read, and converted from UI format with the node schemas of
whoever will run it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import formats
from .overrides import Schema


def load_workflow(path: Path | str) -> Any:
    """The file's JSON (an API prompt or a UI workflow; checked by the caller)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:  # missing, unreadable, not UTF-8, not JSON
        raise InputError(f"cannot read workflow {path}: {exc}") from exc


def is_ui(workflow: Any) -> bool:
    return isinstance(workflow, dict) and formats.is_ui(workflow)


def to_api(workflow: Any, schema: Schema, where: str) -> Any:
    """An API prompt from a workflow file's content: API as it is, UI converted with ``schema``."""
    if not is_ui(workflow):
        return workflow
    nodes = workflow["nodes"]
    if not all(isinstance(n, dict) and isinstance(n.get("type"), str) for n in nodes):
        raise InputError("the UI workflow has a node that is not an object with a 'type'")
    types = sorted({n["type"] for n in nodes} - formats.UI_ONLY_TYPES)
    schemas = {t: schema(t) for t in types}
    missing = [t for t in types if not schemas[t]]
    if missing:
        raise InputError(f"{where} lacks node types: {', '.join(missing)}. Install the pack that provides them.")
    try:
        return formats.ui_to_api(workflow, schemas)
    except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
        raise InputError(f"the UI workflow is malformed ({type(exc).__name__}: {exc}); re-export it from ComfyUI") from exc
