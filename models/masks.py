"""Mask primitives shared by the conditioner's composite (models) and region editing (samplers).

Pure torch: a ComfyUI MASK brought to one shape, and the inward feather both layers apply.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import InstructInputError


def batch_mask(mask: torch.Tensor, what: str) -> torch.Tensor:
    """A ComfyUI MASK ([H,W] or [B,H,W], values 0..1) as float [B,H,W]."""
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.ndim != 3:
        raise InstructInputError(f"'{what}' must be a MASK [H,W] or [B,H,W]; got shape {tuple(mask.shape)}.")
    return mask.float().clamp(0.0, 1.0)


def erode(mask: torch.Tensor) -> torch.Tensor:
    """One 3×3 grey-scale erosion of [B,1,H,W]; the image border is not treated as outside."""
    return -F.max_pool2d(-F.pad(mask, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def feather_inward(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Ramp from the mask's edge inwards: 1/(width+1) on its first cell, 1 at depth width+1.

    Where the mask is 0 the result is exactly 0, so feathering never leaks the edit outside.
    """
    if width <= 0:
        return mask
    total, level = mask.clone(), mask
    for _ in range(width):
        level = erode(level)
        total += level
    return total / (width + 1)
