"""Seeded, byte-reproducible random-weight models in the real published file formats.

Nothing is downloaded and nothing is committed: files are generated at test time into a cache
directory. Tensor names and shapes come from ComfyUI's own module classes built on the meta device
(so they are exactly what ComfyUI's loaders expect); every tensor is then filled from a generator
seeded by (seed, tensor name), so the same seed gives the same bytes on any machine.

Sizes: the SD1.5 detection needs model_channels 320, context_dim 768 and in_channels 8 but not the
depth, so the UNet has one level (21M parameters instead of 860M). CLIP-L and the SD VAE have fixed
sizes in ComfyUI and are full-size (random).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable

import torch

FACTORY_VERSION = 1
SEED = 20260107

#: ldm config of the tiny SD1.5-class instruct UNet (what ComfyUI's detection reads back).
TINY_UNET = dict(
    image_size=32, in_channels=8, out_channels=4, model_channels=320, num_res_blocks=[1], channel_mult=[1],
    transformer_depth=[1], transformer_depth_output=[1, 1], transformer_depth_middle=1, context_dim=768,
    num_heads=8, num_head_channels=-1, use_linear_in_transformer=False, use_spatial_transformer=True, legacy=False,
    adm_in_channels=None, use_temporal_attention=False, use_temporal_resblock=False,
)
SD_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}

FILES = {
    "checkpoint": "checkpoints/tiny-ip2p-sd15.safetensors",
    "checkpoint_ema": "checkpoints/tiny-ip2p-sd15-ema.ckpt",
    "checkpoint_4ch": "checkpoints/tiny-sd15-4ch.safetensors",
    "checkpoint_9ch": "checkpoints/tiny-sd15-inpaint.safetensors",
    "unet": "diffusion_models/tiny-ip2p-sd15-unet.safetensors",
    "controlnet": "controlnet/tiny-controlnet-sd15.safetensors",
    "lora": "loras/tiny-lora-sd15.safetensors",
    "corrupt": "checkpoints/tiny-ip2p-truncated.safetensors",
}


def _generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def fill(name: str, shape: torch.Size, seed: int = SEED) -> torch.Tensor:
    """Deterministic values by role: biases 0, norms 1, embeddings N(0, 0.02²), weights N(0, 1/fan_in)."""
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("position_ids"):
        return torch.arange(shape[-1]).reshape(shape)
    if leaf == "bias":
        return torch.zeros(shape)
    if len(shape) == 1:  # norm / scale vectors
        return torch.ones(shape)
    g = _generator(seed, name)
    if "embedding" in name and len(shape) == 2:
        return torch.randn(shape, generator=g) * 0.02
    fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
    return torch.randn(shape, generator=g) / fan_in**0.5


def random_state_dict(module: torch.nn.Module, prefix: str = "", seed: int = SEED,
                      dtype: torch.dtype = torch.float16, skip: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in module.state_dict(keep_vars=False).items():
        if any(s in name for s in skip):
            continue
        value = fill(name, tensor.shape, seed)
        out[prefix + name] = value if name.endswith("position_ids") else value.to(dtype)
    return out


def _meta_unet(**overrides) -> torch.nn.Module:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel(**{**TINY_UNET, **overrides}, device="meta", operations=comfy.ops.disable_weight_init)


def unet_state_dict(in_channels: int = 8, seed: int = SEED, **overrides) -> dict[str, torch.Tensor]:
    return random_state_dict(_meta_unet(in_channels=in_channels, **overrides), seed=seed)


def clip_state_dict(seed: int = SEED) -> dict[str, torch.Tensor]:
    import comfy.clip_model
    import comfy.ops

    config = json.loads((Path(comfy.clip_model.__file__).parent / "sd1_clip_config.json").read_text())
    model = comfy.clip_model.CLIPTextModel(config, torch.float16, "meta", comfy.ops.disable_weight_init)
    # SD1.5 checkpoints store the HF text model without its projection.
    return random_state_dict(model, prefix="cond_stage_model.transformer.", seed=seed, skip=("text_projection",))


def vae_state_dict(seed: int = SEED) -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.ldm.models.autoencoder import AutoencoderKL

    with torch.device("meta"):
        model = AutoencoderKL(ddconfig=SD_VAE, embed_dim=4)
    return random_state_dict(model, prefix="first_stage_model.", seed=seed)


def controlnet_state_dict(seed: int = SEED) -> dict[str, torch.Tensor]:
    import comfy.cldm.cldm
    import comfy.ops

    cfg = {k: v for k, v in TINY_UNET.items() if k not in ("out_channels", "use_temporal_attention", "use_temporal_resblock")}
    cfg.update(in_channels=4, hint_channels=3)  # a ControlNet sees the 4-channel noisy latent only
    model = comfy.cldm.cldm.ControlNet(**cfg, device="meta", operations=comfy.ops.disable_weight_init)
    return random_state_dict(model, prefix="control_model.", seed=seed)


def lora_state_dict(seed: int = SEED, rank: int = 4) -> dict[str, torch.Tensor]:
    """Kohya-style LoRA on a few UNet attention layers and one CLIP layer."""
    targets = {
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k": (320, 768),
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q": (320, 320),
        "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_v": (320, 768),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
    }
    out = {}
    for name, (out_f, in_f) in targets.items():
        g = _generator(seed, name)
        out[f"{name}.lora_down.weight"] = (torch.randn(rank, in_f, generator=g) / in_f**0.5).half()
        out[f"{name}.lora_up.weight"] = (torch.randn(out_f, rank, generator=g) * 0.5).half()
        out[f"{name}.alpha"] = torch.tensor(float(rank))
    return out


def _save(sd: dict, path: Path) -> None:
    import safetensors.torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    if path.suffix == ".safetensors":
        safetensors.torch.save_file(sd, str(tmp))
    else:
        torch.save(sd, str(tmp))
    os.replace(tmp, path)


def _checkpoint(unet: dict) -> dict:
    sd = {"model.diffusion_model." + k: v for k, v in unet.items()}
    sd.update(clip_state_dict())
    sd.update(vae_state_dict())
    return sd


def build_all(root: Path) -> dict[str, Path]:
    """Write every file that is missing; return name → path."""
    root = Path(root)
    makers: dict[str, Callable[[], None]] = {}
    paths = {name: root / rel for name, rel in FILES.items()}

    def checkpoint() -> None:
        _save(_checkpoint(unet_state_dict()), paths["checkpoint"])

    def checkpoint_ema() -> None:
        # The original InstructPix2Pix layout: a Lightning dict with raw and EMA UNet weights.
        raw = unet_state_dict(seed=SEED + 1)
        sd = _checkpoint(raw)
        ema = unet_state_dict(seed=SEED)
        for key, value in ema.items():
            sd["model_ema." + ("diffusion_model." + key).replace(".", "")] = value
        sd["model_ema.decay"] = torch.tensor(0.9999)
        sd["model_ema.num_updates"] = torch.tensor(22000)
        _save({"state_dict": sd, "global_step": 22000}, paths["checkpoint_ema"])

    makers["checkpoint"] = checkpoint
    makers["checkpoint_ema"] = checkpoint_ema
    makers["checkpoint_4ch"] = lambda: _save(
        {"model.diffusion_model." + k: v for k, v in unet_state_dict(in_channels=4).items()}, paths["checkpoint_4ch"])
    makers["checkpoint_9ch"] = lambda: _save(
        {"model.diffusion_model." + k: v for k, v in unet_state_dict(in_channels=9).items()}, paths["checkpoint_9ch"])
    makers["unet"] = lambda: _save(unet_state_dict(), paths["unet"])
    makers["controlnet"] = lambda: _save(controlnet_state_dict(), paths["controlnet"])
    makers["lora"] = lambda: _save(lora_state_dict(), paths["lora"])

    def corrupt() -> None:
        source = paths["unet"]
        if not source.exists():
            makers["unet"]()
        data = source.read_bytes()
        paths["corrupt"].write_bytes(data[: len(data) // 3])

    makers["corrupt"] = corrupt
    for name, make in makers.items():
        if not paths[name].exists():
            make()
    return paths


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- diffusers layouts (need the diffusers package) ---------------------------------------------

#: diffusers config of a tiny SD1.5-class 8-channel UNet (ComfyUI detects it once converted to ldm).
DIFFUSERS_UNET = dict(
    sample_size=8, in_channels=8, out_channels=4, block_out_channels=(320,), layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D",), up_block_types=("CrossAttnUpBlock2D",),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
DIFFUSERS_FILES = {
    "unet_folder": "diffusers/tiny-ip2p-unet",
    "pipeline": "diffusers/tiny-ip2p-pipeline",
    "unet_file": "diffusion_models/tiny-ip2p-diffusers-unet.safetensors",
}


def diffusers_unet(seed: int = SEED):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**DIFFUSERS_UNET).eval()


def _write_pipeline(folder: Path, unet) -> None:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(SEED + 7)
    unet.save_pretrained(folder / "unet")
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4)
    vae.half().save_pretrained(folder / "vae")
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                        num_hidden_layers=12, max_position_embeddings=77, vocab_size=49408,
                                        projection_dim=768, hidden_act="quick_gelu"))
    text.half().save_pretrained(folder / "text_encoder")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionInstructPix2PixPipeline", "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
    }))


def build_diffusers(root: Path) -> dict[str, Path]:
    """A diffusers UNet folder, a pipeline folder (UNet, VAE, CLIP-L) and a bare diffusers UNet file."""
    root = Path(root)
    paths = {name: root / rel for name, rel in DIFFUSERS_FILES.items()}
    unet = None
    if not (paths["unet_folder"] / "diffusion_pytorch_model.safetensors").exists():
        unet = unet or diffusers_unet()
        tmp = paths["unet_folder"].with_name(paths["unet_folder"].name + ".part")
        unet.save_pretrained(tmp)
        os.replace(tmp, paths["unet_folder"])
    if not (paths["pipeline"] / "model_index.json").exists():
        unet = unet or diffusers_unet()
        tmp = paths["pipeline"].with_name(paths["pipeline"].name + ".part")
        _write_pipeline(tmp, unet)
        os.replace(tmp, paths["pipeline"])
    if not paths["unet_file"].exists():
        unet = unet or diffusers_unet()
        _save({k: v.contiguous() for k, v in unet.state_dict().items()}, paths["unet_file"])
    return paths
