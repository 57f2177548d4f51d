"""The edit-family workflows on the tiny family models: the published files' loaders swapped for test nodes.

ComfyUI fixes the widths of these families' text encoders (T5-XXL, Mistral, Llama, Qwen2.5-VL 7B), so their
CLIP Text Encode nodes become ``InstructTestFamilyText`` (conditioning of the family's shape, seeded by the
text); Qwen-Image's text encoder is small enough to build from ComfyUI's own classes, so a Qwen graph keeps its
text nodes, the pack's Instruct Text Encode (Qwen-Image-Edit) included. Everything else — the pack's nodes, core
ReferenceLatent, FluxGuidance, CFGNorm, ModelSamplingAuraFlow, Flux2Scheduler, SamplerCustomAdvanced — runs as
shipped.
"""

from __future__ import annotations

#: The published diffusion-model file of each shipped family workflow → its tiny stand-in.
FAMILY_OF_FILE = {
    "qwen_image_edit_2511_bf16.safetensors": "qwen_image_edit",
    "flux1-dev-kontext_fp8_scaled.safetensors": "flux_kontext",
    "flux2_dev_fp8mixed.safetensors": "flux2",
    "omnigen2_fp16.safetensors": "omnigen2",
    "hidream_e1_1_bf16.safetensors": "hidream_e1",
}
TEXT_LOADERS = ("CLIPLoader", "DualCLIPLoader", "TripleCLIPLoader", "QuadrupleCLIPLoader")
#: Steps of the sampler nodes in a quick test run.
QUICK_STEPS = 2


def family_of(api: dict) -> str | None:
    """The family a workflow edits with (by its Load Diffusion Model file), or None for the SD workflows."""
    for node in api.values():
        if node["class_type"] == "UNETLoader":
            return FAMILY_OF_FILE.get(node["inputs"].get("unet_name"))
    return None


def substitute_family(api: dict) -> dict:
    """In place: the family's loaders and text encoders replaced by the tiny stand-ins, steps cut to a few."""
    family = family_of(api)
    if family is None:
        return api
    for node in api.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "UNETLoader":
            node["class_type"], node["inputs"] = "InstructTestTinyFamilyModel", {"family": family}
        elif kind == "VAELoader":
            node["class_type"], node["inputs"] = "InstructTestTinyFamilyVAE", {"family": family}
        elif kind in TEXT_LOADERS and family == "qwen_image_edit":
            node["class_type"], node["inputs"] = "InstructTestTinyQwenCLIP", {}
        elif kind == "CLIPTextEncode" and family != "qwen_image_edit":
            node["class_type"], node["inputs"] = "InstructTestFamilyText", {"family": family, "text": inputs.get("text", "")}
        elif kind in ("InstructKSampler", "Flux2Scheduler") and "steps" in inputs:
            inputs["steps"] = QUICK_STEPS
    return api
