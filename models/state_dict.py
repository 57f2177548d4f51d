"""What a state dict is, before anything is built from it: layout, input channels, EMA weights.

Pure torch. Detection reads key names and shapes, never file names.
"""

from __future__ import annotations

import enum
from typing import Mapping

import torch

from .errors import InstructModelError

LDM_PREFIX = "model.diffusion_model."
EMA_PREFIX = "model_ema."
#: The input convolution in each layout; its second dimension is the UNet's input channel count.
LDM_CONV_IN = "input_blocks.0.0.weight"
DIFFUSERS_CONV_IN = "conv_in.weight"
#: CosXL Edit marks its EDM v-prediction sampling with these keys.
EDM_VPRED_KEYS = ("edm_vpred.sigma_max", "edm_vpred.sigma_min")
COSXL_SIGMAS = {"edm_vpred.sigma_max": 120.0, "edm_vpred.sigma_min": 0.002}

INSTRUCT_CHANNELS = 8


class Layout(enum.Enum):
    LDM_CHECKPOINT = "ldm checkpoint"  # model.diffusion_model.* (+ text encoder, VAE, maybe EMA)
    LDM_UNET = "ldm UNet"  # input_blocks.* at the top level
    DIFFUSERS_UNET = "diffusers UNet"  # conv_in / down_blocks / up_blocks


class EmaMode(str, enum.Enum):
    AUTO = "auto"  # the EMA copy when the file carries one
    EMA = "ema"
    NON_EMA = "non_ema"


def classify(sd: Mapping[str, torch.Tensor], source: str) -> Layout:
    """Which key layout the UNet weights use; raises when there is no UNet at all."""
    if LDM_PREFIX + LDM_CONV_IN in sd:
        return Layout.LDM_CHECKPOINT
    if LDM_CONV_IN in sd:
        return Layout.LDM_UNET
    if DIFFUSERS_CONV_IN in sd:
        return Layout.DIFFUSERS_UNET
    sample = ", ".join(sorted(sd)[:3]) or "no keys at all"
    raise InstructModelError(
        f"'{source}' holds no UNet weights this loader knows (looked for '{LDM_PREFIX}{LDM_CONV_IN}', "
        f"'{LDM_CONV_IN}' or '{DIFFUSERS_CONV_IN}'; found e.g. {sample}). If it is a LoRA, ControlNet, VAE "
        "or text encoder, load it with the matching core loader; otherwise it is not an instruct UNet."
    )


def input_channels(sd: Mapping[str, torch.Tensor], layout: Layout) -> int:
    key = {
        Layout.LDM_CHECKPOINT: LDM_PREFIX + LDM_CONV_IN,
        Layout.LDM_UNET: LDM_CONV_IN,
        Layout.DIFFUSERS_UNET: DIFFUSERS_CONV_IN,
    }[layout]
    return int(sd[key].shape[1])


def require_instruct_channels(channels: int, source: str) -> None:
    """Refuse, with the fix, anything that is not an 8-channel (4 latent + 4 image) UNet."""
    if channels == INSTRUCT_CHANNELS:
        return
    if channels == 4:
        raise InstructModelError(
            f"'{source}' is a 4-channel model (an ordinary text-to-image checkpoint), not an 8-channel "
            "instruct model: use Load Checkpoint / Load Diffusion Model for it. To make it an instruct "
            "model, merge it into one (see the README)."
        )
    if channels == 9:
        raise InstructModelError(
            f"'{source}' is a 9-channel inpainting model, not an 8-channel instruct model: load it with "
            "Load Checkpoint and use an inpainting workflow (VAE Encode (for Inpainting))."
        )
    raise InstructModelError(
        f"'{source}' has an input convolution with {channels} channels; instruct (InstructPix2Pix-style) "
        f"UNets have {INSTRUCT_CHANNELS} (4 noisy-latent + 4 image-latent). This architecture is not supported."
    )


def ema_key(key: str) -> str:
    """The name the original (Lightning/ldm) EMA buffer of ``key`` has: dots removed after 'model.'."""
    return EMA_PREFIX + key[len("model.") :].replace(".", "")


def has_full_ema(sd: Mapping[str, torch.Tensor]) -> bool:
    unet_keys = [k for k in sd if k.startswith(LDM_PREFIX)]
    return bool(unet_keys) and all(ema_key(k) in sd for k in unet_keys)


def select_weights(sd: dict[str, torch.Tensor], mode: EmaMode, source: str) -> tuple[dict[str, torch.Tensor], bool]:
    """Swap the EMA copy into the UNet keys when asked (or, by default, when present).

    The original InstructPix2Pix samples with its EMA weights; ComfyUI core always uses the raw
    ones. Returns the state dict without ``model_ema.*`` keys and whether EMA weights were used.
    """
    mode = EmaMode(mode)
    ema_available = has_full_ema(sd)
    if mode is EmaMode.EMA and not ema_available:
        raise InstructModelError(
            f"'{source}' carries no EMA copy of its UNet weights; set 'weights' to '{EmaMode.AUTO.value}' or '{EmaMode.NON_EMA.value}'."
        )
    use_ema = ema_available and mode is not EmaMode.NON_EMA
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith(EMA_PREFIX):
            continue
        if use_ema and key.startswith(LDM_PREFIX):
            value = sd[ema_key(key)]
        out[key] = value
    return out, use_ema
