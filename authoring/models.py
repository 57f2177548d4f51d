"""The model metadata the workflows declare, from the one manifest ``model_manifest.json`` (at the pack root: ComfyUI lists every
``workflows/*.json`` as a template).

What frontend 1.35 reads (``app.loadGraphData``): a node's ``properties.models`` entry counts only when
its ``name`` equals one of the node's widget values; the workflow's top-level ``models`` list always
counts. An entry is missing when the folder ``directory`` has no file whose path equals ``name``.
A loader that lists ``checkpoints/<file>`` (the Instruct UNet Loader lists three folders) can
therefore only be declared at workflow level, by the bare file name; loaders that list bare names
get the node-level entry as well (the same entry: the frontend keeps one per URL).
"""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST = Path(__file__).resolve().parents[1] / "model_manifest.json"


def load_manifest(path: Path = MANIFEST) -> dict[str, dict]:
    return json.loads(path.read_text())["models"]


def match(value: object, manifest: dict[str, dict]) -> str | None:
    """The manifest key a loader's widget value names (``file`` or ``<its folder>/file``), else None."""
    if not isinstance(value, str):
        return None
    if value in manifest:
        return value
    folder, _, name = value.partition("/")
    if name in manifest and manifest[name]["directory"] == folder:
        return name
    return None


def frontend_entry(key: str, manifest: dict[str, dict]) -> dict:
    """The entry in the frontend's ``ModelFile`` shape (name, url, directory, hash, hash_type)."""
    meta = manifest[key]
    entry = {"name": key, "url": meta["url"], "directory": meta["directory"]}
    if meta.get("sha256"):
        entry.update(hash=meta["sha256"], hash_type="sha256")
    return entry


def note_lines(keys: list[str], manifest: dict[str, dict]) -> str:
    """The Note's 'Models' paragraph: where each file goes and where to get it."""
    lines = ["Models (the dialog on opening offers them; it downloads only .safetensors, save the others by hand):"]
    for key in keys:
        meta = manifest[key]
        where = meta["page"].removeprefix("https://")
        lines.append(f"- models/{meta['directory']}/{key} from {where}" + (f". {meta['note']}" if meta.get("gated") else ""))
    return "\n".join(lines)
