"""Tiny seeded random-weight models of the instruction-edit families, built from ComfyUI's own classes.

Families: Flux.1 Kontext, Flux.2, Qwen-Image-Edit (2509/2511), OmniGen2 and HiDream-E1. ComfyUI's detection
fixes most widths of these models (Flux's 24 heads and rope axes, Qwen-Image's 3072 inner width, every HiDream
and OmniGen2 value), so no tiny *file* of them is detected as its family. The diffusion models are therefore
built directly: ``supported_models.<Class>(unet_config)`` with small widths, ``get_model({})``, weights filled
per tensor name from a seeded generator (``instruct_tiny_models.fill``), wrapped in a ``ModelPatcher``. Which
class serves a config is decided by ComfyUI's own matching (``model_config_from_unet_config``), so everything
downstream is ComfyUI's: ``extra_conds``, reference-latent handling, model sampling, guiders, samplers.

What does go through files and ComfyUI's loaders: the VAEs (written once under a root folder and read back
exactly as core ``VAELoader`` does) and the Qwen2.5-VL text encoder (a real ``comfy.sd.CLIP`` fed a state dict,
as core ``CLIPLoader`` does). The full-size published layouts are built on the meta device only, to check which
class ComfyUI's detection makes of each released file.

Latents per family (what the real models use, so a tiny VAE and a tiny model pair up):
- Flux.1 Kontext, OmniGen2, HiDream-E1: ``[B, 16, H/8, W/8]`` (the Flux ``ae.safetensors`` latent space);
- Flux.2: ``[B, 128, H/16, W/16]`` (32 channels at /8, folded 2x2 into 128 by the VAE's batch-norm step);
- Qwen-Image-Edit: ``[B, 16, 1, H/8, W/8]`` (Wan 2.1 latent format, 5-D).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

import instruct_tiny_models
from instruct_tiny_models import SEED

FAMILIES = ("flux_kontext", "flux2", "qwen_image_edit", "omnigen2", "hidream_e1")

#: Bumped when a generated VAE file changes; files of another version are rewritten.
VAE_FORMAT_VERSION = "1"

#: Width of the tiny Qwen2.5-VL text encoder's hidden states = the tiny Qwen-Image model's ``joint_attention_dim``.
QWEN_TEXT_WIDTH = 32
#: Small Qwen2.5-VL language model: overrides of ComfyUI's ``Qwen25_7BVLI_Config`` (vocab 152064 kept).
QWEN_TEXT_CONFIG = dict(
    hidden_size=QWEN_TEXT_WIDTH, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1
)
#: Small vision tower: ComfyUI's ``Qwen25_7BVLI`` builds it at 1280 wide and 32 blocks, without a config hook.
QWEN_VISION_CONFIG = dict(hidden_size=32, intermediate_size=64, num_heads=2, num_layers=2)


@dataclass(frozen=True)
class Family:
    """A family's tiny config and its latent space."""

    config_class: str  # the supported_models class ComfyUI picks for the config
    unet_config: dict
    latent_channels: int
    downscale: int  # pixels per latent cell, each way
    latent_ndim: int  # 4, or 5 for the Wan 2.1 video-style latents of Qwen-Image
    vae: str  # kind of tiny VAE: "taesd16", "wan21" or "flux2"
    text: dict = field(default_factory=dict)  # widths of the text-conditioning tensors


FLUX_TEXT = dict(context=32, pooled=16)  # T5-XXL 4096 and CLIP-L pooled 768 at full size
FLUX2_TEXT = dict(context=48)  # three Mistral-3 hidden layers of 5120 stacked at full size; here 3 x 16
OMNIGEN2_TEXT = dict(context=16)  # Qwen2.5-VL-3B 2048 at full size
HIDREAM_TEXT = dict(context=32, llama=24, llama_layers=2, pooled=16)  # T5 4096, Llama-3.1 4096 x 32 layers, CLIP-L+G 2048

SPECS: dict[str, Family] = {
    "flux_kontext": Family(
        config_class="Flux",
        unet_config=dict(
            image_model="flux",
            guidance_embed=True,
            in_channels=16,
            out_channels=16,
            vec_in_dim=FLUX_TEXT["pooled"],
            context_in_dim=FLUX_TEXT["context"],
            hidden_size=64,
            mlp_ratio=4.0,
            num_heads=2,
            depth=1,
            depth_single_blocks=1,
            axes_dim=[8, 12, 12],
            theta=10000,
            patch_size=2,
            qkv_bias=True,
            txt_ids_dims=[],
            yak_mlp=False,
            txt_norm=False,
        ),
        latent_channels=16,
        downscale=8,
        latent_ndim=4,
        vae="taesd16",
        text=FLUX_TEXT,
    ),
    "flux2": Family(
        config_class="Flux2",
        # What detection sets for a Flux.2 file (model_detection.py), at small widths.
        unet_config=dict(
            image_model="flux2",
            guidance_embed=True,
            in_channels=128,
            out_channels=128,
            vec_in_dim=None,
            context_in_dim=FLUX2_TEXT["context"],
            hidden_size=64,
            mlp_ratio=3.0,
            num_heads=2,
            depth=1,
            depth_single_blocks=1,
            axes_dim=[8, 8, 8, 8],
            theta=2000,
            patch_size=1,
            qkv_bias=False,
            ops_bias=False,
            global_modulation=True,
            mlp_silu_act=True,
            default_ref_method="index",
            ref_index_scale=10.0,
            txt_ids_dims=[3],
            yak_mlp=False,
            txt_norm=False,
        ),
        latent_channels=128,
        downscale=16,
        latent_ndim=4,
        vae="flux2",
        text=FLUX2_TEXT,
    ),
    "qwen_image_edit": Family(
        config_class="QwenImage",
        unet_config=dict(
            image_model="qwen_image",
            in_channels=64,
            out_channels=16,
            num_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=QWEN_TEXT_WIDTH,
            axes_dims_rope=(4, 6, 6),
        ),
        latent_channels=16,
        downscale=8,
        latent_ndim=5,
        vae="wan21",
        text=dict(context=QWEN_TEXT_WIDTH),
    ),
    "omnigen2": Family(
        config_class="Omnigen2",
        unet_config=dict(
            image_model="omnigen2",
            axes_dim_rope=[8, 8, 8],
            axes_lens=[1024, 1664, 1664],
            ffn_dim_multiplier=None,
            hidden_size=48,
            in_channels=16,
            multiple_of=16,
            norm_eps=1e-05,
            num_attention_heads=2,
            num_kv_heads=1,
            num_layers=1,
            num_refiner_layers=1,
            out_channels=None,
            patch_size=2,
            text_feat_dim=OMNIGEN2_TEXT["context"],
            timestep_scale=1000.0,
        ),
        latent_channels=16,
        downscale=8,
        latent_ndim=4,
        vae="taesd16",
        text=OMNIGEN2_TEXT,
    ),
    "hidream_e1": Family(
        config_class="HiDream",
        unet_config=dict(
            image_model="hidream",
            attention_head_dim=16,
            axes_dims_rope=[8, 4, 4],
            caption_channels=[HIDREAM_TEXT["context"], HIDREAM_TEXT["llama"]],
            max_resolution=[128, 128],
            in_channels=16,
            # One Llama hidden layer per block (double, then single); the full model's 48 blocks read layers 0-31.
            llama_layers=list(range(HIDREAM_TEXT["llama_layers"])),
            num_attention_heads=2,
            num_routed_experts=4,
            num_activated_experts=2,
            num_layers=1,
            num_single_layers=1,
            out_channels=16,
            patch_size=2,
            text_emb_dim=HIDREAM_TEXT["pooled"],
        ),
        latent_channels=16,
        downscale=8,
        latent_ndim=4,
        vae="taesd16",
        text=HIDREAM_TEXT,
    ),
}

#: What ``tiny_model`` accepts as ``**options`` per family (they override the tiny unet_config).
OPTIONS = {
    "flux_kontext": {"guidance_embed"},
    "flux2": {"guidance_embed"},
    "qwen_image_edit": {"default_ref_method", "variant"},
    "omnigen2": set(),
    "hidream_e1": set(),
}
#: Qwen-Image-Edit releases and the reference method ComfyUI gives each (2511 files carry ``__index_timestep_zero__``).
QWEN_VARIANTS = {"2509": "index", "2511": "index_timestep_zero"}


def spec(family: str) -> Family:
    if family not in SPECS:
        raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")
    return SPECS[family]


def latent_shape(family: str, height: int, width: int, batch: int = 1) -> tuple[int, ...]:
    """The shape the family's VAE encodes an image of this size to (sizes cropped to the VAE's scale, as it does)."""
    s = spec(family)
    h, w = height // s.downscale, width // s.downscale
    if s.latent_ndim == 5:  # ComfyUI's Wan 2.1 VAE reads an image batch as one clip of frames (4 per latent frame)
        return (1, s.latent_channels, (batch + 3) // 4, h, w)
    return (batch, s.latent_channels, h, w)


# ---- filling weights ----------------------------------------------------------------------------


def seeded_value(name: str, shape: torch.Size, seed: int = SEED) -> torch.Tensor:
    """``instruct_tiny_models.fill`` plus the tensors it has no rule for: batch-norm statistics (mean 0,
    variance 1), Wan's RMS-norm ``gamma`` (1, though not 1-D) and empty marker buffers."""
    leaf = name.rsplit(".", 1)[-1]
    shape = torch.Size(shape)
    if shape.numel() == 0:
        return torch.zeros(shape)
    if leaf == "running_mean":
        return torch.zeros(shape)
    if leaf in ("running_var", "gamma"):
        return torch.ones(shape)
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.long)
    return instruct_tiny_models.fill(name, shape, seed)


def fill_module(module: torch.nn.Module, seed: int = SEED, prefix: str = "") -> None:
    """Every parameter and buffer of ``module`` to its seeded value, named as in a state dict (plus ``prefix``)."""
    with torch.no_grad():
        for name, tensor in module.state_dict(keep_vars=True).items():
            tensor.copy_(seeded_value(prefix + name, tensor.shape, seed).to(tensor.dtype))


def seeded_state_dict(module: torch.nn.Module, seed: int = SEED, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """A state dict with ``module``'s names and shapes (a meta module will do) and seeded values."""
    out = {}
    for name, tensor in module.state_dict().items():
        value = seeded_value(name, tensor.shape, seed)
        out[name] = value if not value.is_floating_point() else value.to(dtype)
    return out


# ---- diffusion models ---------------------------------------------------------------------------


def unet_config(family: str, **options: Any) -> dict:
    """The tiny unet_config of a family with ``options`` applied (see ``OPTIONS``)."""
    s = spec(family)
    unknown = set(options) - OPTIONS[family]
    if unknown:
        raise ValueError(f"{family} takes the options {sorted(OPTIONS[family])}, not {sorted(unknown)}")
    config = dict(s.unet_config)
    variant = options.pop("variant", None)
    if variant is not None:
        if variant not in QWEN_VARIANTS:
            raise ValueError(f"qwen_image_edit variant is one of {sorted(QWEN_VARIANTS)}, not {variant!r}")
        config["default_ref_method"] = QWEN_VARIANTS[variant]
    config.update(options)
    return config


def model_config(family: str, **options: Any):
    """The supported_models config object ComfyUI's matching picks for the tiny unet_config."""
    import comfy.model_detection

    config = comfy.model_detection.model_config_from_unet_config(unet_config(family, **options))
    if config is None:
        raise RuntimeError(f"ComfyUI matched no model class to the tiny {family} config")
    return config


def tiny_model(family: str, seed: int = SEED, dtype: torch.dtype = torch.float32, **options: Any):
    """A ``ModelPatcher`` of the family's ComfyUI model class at tiny widths, weights seeded per tensor name.

    Options: ``flux_kontext``/``flux2``: ``guidance_embed`` (True, as Kontext dev and Flux.2 dev; False makes
    ComfyUI pick ``FluxSchnell`` for Kontext, a flow model without guidance input); ``qwen_image_edit``:
    ``variant="2511"`` (or ``default_ref_method="index_timestep_zero"``, what ComfyUI sets when a file has the
    ``__index_timestep_zero__`` key; the buffer then exists in the tiny model too) or ``"2509"`` (``index``)."""
    import comfy.model_patcher

    config = model_config(family, **options)
    config.set_inference_dtype(dtype, None)
    model = config.get_model({})
    fill_module(model.diffusion_model, seed)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


# ---- text conditioning --------------------------------------------------------------------------


def _randn(seed: int, name: str, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=instruct_tiny_models._generator(seed, name))


def text_conditioning(family: str, seed: int = SEED, tokens: int = 8, batch: int = 1) -> list:
    """A CONDITIONING as the family's text encoder node hands it to the sampler, at the tiny model's widths.

    - flux_kontext: ``[[t5 [B,T,32], {"pooled_output": clip_l [B,16], "guidance": 3.5}]]`` (CLIPTextEncodeFlux's
      form; FluxGuidance overwrites ``guidance``);
    - flux2: ``[[mistral [B,T,48], {"pooled_output": None, "attention_mask": ones long [B,T]}]]`` (Flux.2's
      encoder stacks three hidden layers and has no pooled vector; ``Flux2.extra_conds`` pads the text to 512 tokens);
    - qwen_image_edit: ``[[qwen [B,T,32], {"pooled_output": None}]]`` (the encoder drops an all-ones mask);
    - omnigen2: ``[[qwen [B,T,16], {"pooled_output": None, "attention_mask": ones long [B,T]}]]`` (the model
      needs the mask: it becomes ``num_tokens``);
    - hidream_e1: ``[[t5 [B,T,32], {"pooled_output": [B,16], "conditioning_llama3": [B,2,T,24]}]]`` (one Llama
      hidden layer per tiny block).
    """
    s = spec(family)
    t = s.text

    def rnd(name: str, *shape: int) -> torch.Tensor:
        return _randn(seed, f"{family}.text.{name}", *shape)

    context = rnd("context", batch, tokens, t["context"])
    if family == "flux_kontext":
        extras = {"pooled_output": rnd("pooled", batch, t["pooled"]), "guidance": 3.5}
    elif family == "flux2":
        extras = {"pooled_output": None, "attention_mask": torch.ones(batch, tokens, dtype=torch.long)}
    elif family == "qwen_image_edit":
        extras = {"pooled_output": None}
    elif family == "omnigen2":
        extras = {"pooled_output": None, "attention_mask": torch.ones(batch, tokens, dtype=torch.long)}
    else:
        extras = {
            "pooled_output": rnd("pooled", batch, t["pooled"]),
            "conditioning_llama3": rnd("llama", batch, t["llama_layers"], tokens, t["llama"]),
        }
    return [[context, extras]]


# ---- VAEs ---------------------------------------------------------------------------------------

VAE_FILES = {
    "taesd16": "vae/tiny-flux-ae-taesd.safetensors",
    "wan21": "vae/tiny-qwen-image-wan21-vae.safetensors",
    "flux2": "vae/tiny-flux2-vae.safetensors",
}
#: Wan 2.1 VAE base width (ComfyUI reads it from ``decoder.head.0.gamma``; the released one is 96).
WAN21_DIM = 8
#: The Flux.2 VAE as ComfyUI 0.8 builds it: the SD-style KL autoencoder at its fixed width (``ch`` 128,
#: ``ch_mult`` [1,2,4,4], 2 res-blocks: not read from the file), 32 latent channels, and the batch-norm step
#: (``bn.running_mean`` present) that folds 2x2 cells into 128 channels at /16.
FLUX2_VAE_DDCONFIG = {
    "double_z": True,
    "z_channels": 32,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
    "batch_norm_latent": True,
}
#: taef1's scale and shift (what core VAELoader sets for a Flux TAESD).
TAEF1_SCALE_SHIFT = (0.3611, 0.1159)


def _meta_vae(kind: str) -> torch.nn.Module:
    if kind == "taesd16":
        import comfy.taesd.taesd

        with torch.device("meta"):
            return comfy.taesd.taesd.TAESD(latent_channels=16)
    if kind == "wan21":
        import comfy.ldm.wan.vae

        with torch.device("meta"):
            return comfy.ldm.wan.vae.WanVAE(
                dim=WAN21_DIM, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True]
            )
    if kind == "flux2":
        from comfy.ldm.models.autoencoder import AutoencoderKL

        with torch.device("meta"):
            return AutoencoderKL(ddconfig=FLUX2_VAE_DDCONFIG, embed_dim=FLUX2_VAE_DDCONFIG["z_channels"])
    raise ValueError(kind)


def vae_state_dict(kind: str, seed: int = SEED) -> dict[str, torch.Tensor]:
    """The tiny VAE file's tensors (fp16; ComfyUI computes a VAE in fp32 on a CPU)."""
    sd = seeded_state_dict(_meta_vae(kind), seed)
    if kind == "taesd16":
        sd["vae_scale"], sd["vae_shift"] = (torch.tensor(v) for v in TAEF1_SCALE_SHIFT)
    return sd


def _file_version(path: Path) -> Optional[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("family_models_version")
    except Exception:  # a truncated or foreign file is rewritten
        return None


def _save(sd: dict[str, torch.Tensor], path: Path) -> None:
    """Write atomically under a name of this process (test workers may write the same file at once)."""
    import safetensors.torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    safetensors.torch.save_file(sd, str(tmp), metadata={"family_models_version": VAE_FORMAT_VERSION})
    os.replace(tmp, path)


def vae_file(family: str, root: Path, seed: int = SEED) -> Path:
    """The family's tiny VAE file under ``root`` (written when missing or of another version). Kontext, OmniGen2
    and HiDream share one, as the real ones share the Flux ``ae.safetensors``."""
    path = Path(root) / VAE_FILES[spec(family).vae]
    if not path.exists() or _file_version(path) != VAE_FORMAT_VERSION:
        _save(vae_state_dict(spec(family).vae, seed), path)
    return path


def tiny_vae(family: str, root: Path):
    """The family's tiny VAE, loaded from its file exactly as core ``VAELoader`` loads a VAE file.

    Encodes an image ``[B,H,W,3]`` to ``latent_shape(family, H, W, B)``: TAESD (16 channels, /8) for the
    Flux-VAE families, a Wan 2.1 VAE of width 8 for Qwen-Image (``[1,16,T,H/8,W/8]``, the image batch read as
    frames), the full-width Flux.2 VAE (128 channels, /16). Call it under ``torch.inference_mode()`` as
    ComfyUI's executor does: its parameters require grad, as ComfyUI loads them."""
    import comfy.sd
    import comfy.utils

    sd = comfy.utils.load_torch_file(str(vae_file(family, root)))
    vae = comfy.sd.VAE(sd=sd)
    vae.throw_exception_if_invalid()
    return vae


# ---- the Qwen2.5-VL text encoder ----------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _tiny_qwen_classes() -> tuple[type, type]:
    """(transformer class, SDClipModel class) of the small Qwen2.5-VL encoder.

    ``Qwen25_7BVLI.__init__`` builds the vision tower with ``hidden_size=1280`` and the default 32 blocks,
    and ``Qwen25_7BVLIModel`` hard-codes that class, so both get a subclass: the first builds the same
    ComfyUI modules (``Llama2_`` from the config, ``Qwen2VLVisionTransformer``) with ``QWEN_VISION_CONFIG``;
    the second passes it as ``model_class`` with the arguments ``Qwen25_7BVLIModel`` uses. Everything else
    (image preprocessing, M-RoPE positions, token handling, template trimming) is ComfyUI's, inherited."""
    import comfy.sd1_clip
    import comfy.text_encoders.llama as llama
    import comfy.text_encoders.qwen_image as qwen_image
    import comfy.text_encoders.qwen_vl as qwen_vl

    class TinyQwen25VLI(llama.Qwen25_7BVLI):
        def __init__(self, config_dict, dtype, device, operations):
            super(llama.Qwen25_7BVLI, self).__init__()
            config = llama.Qwen25_7BVLI_Config(**config_dict)
            self.num_layers = config.num_hidden_layers
            self.model = llama.Llama2_(config, device=device, dtype=dtype, ops=operations)
            self.visual = qwen_vl.Qwen2VLVisionTransformer(
                output_hidden_size=config.hidden_size, **QWEN_VISION_CONFIG, device=device, dtype=dtype, ops=operations
            )
            self.dtype = dtype

    class TinyQwen25VLIModel(qwen_image.Qwen25_7BVLIModel):
        def __init__(self, device="cpu", layer="last", layer_idx=None, dtype=None, attention_mask=True, model_options={}):
            comfy.sd1_clip.SDClipModel.__init__(
                self,
                device=device,
                layer=layer,
                layer_idx=layer_idx,
                textmodel_json_config={},
                dtype=dtype,
                special_tokens={"pad": 151643},
                layer_norm_hidden_state=False,
                model_class=TinyQwen25VLI,
                enable_attention_masks=attention_mask,
                return_attention_masks=attention_mask,
                model_options=model_options,
            )

    return TinyQwen25VLI, TinyQwen25VLIModel


def qwen_text_encoder_state_dict(seed: int = SEED) -> dict[str, torch.Tensor]:
    """The small encoder's weights under the names of a Qwen2.5-VL text-encoder file (``model.*``, ``visual.*``)."""
    import comfy.ops

    transformer_class, _ = _tiny_qwen_classes()
    with torch.device("meta"):
        meta = transformer_class(dict(QWEN_TEXT_CONFIG), torch.float16, "meta", comfy.ops.disable_weight_init)
    return seeded_state_dict(meta, seed)


def tiny_qwen_edit_clip(seed: int = SEED):
    """A ``comfy.sd.CLIP`` for Qwen-Image(-Edit): ComfyUI's ``QwenImageTokenizer`` (its own vocabulary files) and
    ``QwenImageTEModel`` whose Qwen2.5-VL is small (``QWEN_TEXT_CONFIG`` through ComfyUI's
    ``qwen25_7b_model_config`` option, the vision tower through ``qwen25_7b_class``), seeded weights loaded as
    core's text-encoder loader does (``CLIP(..., state_dict=[sd])``). Its output width is ``QWEN_TEXT_WIDTH``."""
    import comfy.sd
    import comfy.supported_models_base
    import comfy.text_encoders.qwen_image as qwen_image

    _, clip_model_class = _tiny_qwen_classes()
    target = comfy.supported_models_base.ClipTarget(qwen_image.QwenImageTokenizer, qwen_image.te())
    options = {"qwen25_7b_class": clip_model_class, "qwen25_7b_model_config": dict(QWEN_TEXT_CONFIG)}
    return comfy.sd.CLIP(target, state_dict=[qwen_text_encoder_state_dict(seed)], model_options=options)


# ---- published full-size layouts ---------------------------------------------------------------

#: Hyper-parameters of the released checkpoints (their published configs), per (family, variant).
#: The key names and shapes come from ComfyUI's module classes built with these at full size on the meta device.
PUBLISHED: dict[tuple[str, str], dict] = {
    # FLUX.1 Kontext [dev]: the Flux.1 dev architecture, guidance embedding included.
    ("flux_kontext", "dev"): dict(
        module="flux",
        config=dict(
            in_channels=16,
            out_channels=16,
            vec_in_dim=768,
            context_in_dim=4096,
            hidden_size=3072,
            mlp_ratio=4.0,
            num_heads=24,
            depth=19,
            depth_single_blocks=38,
            axes_dim=[16, 56, 56],
            theta=10000,
            patch_size=2,
            qkv_bias=True,
            guidance_embed=True,
            txt_ids_dims=[],
        ),
    ),
    # FLUX.2 [dev]: 8 double + 48 single blocks, 48 heads x 128, Mistral-3 text 3 x 5120, 128 latent channels.
    ("flux2", "dev"): dict(
        module="flux",
        config=dict(
            in_channels=128,
            out_channels=128,
            vec_in_dim=None,
            context_in_dim=15360,
            hidden_size=6144,
            mlp_ratio=3.0,
            num_heads=48,
            depth=8,
            depth_single_blocks=48,
            axes_dim=[32, 32, 32, 32],
            theta=2000,
            patch_size=1,
            qkv_bias=False,
            ops_bias=False,
            global_modulation=True,
            mlp_silu_act=True,
            guidance_embed=True,
            txt_ids_dims=[3],
        ),
    ),
    # Qwen-Image-Edit-2509: the Qwen-Image MMDiT (60 blocks, 24 x 128, Qwen2.5-VL-7B text 3584).
    ("qwen_image_edit", "2509"): dict(
        module="qwen_image",
        config=dict(
            patch_size=2,
            in_channels=64,
            out_channels=16,
            num_layers=60,
            attention_head_dim=128,
            num_attention_heads=24,
            joint_attention_dim=3584,
            axes_dims_rope=(16, 56, 56),
        ),
    ),
    # Qwen-Image-Edit-2511: the same, plus the ``__index_timestep_zero__`` marker ComfyUI's files carry.
    ("qwen_image_edit", "2511"): dict(
        module="qwen_image",
        config=dict(
            patch_size=2,
            in_channels=64,
            out_channels=16,
            num_layers=60,
            attention_head_dim=128,
            num_attention_heads=24,
            joint_attention_dim=3584,
            axes_dims_rope=(16, 56, 56),
            default_ref_method="index_timestep_zero",
        ),
    ),
    # OmniGen2: 32 layers of 2520 (21 heads, 7 KV heads), Qwen2.5-VL-3B text 2048.
    ("omnigen2", "v1"): dict(
        module="omnigen2",
        config=dict(
            patch_size=2,
            in_channels=16,
            out_channels=None,
            hidden_size=2520,
            num_layers=32,
            num_refiner_layers=2,
            num_attention_heads=21,
            num_kv_heads=7,
            multiple_of=256,
            ffn_dim_multiplier=None,
            norm_eps=1e-05,
            axes_dim_rope=(40, 40, 40),
            axes_lens=(1024, 1664, 1664),
            text_feat_dim=2048,
            timestep_scale=1000.0,
        ),
    ),
    # HiDream-E1.1 (and E1): the HiDream-I1 Full architecture, 16 double + 32 single MoE blocks of 20 x 128.
    ("hidream_e1", "e1.1"): dict(
        module="hidream",
        config=dict(
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=16,
            num_single_layers=32,
            attention_head_dim=128,
            num_attention_heads=20,
            caption_channels=[4096, 4096],
            text_emb_dim=2048,
            num_routed_experts=4,
            num_activated_experts=2,
            axes_dims_rope=(64, 32, 32),
            max_resolution=(128, 128),
            llama_layers=list(range(32)) + [31] * 16,
        ),
    ),
}
PUBLISHED[("hidream_e1", "e1")] = PUBLISHED[("hidream_e1", "e1.1")]
#: The variant ``published_config`` uses when none is named.
DEFAULT_VARIANT = {"flux_kontext": "dev", "flux2": "dev", "qwen_image_edit": "2511", "omnigen2": "v1", "hidream_e1": "e1.1"}


def _module_class(kind: str) -> type:
    if kind == "flux":
        import comfy.ldm.flux.model

        return comfy.ldm.flux.model.Flux
    if kind == "qwen_image":
        import comfy.ldm.qwen_image.model

        return comfy.ldm.qwen_image.model.QwenImageTransformer2DModel
    if kind == "omnigen2":
        import comfy.ldm.omnigen.omnigen2

        return comfy.ldm.omnigen.omnigen2.OmniGen2Transformer2DModel
    import comfy.ldm.hidream.model

    return comfy.ldm.hidream.model.HiDreamImageTransformer2DModel


def _variant(family: str, variant: Optional[str]) -> str:
    spec(family)
    variant = variant or DEFAULT_VARIANT[family]
    if (family, variant) not in PUBLISHED:
        raise ValueError(f"{family} variants: {sorted(v for f, v in PUBLISHED if f == family)}, not {variant!r}")
    return variant


@functools.lru_cache(maxsize=None)
def _published_layout(family: str, variant: str) -> tuple[tuple[str, torch.Size], ...]:
    import comfy.ops

    entry = PUBLISHED[(family, variant)]
    with torch.device("meta"):
        module = _module_class(entry["module"])(**entry["config"], device="meta", operations=comfy.ops.disable_weight_init)
    return tuple((name, t.shape) for name, t in module.state_dict().items())


def published_state_dict(family: str, variant: Optional[str] = None) -> dict[str, torch.Tensor]:
    """The key layout of the family's released diffusion-model file (as in ComfyUI's ``diffusion_models``
    folder: bare keys), as bf16 meta tensors: names and shapes only, no memory."""
    variant = _variant(family, variant)
    return {name: torch.empty(shape, dtype=torch.bfloat16, device="meta") for name, shape in _published_layout(family, variant)}


def published_config(family: str, variant: Optional[str] = None):
    """What ComfyUI's own detection (``model_config_from_unet``) makes of the family's released file: the
    supported_models config object (``type(...).__name__``, ``.unet_config``; ``.get_model(sd, "",
    device="meta")`` builds the model_base class on the meta device). Variants: ``PUBLISHED``'s keys."""
    import comfy.model_detection

    return comfy.model_detection.model_config_from_unet(published_state_dict(family, variant), "")


# ---- ControlNets --------------------------------------------------------------------------------

#: The kinds of tiny ControlNet per family, the first the default. ComfyUI 0.8 has ControlNet classes for two
#: of the edit families' architectures: Flux.1 (``comfy.ldm.flux.controlnet.ControlNetFlux``: InstantX/Shakker
#: Union files take the hint as VAE latents, XLabs files as pixels) and Qwen-Image
#: (``comfy.ldm.qwen_image.controlnet.QwenImageControlNetModel``: InstantX files, hint as Wan 2.1 latents).
#: Flux.2, OmniGen2 and HiDream have none (and Qwen-Image's DiffSynth block-wise ControlNet is a MODEL_PATCH,
#: applied by core ``QwenImageDiffsynthControlnet``, not a CONTROL_NET).
CONTROLNET_KINDS = {"flux_kontext": ("instantx", "xlabs"), "qwen_image_edit": ("instantx",)}


def tiny_controlnet(family: str, seed: int = SEED, kind: Optional[str] = None):
    """A CONTROL_NET (``comfy.controlnet.ControlNet``) for the family's tiny model, built and wrapped the way
    ComfyUI's loader builds and wraps a ControlNet file of that kind, with the tiny model's unet_config (the
    loaders pass the config detected from the file; detection fixes the full widths, as for the models).

    - ``flux_kontext``, ``kind="instantx"`` (``load_controlnet_flux_instantx``): ``ControlNetFlux(latent_input=True,
      control_latent_channels=16)`` (``pos_embed_input`` 64 → 64); ``ControlNet(compression_ratio=1,
      latent_format=Flux(), extra_conds=["y", "guidance"])``: the hint image is VAE-encoded, so apply it with
      the family's VAE (``vae=``).
    - ``flux_kontext``, ``kind="xlabs"`` (``load_controlnet_flux_xlabs_mistoline``): ``ControlNetFlux()`` with its
      pixel hint encoder (three stride-2 convs to /8); ``ControlNet(extra_conds=["y", "guidance"])``, no VAE.
    - ``qwen_image_edit`` (``load_controlnet_qwen_instantx``): ``QwenImageControlNetModel(extra_condition_channels=0)``
      (``controlnet_x_embedder`` 64 → 32); ``ControlNet(compression_ratio=1, latent_format=Wan21(), extra_conds=[])``:
      apply it with the family's VAE.

    Every block of the tiny model (one double and, for Flux, one single block) gets a control block, hidden
    width that of the model (Flux 64, Qwen-Image 2 x 16); ComfyUI repeats their outputs to the full model's 19/38
    (Flux) or 60 (Qwen-Image) blocks, of which the tiny model reads the first. Weights are seeded per tensor name
    as the models' are (names the ControlNet shares with the model get the model's values, as a ControlNet
    initialised from its base model); the control blocks are not zero, so the control acts."""
    spec(family)
    kinds = CONTROLNET_KINDS.get(family)
    if kinds is None:
        raise ValueError(f"ComfyUI 0.8 has no ControlNet class for {family}; tiny ControlNets: {sorted(CONTROLNET_KINDS)}")
    kind = kind or kinds[0]
    if kind not in kinds:
        raise ValueError(f"{family} ControlNet kinds: {kinds}, not {kind!r}")
    import comfy.controlnet
    import comfy.latent_formats
    import comfy.ops

    dtype, cpu = torch.float32, torch.device("cpu")
    config = model_config(family).unet_config
    # What controlnet_config() picks for an fp32 file on a CPU; load and offload device as tiny_model's.
    operations = comfy.ops.pick_operations(dtype, None, disable_fast_fp8=True)
    if family == "flux_kontext":
        import comfy.ldm.flux.controlnet

        latent = kind == "instantx"
        extra = dict(latent_input=True, num_union_modes=0, control_latent_channels=spec(family).latent_channels) if latent else {}
        module = comfy.ldm.flux.controlnet.ControlNetFlux(**extra, operations=operations, device=cpu, dtype=dtype, **config)
        wrap = dict(compression_ratio=1, latent_format=comfy.latent_formats.Flux()) if latent else {}
        extra_conds = ["y", "guidance"]
    else:
        import comfy.ldm.qwen_image.controlnet

        module = comfy.ldm.qwen_image.controlnet.QwenImageControlNetModel(
            extra_condition_channels=0, operations=operations, device=cpu, dtype=dtype, **config
        )
        wrap = dict(compression_ratio=1, latent_format=comfy.latent_formats.Wan21())
        extra_conds = []
    fill_module(module, seed)
    return comfy.controlnet.ControlNet(module, load_device=cpu, manual_cast_dtype=None, concat_mask=False, extra_conds=extra_conds, **wrap)
