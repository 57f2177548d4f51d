"""The words every layer of the pack shares: conditioning keys, branch names, the IP guidance request.

It sits below ``models/``, ``samplers/`` and ``nodes/`` and imports nothing of the pack, of ComfyUI
or of torch, so each layer can name these things without importing the layer that uses them (the
import direction is nodes → samplers → models → vocabulary, guarded by tests/test_architecture.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Optional

#: The key ComfyUI's IP2P and HiDream models read the input image latent from (a CONDITIONING extra).
IMAGE_KEY = "concat_latent_image"

#: The keys of the reference-latent families (core ``ReferenceLatent``, ``FluxKontextMultiReferenceLatentMethod``).
REFERENCE_KEY = "reference_latents"
REFERENCE_METHOD_KEY = "reference_latents_method"

#: CONDITIONING extra on a negative: the same negative encoded without the image, for the unconditional
#: branch of a family that also reads the image in its text tokens (Qwen-Image-Edit).
UNCOND_KEY = "instruct_uncond"

#: CONDITIONING extra: how the conditioner fitted the input image (a ``models.geometry.Fit``), so region
#: masks drawn on the input are fitted the same way.
FIT_KEY = "instruct_fit"

#: transformer_options key: the IPAdapter-Instruct token set (a ``Branch``) of each conds index.
TOKEN_SETS_KEY = "instruct_ip_token_sets"

#: MODEL attachment an IPAdapter-Instruct apply puts on its clone to ask the guider for its guidance.
IP_GUIDANCE_ATTACHMENT = "instruct_ip_guidance"


class Branch(str, enum.Enum):
    """One guidance branch, and the IPAdapter-Instruct token set of the same name.

    A ``str`` enum: a member equals, hashes and prints as its value, so conds keys, dict keys and
    log lines read the same as plain strings.
    """

    UNCOND = "uncond"  # negative text, no input image (zero image tokens for IPAdapter-Instruct)
    IMAGE_ONLY = "image_only"  # negative text with the input image
    EVERYTHING = "everything"  # IPAdapter-Instruct's fourth branch (instruction "everything")
    FULL = "full"  # positive text with the input image

    __str__ = str.__str__
    __format__ = str.__format__
    __hash__ = str.__hash__


@dataclass(frozen=True)
class IPGuidance:
    """What an IPAdapter-Instruct apply asks of the guider (MODEL attachment ``IP_GUIDANCE_ATTACHMENT``).

    ``four_branch``: sample the reference's 4-branch guidance (on a plain model) with
    ``instruct_cfg`` (s_instr) and ``image_cfg`` (s_img); otherwise ordinary 2-pass CFG.
    ``scales_set``: the user changed those two from their defaults (so leaving them unused is worth saying).
    """

    four_branch: bool
    instruct_cfg: float
    image_cfg: float
    scales_set: bool = False


def with_values(conditioning: list, set_values: dict, drop: tuple[str, ...] = ()) -> list:
    """A copy of a CONDITIONING list with keys set/dropped (inputs are never mutated)."""
    out = []
    for tensor, extras in conditioning:
        new = {k: v for k, v in extras.items() if k not in drop}
        new.update(set_values)
        out.append([tensor, new])
    return out


def with_appended(conditioning: list, key: str, values: list) -> list:
    """A copy with ``values`` appended to the list under ``key`` (core's ``append=True`` rule)."""
    out = []
    for tensor, extras in conditioning:
        new = dict(extras)
        new[key] = [*(extras.get(key) or []), *values]
        out.append([tensor, new])
    return out


def image_latent(conditioning: list) -> Optional[Any]:
    """The input-image latent a CONDITIONING carries (``IMAGE_KEY``), or None."""
    for _, extras in conditioning:
        latent = extras.get(IMAGE_KEY)
        if latent is not None:
            return latent
    return None
