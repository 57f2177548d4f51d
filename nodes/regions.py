"""Edits that stay where they belong: the edit-mask sampler and the pixel composite."""

from __future__ import annotations

import logging

import torch
from typing_extensions import Unpack

from comfy_api.latest import io

from ..models.geometry import Resolution, SizeMode
from ..models.image_latent import composite_into_original
from ..samplers.regions import EditMaskOptions, to_pixels
from .base import InstructNode
from .choices import RESOLUTION, RESTRICT, SIZE_MODE
from .common import CATEGORY, resize_image
from .guidance_options import EDIT_MASK_FEATHER, GUIDANCE_OPTIONS, GuidanceWidgets, guider_options
from .sampling import KSamplerSettings, ksample, ksampler_inputs

log = logging.getLogger(__name__)


class InstructKSamplerEditMask(InstructNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructKSamplerEditMask",
            display_name="Instruct KSampler + Edit Mask",
            category=f"{CATEGORY}/sampling",
            description=(
                "Instruct KSampler that also finds where the instruction changes the image: during the first "
                "mask_steps of the sampling it accumulates |full − image-only| (the two branches the dual-CFG "
                "sampler evaluates anyway, so no extra UNet pass), blurs and thresholds it into a MASK. By default "
                "the rest of the sampling is then restricted to that mask (outside it the input image is "
                "reconstructed). Inspect the MASK, edit it with mask nodes, or reuse it as the region_mask of "
                "Instruct KSampler / Instruct Guider and in Instruct Region Composite."
            ),
            inputs=[
                *ksampler_inputs(),
                io.Float.Input(
                    "mask_steps",
                    default=0.4,
                    min=0.01,
                    max=1.0,
                    step=0.05,
                    tooltip="Fraction of the steps (from the first) over which the branch difference is accumulated. "
                    "Early steps decide the layout of the edit; 0.3–0.5 is usually right.",
                ),
                io.Float.Input(
                    "mask_blur",
                    default=16.0,
                    min=0.0,
                    max=256.0,
                    step=1.0,
                    tooltip="Smoothing of the difference map: Gaussian sigma in pixels (0 = none). Larger values give "
                    "rounder, more connected masks.",
                ),
                io.Float.Input(
                    "mask_threshold",
                    default=0.5,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    tooltip="The map is scaled so its strongest change is 1; cells at or above this value are in the mask. "
                    "Lower it to grow the mask. 0 returns the soft map itself.",
                ),
                RESTRICT.input("restrict", "restrict", "What happens after mask_steps:"),
                EDIT_MASK_FEATHER,
                *GUIDANCE_OPTIONS,
            ],
            outputs=[
                io.Latent.Output(display_name="LATENT", tooltip="The edited latent; decode it with the VAE."),
                io.Mask.Output(
                    display_name="edit_mask",
                    tooltip="Where the instruction changes the image, at the size of the edited image (1 = changed).",
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        model,
        seed: int,
        steps: int,
        text_cfg: float,
        image_cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: list,
        negative: list,
        latent_image: dict,
        denoise: float,
        mask_steps: float,
        mask_blur: float,
        mask_threshold: float,
        restrict: str,
        region_feather: int,
        **guidance: Unpack[GuidanceWidgets],
    ) -> io.NodeOutput:
        edit_mask = EditMaskOptions(mask_steps, mask_blur, mask_threshold, restrict == "restrict", region_feather)
        options = guider_options(text_cfg, image_cfg, guidance, edit_mask=edit_mask)
        settings = KSamplerSettings(seed, steps, sampler_name, scheduler, denoise)
        latent, guider = ksample("InstructKSamplerEditMask", model, positive, negative, latent_image, settings, options)
        mask, factor = guider.edit_mask, guider.pixel_factor
        if mask is None:
            log.warning("InstructKSamplerEditMask: no sampling step ran (denoise 0?), so the edit mask is empty")
            samples = latent["samples"]
            return io.NodeOutput(latent, torch.zeros(samples.shape[0], samples.shape[-2] * factor, samples.shape[-1] * factor))
        return io.NodeOutput(latent, to_pixels(mask, factor).float().cpu())

    @classmethod
    def validate_inputs(cls, restrict: str) -> "bool | str":
        return cls.accept_choices(restrict=restrict)


class InstructRegionComposite(InstructNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructRegionComposite",
            display_name="Instruct Region Composite",
            category=f"{CATEGORY}/image",
            description=(
                "Pastes the decoded edit back into the original image inside the mask only. Outside the mask the "
                "output is the original's pixels exactly (no VAE round trip), at the original's full size and on its "
                "pixel grid (what the conditioner cropped, padded, resized or scaled is undone); the feather blends "
                "inwards from the mask's edge."
            ),
            inputs=[
                io.Image.Input("edited", tooltip="The decoded edit (VAE Decode of the sampler's latent)."),
                io.Image.Input("original", tooltip="The input image that was edited (the one fed to Instruct Image Conditioning)."),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="Where the edit is kept: a mask drawn on the original, or the edit_mask of Instruct KSampler + "
                    "Edit Mask (the size of the edit). Unconnected: the whole edit, put back on the original's size and grid.",
                ),
                io.Int.Input(
                    "feather",
                    default=16,
                    min=0,
                    max=512,
                    step=1,
                    tooltip="Feather width in pixels, inside the mask's edge (0 = hard edge). Outside the mask stays the original.",
                ),
                SIZE_MODE.input(
                    "size_mode",
                    SizeMode.CROP.value,
                    "How Instruct Image Conditioning fitted the original to the model's grid (use the same setting), so "
                    "the edit is put back exactly where it came from:",
                ),
                RESOLUTION.input(
                    "resolution",
                    Resolution.KEEP.value,
                    "The resolution Instruct Image Conditioning edited at (use the same setting):",
                    optional=True,
                ),
            ],
            outputs=[io.Image.Output(display_name="IMAGE", tooltip="The original with the edit inside the mask, at the original's size.")],
        )

    @classmethod
    def execute(cls, edited, original, feather, size_mode, mask=None, resolution=Resolution.KEEP.value) -> io.NodeOutput:
        if mask is None:  # the whole edit (what the conditioner cropped away stays the original's)
            mask = torch.ones(original.shape[:3])
        out = composite_into_original(edited, original, mask, feather, SizeMode(size_mode), resize_image, Resolution(resolution))
        return io.NodeOutput(out)

    @classmethod
    def validate_inputs(cls, size_mode: str, resolution: str = Resolution.KEEP.value) -> "bool | str":
        return cls.accept_choices(size_mode=size_mode, resolution=resolution)
