"""Everything IPAdapter-Instruct does once per distinct input: encodings, projection, patching.

Encodings follow the reference exactly: instruction and prompts are the base model's CLIP-L last
hidden state after the final layer norm (77 tokens, no prompt-weight syntax, no chunking; SDXL:
CLIP-L alone); the image is CLIP-vision's penultimate hidden states; the unconditional image is the
vision tower run on an all-zero tensor *after* normalisation (mean grey, as the reference does).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.patcher_extension as ext
import comfy.utils

from ..vocabulary import IP_GUIDANCE_ATTACHMENT, Branch, IPGuidance
from .errors import InstructInputError
from .ipadapter_instruct import EVERYTHING_INSTRUCTION, IPAdapterInstruct, build_adapter, layer_keys
from .ipadapter_patch import LATER_PATCH_ORDER, LATER_PATCH_SOURCE, IPInstructAttention, TokenSets
from .model_kind import family_of
from .scale_homes import ScaleUse, unused_scales
from .weight_files import read_weights

log = logging.getLogger(__name__)


class LoadedAdapter:
    """The IPADAPTER_INSTRUCT value: the module inside a ModelPatcher, so ComfyUI manages its memory."""

    def __init__(self, module: IPAdapterInstruct, source: str) -> None:
        self.source = source
        self.spec = module.spec
        dtype = mm.unet_dtype(supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])
        module.to(dtype)
        self.patcher = comfy.model_patcher.ModelPatcher(module, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())

    @property
    def module(self) -> IPAdapterInstruct:
        return self.patcher.model


def load_adapter(path: str) -> LoadedAdapter:
    sd = read_weights(path, "IP-Adapter file")
    return LoadedAdapter(build_adapter(sd, path), path)


def clip_l_last_hidden(clip: Any, text: str) -> torch.Tensor:
    """[1, 77, 768]: CLIP-L final-layer, final-LN states of the first 77 tokens, weights syntax off.

    CLIP-L is called directly (SD1.5 and SDXL CLIPs both hold it as ``clip_l``): on SDXL,
    ``clip_layer()`` cannot select the last layer in ComfyUI 0.8, because the encode call's second
    ``set_clip_options`` (the execution device) falls back to CLIP-L's default layer (-2).
    """
    encoder = getattr(clip.cond_stage_model, "clip_l", None)
    if encoder is None:
        raise InstructInputError("the CLIP has no CLIP-L text encoder; connect the base model's CLIP (SD1.5 or SDXL).")
    tokens = clip.tokenize(text, disable_weights=True)["l"][:1]
    clip.load_model()
    try:
        encoder.reset_clip_options()
        encoder.set_clip_options({"execution_device": clip.patcher.load_device})
        encoder.set_clip_options({"layer": None})  # None selects the last layer, after the final layer norm
        hidden = encoder.encode_token_weights(tokens)[0]
    finally:
        encoder.reset_clip_options()
    return hidden[:, :77].to(mm.intermediate_device())


def image_hidden(clip_vision: Any, image: torch.Tensor) -> torch.Tensor:
    return clip_vision.encode_image(image, crop=True)["penultimate_hidden_states"]


def zero_image_hidden(clip_vision: Any) -> torch.Tensor:
    mm.load_model_gpu(clip_vision.patcher)
    size = getattr(clip_vision, "image_size", 224)
    pixels = torch.zeros(1, 3, size, size, device=clip_vision.load_device)
    out = clip_vision.model(pixel_values=pixels, intermediate_output=-2)
    hidden = out[1][:, -2] if getattr(clip_vision, "return_all_hidden_states", False) else out[1]
    return hidden.to(mm.intermediate_device())


@torch.no_grad()
def project_token_sets(
    adapter: LoadedAdapter, clip: Any, clip_vision: Any, image: torch.Tensor, query: str, prompt: str, negative_prompt: str
) -> dict[str, torch.Tensor]:
    """The four token sets of the reference, each [1, 16·images, C]. Runs once per apply.

    Without autograd: ComfyUI runs nodes under inference mode, but a direct call would otherwise record
    a graph that keeps the encoders' cast weight copies alive with the token sets (0.4 GB per apply on
    SD1.5 with ViT-H, seen in the tests)."""
    base = adapter.spec.base
    enc = {text: clip_l_last_hidden(clip, text) for text in {query, "", EVERYTHING_INSTRUCTION, prompt, negative_prompt}}
    negative_for_uncond = enc[negative_prompt] if base == "SD1.5" else enc[""]
    img = image_hidden(clip_vision, image[..., :3])
    zero = zero_image_hidden(clip_vision)
    mm.load_models_gpu([adapter.patcher])
    proj = adapter.module.image_proj
    param = next(proj.parameters())

    def run(images: torch.Tensor, instruction: torch.Tensor, prompt_embeds: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        cast = {"device": param.device, "dtype": param.dtype}
        out = proj(images.to(**cast), instruction.to(**cast).expand(n, -1, -1), prompt_embeds.to(**cast).expand(n, -1, -1))
        return out.reshape(1, -1, out.shape[-1]).to(mm.intermediate_device())  # several images: tokens side by side

    return {
        Branch.FULL: run(img, enc[query], enc[prompt]),
        Branch.UNCOND: run(zero, enc[""], negative_for_uncond),
        Branch.IMAGE_ONLY: run(img, negative_for_uncond, negative_for_uncond),
        Branch.EVERYTHING: run(img, enc[EVERYTHING_INSTRUCTION], enc[prompt]),
    }


def check_base(model: Any, adapter: LoadedAdapter) -> None:
    context = model.model.model_config.unet_config.get("context_dim")
    if context != adapter.spec.resampler.output_dim:
        family = {768: "SD1.5", 2048: "SDXL"}.get(context, f"{context}-d cross-attention")
        raise InstructInputError(
            f"'{adapter.source}' is the {adapter.spec.base} adapter but the model is {family}: use "
            f"ip-adapter-instruct-{'sd15' if family == 'SD1.5' else 'sdxl'}.bin with this model."
        )


def _transformer_blocks(diffusion_model: Any, block: str, number: int) -> list:
    container = diffusion_model.middle_block if block == "middle" else getattr(diffusion_model, f"{block}_blocks")[number]
    for child in container:
        blocks = getattr(child, "transformer_blocks", None)
        if blocks is not None:
            return list(blocks)
    return []


def check_layout(model: Any, adapter: LoadedAdapter, keys: dict) -> None:
    """Every layer the adapter patches exists in the model and is as wide as the adapter's projection for it."""
    dm = model.model.diffusion_model
    layers = {}
    for n, (block, number, index) in keys.items():  # the layout first: a UNet without it is named as such
        try:
            blocks = _transformer_blocks(dm, block, number)
        except (IndexError, AttributeError, TypeError):
            blocks = []
        if len(blocks) <= index:
            raise InstructInputError(
                f"the model has no cross-attention layer at {(block, number, index)} (adapter layer {n}); "
                "it is not a standard SD1.5 / SDXL UNet, so the adapter cannot be applied."
            )
        layers[n] = blocks[index]
    for n, (block, number, index) in keys.items():
        width = int(layers[n].attn2.to_k.weight.shape[0])
        if width != adapter.spec.layer_dims[n]:
            raise InstructInputError(
                f"'{adapter.source}' was made for a UNet whose cross-attention layer {(block, number, index)} (adapter layer {n}) "
                f"is {adapter.spec.layer_dims[n]} wide; this model's is {width}. Use the adapter made for this model "
                f"(ip-adapter-instruct-{'sd15' if adapter.spec.base == 'SD1.5' else 'sdxl'}.bin for a standard {adapter.spec.base} UNet)."
            )


ORDER_CHECK = "ipadapter_instruct_order_check"


def _refuse_shadowed_patches(executor: Any, *args: Any, **kwargs: Any) -> Any:
    """OUTER_SAMPLE wrapper: an attn2 patch put on a block's two-part key after ours (cubiq's
    IPAdapter on SD1.5) is shadowed by our three-part key and would silently never run."""
    attn2 = executor.class_obj.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    for key, patch in attn2.items():
        if isinstance(patch, IPInstructAttention) and len(key) == 3:
            later = attn2.get(key[:2])
            if later is not None and later is not patch.previous:
                raise InstructInputError(f"{LATER_PATCH_ORDER} (layer {key[:2]}: {type(later).__name__})", node=LATER_PATCH_SOURCE)
    return executor(*args, **kwargs)


def apply(
    model: Any,
    adapter: LoadedAdapter,
    token_sets: dict[str, torch.Tensor],
    weight: float,
    start_at: float,
    end_at: float,
    mask: Optional[torch.Tensor],
    guidance: IPGuidance,
) -> Any:
    """A clone of ``model`` with every cross-attention layer patched; the input model is untouched."""
    check_base(model, adapter)
    keys = layer_keys(adapter.spec.base)
    check_layout(model, adapter, keys)
    sampling = model.get_model_object("model_sampling")
    sigma_start, sigma_end = float(sampling.percent_to_sigma(start_at)), float(sampling.percent_to_sigma(end_at))
    if mask is not None and mask.ndim == 2:
        mask = mask.unsqueeze(0)
    core_note = unused_scales(
        ScaleUse("IPAdapter-Instruct under a core sampler", family_of(model) is not None, guidance, pack_sampler=False)
    )
    tokens = TokenSets(token_sets, core_note)
    patched = model.clone()
    existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    for n, key in keys.items():
        previous = existing.get(key) or existing.get(key[:2])
        patch = IPInstructAttention(adapter.patcher, n, tokens, weight, sigma_start, sigma_end, mask, previous)
        patched.set_model_attn2_replace(patch, key[0], key[1], key[2])
    patched.set_attachments(IP_GUIDANCE_ATTACHMENT, guidance)
    if not ext.get_wrappers_with_key(ext.WrappersMP.OUTER_SAMPLE, ORDER_CHECK, patched.model_options, is_model_options=True):
        ext.add_wrapper_with_key(ext.WrappersMP.OUTER_SAMPLE, ORDER_CHECK, _refuse_shadowed_patches, patched.model_options, True)
    return patched
