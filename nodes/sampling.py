"""Instruct KSampler and Instruct Guider nodes (the guidance lives in ``samplers/``)."""

from __future__ import annotations

from dataclasses import dataclass

from typing_extensions import Unpack

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..samplers.guider import GuiderOptions, InstructDualCFGGuider, build_guider
from .base import InstructNode
from .common import CATEGORY, guidance_inputs
from .guidance_options import GUIDANCE_OPTIONS, REGION_OPTIONS, GuidanceWidgets, guider_options

_BRANCHES_DOC = (
    " Works on every instruction-edit model ComfyUI runs: InstructPix2Pix / CosXL Edit, Flux Kontext, Flux.2, "
    "Qwen-Image-Edit, OmniGen2, HiDream-E1. Three branches are built from positive/negative automatically: "
    "full = positive (instruction + image), image-only = negative with the image, unconditional = negative "
    "without the image; out = uncond + image_cfg·(image_only − uncond) + text_cfg·(full − image_only). Branches "
    "whose weight is zero are not evaluated (text_cfg = image_cfg = 1: one pass a step, as BasicGuider). On a "
    "model that reads no image it is ordinary CFG at text_cfg. Optional region_mask: only that region is "
    "edited, outside it the input image is reconstructed."
)


@dataclass(frozen=True)
class KSamplerSettings:
    """Core KSampler's own settings (everything but the guidance), as the KSampler-style nodes take them."""

    seed: int
    steps: int
    sampler_name: str
    scheduler: str
    denoise: float


def ksampler_inputs() -> list[io.Input]:
    """Inputs of the KSampler-style nodes, in core KSampler's order (guidance in place of cfg)."""
    return [
        io.Model.Input(
            "model",
            tooltip="An edit model (Instruct UNet Loader for InstructPix2Pix-style UNets; Load Diffusion Model for Flux "
            "Kontext, Flux.2, Qwen-Image-Edit, OmniGen2, HiDream-E1), optionally patched by LoRA, FreeU, CFGNorm, etc.",
        ),
        io.Int.Input(
            "seed",
            default=0,
            min=0,
            max=0xFFFFFFFFFFFFFFFF,
            control_after_generate=True,
            tooltip="Seed of the initial noise (same noise as core KSampler for the same seed).",
        ),
        io.Int.Input(
            "steps",
            default=20,
            min=1,
            max=10000,
            tooltip="Sampling steps (the original InstructPix2Pix used 100; 20–30 is usually enough).",
        ),
        *guidance_inputs(),
        io.Combo.Input(
            "sampler_name",
            options=comfy.samplers.KSampler.SAMPLERS,
            default="euler_ancestral",
            tooltip="Sampling algorithm; the original InstructPix2Pix used euler_ancestral.",
        ),
        io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal", tooltip="Noise schedule."),
        io.Conditioning.Input(
            "positive", tooltip="Instruction conditioning carrying the input image (from Instruct Image Conditioning, or core nodes)."
        ),
        io.Conditioning.Input(
            "negative",
            tooltip="Negative / empty-text conditioning (from Instruct Image Conditioning, or raw: the image "
            "latent is added for the image-only branch).",
        ),
        io.Latent.Input(
            "latent_image",
            tooltip="Starting latent: the conditioner's latent output (empty, or the encoded image for denoise < 1).",
        ),
        io.Float.Input(
            "denoise",
            default=1.0,
            min=0.0,
            max=1.0,
            step=0.01,
            tooltip="1.0 edits from pure noise; lower values start from latent_image (SDEdit-style).",
        ),
    ]


def ksample(
    node: str, model, positive: list, negative: list, latent_image: dict, settings: KSamplerSettings, options: GuiderOptions
) -> tuple[dict, InstructDualCFGGuider]:
    """Sample like core KSampler (same noise, sigmas, preview, progress bar) with the instruct guider.

    Shared by the KSampler-style nodes; returns the LATENT and the guider (which holds the edit mask).
    """
    guider = build_guider(model, positive, negative, options, node)
    samples = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
    noise = comfy.sample.prepare_noise(samples, settings.seed, latent_image.get("batch_index"))
    sigmas = comfy.samplers.KSampler(
        model,
        steps=settings.steps,
        device=model.load_device,
        sampler=settings.sampler_name,
        scheduler=settings.scheduler,
        denoise=settings.denoise,
        model_options=model.model_options,
    ).sigmas
    callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
    out = guider.sample(
        noise,
        samples,
        comfy.samplers.sampler_object(settings.sampler_name),
        sigmas,
        denoise_mask=latent_image.get("noise_mask"),
        callback=callback,
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
        seed=settings.seed,
    )
    result = latent_image.copy()
    result["samples"] = out.to(comfy.model_management.intermediate_device())
    return result, guider


class InstructKSampler(InstructNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructKSampler",
            display_name="Instruct KSampler (dual CFG)",
            category=f"{CATEGORY}/sampling",
            description="KSampler for instruction editing with separate text and image guidance, exact to InstructPix2Pix." + _BRANCHES_DOC,
            inputs=[*ksampler_inputs(), *GUIDANCE_OPTIONS, *REGION_OPTIONS],
            outputs=[io.Latent.Output(display_name="LATENT", tooltip="The edited latent; decode it with the VAE.")],
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
        **guidance: Unpack[GuidanceWidgets],
    ) -> io.NodeOutput:
        settings = KSamplerSettings(seed, steps, sampler_name, scheduler, denoise)
        options = guider_options(text_cfg, image_cfg, guidance)
        return io.NodeOutput(ksample("InstructKSampler", model, positive, negative, latent_image, settings, options)[0])


class InstructGuider(InstructNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructGuider",
            display_name="Instruct Guider (dual CFG)",
            category=f"{CATEGORY}/sampling",
            description="GUIDER for SamplerCustomAdvanced with separate text and image guidance, exact to InstructPix2Pix." + _BRANCHES_DOC,
            inputs=[
                io.Model.Input("model", tooltip="An edit model (any family the samplers take), optionally patched."),
                io.Conditioning.Input("positive", tooltip="Instruction conditioning carrying the input image."),
                io.Conditioning.Input("negative", tooltip="Negative / empty-text conditioning."),
                *guidance_inputs(),
                *GUIDANCE_OPTIONS,
                *REGION_OPTIONS,
            ],
            outputs=[io.Guider.Output(display_name="GUIDER", tooltip="Connect to SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(
        cls,
        model,
        positive: list,
        negative: list,
        text_cfg: float,
        image_cfg: float,
        **guidance: Unpack[GuidanceWidgets],
    ) -> io.NodeOutput:
        return io.NodeOutput(build_guider(model, positive, negative, guider_options(text_cfg, image_cfg, guidance), "InstructGuider"))
