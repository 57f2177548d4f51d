"""Seeded, byte-reproducible random-weight models in the real published file formats.

Nothing is downloaded and nothing is committed: files are generated at test time into a cache
directory. Tensor names and shapes come from ComfyUI's own module classes built on the meta device
(so they are exactly what ComfyUI's loaders expect); every tensor is then filled from a generator
seeded by (seed, tensor name), so the same seed gives the same bytes on any machine.

Sizes: the SD1.5 detection needs model_channels 320, context_dim 768 and in_channels 8 but not the
depth, so the UNet has one level (21M parameters instead of 860M). CLIP-L and the SD VAE have fixed
sizes in ComfyUI and are full-size (random).

Full-size SD1.5 (what IP-Adapter-Instruct's 16 layers need) is built in memory by ``FullSD15`` and
handed to the same loaders as a file would be; only the adapter files, whose loading is under test,
are written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable

import torch

FACTORY_VERSION = 1
SEED = 20260107


def cache_dir() -> Path:
    """Where the generated files live: ``$INSTRUCT_TEST_CACHE`` or ``~/.cache/comfyui-instruct-tests``, per factory version."""
    base = os.environ.get("INSTRUCT_TEST_CACHE") or Path.home() / ".cache" / "comfyui-instruct-tests"
    return Path(base) / f"v{FACTORY_VERSION}"


#: ldm config of the tiny SD1.5-class instruct UNet (what ComfyUI's detection reads back).
TINY_UNET = dict(
    image_size=32,
    in_channels=8,
    out_channels=4,
    model_channels=320,
    num_res_blocks=[1],
    channel_mult=[1],
    transformer_depth=[1],
    transformer_depth_output=[1, 1],
    transformer_depth_middle=1,
    context_dim=768,
    num_heads=8,
    num_head_channels=-1,
    use_linear_in_transformer=False,
    use_spatial_transformer=True,
    legacy=False,
    adm_in_channels=None,
    use_temporal_attention=False,
    use_temporal_resblock=False,
)
SD_VAE = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
}

FILES = {
    "checkpoint": "checkpoints/tiny-ip2p-sd15.safetensors",
    "checkpoint_ema": "checkpoints/tiny-ip2p-sd15-ema.ckpt",
    "checkpoint_4ch": "checkpoints/tiny-sd15-4ch.safetensors",
    "checkpoint_9ch": "checkpoints/tiny-sd15-inpaint.safetensors",
    "unet": "diffusion_models/tiny-ip2p-sd15-unet.safetensors",
    "controlnet": "controlnet/tiny-controlnet-sd15.safetensors",
    "lora": "loras/tiny-lora-sd15.safetensors",
    "corrupt": "checkpoints/tiny-ip2p-truncated.safetensors",
    # Instruct merge: UNet-only checkpoints of a 4-channel "base" and a "fine-tune" of it (base + a small seeded
    # change to the UNet; the merge uses only their UNets, and core's checkpoint loader reads such a file with
    # a warning that it has no CLIP/VAE), and an SD2-class UNet (context 1024, linear transformers) as a model
    # of another family.
    "ckpt_base": "checkpoints/tiny-sd15-base.safetensors",
    "ckpt_custom": "checkpoints/tiny-sd15-custom.safetensors",
    "unet_sd2": "diffusion_models/tiny-sd2-unet.safetensors",
}

#: What makes the tiny UNet an SD2-class one for ComfyUI's detection.
SD2_OVERRIDES = dict(in_channels=4, context_dim=1024, use_linear_in_transformer=True, num_heads=-1, num_head_channels=64)
#: CLIP-L's text model in transformers' terms (the diffusers pipeline's text encoder, and the tests' reference).
CLIP_L_TEXT_CONFIG = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_attention_heads=12,
    num_hidden_layers=12,
    max_position_embeddings=77,
    vocab_size=49408,
    projection_dim=768,
    hidden_act="quick_gelu",
)
BASE_SEED, TUNE_SEED, TUNE_SCALE = SEED + 20, SEED + 21, 0.05


def fine_tune_state_dict() -> dict[str, torch.Tensor]:
    """The "custom" model: the base UNet plus a small seeded change on every weight."""
    base = unet_state_dict(in_channels=4, seed=BASE_SEED)
    return {k: (v.float() + TUNE_SCALE * fill(k, v.shape, TUNE_SEED).float()).to(v.dtype) for k, v in base.items()}


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


def random_state_dict(
    module: torch.nn.Module, prefix: str = "", seed: int = SEED, dtype: torch.dtype = torch.float16, skip: Iterable[str] = ()
) -> dict[str, torch.Tensor]:
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


def lora_state_dict(seed: int = SEED, rank: int = 4, targets: dict | None = None) -> dict[str, torch.Tensor]:
    """Kohya-style LoRA on a few UNet attention layers and one CLIP layer."""
    targets = targets or {
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


def _unet_only_checkpoint(unet: dict) -> dict:
    return {"model.diffusion_model." + k: v for k, v in unet.items()}


def _checkpoint(unet: dict) -> dict:
    sd = _unet_only_checkpoint(unet)
    sd.update(clip_state_dict())
    sd.update(vae_state_dict())
    return sd


#: Files older factories wrote that none writes now (7 GB): removed from the cache, which would keep them forever.
RETIRED_FILES = (
    "checkpoints/full-sd15-random.safetensors",
    "checkpoints/full-ip2p-sd15-random.safetensors",
    "controlnet/full-controlnet-sd15-random.safetensors",
    "clip_vision/clip-vit-h-14-random.safetensors",
)


def _remove_retired(root: Path) -> None:
    for rel in RETIRED_FILES:
        (root / rel).unlink(missing_ok=True)


def build_all(root: Path, only: Iterable[str] | None = None) -> dict[str, Path]:
    """Write every file that is missing (or just those named in ``only``); return name → path."""
    root = Path(root)
    makers: dict[str, Callable[[], None]] = {}
    paths = {name: root / rel for name, rel in FILES.items()}

    def checkpoint() -> None:
        _save(_checkpoint(unet_state_dict()), paths["checkpoint"])

    def checkpoint_ema() -> None:
        # The original InstructPix2Pix layout: a Lightning dict with raw and EMA UNet weights. Without CLIP and
        # VAE (0.4 GB): the EMA tests read the UNet, and a checkpoint's CLIP and VAE are tested on "checkpoint".
        raw = unet_state_dict(seed=SEED + 1)
        sd = _unet_only_checkpoint(raw)
        ema = unet_state_dict(seed=SEED)
        for key, value in ema.items():
            sd["model_ema." + ("diffusion_model." + key).replace(".", "")] = value
        sd["model_ema.decay"] = torch.tensor(0.9999)
        sd["model_ema.num_updates"] = torch.tensor(22000)
        _save({"state_dict": sd, "global_step": 22000}, paths["checkpoint_ema"])

    makers["checkpoint"] = checkpoint
    makers["checkpoint_ema"] = checkpoint_ema
    makers["checkpoint_4ch"] = lambda: _save(_unet_only_checkpoint(unet_state_dict(in_channels=4)), paths["checkpoint_4ch"])
    makers["checkpoint_9ch"] = lambda: _save(_unet_only_checkpoint(unet_state_dict(in_channels=9)), paths["checkpoint_9ch"])
    makers["unet"] = lambda: _save(unet_state_dict(), paths["unet"])
    makers["controlnet"] = lambda: _save(controlnet_state_dict(), paths["controlnet"])
    makers["lora"] = lambda: _save(lora_state_dict(), paths["lora"])
    makers["ckpt_base"] = lambda: _save(_unet_only_checkpoint(unet_state_dict(in_channels=4, seed=BASE_SEED)), paths["ckpt_base"])
    makers["ckpt_custom"] = lambda: _save(_unet_only_checkpoint(fine_tune_state_dict()), paths["ckpt_custom"])
    makers["unet_sd2"] = lambda: _save(random_state_dict(_meta_unet(**SD2_OVERRIDES)), paths["unet_sd2"])

    def corrupt() -> None:
        source = paths["unet"]
        if not source.exists():
            makers["unet"]()
        data = source.read_bytes()
        paths["corrupt"].write_bytes(data[: len(data) // 3])

    makers["corrupt"] = corrupt
    _remove_retired(root)
    wanted = set(makers) if only is None else set(only)
    for name, make in makers.items():
        if name in wanted and not paths[name].exists():
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
    sample_size=8,
    in_channels=8,
    out_channels=4,
    block_out_channels=(320,),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D",),
    up_block_types=("CrossAttnUpBlock2D",),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
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
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
    )
    vae.half().save_pretrained(folder / "vae")
    text = CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT_CONFIG))
    text.half().save_pretrained(folder / "text_encoder")
    (folder / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionInstructPix2PixPipeline",
                "_diffusers_version": "0.42.1",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "text_encoder": ["transformers", "CLIPTextModel"],
            }
        )
    )


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


# ---- full-size SD1.5 (IP-Adapter-Instruct patches the real 16-layer layout) ---------------------

#: ldm config of a full SD1.5 UNet (4-channel): IP-Adapter-Instruct's 16 layers need the real block layout.
FULL_SD15_UNET = dict(
    TINY_UNET,
    in_channels=4,
    num_res_blocks=[2, 2, 2, 2],
    channel_mult=[1, 2, 4, 4],
    transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
    transformer_depth_output=[1] * 9 + [0] * 3,
    transformer_depth_middle=1,
)
#: The full-size files that are written: the adapter's (loading them is what the adapter tests test) and a
#: LoRA of a few KB. The full-size UNets and ControlNet are built in memory (``FullSD15``): as files they
#: were 4.7 GB that only ever went through core's loaders.
FULL_FILES = {
    "adapter_bin": "ipadapter/ip-adapter-instruct-sd15-random.bin",
    "adapter_safetensors": "ipadapter/ip-adapter-instruct-sd15-random.safetensors",
    "plus_adapter": "ipadapter/ip-adapter-plus-sd15-random.safetensors",
    "lora": "loras/full-lora-sd15-random.safetensors",
}
#: SD1.5's topology (4 levels of 2 res-blocks, 16 cross-attention layers in the reference's order, CLIP-L's
#: 768-d context) at a tenth of its width: what IP-Adapter-Instruct's tests need of a UNet, at about 1/80 of the
#: arithmetic. ComfyUI's detection knows SD1.5 by its 320 channels, so this model is built from its config class.
NARROW_CHANNELS = 32
NARROW_SD15_UNET = dict(FULL_SD15_UNET, model_channels=NARROW_CHANNELS)
#: Its CLIP-L keeps 3 of its 12 layers (768 wide: the context, and what the adapter encodes its texts with), and
#: its adapter's resampler a width of 128 (the published 768 in and out): the file gives both, the loaders read them.
NARROW_CLIP_LAYERS = 3  # SDXL reads CLIP-L at its penultimate layer: at least 3
NARROW_RESAMPLER_DIM = 128
#: ... and the image encoder it is given is the 2-layer stand-in at a fifth of ViT-H's width (its adapter's
#: image_dim, read from the file, is the same): 257 tokens of 256, not of 1280.
NARROW_IMAGE_DIM = 256
#: The adapter files for the narrow UNet: the published layout, each layer's width a tenth (read from the file).
NARROW_FILES = {
    "adapter_bin": "ipadapter/ip-adapter-instruct-sd15narrow-random.bin",
    "adapter_safetensors": "ipadapter/ip-adapter-instruct-sd15narrow-random.safetensors",
    "plus_adapter": "ipadapter/ip-adapter-plus-sd15narrow-random.safetensors",
    "lora": "loras/narrow-lora-sd15-random.safetensors",
}
#: A two-layer stand-in for CLIP-ViT-H/14 (same width 1280, 257 tokens): the adapter sees the same shapes.
TINY_CLIP_VISION = {
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "image_size": 224,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 5120,
    "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model",
    "num_attention_heads": 16,
    "num_channels": 3,
    "num_hidden_layers": 2,
    "patch_size": 14,
    "projection_dim": 1024,
}


def full_unet_state_dict(seed: int = SEED, in_channels: int = 4) -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    cfg = dict(FULL_SD15_UNET, in_channels=in_channels)
    model = UNetModel(**cfg, device="meta", operations=comfy.ops.disable_weight_init)
    return random_state_dict(model, seed=seed)


def _full_controlnet_meta(unet: dict = FULL_SD15_UNET) -> torch.nn.Module:
    import comfy.cldm.cldm
    import comfy.ops

    cfg = {
        k: v
        for k, v in unet.items()
        if k not in ("out_channels", "use_temporal_attention", "use_temporal_resblock", "transformer_depth_output")
    }
    cfg.update(in_channels=4, hint_channels=3)
    return comfy.cldm.cldm.ControlNet(**cfg, device="meta", operations=comfy.ops.disable_weight_init)


def full_controlnet_state_dict(seed: int = SEED) -> dict[str, torch.Tensor]:
    return random_state_dict(_full_controlnet_meta(), prefix="control_model.", seed=seed)


def sd15_layer_widths(spec_mod, channels: int = 320) -> list[int]:
    """The widths of SD1.5's 16 cross-attention layers for a UNet of ``channels`` base channels."""
    return [w * channels // 320 for w in spec_mod.SD15_LAYERS]


def ip_instruct_groups(
    spec_mod, seed: int = SEED, dtype: torch.dtype = torch.float16, channels: int = 320, dim: int = 768, image_dim: int = 1280
) -> tuple[dict, dict]:
    """The two groups of ip-adapter-instruct-sd15.bin (shapes from the published architecture), for a UNet of
    ``channels`` base channels, a resampler ``dim`` wide and an image encoder of width ``image_dim`` (320, 768 and
    1280: the published file's).

    ``spec_mod`` is the pack's ``models.ipadapter_instruct`` module (the key list comes from it)."""
    cfg = spec_mod.ResamplerConfig(
        dim=dim, depth=4, num_queries=16, image_dim=image_dim, text_dim=768, output_dim=768, ff_mult=4, ff_mult_secondary=2
    )
    spec = spec_mod.AdapterSpec("SD1.5", cfg, {2 * i + 1: w for i, w in enumerate(sd15_layer_widths(spec_mod, channels))})
    proj_shapes, ip_shapes = spec_mod.expected_shapes(spec)
    image_proj = {k: fill("image_proj." + k, torch.Size(s), seed).to(dtype) for k, s in proj_shapes.items()}
    # norms and biases of a trained model are not 1/0: perturb them so swapped paths would show
    for k in image_proj:
        if image_proj[k].ndim == 1:
            g = _generator(seed, "perturb." + k)
            image_proj[k] = (image_proj[k].float() + 0.1 * torch.randn(image_proj[k].shape, generator=g)).to(dtype)
    image_proj["latents"] = (torch.randn(1, 16, dim, generator=_generator(seed, "latents")) * 0.5).to(dtype)
    ip_layers = {k: fill("ip." + k, torch.Size(s), seed).to(dtype) for k, s in ip_shapes.items()}
    return image_proj, ip_layers


def full_checkpoint_state_dict(in_channels: int = 4, seed: int = SEED) -> dict[str, torch.Tensor]:
    """A full-size SD1.5 checkpoint's tensors (UNet, CLIP-L, VAE) in the ldm layout, fp16."""
    return _checkpoint(full_unet_state_dict(seed, in_channels))


def trim_heap() -> None:
    """Collect, then hand freed heap pages back to the OS: glibc keeps the mid-sized blocks that model
    weights and activations are freed in, so without this a test process only grows (README, Tests)."""
    import ctypes
    import ctypes.util
    import gc
    import sys

    gc.collect()
    libc = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    if libc:
        try:
            ctypes.CDLL(libc).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass


def _release_memory() -> None:
    """Unload what ComfyUI holds, then trim the heap."""
    import comfy.model_management as mm

    mm.unload_all_models()
    mm.soft_empty_cache()
    trim_heap()


def _outside_inference_mode(build):
    """Build with normal tensors even when first asked for inside a graph (ComfyUI runs nodes under
    ``torch.inference_mode``): the cached model is used afterwards by direct calls, where autograd refuses
    inference tensors."""

    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False):
            return build(*args, **kwargs)

    return wrapper


class FullSD15:
    """The full-size SD1.5 models of the adapter tests, built in memory from the seed, one at a time.

    The adapter patches SD1.5's real 16 cross-attention layers, so its tests need the real layout; what
    they test is the adapter, not reading a 2 GB file. The UNet goes through the loader a file would go
    through (core's ``load_diffusion_model_state_dict``, the pack's ``load_unet_state_dict`` for the
    8-channel one), handed the checkpoint's keys and shapes as zero-stride views, so that ComfyUI picks
    the model class, dtype and devices exactly as for the file, without a second copy of 860M weights
    beside the model; each weight is then set in place to the seeded value the file held (``fill``,
    rounded to fp16 as the file stored it). The UNet is stored in ComfyUI's CPU dtype, fp32, unless asked for
    in fp16: half the memory (1.7 GB), each layer cast to fp32 as it runs. The adapter tests' plain model stays
    fp32 (their diffusers reference UNet shares its tensors); the precision, workflow, LoRA/ControlNet and
    instruct-model tests ask for fp16.
    CLIP and VAE come from the tiny checkpoint, which holds the same seeded CLIP-L and VAE, each loaded
    when first asked for. Only one UNet is alive in this cache at a time: asking for another kind or
    dtype lets go of the first (3.4 GB)."""

    #: The UNet's ldm config (4-channel); the instruct model is the same with 8 input channels.
    unet_config = FULL_SD15_UNET

    def __init__(self, paths: dict[str, Path], tiny_checkpoint: Path, instruct_loader) -> None:
        self.paths = paths
        self.tiny_checkpoint = tiny_checkpoint
        self.instruct_loader = instruct_loader  # the pack's models.instruct_loader
        self._kind: tuple[str, str] | None = None
        self._model = self._clip = self._vae = None

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]

    @staticmethod
    def _zero_views(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
        """The module's keys and shapes as fp16 zero-stride views: what a loader reads, in no memory."""
        zero = torch.zeros((), dtype=torch.float16)
        return {prefix + name: zero.expand(t.shape) for name, t in module.state_dict().items()}

    @staticmethod
    def _fill_in_place(module: torch.nn.Module) -> None:
        """Every weight to its seeded value (``fill``), rounded to fp16 as the files stored it.

        On two threads, largest tensors first: a seeded generator draws on one core, and torch lets go of the
        GIL while it draws (6.0 s → 4.1 s for the UNet on 2 cores). Each tensor has its own generator, so the
        values do not depend on the order."""
        from concurrent.futures import ThreadPoolExecutor

        def one(item: tuple[str, torch.Tensor]) -> None:
            name, tensor = item
            with torch.no_grad():
                tensor.copy_(fill(name, tensor.shape).to(torch.float16))

        items = sorted(module.state_dict(keep_vars=True).items(), key=lambda item: -item[1].numel())
        with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
            list(pool.map(one, items))

    @_outside_inference_mode
    def _unet(self, in_channels: int, weight_dtype: str):
        import comfy.ops
        from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

        meta = UNetModel(**dict(FULL_SD15_UNET, in_channels=in_channels), device="meta", operations=comfy.ops.disable_weight_init)
        shapes = self._zero_views(meta)
        if in_channels == 4:
            import comfy.sd

            options = {} if weight_dtype == "default" else {"dtype": torch.float16}
            model = comfy.sd.load_diffusion_model_state_dict(shapes, model_options=options)
        else:
            loader = self.instruct_loader
            model = loader.load_unet_state_dict(shapes, "full-ip2p-sd15-random (in memory)", loader.Prediction.AUTO, weight_dtype).model
        self._fill_in_place(model.model.diffusion_model)
        return model

    @_outside_inference_mode
    def clip(self):
        """The checkpoint's CLIP-L, stored in fp16 (the file's values; ComfyUI computes it in fp32 on a CPU)."""
        if self._clip is None:
            import comfy.sd

            self._clip = comfy.sd.load_checkpoint_guess_config(
                str(self.tiny_checkpoint), output_model=False, output_vae=False, te_model_options={"dtype": torch.float16}
            )[1]
        return self._clip

    @_outside_inference_mode
    def vae(self):
        """The checkpoint's VAE (loaded when first asked for: most adapter tests never decode)."""
        if self._vae is None:
            import comfy.sd

            self._vae = comfy.sd.load_checkpoint_guess_config(str(self.tiny_checkpoint), output_model=False, output_clip=False)[2]
        return self._vae

    def load(self, kind: str = "plain", weight_dtype: str = "default") -> tuple:
        """(MODEL, CLIP, VAE): the plain 4-channel or the ``instruct`` 8-channel full-size SD1.5 checkpoint,
        its UNet stored in ComfyUI's default dtype (fp32 on a CPU) or in ``weight_dtype`` ("fp16": half the
        memory, each layer cast to fp32 as it runs)."""
        return self.model(kind, weight_dtype), self.clip(), self.vae()

    def model(self, kind: str = "plain", weight_dtype: str = "default"):
        """The UNet alone (the one model of the cache; asking for another kind or dtype replaces it)."""
        if kind not in ("plain", "instruct") or weight_dtype not in ("default", "fp16"):
            raise ValueError(f"kind is 'plain' or 'instruct' and weight_dtype 'default' or 'fp16', not {kind!r}, {weight_dtype!r}")
        if self._kind != (kind, weight_dtype):
            self.release(keep_clip_vae=True)
            self._model = self._unet(4 if kind == "plain" else 8, weight_dtype)
            self._kind = (kind, weight_dtype)
        return self._model

    def release(self, keep_clip_vae: bool = False) -> None:
        """Let go of the cached model (and whatever ComfyUI loaded of it), and of CLIP and VAE unless kept."""
        self._kind = self._model = None
        if not keep_clip_vae:
            self._clip = self._vae = None
        _release_memory()

    @_outside_inference_mode
    def controlnet(self):
        """A full-size SD1.5 ControlNet through core's state-dict loader, stored in fp16 (0.7 GB; ComfyUI casts
        it to fp32 per layer). Not cached: one test uses it."""
        import comfy.controlnet

        views = self._zero_views(_full_controlnet_meta(self.unet_config), "control_model.")
        control = comfy.controlnet.load_controlnet_state_dict(views, model_options={"dtype": torch.float16})
        self._fill_in_place(control.control_model)
        return control


class NarrowSD15(FullSD15):
    """``FullSD15`` at a tenth of the width (``NARROW_SD15_UNET``): the same topology, 16 cross-attention layers in
    the same order, CLIP-L's context, so IP-Adapter-Instruct patches, routes and mixes exactly as on SD1.5, with its
    layer widths read from its own (narrow) adapter file. Built from ComfyUI's SD1.5 config classes (``SD15``,
    ``SD15_instructpix2pix``: the model classes a file of that family gets), since detection needs 320 channels.
    Weights stay fp32 unless fp16 is asked for (a few MB either way). Its CLIP-L is the checkpoint's first
    ``NARROW_CLIP_LAYERS`` layers (the adapter encodes five texts per apply with it)."""

    unet_config = NARROW_SD15_UNET

    @_outside_inference_mode
    def clip(self):
        if self._clip is None:
            import comfy.sd

            options = {"dtype": torch.float16, "clip_l_model_config": {"num_hidden_layers": NARROW_CLIP_LAYERS}}
            self._clip = comfy.sd.load_checkpoint_guess_config(
                str(self.tiny_checkpoint), output_model=False, output_vae=False, te_model_options=options
            )[1]
        return self._clip

    @_outside_inference_mode
    def _unet(self, in_channels: int, weight_dtype: str):
        import comfy.model_management as mm
        import comfy.model_patcher
        import comfy.supported_models as sm

        config = (sm.SD15 if in_channels == 4 else sm.SD15_instructpix2pix)(dict(NARROW_SD15_UNET, in_channels=in_channels))
        load_device = mm.get_torch_device()
        dtype = torch.float16 if weight_dtype == "fp16" else mm.unet_dtype(supported_dtypes=config.supported_inference_dtypes)
        config.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, load_device, config.supported_inference_dtypes))
        model = config.get_model({}, "")
        self._fill_in_place(model.diffusion_model)
        return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=mm.unet_offload_device())

    @_outside_inference_mode
    def controlnet(self):
        """A ControlNet mirroring the narrow UNet's encoder, stored in fp16, built as core's loader builds one from
        a file (its detection would give a narrow ControlNet 64-channel heads, none at 32 channels)."""
        import comfy.cldm.cldm
        import comfy.controlnet
        import comfy.model_management as mm
        import comfy.ops

        load_device = mm.get_torch_device()
        manual_cast = mm.unet_manual_cast(torch.float16, load_device)
        cfg = {k: v for k, v in self.unet_config.items() if k not in ("out_channels", "use_temporal_attention", "use_temporal_resblock")}
        cfg.pop("transformer_depth_output")
        cfg.update(in_channels=4, hint_channels=3, dtype=torch.float16, device=mm.unet_offload_device())
        control_model = comfy.cldm.cldm.ControlNet(**cfg, operations=comfy.ops.pick_operations(torch.float16, manual_cast))
        self._fill_in_place(control_model)
        return comfy.controlnet.ControlNet(control_model, load_device=load_device, manual_cast_dtype=manual_cast)


_FULL: FullSD15 | None = None
_NARROW: NarrowSD15 | None = None


def full_sd15() -> FullSD15:
    """The session's ``FullSD15`` (made by ``build_full``); the test loader nodes use it."""
    if _FULL is None:
        raise RuntimeError("build_full() has not run: the full-size test models are made by the `full` fixture")
    return _FULL


def narrow_sd15() -> NarrowSD15:
    """The session's ``NarrowSD15`` (made by ``build_narrow``); the test loader nodes use it."""
    if _NARROW is None:
        raise RuntimeError("build_narrow() has not run: the narrow test models are made by the `narrow` fixture")
    return _NARROW


def _adapter_files(paths: dict[str, Path], spec_mod, channels: int, dim: int, image_dim: int) -> None:
    """The IP-Adapter-Instruct files (.bin, .safetensors, and a Plus file to refuse) and a LoRA of a few
    attention weights, for a UNet of ``channels`` base channels, a resampler ``dim`` wide and an image encoder
    ``image_dim`` wide; each written once."""
    if not paths["adapter_bin"].exists() or not paths["adapter_safetensors"].exists():
        image_proj, ip_layers = ip_instruct_groups(spec_mod, channels=channels, dim=dim, image_dim=image_dim)
        _save({"image_proj": image_proj, "ip_adapter": ip_layers}, paths["adapter_bin"])
        flat = {f"image_proj.{k}": v for k, v in image_proj.items()}
        flat.update({f"ip_adapter.{k}": v for k, v in ip_layers.items()})
        _save(flat, paths["adapter_safetensors"])
    if not paths["lora"].exists():
        _save(
            lora_state_dict(
                targets={
                    "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k": (channels, 768),
                    "lora_unet_output_blocks_11_1_transformer_blocks_0_attn1_to_q": (channels, channels),
                    "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_v": (4 * channels, 768),
                    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
                }
            ),
            paths["lora"],
        )
    if not paths["plus_adapter"].exists():
        image_proj, ip_layers = ip_instruct_groups(spec_mod, channels=channels, dim=dim, image_dim=image_dim)
        plus = {
            f"image_proj.{k}": v
            for k, v in image_proj.items()
            if not k.startswith(("prompt_layers", "new_input_layers", "proj_new_input", "proj_prompt_input"))
        }
        plus.update({f"ip_adapter.{k}": v for k, v in ip_layers.items()})
        _save(plus, paths["plus_adapter"])


def build_full(root: Path, spec_mod, instruct_loader) -> FullSD15:
    """The full-size adapter files, written once; the full-size UNets and ControlNet come from the returned
    ``FullSD15``, in memory."""
    global _FULL
    root = Path(root)
    paths = {name: root / rel for name, rel in FULL_FILES.items()}
    _adapter_files(paths, spec_mod, FULL_SD15_UNET["model_channels"], 768, TINY_CLIP_VISION["hidden_size"])
    if _FULL is None or _FULL.paths != paths:
        _FULL = FullSD15(paths, build_all(root, only=("checkpoint",))["checkpoint"], instruct_loader)
    return _FULL


def build_narrow(root: Path, spec_mod, instruct_loader) -> NarrowSD15:
    """The narrow adapter files, written once; the narrow UNets and ControlNet come from the returned ``NarrowSD15``."""
    global _NARROW
    root = Path(root)
    paths = {name: root / rel for name, rel in NARROW_FILES.items()}
    _adapter_files(paths, spec_mod, NARROW_CHANNELS, NARROW_RESAMPLER_DIM, NARROW_IMAGE_DIM)
    if _NARROW is None or _NARROW.paths != paths:
        _NARROW = NarrowSD15(paths, build_all(root, only=("checkpoint",))["checkpoint"], instruct_loader)
    return _NARROW


def tiny_clip_vision(seed: int = SEED, width: int = 1280):
    """A ComfyUI ClipVisionModel of 2 layers, seeded random weights: ViT-H's width (1280), or ``width``
    (``NARROW_IMAGE_DIM`` for the narrow adapter), heads of 64 either way."""
    import tempfile

    import comfy.clip_vision

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(dict(TINY_CLIP_VISION, hidden_size=width, intermediate_size=4 * width, num_attention_heads=width // 64), f)
    model = comfy.clip_vision.ClipVisionModel(f.name)
    os.unlink(f.name)
    sd = {}
    for name, tensor in model.get_sd().items():
        value = fill("clip_vision." + name, tensor.shape, seed)
        if name.endswith("position_ids"):
            sd[name] = tensor
            continue
        if "class_embedding" in name or "position_embedding" in name:
            value = torch.randn(tensor.shape, generator=_generator(seed, name)) * 0.02
        sd[name] = value.to(tensor.dtype)
    model.load_sd(sd)
    return model
