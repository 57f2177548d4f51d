"""What kind of diffusion model a MODEL holds, as every layer of the pack needs to know it.

The family is read from the class ComfyUI built for the weights (``comfy.model_base``), never from a
file name, so it holds for every file layout ComfyUI detects and for patched clones.
"""

from __future__ import annotations

from typing import Any, Optional

from .families import FLUX2, FLUX_KONTEXT, HIDREAM_E1, INSTRUCT_PIX2PIX, OMNIGEN2, QWEN_IMAGE_EDIT, Family


def _base_model(model_patcher: Any) -> Any:
    return getattr(model_patcher, "model", None)


def is_instruct_model(model_patcher: Any) -> bool:
    """True for models that concatenate an input-image latent (ComfyUI's IP2P model classes)."""
    import comfy.model_base  # here, not at module level: the pure modules that import this load without ComfyUI

    return isinstance(_base_model(model_patcher), comfy.model_base.IP2P)


def family_of(model_patcher: Any) -> Optional[Family]:
    """The edit family of a MODEL, or None for a model that reads no input image (a plain model)."""
    import comfy.model_base

    model = _base_model(model_patcher)
    mb = comfy.model_base
    if isinstance(model, mb.IP2P):
        return INSTRUCT_PIX2PIX
    if isinstance(model, mb.HiDream):
        return HIDREAM_E1
    if isinstance(model, mb.QwenImage):
        return QWEN_IMAGE_EDIT
    if isinstance(model, mb.Omnigen2):
        return OMNIGEN2
    if isinstance(model, mb.Flux2):
        return FLUX2
    if isinstance(model, mb.Flux) and not isinstance(model, mb.Chroma) and not _is_fill_model(model):
        return FLUX_KONTEXT
    return None


def _is_fill_model(model: Any) -> bool:
    """Flux Fill / inpaint models take the image in extra input channels, not as references."""
    config = getattr(getattr(model, "model_config", None), "unet_config", {}) or {}
    return int(config.get("in_channels", 16)) > int(config.get("out_channels", 16))


def latent_channels(model_patcher: Any) -> Optional[int]:
    """Channels of the model's latent space (what its VAE must produce), when the model says."""
    latent_format = getattr(_base_model(model_patcher), "latent_format", None)
    return getattr(latent_format, "latent_channels", None)
