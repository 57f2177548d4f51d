"""Schema pieces shared by several nodes (one definition, one set of tooltips)."""

from __future__ import annotations

import torch

import comfy.utils
from comfy_api.latest import io

from ..samplers.dual_cfg import ScaleSchedule

CATEGORY = "instruct"

TEXT_CFG_TOOLTIP = (
    "Text guidance s_T: how strongly the edit follows the instruction. InstructPix2Pix default 7.5 "
    "(SDXL / CosXL Edit models: about 5). Raise it when the edit is too weak. On a plain (4-channel) "
    "model: the CFG scale; in IPAdapter-Instruct's 4-branch guidance its g (reference 6, SDXL 5)."
)
IMAGE_CFG_TOOLTIP = (
    "Image guidance s_I: how closely the result keeps to the input image. Default 1.5 (usual range "
    "1.0–2.0); lower it when the edit is too weak, raise it when too much of the image changes. "
    "1.0 skips the unconditional pass. Instruct (8-channel) models only: on a plain model it is not used "
    "(IPAdapter-Instruct's 4-branch image scale is IPAdapter-Instruct Apply's image_cfg); keep it at 1.0 there."
)


def guidance_inputs() -> list[io.Input]:
    return [
        io.Float.Input("text_cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=TEXT_CFG_TOOLTIP),
        io.Float.Input("image_cfg", default=1.5, min=0.0, max=100.0, step=0.05, round=0.01, tooltip=IMAGE_CFG_TOOLTIP),
    ]


def advanced_guidance_inputs() -> list[io.Input]:
    """Optional widgets: rescale and per-scale step windows (outside its window a scale is 1.0)."""

    def window(name: str, edge: str, default: float) -> io.Input:
        if edge == "start":
            what = f"Fraction of the sampling (0 = first step) at which {name} guidance switches on."
        else:
            what = f"Fraction of the sampling (1 = last step) after which {name} guidance switches off."
        return io.Float.Input(
            f"{name}_{edge}",
            default=default,
            min=0.0,
            max=1.0,
            step=0.01,
            optional=True,
            tooltip=what + " Outside its window the scale is 1.0 and the UNet pass it needs is skipped.",
        )

    return [
        io.Float.Input(
            "guidance_rescale",
            default=0.0,
            min=0.0,
            max=1.0,
            step=0.01,
            optional=True,
            tooltip="diffusers-style guidance rescale (0 = off, 0.7 typical): rescales the guided prediction to "
            "the statistics of the text branch to avoid over-exposure at high text_cfg.",
        ),
        window("text_cfg", "start", 0.0),
        window("text_cfg", "end", 1.0),
        window("image_cfg", "start", 0.0),
        window("image_cfg", "end", 1.0),
    ]


def schedule_from(
    text_cfg: float,
    image_cfg: float,
    text_cfg_start: float = 0.0,
    text_cfg_end: float = 1.0,
    image_cfg_start: float = 0.0,
    image_cfg_end: float = 1.0,
) -> ScaleSchedule:
    return ScaleSchedule(text_cfg, image_cfg, text_cfg_start, text_cfg_end, image_cfg_start, image_cfg_end)


def resize_image(nchw: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The interpolation the image nodes use for 'resize to multiple of 8' (ComfyUI's bicubic upscale)."""
    return comfy.utils.common_upscale(nchw, width, height, "bicubic", "disabled")
