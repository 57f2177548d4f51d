"""How input images are named where a prompt runs: by content, so concurrent runs never see each other's
pictures and the same picture gets the same name on every worker (the prompt, and the PNG that embeds
it, is then the same whichever worker ran it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

#: Where the runner puts input images inside ComfyUI's input folder.
UPLOAD_SUBFOLDER = "instruct-runner"


def content_name(path: Path) -> str:
    """A file name no other content can have: the SHA-256 of the bytes, with the file's suffix."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:32]
    return f"{digest}{Path(path).suffix.lower()}"
