"""``model_manifest.json``, typed: the one list of the model files the shipped workflows use, read once
here by everyone (the runner's checks and downloads, the workflow generator, the tests).

Each entry: the ComfyUI model folder (``directory``), the download ``url``, the model's ``page``, the
published ``sha256`` and ``size`` where the publisher gives them (null otherwise), whether it is
``gated`` (a licence to accept first), and a ``note``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import InputError

#: The pack's manifest, at its root (ComfyUI lists every ``workflows/*.json`` as a template, so not there).
DEFAULT_MANIFEST = Path(__file__).resolve().parents[2] / "model_manifest.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestFileError(InputError):
    """The manifest file cannot be read or an entry is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class ModelEntry:
    """One published model file."""

    name: str  # the file name ComfyUI lists (and the frontend's missing-models dialog shows)
    directory: str  # ComfyUI model folder kind: checkpoints, loras, ipadapter, …
    url: Optional[str]
    page: Optional[str]
    sha256: Optional[str]  # lower-case hex
    size: Optional[int]  # bytes
    gated: bool
    note: str

    @classmethod
    def from_json(cls, name: str, raw: Any, source: str) -> "ModelEntry":
        where = f"{source}: models['{name}']"
        if not isinstance(raw, dict):
            raise ManifestFileError(f"{where} must be an object, not {type(raw).__name__}")
        directory = raw.get("directory")
        if not isinstance(directory, str) or not directory:
            raise ManifestFileError(f"{where}.directory must name a ComfyUI model folder (checkpoints, loras, …)")
        sha256 = raw.get("sha256")
        if sha256 is not None and (not isinstance(sha256, str) or not _SHA256.fullmatch(sha256.lower())):
            raise ManifestFileError(f"{where}.sha256 must be 64 hex digits or null, not {sha256!r}")
        size = raw.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise ManifestFileError(f"{where}.size must be a positive number of bytes or null, not {size!r}")
        for key in ("url", "page", "note"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                raise ManifestFileError(f"{where}.{key} must be text or null, not {raw[key]!r}")
        return cls(
            name=name,
            directory=directory,
            url=raw.get("url") or None,
            page=raw.get("page") or None,
            sha256=sha256.lower() if sha256 else None,
            size=size,
            gated=bool(raw.get("gated")),
            note=raw.get("note") or "",
        )


@dataclass(frozen=True)
class ModelManifest:
    """The entries by file name."""

    entries: dict[str, ModelEntry]
    path: Optional[Path] = None

    @classmethod
    def load(cls, path: Optional[Path | str] = None) -> "ModelManifest":
        """The manifest at ``path`` (default: the pack's); an empty one when the file does not exist."""
        path = Path(path) if path else DEFAULT_MANIFEST
        if not path.is_file():
            return cls({}, path)
        try:
            models = json.loads(path.read_text())["models"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ManifestFileError(f"cannot read the model manifest {path}: {exc}") from exc
        if not isinstance(models, dict):
            raise ManifestFileError(f"{path}: 'models' must be an object of file name → entry")
        return cls({name: ModelEntry.from_json(name, raw, str(path)) for name, raw in models.items()}, path)

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __getitem__(self, name: str) -> ModelEntry:
        return self.entries[name]

    def source_of(self, name: str) -> Optional[ModelEntry]:
        """The entry of a file a loader names, as ComfyUI lists it (``sub/dir/x.safetensors`` finds ``x.safetensors``)."""
        return self.entries.get(name) or self.entries.get(Path(name).name)

    def match(self, value: object) -> Optional[ModelEntry]:
        """The entry a loader's widget value names: the file name, or ``<its folder>/file``."""
        if not isinstance(value, str):
            return None
        if value in self.entries:
            return self.entries[value]
        folder, _, name = value.partition("/")
        entry = self.entries.get(name)
        return entry if entry is not None and entry.directory == folder else None
