"""Instruct UNet Loader node (thin: the work is in ``models/instruct_loader.py``)."""

from __future__ import annotations

import logging

import folder_paths
from comfy_api.latest import io

from ..models.folders import list_instruct_sources, resolve_source
from ..models.instruct_loader import WEIGHT_DTYPES, Prediction, load_instruct
from ..models.state_dict import EmaMode
from .base import InstructNode
from .choices import EMA_WEIGHTS, PREDICTION
from .common import CATEGORY

log = logging.getLogger(__name__)


class InstructUNetLoader(InstructNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructUNetLoader",
            display_name="Instruct UNet Loader",
            category=f"{CATEGORY}/loaders",
            description=(
                "Loads an 8-channel InstructPix2Pix-style UNet (4 noisy-latent + 4 input-image channels): SD1.5- "
                "and SDXL-class models, CosXL Edit, ldm single files (.safetensors/.ckpt, EMA weights "
                "selectable) and diffusers layouts (pipeline folder, unet/ folder or bare UNet file). Returns an "
                "ordinary MODEL that LoRA, ControlNet, FreeU and sampling nodes accept, plus the file's CLIP and "
                "VAE when it carries them. (Flux Kontext, Flux.2, Qwen-Image-Edit, OmniGen2 and HiDream-E1 load with core "
                "'Load Diffusion Model'.)"
            ),
            inputs=[
                io.Combo.Input(
                    "model_name",
                    options=list_instruct_sources(),
                    tooltip="An instruct model from models/checkpoints, models/diffusion_models (files) or "
                    "models/diffusers (folders). 4-channel and inpainting models are refused with a message.",
                ),
                EMA_WEIGHTS.input(
                    "weights",
                    EmaMode.AUTO.value,
                    "Which UNet weights of an ldm checkpoint that carries both (ignored for files without EMA):",
                ),
                PREDICTION.input("prediction", Prediction.AUTO.value, "How the UNet predicts:"),
                io.Combo.Input(
                    "weight_dtype",
                    options=list(WEIGHT_DTYPES),
                    default="default",
                    tooltip="Storage dtype of the UNet weights; 'default' lets ComfyUI choose for your device.",
                ),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The instruct UNet, ready for Instruct KSampler / Instruct Guider."),
                io.Clip.Output(
                    display_name="CLIP", tooltip="The text encoder from the same file or folder; None for a bare UNet (use Load CLIP)."
                ),
                io.Vae.Output(display_name="VAE", tooltip="The VAE from the same file or folder; None for a bare UNet (use Load VAE)."),
            ],
        )

    @classmethod
    def execute(cls, model_name: str, weights: str, prediction: str, weight_dtype: str) -> io.NodeOutput:
        path = resolve_source(model_name)
        loaded = load_instruct(
            path,
            weights=weights,
            prediction=prediction,
            weight_dtype=weight_dtype,
            embedding_directory=folder_paths.get_folder_paths("embeddings"),
        )
        missing = [name for name, obj in (("CLIP", loaded.clip), ("VAE", loaded.vae)) if obj is None]
        if missing:
            log.warning("Instruct UNet Loader: '%s' has no %s; load it with the core loader", model_name, " or ".join(missing))
        log.info("Instruct UNet Loader: loaded '%s' (%s)", model_name, ", ".join(loaded.notes) or "UNet only")
        return io.NodeOutput(loaded.model, loaded.clip, loaded.vae)

    @classmethod
    def validate_inputs(cls, weights: str, prediction: str) -> "bool | str":
        return cls.accept_choices(weights=weights, prediction=prediction)
