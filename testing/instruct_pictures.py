"""Input pictures the headless tests write and read back: seeded noise as PNG, and a PNG's pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def write_picture(path: Path, seed: int = 0, size: tuple[int, int] = (48, 64)) -> Path:
    """A seeded random RGB picture of ``size`` (height, width) saved as ``path`` (folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(seed).random((*size, 3)) * 255).astype("uint8")).save(path)
    return path


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def embedded_prompt(data: bytes) -> dict:
    """The API prompt ComfyUI's SaveImage embeds in the PNG (its ``prompt`` text chunk)."""
    import json

    return json.loads(Image.open(io.BytesIO(data)).text["prompt"])
