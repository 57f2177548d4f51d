"""What kind of diffusion model a MODEL holds, as every layer of the pack needs to know it."""

from __future__ import annotations

from typing import Any


def is_instruct_model(model_patcher: Any) -> bool:
    """True for models that concatenate an input-image latent (ComfyUI's IP2P model classes)."""
    import comfy.model_base  # here, not at module level: the pure modules that import this load without ComfyUI

    return isinstance(getattr(model_patcher, "model", None), comfy.model_base.IP2P)
