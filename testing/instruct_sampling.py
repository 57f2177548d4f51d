"""What the ComfyUI-backed tests do again and again: load the tiny instruct model, make an edit's
conditioning, sample with Instruct KSampler, and watch the UNet calls of a model.

Pure helpers over a harness (``comfy``, a ``ComfyHarness``); ComfyUI's modules are imported where they run.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

TINY_CHECKPOINT = "tiny-ip2p-sd15.safetensors"


def load_tiny_instruct(comfy: Any) -> Any:
    """The tiny instruct checkpoint through the pack's loader (MODEL, CLIP, VAE as ``.model/.clip/.vae``)."""
    import folder_paths

    return comfy.pack("models.instruct_loader").load_instruct(folder_paths.get_full_path("checkpoints", TINY_CHECKPOINT))


def encode_edit(comfy: Any, clip: Any, vae: Any, instruction: str, negative: str = "", seed: int = 5, size: int = 64) -> dict:
    """An edit's conditioning through Instruct Image Conditioning, from a seeded random picture: ``pos``, ``neg``
    (with the image latent), ``latent`` (empty, denoise 1.0), ``image_latent``, ``image``, and the raw text
    conditionings ``raw_pos`` / ``raw_neg``."""
    import nodes

    image = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(seed))
    pos = nodes.CLIPTextEncode().encode(clip, instruction)[0]
    neg = nodes.CLIPTextEncode().encode(clip, negative)[0]
    out = (
        comfy.nodes.NODE_CLASS_MAPPINGS["InstructImageConditioning"]
        .execute(positive=pos, negative=neg, vae=vae, image=image, size_mode="crop", latent_output="empty")
        .result
    )
    return {
        "pos": out[0],
        "neg": out[1],
        "latent": out[2],
        "image_latent": out[0][0][1]["concat_latent_image"],
        "image": image,
        "raw_pos": pos,
        "raw_neg": neg,
    }


def instruct_ksampler(
    comfy: Any,
    model: Any,
    positive: Any,
    negative: Any,
    latent: dict,
    text_cfg: float = 7.5,
    image_cfg: float = 1.5,
    steps: int = 2,
    seed: int = 3,
    sampler: str = "euler",
    scheduler: str = "normal",
    denoise: float = 1.0,
    **extra: Any,
) -> torch.Tensor:
    """Instruct KSampler's ``execute`` (the node's own code path), its output latent."""
    node = comfy.nodes.NODE_CLASS_MAPPINGS["InstructKSampler"]
    out = node.execute(
        model=model,
        seed=seed,
        steps=steps,
        text_cfg=text_cfg,
        image_cfg=image_cfg,
        sampler_name=sampler,
        scheduler=scheduler,
        positive=positive,
        negative=negative,
        latent_image=latent,
        denoise=denoise,
        **extra,
    ).result[0]
    return out["samples"]


def with_unet_wrapper(model: Any, wrapper: Callable) -> Any:
    """A clone of ``model`` whose every (batched) UNet call goes through ``wrapper(apply_model, args)``."""
    m = model.clone()
    m.set_model_unet_function_wrapper(wrapper)
    return m


def empty_latent(n: int = 1, size: int = 8, channels: int = 4, dtype: Optional[torch.dtype] = None) -> dict:
    return {"samples": torch.zeros(n, channels, size, size, dtype=dtype)}
