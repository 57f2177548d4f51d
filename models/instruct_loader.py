"""Load an 8-channel instruct UNet from any published layout into ComfyUI's own model classes.

The pack never builds a UNet itself: it reads the weights (weights-only for pickles), picks EMA
weights, converts diffusers names, applies the CosXL prediction override, checks that ComfyUI will
detect an instruct family, and hands the state dict to core loading (``comfy.sd``), which returns
ordinary ModelPatcher/CLIP/VAE objects that every other node accepts.
"""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

import comfy.model_detection
import comfy.sd
import comfy.utils

from .diffusers_unet import diffusers_to_ldm
from .errors import InstructModelError
from .folders import DIFFUSERS_WEIGHT_NAMES
from .model_kind import is_instruct_model
from .weight_files import read_weights
from .state_dict import (
    COSXL_SIGMAS,
    EDM_VPRED_KEYS,
    LDM_PREFIX,
    EmaMode,
    Layout,
    classify,
    input_channels,
    require_instruct_channels,
    select_weights,
)

log = logging.getLogger(__name__)

#: Key endings every CLIP text encoder (with or without the ``text_model.`` prefix) / SD VAE file carries
#: (the VAE's are the same in the diffusers and ldm layouts).
CLIP_TEXT_KEYS = ("embeddings.token_embedding.weight", "encoder.layers.0.mlp.fc1.weight")
VAE_KEYS = ("encoder.conv_in.weight", "decoder.conv_in.weight", "decoder.conv_out.weight")
TEXT_ENCODER_NAMES = ("model.safetensors", "model.fp16.safetensors", "pytorch_model.bin", "pytorch_model.fp16.bin")


class Prediction(str, enum.Enum):
    AUTO = "auto"
    EPS = "eps"
    COSXL = "v_edm"  # EDM v-prediction with the SDXL-scaled image latent (CosXL Edit)


WEIGHT_DTYPES: dict[str, Optional[torch.dtype]] = {
    "default": None,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp32": torch.float32,
    "fp8_e4m3fn": torch.float8_e4m3fn,
}


@dataclass
class LoadedInstruct:
    model: Any
    clip: Any = None
    vae: Any = None
    notes: list[str] = field(default_factory=list)


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a weight file; pickles only with ``weights_only`` (never arbitrary code)."""
    sd = read_weights(path)
    if not isinstance(sd, dict) or not sd:
        raise InstructModelError(f"'{path}' contains no tensors; it is not a model weight file.")
    return sd


def _apply_prediction(sd: dict[str, torch.Tensor], prediction: Prediction, prefix: str) -> None:
    """Force or strip the CosXL markers that make ComfyUI use EDM v-prediction + scaled image latent."""
    if prediction is Prediction.COSXL:
        for key, value in COSXL_SIGMAS.items():
            sd.setdefault(prefix + key, torch.tensor(value))
    elif prediction is Prediction.EPS:
        for key in EDM_VPRED_KEYS:
            sd.pop(prefix + key, None)


def _require_instruct_family(sd: dict[str, torch.Tensor], prefix: str, source: str) -> None:
    """Fail before building anything when ComfyUI would not pick an instruct model class."""
    config = comfy.model_detection.model_config_from_unet(sd, prefix)
    # The class (not the instance, which holds the detected values) pins in_channels for instruct families.
    if config is None or type(config).unet_config.get("in_channels") != 8:
        family = type(config).__name__ if config is not None else "unrecognised"
        raise InstructModelError(
            f"'{source}' is an 8-channel UNet of an architecture ComfyUI has no instruct class for "
            f"(detected: {family}). Supported: SD1.5-class (InstructPix2Pix, MagicBrush, …) and SDXL-class "
            "(CosXL Edit, sdxl-instructpix2pix) models."
        )


def _model_options(weight_dtype: str) -> dict:
    dtype = WEIGHT_DTYPES[weight_dtype]
    return {} if dtype is None else {"dtype": dtype}


def _checked(model: Any, source: str) -> Any:
    if model is None or not is_instruct_model(model):
        raise InstructModelError(f"ComfyUI did not load '{source}' as an instruct model.")
    return model


def load_checkpoint_state_dict(sd, source, weights, prediction, weight_dtype, embedding_directory) -> LoadedInstruct:
    sd, used_ema = select_weights(sd, weights, source)
    _apply_prediction(sd, prediction, "")
    _require_instruct_family(sd, LDM_PREFIX, source)
    model, clip, vae, _ = comfy.sd.load_state_dict_guess_config(
        sd,
        output_vae=True,
        output_clip=True,
        embedding_directory=embedding_directory,
        model_options=_model_options(weight_dtype),
    )
    notes = ["EMA weights" if used_ema else "raw (non-EMA) weights"]
    return LoadedInstruct(_checked(model, source), clip, vae, notes)


def load_unet_state_dict(sd, source, prediction, weight_dtype) -> LoadedInstruct:
    """A bare UNet, ldm names (``input_blocks…``) at the top level."""
    _apply_prediction(sd, prediction, "")
    _require_instruct_family(sd, "", source)
    model = comfy.sd.load_diffusion_model_state_dict(sd, model_options=_model_options(weight_dtype))
    return LoadedInstruct(_checked(model, source))


def _first_file(folder: str, names: tuple[str, ...]) -> Optional[str]:
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def load_diffusers_folder(path, prediction, weight_dtype, embedding_directory) -> LoadedInstruct:
    """A diffusers pipeline folder (unet/, vae/, text_encoder[_2]/) or a bare ``unet/`` folder."""
    unet_dir = os.path.join(path, "unet") if os.path.isdir(os.path.join(path, "unet")) else path
    unet_file = _first_file(unet_dir, DIFFUSERS_WEIGHT_NAMES)
    if unet_file is None:
        raise InstructModelError(
            f"'{path}' has no UNet weights ({' / '.join(DIFFUSERS_WEIGHT_NAMES)} in unet/ or the folder "
            "itself). Download the whole model folder."
        )
    sd = read_state_dict(unet_file)
    if classify(sd, unet_file) is not Layout.DIFFUSERS_UNET:
        raise InstructModelError(f"'{unet_file}' is not in diffusers layout (expected conv_in/down_blocks keys).")
    require_instruct_channels(input_channels(sd, Layout.DIFFUSERS_UNET), unet_file)
    loaded = load_unet_state_dict(diffusers_to_ldm(sd, unet_file), unet_file, prediction, weight_dtype)

    encoders = [_first_file(os.path.join(path, d), TEXT_ENCODER_NAMES) for d in ("text_encoder", "text_encoder_2")]
    encoders = [e for e in encoders if e is not None]
    if encoders:
        loaded.clip = load_text_encoders(encoders, embedding_directory)
    vae_file = _first_file(os.path.join(path, "vae"), DIFFUSERS_WEIGHT_NAMES)
    if vae_file is not None:
        loaded.vae = load_vae(vae_file)
    return loaded


def _require_keys(sd: dict[str, torch.Tensor], keys: tuple[str, ...], path: str, what: str) -> None:
    missing = [k for k in keys if not any(name == k or name.endswith("." + k) for name in sd)]
    if missing:
        found = ", ".join(sorted(sd)[:3])
        raise InstructModelError(
            f"'{path}' is not a {what} (no {', '.join(missing)}; found e.g. {found}). The file is from another "
            "model or incomplete: download the model folder again."
        )


def with_text_model_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5 saves ``CLIPTextModel`` without the ``text_model.`` prefix that core's CLIP expects
    (older releases, and every published pipeline, have it). Core loads text encoders non-strictly, so
    unprefixed keys would leave every weight uninitialised (NaN conditioning) with only a log line."""
    if "text_model.embeddings.token_embedding.weight" in sd or "embeddings.token_embedding.weight" not in sd:
        return sd
    top_level = ("text_model.", "text_projection.", "logit_scale")
    return {k if k.startswith(top_level) else f"text_model.{k}": v for k, v in sd.items()}


def load_text_encoders(paths: list[str], embedding_directory: Any) -> Any:
    """A pipeline's CLIP text encoder(s); a corrupt, truncated or foreign file is named, not guessed at."""
    state_dicts = []
    for path in paths:
        sd = read_state_dict(path)
        _require_keys(sd, CLIP_TEXT_KEYS, path, "CLIP text encoder (transformers CLIPTextModel weights)")
        state_dicts.append(with_text_model_prefix(sd))
    try:
        return comfy.sd.load_text_encoder_state_dicts(state_dicts, embedding_directory=embedding_directory)
    except Exception as exc:
        raise InstructModelError(
            f"ComfyUI could not build a text encoder from {', '.join(repr(p) for p in paths)}: {type(exc).__name__}: "
            f"{exc}. The file(s) do not belong to an SD1.5/SDXL pipeline or are damaged: download the model folder again."
        ) from exc


def load_vae(path: str) -> Any:
    """A pipeline's VAE. Core fills missing VAE weights with random ones (with only a log line), so the
    encoder and decoder are required here, naming the file."""
    sd = read_state_dict(path)
    _require_keys(sd, VAE_KEYS, path, "VAE (AutoencoderKL weights)")
    try:
        return comfy.sd.VAE(sd=sd)
    except Exception as exc:
        raise InstructModelError(
            f"ComfyUI could not build a VAE from '{path}': {type(exc).__name__}: {exc}. The file is damaged or from "
            "another model: download the model folder again."
        ) from exc


def load_instruct(
    path: str,
    weights: str = EmaMode.AUTO.value,
    prediction: str = Prediction.AUTO.value,
    weight_dtype: str = "default",
    embedding_directory: Any = None,
) -> LoadedInstruct:
    """Load whatever is at ``path`` as an instruct model; every refusal names the file and the fix."""
    prediction = Prediction(prediction)
    if os.path.isdir(path):
        return load_diffusers_folder(path, prediction, weight_dtype, embedding_directory)
    sd = read_state_dict(path)
    layout = classify(sd, path)
    require_instruct_channels(input_channels(sd, layout), path)
    if layout is Layout.LDM_CHECKPOINT:
        return load_checkpoint_state_dict(sd, path, EmaMode(weights), prediction, weight_dtype, embedding_directory)
    if layout is Layout.DIFFUSERS_UNET:
        sd = diffusers_to_ldm(sd, path)
    return load_unet_state_dict(sd, path, prediction, weight_dtype)
