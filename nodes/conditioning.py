"""Instruct Image Conditioning node: encode the input image once, attach it to both conds."""

from __future__ import annotations

from typing import Optional

import torch

from comfy_api.latest import io

from ..models.errors import InstructInputError
from ..models.image_latent import (
    LatentMode,
    SizeMode,
    check_batches,
    check_latent_channels,
    fit_image,
    fit_mask,
    to_rgb,
)
from ..vocabulary import IMAGE_KEY, with_values
from .base import InstructNode
from .common import CATEGORY, resize_image

NODE = "InstructImageConditioning"


class InstructImageConditioning(InstructNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="Instruct Image Conditioning",
            category=f"{CATEGORY}/conditioning",
            description=(
                "Encodes the image to edit once (unscaled VAE latent, as InstructPix2Pix expects) and attaches it "
                "to positive and negative, for Instruct KSampler / Instruct Guider. Works before or after "
                "ControlNet apply nodes. Returns the latent to sample: empty, or the encoded image for denoise < 1; "
                "with a mask, the encoded image plus the mask as its noise mask, so only the masked area is edited."
            ),
            inputs=[
                io.Conditioning.Input("positive", tooltip="The instruction, e.g. 'make it winter' (CLIP Text Encode)."),
                io.Conditioning.Input("negative", tooltip="Negative text; an empty prompt reproduces the original InstructPix2Pix."),
                io.Vae.Input("vae", optional=True, tooltip="The model's VAE. Not needed when 'image_latent' is connected."),
                io.Image.Input(
                    "image",
                    optional=True,
                    tooltip="The image to edit. Grey and RGBA images are accepted (alpha is dropped). "
                    "A batch edits several images at once.",
                ),
                io.Combo.Input(
                    "size_mode",
                    options=[m.value for m in SizeMode],
                    default=SizeMode.CROP.value,
                    tooltip="Sides that are not multiples of 8: crop the remainder at the centre (like core), "
                    "or resize to the nearest multiple of 8 (keeps the whole picture, slight stretch).",
                ),
                io.Combo.Input(
                    "latent_output",
                    options=[m.value for m in LatentMode],
                    default=LatentMode.EMPTY.value,
                    tooltip="Latent to sample from: empty for denoise 1.0 (the usual edit), or the encoded "
                    "image for denoise < 1 (stays closer to the input).",
                ),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="Optional region to edit (same size as the image), for core samplers: the latent output "
                    "becomes the encoded image with this noise mask (core inpainting). With Instruct KSampler / Guider "
                    "use their 'region_mask' instead (feathered, reconstructs the outside from the input image even "
                    "from an empty latent).",
                ),
                io.Latent.Input(
                    "image_latent",
                    optional=True,
                    tooltip="Optional pre-encoded latent of the image (VAE Encode output); used instead of "
                    "encoding 'image', so one encoding can feed several conditioners.",
                ),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="Positive with the image latent attached."),
                io.Conditioning.Output(
                    display_name="negative",
                    tooltip="Negative with the image latent attached (the sampler derives the unconditional branch from it).",
                ),
                io.Latent.Output(display_name="latent", tooltip="Latent to sample (size of the prepared image)."),
            ],
        )

    @classmethod
    def execute(
        cls, positive, negative, size_mode, latent_output, vae=None, image=None, mask=None, image_latent: Optional[dict] = None
    ) -> io.NodeOutput:
        mode = SizeMode(size_mode)
        if image_latent is not None:
            latent = image_latent["samples"]
            check_latent_channels(latent, "'image_latent'")
        else:
            if image is None or vae is None:
                raise InstructInputError("connect 'image' and 'vae' (or a pre-encoded 'image_latent') so there is an image to edit.")
            pixels = fit_image(to_rgb(image), mode, resize_image)
            latent = vae.encode(pixels)
            check_latent_channels(latent, "VAE output")

        keep_image = LatentMode(latent_output) is LatentMode.IMAGE or mask is not None
        out_latent: dict = {"samples": latent.clone() if keep_image else torch.zeros_like(latent)}
        if mask is not None:
            if image_latent is None:  # same crop/resize as the image; ComfyUI scales it to the latent later
                mask = fit_mask(mask, (image.shape[1], image.shape[2]), mode, resize_image)
            elif mask.ndim == 2:
                mask = mask.unsqueeze(0)
            check_batches(latent.shape[0], mask.shape[0], "mask")
            out_latent["noise_mask"] = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        return io.NodeOutput(with_values(positive, {IMAGE_KEY: latent}), with_values(negative, {IMAGE_KEY: latent}), out_latent)
