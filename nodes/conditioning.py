"""Instruct Image Conditioning node: encode the input image once, attach it the way the model reads it."""

from __future__ import annotations

import logging
from typing import Any, Optional

import torch

from comfy_api.latest import io

from ..models.errors import InstructInputError
from ..models.families import INSTRUCT_PIX2PIX, Family
from ..models.geometry import Fit, Resolution, SizeMode, plan
from ..models.image_latent import LatentMode, check_batches, to_rgb
from ..models.masks import batch_mask
from ..models.model_kind import family_of, latent_channels
from ..vocabulary import FIT_KEY, with_values
from .base import InstructNode
from .choices import LATENT_OUTPUT, RESOLUTION, SIZE_MODE
from .common import CATEGORY, resize_image

NODE = "InstructImageConditioning"

log = logging.getLogger(__name__)


def _family(model: Any) -> Family:
    """The model's family; without a model, InstructPix2Pix's channel concat (what 0.1.0 attached)."""
    if model is None:
        return INSTRUCT_PIX2PIX
    family = family_of(model)
    if family is None:
        raise InstructInputError(
            "the model connected to 'model' reads no input image (it is not an instruction-edit model), so there is "
            "nothing to attach the image for. Connect the edit model you sample with (InstructPix2Pix/CosXL Edit, Flux "
            "Kontext, Flux.2, Qwen-Image-Edit, OmniGen2, HiDream-E1), or leave 'model' unconnected for InstructPix2Pix."
        )
    return family


def _check_latent(latent: torch.Tensor, model: Any, source: str) -> None:
    """The encoded image must be in the model's latent space (the VAE that belongs to the model)."""
    if model is None:
        if latent.ndim != 4 or latent.shape[1] != 4:
            raise InstructInputError(
                f"the {source} has shape {tuple(latent.shape)}; InstructPix2Pix-style UNets take a 4-channel SD/SDXL "
                "latent. For Flux Kontext, Flux.2, Qwen-Image-Edit, OmniGen2 or HiDream-E1 connect the model to 'model' "
                "(so the image is attached the way it reads it); for InstructPix2Pix use the SD1.5/SDXL VAE of the model."
            )
        return
    expected = latent_channels(model)
    if expected is not None and (latent.ndim < 4 or latent.shape[1] != expected):
        raise InstructInputError(
            f"the {source} has shape {tuple(latent.shape)}, but this model works on {expected}-channel latents: "
            "use the VAE that belongs to the model."
        )


def _encode(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """VAE Encode of an image batch. A video VAE (Qwen-Image's Wan 2.1 VAE) reads a batch as frames of one clip,
    so there each image is encoded alone and the results form a batch of one-frame latents."""
    first = vae.encode(pixels[:1])
    if first.ndim != 5 or pixels.shape[0] == 1:
        return first if pixels.shape[0] == 1 else vae.encode(pixels)
    return torch.cat([first, *(vae.encode(pixels[i : i + 1]) for i in range(1, pixels.shape[0]))])


class InstructImageConditioning(InstructNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="Instruct Image Conditioning",
            category=f"{CATEGORY}/conditioning",
            description=(
                "Encodes the image to edit once and attaches it to positive and negative the way the model reads it: "
                "channel concat (InstructPix2Pix, CosXL Edit: unscaled VAE latent), width concat (HiDream-E1), reference "
                "latents (Flux Kontext, Flux.2, Qwen-Image-Edit, OmniGen2; chain core ReferenceLatent after it for more "
                "references). Connect 'model' for any family but InstructPix2Pix. The image is fitted to the model's grid "
                "without drift (crop, pad or resize with an exact inverse in Instruct Region Composite). Works before or "
                "after ControlNet apply nodes. Returns the latent to sample: empty, or the encoded image for denoise < 1; "
                "with a mask, the encoded image plus the mask as its noise mask (core inpainting)."
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
                SIZE_MODE.input(
                    "size_mode",
                    SizeMode.CROP.value,
                    "Sides that are not multiples of the model's grid cell (8 pixels for InstructPix2Pix-style UNets, 16 for "
                    "the transformer families):",
                ),
                LATENT_OUTPUT.input("latent_output", LatentMode.EMPTY.value, "The latent to sample from:"),
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
                io.Model.Input(
                    "model",
                    optional=True,
                    tooltip="The edit model you sample with: it decides how the image is attached (concat or reference "
                    "latents) and the grid cell. Leave it unconnected for InstructPix2Pix-style UNets.",
                ),
                RESOLUTION.input("resolution", Resolution.KEEP.value, "The resolution the image is edited at:", optional=True),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="Positive with the input image attached."),
                io.Conditioning.Output(
                    display_name="negative",
                    tooltip="Negative with the input image attached (the sampler derives the unconditional branch from it).",
                ),
                io.Latent.Output(display_name="latent", tooltip="Latent to sample (size and shape of the encoded image)."),
            ],
        )

    @classmethod
    def execute(
        cls,
        positive,
        negative,
        size_mode,
        latent_output,
        vae=None,
        image=None,
        mask=None,
        image_latent: Optional[dict] = None,
        model=None,
        resolution=Resolution.KEEP.value,
    ) -> io.NodeOutput:
        family = _family(model)
        fit: Optional[Fit] = None
        if image_latent is not None:
            latent = image_latent["samples"]
            _check_latent(latent, model, "'image_latent'")
        else:
            if image is None or vae is None:
                raise InstructInputError("connect 'image' and 'vae' (or a pre-encoded 'image_latent') so there is an image to edit.")
            rgb = to_rgb(image)
            fit = plan(rgb.shape[1], rgb.shape[2], SizeMode(size_mode), family.cell, Resolution(resolution))
            if not fit.is_exact:
                log.info("Instruct Image Conditioning: the image is resampled (%s); the composite puts the edit back", fit.describe())
            latent = _encode(vae, fit.apply(rgb, resize_image))
            _check_latent(latent, model, "VAE output")

        keep_image = LatentMode(latent_output) is LatentMode.IMAGE or mask is not None
        out_latent: dict = {"samples": latent.clone() if keep_image else torch.zeros_like(latent)}
        if mask is not None:
            mask = batch_mask(mask, "mask")
            if fit is not None:
                if tuple(mask.shape[1:]) != fit.source:
                    raise InstructInputError(
                        f"the mask is {mask.shape[2]}x{mask.shape[1]} but the image is {fit.source[1]}x{fit.source[0]}; "
                        "draw the mask on the same image (or resize it with a mask node) so both have the same size."
                    )
                mask = fit.apply_mask(mask, resize_image)  # same fit as the image; ComfyUI scales it to the latent later
            check_batches(latent.shape[0], mask.shape[0], "mask")
            out_latent["noise_mask"] = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        extra = {FIT_KEY: fit} if fit is not None else {}
        positive = with_values(family.attach(positive, latent), extra)
        negative = with_values(family.attach(negative, latent), extra)
        return io.NodeOutput(positive, negative, out_latent)

    @classmethod
    def validate_inputs(cls, size_mode: str, latent_output: str, resolution: str = Resolution.KEEP.value) -> "bool | str":
        return cls.accept_choices(size_mode=size_mode, latent_output=latent_output, resolution=resolution)
