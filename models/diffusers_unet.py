"""diffusers-layout UNet weights → ldm key names, so ComfyUI's own detection can take over.

ComfyUI core knows diffusers UNets only through a fixed list of templates, and that list has no
SD1.5-class 8-channel entry (so the timbrooks diffusers release, MagicBrush ports, the
instruction-tuned cartoonizer… fail with "Could not detect model type"). Instead of a template,
the block structure is read off the weights themselves and handed to core's own name map
(``comfy.utils.unet_to_diffusers``); the result is an ordinary ldm state dict.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

import comfy.utils

from .errors import InstructModelError


def _indices(keys: list[str], pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (one group) over ``keys``."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def _depth(keys: list[str], attention_prefix: str) -> int:
    return len(_indices(keys, re.escape(attention_prefix) + r"transformer_blocks\.(\d+)\."))


def ldm_layout_config(sd: Mapping[str, torch.Tensor], source: str) -> dict:
    """The block structure (ldm terms) of a diffusers UNet state dict."""
    keys = list(sd)
    levels = _indices(keys, r"down_blocks\.(\d+)\.")
    if not levels or "conv_in.weight" not in sd:
        raise InstructModelError(f"'{source}' is not a diffusers UNet (no conv_in / down_blocks weights).")
    model_channels = int(sd["conv_in.weight"].shape[0])
    num_res_blocks, channel_mult, transformer_depth = [], [], []
    for level in levels:
        resnets = _indices(keys, rf"down_blocks\.{level}\.resnets\.(\d+)\.")
        num_res_blocks.append(len(resnets))
        channel_mult.append(int(sd[f"down_blocks.{level}.resnets.0.conv1.weight"].shape[0]) // model_channels)
        for r in resnets:
            transformer_depth.append(_depth(keys, f"down_blocks.{level}.attentions.{r}."))
    up_depths = []
    for level in _indices(keys, r"up_blocks\.(\d+)\."):
        for r in _indices(keys, rf"up_blocks\.{level}\.resnets\.(\d+)\."):
            up_depths.append(_depth(keys, f"up_blocks.{level}.attentions.{r}."))
    mid_depth = _depth(keys, "mid_block.attentions.0.")
    return {
        "num_res_blocks": num_res_blocks,
        "channel_mult": channel_mult,
        "transformer_depth": transformer_depth,
        # core's list runs from the last output block to the first (it is consumed with pop()).
        "transformer_depth_output": list(reversed(up_depths)),
        "transformer_depth_middle": mid_depth if mid_depth > 0 else -1,
    }


def diffusers_to_ldm(sd: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename every tensor to its ldm key; refuse when any weight would be left behind."""
    name_map = comfy.utils.unet_to_diffusers(ldm_layout_config(sd, source))
    unmapped = sorted(k for k in sd if k not in name_map)
    if unmapped:
        shown = ", ".join(unmapped[:5]) + (f" … ({len(unmapped)} in all)" if len(unmapped) > 5 else "")
        raise InstructModelError(
            f"'{source}' has diffusers UNet weights this loader cannot place ({shown}). It is not an "
            "SD1.5/SDXL-style UNet2DConditionModel; this architecture is not supported."
        )
    return {name_map[k]: v for k, v in sd.items()}
