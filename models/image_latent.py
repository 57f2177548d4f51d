"""Input-image preparation for the image-latent conditioner: channels, size rules, masks, batches.

Pure torch (ComfyUI's resize helper is passed in), so the size and batch rules are tested
without a ComfyUI checkout.
"""

from __future__ import annotations

import enum
from typing import Callable

import torch

from .errors import InstructInputError
from .masks import batch_mask, feather_inward

MULTIPLE = 8  # VAE downscale factor of the SD1.5 / SDXL families


class SizeMode(str, enum.Enum):
    CROP = "crop to multiple of 8"
    RESIZE = "resize to multiple of 8"


class LatentMode(str, enum.Enum):
    EMPTY = "empty (denoise 1.0)"
    IMAGE = "input image (for denoise < 1)"


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


def target_size(height: int, width: int, mode: SizeMode) -> tuple[int, int]:
    if mode is SizeMode.CROP:
        h, w = (height // MULTIPLE) * MULTIPLE, (width // MULTIPLE) * MULTIPLE
    else:  # nearest multiple, at least one block
        h = max(MULTIPLE, int(round(height / MULTIPLE)) * MULTIPLE)
        w = max(MULTIPLE, int(round(width / MULTIPLE)) * MULTIPLE)
    if h == 0 or w == 0:
        raise InstructInputError(f"the image is {width}x{height}; it must be at least {MULTIPLE}x{MULTIPLE} pixels.")
    return h, w


def fit_image(image: torch.Tensor, mode: SizeMode, resize: Callable[[torch.Tensor, int, int], torch.Tensor]) -> torch.Tensor:
    """Make H and W multiples of 8: centre-crop the remainder (core's rule) or resize to the nearest.

    ``resize(nchw, width, height)`` does the interpolation (ComfyUI's ``common_upscale``).
    """
    height, width = image.shape[1], image.shape[2]
    h, w = target_size(height, width, mode)
    if (h, w) == (height, width):
        return image
    if mode is SizeMode.CROP:
        top, left = (height - h) // 2, (width - w) // 2
        return image[:, top : top + h, left : left + w, :]
    return resize(image.movedim(-1, 1), w, h).movedim(1, -1).clamp(0.0, 1.0)


def fit_mask(
    mask: torch.Tensor, image_hw: tuple[int, int], mode: SizeMode, resize: Callable[[torch.Tensor, int, int], torch.Tensor]
) -> torch.Tensor:
    """Apply the image's size rule to its MASK ([H,W] or [B,H,W], same size as the image)."""
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if tuple(mask.shape[1:]) != tuple(image_hw):
        raise InstructInputError(
            f"the mask is {mask.shape[2]}x{mask.shape[1]} but the image is {image_hw[1]}x{image_hw[0]}; "
            "draw the mask on the same image (or resize it with a mask node) so both have the same size."
        )
    return fit_image(mask.unsqueeze(-1), mode, resize)[..., 0]


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


def composite_into_original(
    edited: torch.Tensor,
    original: torch.Tensor,
    mask: torch.Tensor,
    feather: int,
    mode: SizeMode,
    resize: Callable[[torch.Tensor, int, int], torch.Tensor],
) -> torch.Tensor:
    """Paste the edited image back into the original, inside the mask only: outside, the original pixels.

    ``edited`` is the decoded edit (the size the conditioner made the original: cropped or resized to
    multiples of 8); the result has the original's size. ``mask`` may be drawn on the original or be
    the size of the edit (the sampler's edit mask). The feather ramps inwards from the mask's edge, so
    where the mask is 0 the output is the original, bit for bit.
    """
    original, edited = to_rgb(original), to_rgb(edited)
    height, width = original.shape[1], original.shape[2]
    h, w = edited.shape[1], edited.shape[2]
    if (h, w) not in ((height, width), target_size(height, width, mode)):
        raise InstructInputError(
            f"the edited image is {w}x{h} but the original is {width}x{height}, which '{mode.value}' makes "
            f"{target_size(height, width, mode)[1]}x{target_size(height, width, mode)[0]}. Connect the "
            "original that was edited and choose the same size_mode as in 'Instruct Image Conditioning'."
        )
    mask = batch_mask(mask, "mask")
    batch = max(original.shape[0], edited.shape[0], mask.shape[0])
    for what, n in (("original", original.shape[0]), ("edited image", edited.shape[0]), ("mask", mask.shape[0])):
        check_batches(batch, n, what)
    top, left = (height - h) // 2, (width - w) // 2
    if (h, w) == (height, width):
        canvas = edited
    elif mode is SizeMode.CROP:
        canvas = original.expand(batch, -1, -1, -1).clone()
        canvas[:, top : top + h, left : left + w, :] = edited
    else:
        canvas = resize(edited.movedim(-1, 1), width, height).movedim(1, -1).clamp(0.0, 1.0)
    if tuple(mask.shape[1:]) == (h, w) and (h, w) != (height, width):
        if mode is SizeMode.CROP:  # outside the crop nothing was edited
            placed = mask.new_zeros((mask.shape[0], height, width))
            placed[:, top : top + h, left : left + w] = mask
            mask = placed
        else:
            mask = resize(mask[:, None], width, height)[:, 0].clamp(0.0, 1.0)
    elif tuple(mask.shape[1:]) != (height, width):
        raise InstructInputError(
            f"the mask is {mask.shape[2]}x{mask.shape[1]}; it must be the size of the original ({width}x{height}) "
            f"or of the edited image ({w}x{h})."
        )
    # Blended in fp32 (at least): a half edit must not round the feather weights or the original.
    dtype = torch.promote_types(torch.promote_types(canvas.dtype, original.dtype), torch.float32)
    weight = feather_inward(mask[:, None], max(0, int(feather)))[:, 0, :, :, None].to(canvas.device, dtype)
    blended = canvas.to(dtype) * weight + original.to(dtype) * (1.0 - weight)
    return torch.where(weight > 0, blended, original.to(dtype).expand_as(blended))
