"""The models a workflow declares to the frontend, from the one model manifest (``model_manifest.json``,
read through ``headless.model_files.manifest``).

What frontend 1.35 reads (``app.loadGraphData``): a node's ``properties.models`` entry counts only when
its ``name`` equals one of the node's widget values; the workflow's top-level ``models`` list always
counts. An entry is missing when the folder ``directory`` has no file whose path equals ``name``.
A loader that lists ``checkpoints/<file>`` (the Instruct UNet Loader lists three folders) can
therefore only be declared at workflow level, by the bare file name; loaders that list bare names
get the node-level entry as well (the same entry: the frontend keeps one per URL).
"""

from __future__ import annotations

from headless.model_files.manifest import ModelEntry, ModelManifest


def frontend_entry(entry: ModelEntry) -> dict:
    """The entry in the frontend's ``ModelFile`` shape (name, url, directory, hash, hash_type)."""
    out = {"name": entry.name, "url": entry.url, "directory": entry.directory}
    if entry.sha256:
        out.update(hash=entry.sha256, hash_type="sha256")
    return out


def note_lines(entries: list[ModelEntry]) -> str:
    """The Note's 'Models' paragraph: where each file goes and where to get it."""
    lines = ["Models (the dialog on opening offers them; it downloads only .safetensors, save the others by hand):"]
    for entry in entries:
        where = (entry.page or entry.url or "").removeprefix("https://")
        lines.append(f"- models/{entry.directory}/{entry.name} from {where}" + (f". {entry.note}" if entry.gated else ""))
    return "\n".join(lines)


def load() -> ModelManifest:
    return ModelManifest.load()
