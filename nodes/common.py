"""Schema pieces shared by several nodes (one definition, one set of tooltips)."""

from __future__ import annotations

import torch

import comfy.utils
from comfy_api.latest import io

CATEGORY = "instruct"

TEXT_CFG_TOOLTIP = (
    "Text guidance s_T: how strongly the edit follows the instruction. InstructPix2Pix default 7.5 "
    "(SDXL / CosXL Edit: about 5; Qwen-Image-Edit 4; OmniGen2 5; HiDream-E1.1 4.5; guidance-distilled Flux "
    "Kontext / Flux.2: 1, their strength is FluxGuidance). Raise it when the edit is too weak. On a model that "
    "reads no image: the CFG scale; in IPAdapter-Instruct's 4-branch guidance its g (reference 6, SDXL 5)."
)
IMAGE_CFG_TOOLTIP = (
    "Image guidance s_I: how closely the result keeps to the input image. InstructPix2Pix default 1.5 (usual "
    "range 1.0–2.0; OmniGen2 2.0, HiDream-E1.1 1.5); lower it when the edit is too weak, raise it when too much "
    "of the image changes. 1.0 skips the unconditional pass (text_cfg = image_cfg = 1: one pass a step). Edit "
    "models only: on a model that reads no image it is not used (IPAdapter-Instruct's 4-branch image scale is "
    "IPAdapter-Instruct Apply's image_cfg); keep it at 1.0 there."
)


def guidance_inputs() -> list[io.Input]:
    return [
        io.Float.Input("text_cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=TEXT_CFG_TOOLTIP),
        io.Float.Input("image_cfg", default=1.5, min=0.0, max=100.0, step=0.05, round=0.01, tooltip=IMAGE_CFG_TOOLTIP),
    ]


def resize_image(nchw: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The interpolation of the image nodes' resizes (ComfyUI's bicubic upscale)."""
    return comfy.utils.common_upscale(nchw, width, height, "bicubic", "disabled")
