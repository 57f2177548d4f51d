"""The guidance options the three sampler nodes share: declared once, turned into ``GuiderOptions`` once.

Each sampler node lists these inputs after its own (``GUIDANCE_OPTIONS``, and ``REGION_OPTIONS`` on
the two that take a region) and receives them as ``**guidance``; :func:`guider_options` is the one
place that turns those widget values into the guider's typed options. They stay widgets on each
sampler rather than moving to an options node of their own: workflows saved by 0.1.0 hold their values
by position (UI format) and by name (API format) on the sampler nodes, and keep running unchanged.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from typing_extensions import TypedDict

from comfy_api.latest import io

from ..samplers.dual_cfg import ScaleSchedule
from ..samplers.guider import GuiderOptions, RegionOptions
from ..samplers.regions import EditMaskOptions


class GuidanceWidgets(TypedDict, total=False):
    """The values of ``GUIDANCE_OPTIONS`` and ``REGION_OPTIONS``, as a sampler's ``execute`` receives them."""

    guidance_rescale: float
    text_cfg_start: float
    text_cfg_end: float
    image_cfg_start: float
    image_cfg_end: float
    region_mask: Optional[torch.Tensor]
    region_feather: int


def _window(name: str, edge: str, default: float) -> io.Input:
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
        tooltip=what + " Outside its window the scale is 1.0 and the model pass it needs is skipped.",
    )


def _feather(optional: bool) -> io.Input:
    return io.Int.Input(
        "region_feather",
        default=16,
        min=0,
        max=512,
        step=8,
        optional=optional,
        tooltip="Feather width in pixels, inside the region's edge (the edit fades in over this width; outside the "
        "region stays untouched). Applied on the latent grid (8 pixels a cell; 16 for Flux.2).",
    )


#: Rescale and per-scale step windows (outside its window a scale is 1.0): every sampler node.
GUIDANCE_OPTIONS: tuple[io.Input, ...] = (
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
    _window("text_cfg", "start", 0.0),
    _window("text_cfg", "end", 1.0),
    _window("image_cfg", "start", 0.0),
    _window("image_cfg", "end", 1.0),
)

#: Region-restricted editing: Instruct KSampler and Instruct Guider.
REGION_OPTIONS: tuple[io.Input, ...] = (
    io.Mask.Input(
        "region_mask",
        optional=True,
        tooltip="Optional region to edit (same size as the input image: draw it in Load Image's mask editor, or use "
        "the edit mask of 'Instruct KSampler + Edit Mask'). Outside it every step sees the input image's noised "
        "latent, so the outside is reconstructed, not regenerated. Works on every edit family.",
    ),
    _feather(optional=True),
)

#: The edit-mask sampler's own feather (a required widget there, before the shared options).
EDIT_MASK_FEATHER = _feather(optional=False)

#: The ids a sampler may receive in ``**guidance``.
OPTION_IDS = frozenset(GuidanceWidgets.__annotations__)


def guider_options(
    text_cfg: float, image_cfg: float, widgets: Mapping[str, Any], edit_mask: Optional[EditMaskOptions] = None
) -> GuiderOptions:
    """The guider's options from a sampler node's scales and its ``**guidance`` widget values."""
    unknown = set(widgets) - OPTION_IDS
    if unknown:
        raise TypeError(f"unknown guidance options: {', '.join(sorted(unknown))}")
    schedule = ScaleSchedule(
        text_cfg,
        image_cfg,
        widgets.get("text_cfg_start", 0.0),
        widgets.get("text_cfg_end", 1.0),
        widgets.get("image_cfg_start", 0.0),
        widgets.get("image_cfg_end", 1.0),
    )
    mask = widgets.get("region_mask")
    region = None if mask is None else RegionOptions(mask, int(widgets.get("region_feather", 16)))
    return GuiderOptions(schedule, widgets.get("guidance_rescale", 0.0), region=region, edit_mask=edit_mask)
