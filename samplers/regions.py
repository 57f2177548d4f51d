"""Masks for edits that stay where they belong: pure torch, tested without ComfyUI.

Three jobs, shared by the sampler (latent space) and the pixel composite:

* **Edit mask** (DiffEdit's idea on the branches the dual-CFG sampler evaluates anyway): where the
  instruction changes the prediction, ``|full − image_only|``, averaged over channels, each step's
  map scaled to mean 1 (so every step counts the same whatever its noise level or the model's
  parameterisation), averaged over the early steps, blurred, scaled to a maximum of 1, thresholded.
* **Region masks in latent space**: a latent cell is outside the region only when all of its pixels
  (8×8 for most VAEs, 16×16 for Flux.2's) are outside (max-pooling), so the edit area never shrinks
  and "outside" means outside.
* **Inward feather** (``models/masks.py``, shared with the pixel composite): the ramp lies inside the
  mask (0 at its edge, 1 at ``width`` inside), so the outside stays exactly 0 — the guarantee the
  sampler and the composite give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ..models.errors import InstructInputError
from ..models.geometry import Fit, Resolution, SizeMode
from ..models.image_latent import fits_of
from ..models.masks import batch_mask, feather_inward

LATENT_FACTOR = 8  # VAE downscale of every family but Flux.2 (16)


@dataclass(frozen=True)
class EditMaskOptions:
    """How the sampler derives the edit mask (pixel units are converted to latent cells here)."""

    steps: float = 0.4  # fraction of the sampling steps whose branch differences are accumulated
    blur: float = 16.0  # Gaussian sigma in pixels (0 = none)
    threshold: float = 0.5  # 0 < t ≤ 1: binary mask; 0: the soft map
    restrict: bool = True  # restrict the rest of the sampling to the derived mask
    feather: int = 16  # inward feather of the restriction, pixels

    def window_steps(self, total_steps: int) -> int:
        """How many of ``total_steps`` steps are accumulated: at least 1, at most all."""
        return min(total_steps, max(1, round(self.steps * total_steps)))


def require_painted(mask: torch.Tensor, what: str, cropped: bool = False) -> None:
    """Refuse a region with nothing in it: sampling would return the input unedited and say nothing.

    ``mask`` is a MASK ([H,W] / [B,H,W]) or latent blend weights [B,1,h,w]; ``cropped`` says it was
    fitted to the image, so an empty result means the paint lay only in the cropped-away border.
    """
    batch = mask.reshape(-1, *mask.shape[-2:]) if mask.ndim >= 2 else mask.reshape(1, 1, -1)
    empty = [i + 1 for i in range(batch.shape[0]) if not bool((batch[i] > 0).any())]
    if not empty:
        return
    which = f"'{what}'" if batch.shape[0] == 1 else f"mask {', '.join(map(str, empty))} of the {batch.shape[0]} in '{what}'"
    if cropped:
        why = "is empty inside the image being edited: its painted pixels lie only in the border cropped away to reach a multiple of 8"
    else:
        why = "is empty (all zero)"
    raise InstructInputError(
        f"{which} {why}, so nothing would be edited and the input would come back unchanged. Paint the region "
        "to edit: right-click Load Image → 'Open in MaskEditor', paint over the area, Save, and connect Load Image's MASK "
        f"output to '{what}' (headless: make the region transparent in the PNG). To edit the whole image, disconnect '{what}'."
    )


def _bilinear(nchw: torch.Tensor, width: int, height: int) -> torch.Tensor:
    return F.interpolate(nchw, size=(height, width), mode="bilinear", align_corners=False)


def fit_to_image(mask: torch.Tensor, image_hw: tuple[int, int], what: str, fit: Optional[Fit] = None) -> torch.Tensor:
    """Bring a MASK to the size of the image being edited (``image_hw``).

    Accepted: the same size; the size of the input image before Instruct Image Conditioning fitted it
    (``fit``, which the conditioner records on the conditioning; without one, the size rules that keep the
    pixel grid are tried: centre crop, its default, then resize and pad). Anything else is a wiring mistake.
    """
    mask = batch_mask(mask, what)
    height, width = mask.shape[-2:]
    if (height, width) == tuple(image_hw):
        return mask
    if fit is not None and fit.source == (height, width) and fit.size == tuple(image_hw):
        return fit.apply_mask(mask, _bilinear)
    for candidate in (f for mode in (SizeMode.CROP, SizeMode.RESIZE, SizeMode.PAD) for f in fits_of(height, width, mode, Resolution.KEEP)):
        if candidate.size == tuple(image_hw):
            return candidate.apply_mask(mask, _bilinear)
    h, w = image_hw
    raise InstructInputError(
        f"'{what}' is {width}x{height} but the image being edited is {w}x{h}. Draw the mask on the input "
        "image itself (Load Image → mask editor) or bring it to the image's size with an upscale/crop node."
    )


def check_batch(mask_batch: int, latent_batch: int, what: str) -> None:
    if mask_batch not in (1, latent_batch):
        raise InstructInputError(
            f"'{what}' has a batch of {mask_batch} masks but {latent_batch} images are edited; "
            "use one mask (shared by every image) or one per image."
        )


def to_latent(mask_px: torch.Tensor, factor: int = LATENT_FACTOR) -> torch.Tensor:
    """[B,H,W] pixel mask → [B,1,H/f,W/f]; a cell takes the largest value of its f×f pixels."""
    return F.max_pool2d(mask_px[:, None], factor)


def to_pixels(mask_latent: torch.Tensor, factor: int = LATENT_FACTOR) -> torch.Tensor:
    """[B,1,h,w] latent mask → MASK [B,fh,fw] (each cell becomes its f×f block; exact inverse of ``to_latent``)."""
    return mask_latent[:, 0].repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def latent_feather(pixels: int, factor: int = LATENT_FACTOR) -> int:
    """Feather width in latent cells for a width in pixels (any non-zero width gives at least a cell)."""
    return math.ceil(max(0, pixels) / factor)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B,1,H,W] with replicate padding (sigma in cells)."""
    if sigma <= 0:
        return maps
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = F.conv2d(F.pad(maps, (radius, radius, 0, 0), mode="replicate"), kernel.reshape(1, 1, 1, -1))
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), kernel.reshape(1, 1, -1, 1))


def region_in_latent(
    mask: torch.Tensor, latent_hw: tuple[int, int], feather_px: int, what: str, factor: int = LATENT_FACTOR, fit: Optional[Fit] = None
) -> torch.Tensor:
    """A user MASK as the sampler's blend weight [B,1,h,w]: fitted, max-pooled, feathered inwards."""
    h, w = latent_hw
    fitted = fit_to_image(mask, (h * factor, w * factor), what, fit)
    return feather_inward(to_latent(fitted, factor), latent_feather(feather_px, factor))


class EditMaskAccumulator:
    """Sums the per-step maps of ``|full − image_only|`` for the edit mask."""

    def __init__(self) -> None:
        self.total: Optional[torch.Tensor] = None
        self.count = 0

    def add(self, full: torch.Tensor, image_only: torch.Tensor) -> None:
        """One step's branch predictions, [B,C,h,w] or [B,C,T,h,w] (frames are averaged like channels)."""
        diff = (full.float() - image_only.float()).abs()
        diff = diff.flatten(1, -3).mean(dim=1, keepdim=True)
        scale = diff.mean(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        step = diff / scale
        self.total = step if self.total is None else self.total + step
        self.count += 1

    def soft(self, blur_px: float, factor: int = LATENT_FACTOR) -> Optional[torch.Tensor]:
        """[B,1,h,w] in [0,1] (maximum 1 per image), or None before the first step."""
        if self.total is None:
            return None
        mean = gaussian_blur(self.total / self.count, blur_px / factor)
        return mean / mean.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)

    def mask(self, blur_px: float, threshold: float, factor: int = LATENT_FACTOR) -> Optional[torch.Tensor]:
        soft = self.soft(blur_px, factor)
        if soft is None or threshold <= 0:
            return soft
        return (soft >= threshold).to(soft.dtype)
