"""Input-image preparation for the image-latent conditioner: channels, size rules, masks, batches.

Pure torch (ComfyUI's resize helper is passed in), so the size and batch rules are tested
without a ComfyUI checkout.
"""

from __future__ import annotations

import enum
import logging

import torch

from .errors import InstructInputError
from .geometry import Fit, Resize, Resolution, SizeMode, plan
from .masks import batch_mask, feather_inward

log = logging.getLogger(__name__)

#: The grid cells the families use: 8 px (SD/SDXL UNets), 16 px (patch-2 transformers).
CELLS = (8, 16)


class LatentMode(str, enum.Enum):
    """What the conditioner's latent output holds (the combo tokens of ``latent_output``)."""

    EMPTY = "empty"  # zeros of the image latent's shape, for denoise 1.0
    IMAGE = "image"  # the encoded input image, for denoise < 1


def to_rgb(image: torch.Tensor) -> torch.Tensor:
    """IMAGE [B,H,W,C] with C = 1 (grey), 3 (RGB) or 4 (RGBA, alpha dropped) → RGB."""
    if image.ndim != 4:
        raise InstructInputError(f"'image' must be an IMAGE batch [B,H,W,C]; got shape {tuple(image.shape)}.")
    channels = image.shape[-1]
    if channels == 3:
        return image
    if channels == 1:
        return image.expand(-1, -1, -1, 3)
    if channels == 4:
        return image[..., :3]
    raise InstructInputError(f"'image' has {channels} channels; expected 1 (grey), 3 (RGB) or 4 (RGBA).")


def check_batches(image_batch: int, other_batch: int, what: str) -> None:
    if other_batch not in (1, image_batch):
        raise InstructInputError(
            f"the {what} has a batch of {other_batch} but the image batch is {image_batch}; "
            "use a batch of 1 (shared by every image) or one per image."
        )


def check_latent_channels(latent: torch.Tensor, source: str) -> None:
    if latent.ndim != 4 or latent.shape[1] != 4:
        raise InstructInputError(
            f"the {source} has shape {tuple(latent.shape)}; instruct UNets take a 4-channel SD/SDXL latent. "
            "Use the SD1.5/SDXL VAE that belongs to the model (an SD3/Flux VAE gives 16 channels)."
        )


def fits_of(height: int, width: int, mode: SizeMode, resolution: Resolution) -> list[Fit]:
    """What the conditioner may have made of an image of this size, one fit per grid cell."""
    out = []
    for cell in CELLS:
        try:
            out.append(plan(height, width, mode, cell, resolution))
        except InstructInputError:
            pass
    return out


def find_fit(original_hw: tuple[int, int], edited_hw: tuple[int, int], mode: SizeMode, resolution: Resolution) -> Fit:
    """The fit that made an image of ``original_hw`` into an edit of ``edited_hw`` under these settings."""
    height, width = original_hw
    candidates = fits_of(height, width, mode, resolution)
    if resolution is Resolution.KEEP:  # an image of the edit's own size, whatever cell it was made for
        candidates.append(plan(height, width, mode, 1))
    found = next((fit for fit in candidates if fit.size == tuple(edited_hw)), None)
    if found is not None:
        return found
    h, w = edited_hw
    expected = " or ".join(sorted({f"{f.size[1]}x{f.size[0]}" for f in candidates[: len(CELLS)]})) or "nothing usable"
    raise InstructInputError(
        f"the edited image is {w}x{h} but the original is {width}x{height}, which size_mode '{mode.value}' and resolution "
        f"'{resolution.value}' make {expected}. Connect the original that was edited and choose the same "
        "size_mode and resolution as in 'Instruct Image Conditioning'."
    )


def composite_into_original(
    edited: torch.Tensor,
    original: torch.Tensor,
    mask: torch.Tensor,
    feather: int,
    mode: SizeMode,
    resize: Resize,
    resolution: Resolution = Resolution.KEEP,
) -> torch.Tensor:
    """Paste the edited image back into the original, inside the mask only: outside, the original pixels.

    ``edited`` is the decoded edit (the size the conditioner made the original, ``find_fit``); the result
    has the original's size and grid. ``mask`` may be drawn on the original or be the size of the edit
    (the sampler's edit mask). The feather ramps inwards from the mask's edge, so where the mask is 0 —
    and wherever the conditioner cropped the image — the output is the original, bit for bit.
    """
    original, edited = to_rgb(original), to_rgb(edited)
    height, width = original.shape[1], original.shape[2]
    h, w = edited.shape[1], edited.shape[2]
    fit = find_fit((height, width), (h, w), SizeMode(mode), Resolution(resolution))
    if not fit.is_exact:
        log.info(
            "Instruct Region Composite: the edit (%dx%d) is resampled back onto the original's %dx%d grid (%s)",
            w,
            h,
            width,
            height,
            fit.describe(),
        )
    mask = batch_mask(mask, "mask")
    batch = max(original.shape[0], edited.shape[0], mask.shape[0])
    for what, n in (("original", original.shape[0]), ("edited image", edited.shape[0]), ("mask", mask.shape[0])):
        check_batches(batch, n, what)
    canvas, covered = fit.restore(edited, resize)
    if tuple(mask.shape[1:]) == (height, width):
        mask = mask * covered.to(mask.device)
    elif tuple(mask.shape[1:]) == (h, w):
        mask = fit.restore_mask(mask, resize)
    else:
        raise InstructInputError(
            f"the mask is {mask.shape[2]}x{mask.shape[1]}; it must be the size of the original ({width}x{height}) "
            f"or of the edited image ({w}x{h})."
        )
    # Blended in fp32 (at least): a half edit must not round the feather weights or the original.
    dtype = torch.promote_types(torch.promote_types(canvas.dtype, original.dtype), torch.float32)
    weight = feather_inward(mask[:, None], max(0, int(feather)))[:, 0, :, :, None].to(canvas.device, dtype)
    original = original.to(canvas.device, dtype)
    blended = canvas.to(dtype) * weight + original * (1.0 - weight)
    return torch.where(weight > 0, blended, original.expand_as(blended))
