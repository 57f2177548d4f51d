"""The conditioning of each guidance branch, derived from the user's positive and negative, per family.

full = positive (text + image); image-only = negative with the image; unconditional = negative with
every image key of the family removed (for Qwen-Image-Edit also the image in the text tokens: the
negative's image-free encoding, ``UNCOND_KEY``). Everything else on the negative (ControlNet, area,
mask, GLIGEN, hooks, FluxGuidance) rides along to both of its branches. A negative that lacks the image
(the raw text-encoder output) gets the positive's, so the classic miswiring still samples the right
formula.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from ..models.errors import InstructInputError
from ..models.families import Family, ImageRoute, carried_route
from ..vocabulary import IMAGE_KEY, REFERENCE_KEY, REFERENCE_METHOD_KEY, UNCOND_KEY, with_values
from .dual_cfg import EVERYTHING, FULL, IMAGE_ONLY, UNCOND

log = logging.getLogger(__name__)

#: Pack keys that must not reach a branch's model conds.
_PACK_ONLY_KEYS = (UNCOND_KEY,)

_FIX_REFERENCE = (
    "connect the model to Instruct Image Conditioning's 'model' input (it then attaches the image as reference "
    "latents), or use core 'ReferenceLatent' on the conditioning"
)


def _negative(conditioning: list, drop: tuple[str, ...] = ()) -> list:
    return with_values(conditioning, {"prompt_type": "negative"}, drop=drop + _PACK_ONLY_KEYS)


def _first_with(conditioning: list, family: Family) -> Optional[dict]:
    return next((extras for _, extras in conditioning if family.has_image(extras)), None)


def _image_values(family: Family, extras: dict) -> dict:
    keys = (REFERENCE_KEY, REFERENCE_METHOD_KEY) if family.route is ImageRoute.REFERENCE else (IMAGE_KEY,)
    return {k: extras[k] for k in keys if k in extras}


def _check_route(family: Family, positive: list, negative: list) -> None:
    """Refuse an image attached under a key this family does not read (it would be silently ignored)."""
    routes = {carried_route(positive), carried_route(negative)} - {None}
    reads = ImageRoute.REFERENCE if family.route is ImageRoute.REFERENCE else ImageRoute.CHANNEL_CONCAT
    if routes and reads not in routes:
        if family.route is ImageRoute.REFERENCE:
            raise InstructInputError(
                f"the conditioning carries the input image as 'concat_latent_image' (Instruct Image Conditioning without "
                f"its 'model' input, or core InstructPixToPixConditioning), which a {family.name} model does not read: it "
                f"would edit without seeing the image. Fix: {_FIX_REFERENCE}."
            )
        raise InstructInputError(
            f"the conditioning carries the input image as reference latents (core ReferenceLatent), which a {family.name} "
            "model does not read: it would edit without seeing the image. Use Instruct Image Conditioning (or core "
            "InstructPixToPixConditioning) to attach the image."
        )


def _unconditional(family: Family, negative: list, needs_text_free: bool) -> list:
    if not family.image_in_text:
        return _negative(negative, drop=family.image_keys)
    encodings = [extras.get(UNCOND_KEY) for _, extras in negative]
    if any(e is None for e in encodings):
        if needs_text_free:
            raise InstructInputError(
                f"{family.name} also reads the input image in its text tokens, so the unconditional branch of image "
                "guidance needs the negative encoded without the image, and this negative carries no such encoding. "
                "Fix: encode positive and negative with 'Instruct Text Encode (Qwen-Image-Edit)', which adds it; or set "
                "image_cfg to 1.0 (two-branch CFG with the image in both branches, as ComfyUI's template samples)."
            )
        return _negative(negative, drop=family.image_keys)
    out = []
    for (_, extras), encoding in zip(negative, encodings):
        tensor, text_extras = encoding[0]
        merged = {k: v for k, v in extras.items() if k not in family.image_keys + _PACK_ONLY_KEYS}
        merged.update({k: v for k, v in text_extras.items() if k not in family.image_keys + _PACK_ONLY_KEYS})
        merged["prompt_type"] = "negative"
        out.append([tensor, merged])
    return out


def build_branches(
    family: Optional[Family], positive: list, negative: list, four_branch: bool = False, needs_uncond: bool = True
) -> dict[str, list]:
    """The branches' conditionings for a model of ``family`` (None: a model that reads no input image).

    ``needs_uncond``: whether the unconditional branch will ever be evaluated (image_cfg ≠ 1); a family
    that cannot build it from what it was given refuses only then. On a model that reads no image the
    result is ordinary CFG (or IP-Adapter-Instruct's 4-branch guidance).
    """
    if family is None:
        if carried_route(positive) is not None or carried_route(negative) is not None:
            raise InstructInputError(
                "the conditioning carries an input image, but this model reads none (it is not an instruction-edit "
                "model: InstructPix2Pix/CosXL Edit, Flux Kontext, Flux.2, Qwen-Image-Edit, OmniGen2 or HiDream-E1), so it "
                "would silently ignore the image. Load an edit model (8-channel SD models with 'Instruct UNet Loader', "
                "the others with 'Load Diffusion Model'), or remove 'Instruct Image Conditioning' for a text-to-image run."
            )
        negative = _negative(negative)
        if four_branch:  # IP-Adapter-Instruct: the three negative-text branches differ only in IP tokens
            return {FULL: positive, EVERYTHING: negative, IMAGE_ONLY: negative, UNCOND: negative}
        return {FULL: positive, UNCOND: negative}
    _check_route(family, positive, negative)
    source = _first_with(positive, family)
    if source is None:
        raise InstructInputError(
            f"the 'positive' conditioning has no input image, so the {family.name} model would edit nothing it can see. "
            "Connect 'Instruct Image Conditioning' between the text encoders and the sampler"
            + (" (with its 'model' input connected)." if family.route is ImageRoute.REFERENCE else ".")
        )
    image_only = negative
    if _first_with(negative, family) is None:
        log.info("'negative' has no input image; using the positive's for the image-only branch")
        image_only = with_values(negative, _image_values(family, source))
    return {
        FULL: with_values(positive, {}, drop=_PACK_ONLY_KEYS),
        IMAGE_ONLY: _negative(image_only),
        UNCOND: _unconditional(family, negative, needs_uncond),
    }


def input_image(family: Family, conds: list[dict], spatial: tuple[int, ...], channels: int) -> Optional[Any]:
    """The input image's latent among ComfyUI's converted conds (one dict each): the concat image, or the
    first reference latent of the sampled latent's size and channels (what region editing reconstructs)."""
    for cond in conds:
        for latent in family.images(cond):
            if tuple(latent.shape[-len(spatial) :]) == tuple(spatial) and int(latent.shape[1]) == channels:
                return latent
    return None
