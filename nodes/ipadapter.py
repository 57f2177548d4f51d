"""IPAdapter-Instruct loader and apply nodes (logic in ``models/ipadapter_*.py``)."""

from __future__ import annotations


import folder_paths
from comfy_api.latest import io

from ..models.folders import IPADAPTER_FOLDER
from ..models.ipadapter_apply import apply, load_adapter, project_token_sets
from ..models.ipadapter_instruct import (
    query_for,
    reference_auto_scale,
    reference_wants_four_branch,
)
from ..vocabulary import IPGuidance
from .base import InstructNode
from .choices import IP_GUIDANCE, IP_TASK
from .common import CATEGORY

#: Our own socket type (cubiq's "IPADAPTER" would let users wire it into nodes that cannot use it).
IPAdapterInstructType = io.Custom("IPADAPTER_INSTRUCT")


#: instruct_cfg / image_cfg defaults; other values where they do not act are reported as unused.
FOUR_BRANCH_DEFAULTS = (6.0, 1.0)


class IPAdapterInstructLoader(InstructNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IPAdapterInstructLoader",
            display_name="IPAdapter-Instruct Loader",
            category=f"{CATEGORY}/ipadapter",
            description="Loads ip-adapter-instruct-sd15.bin / -sdxl.bin (or a .safetensors with image_proj./ip_adapter. "
            "prefixes) from models/ipadapter. Every expected weight must be present and nothing else; plain IP-Adapter, "
            "Plus and FaceID files are refused with a pointer to the right pack.",
            inputs=[
                io.Combo.Input(
                    "ipadapter_file",
                    options=folder_paths.get_filename_list(IPADAPTER_FOLDER),
                    tooltip="The IP-Adapter-Instruct weights in models/ipadapter.",
                )
            ],
            outputs=[IPAdapterInstructType.Output(display_name="IPADAPTER_INSTRUCT", tooltip="The adapter, for IPAdapter-Instruct Apply.")],
        )

    @classmethod
    def execute(cls, ipadapter_file: str) -> io.NodeOutput:
        return io.NodeOutput(load_adapter(folder_paths.get_full_path_or_raise(IPADAPTER_FOLDER, ipadapter_file)))


class IPAdapterInstructApply(InstructNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IPAdapterInstructApply",
            display_name="IPAdapter-Instruct Apply",
            category=f"{CATEGORY}/ipadapter",
            description=(
                "Conditions generation on a reference image read the way the instruction says: everything, the style, "
                "the composition, the object or the face. Patches every cross-attention layer (16 for SD1.5, 70 for SDXL, "
                "middle block included) of a clone of the model. Style/everything/face use plain CFG (any sampler); "
                "composition/object use the reference's 4-branch guidance, which needs Instruct KSampler or Instruct Guider."
            ),
            inputs=[
                io.Model.Input("model", tooltip="SD1.5 or SDXL model (an instruct IP2P model works too)."),
                IPAdapterInstructType.Input("ipadapter", tooltip="From IPAdapter-Instruct Loader."),
                io.ClipVision.Input(
                    "clip_vision", tooltip="CLIP-ViT-H-14 (laion2B-s32B-b79K) image encoder, as the adapter was trained with."
                ),
                io.Clip.Input("clip", tooltip="The base model's CLIP; the instruction and prompts are encoded with its CLIP-L."),
                io.Image.Input(
                    "image",
                    tooltip="Reference image. Several images (a batch): their tokens (16 each) are concatenated and "
                    "attended together, not averaged; the unconditional branch keeps the zero image's 16 tokens.",
                ),
                IP_TASK.input("task", "style", "What to take from the image (the instruction the adapter is given):"),
                io.String.Input(
                    "instruction", default="", tooltip="Used when task is 'custom', e.g. 'use the pose' or 'extract the bird'."
                ),
                io.String.Input(
                    "prompt",
                    default="best quality, high quality",
                    multiline=True,
                    tooltip="The text prompt of this generation (the same text as your positive CLIP Text Encode): "
                    "the adapter's tokens depend on it.",
                ),
                io.String.Input(
                    "negative_prompt",
                    default="monochrome, lowres, bad anatomy, worst quality, low quality",
                    multiline=True,
                    tooltip="The negative prompt of this generation (SD1.5 adapters use it for the unconditional tokens).",
                ),
                io.Float.Input(
                    "weight",
                    default=0.8,
                    min=-1.0,
                    max=3.0,
                    step=0.05,
                    tooltip="Strength of the adapter in every layer and branch. The reference advises 0.6–0.8.",
                ),
                io.Float.Input(
                    "start_at", default=0.0, min=0.0, max=1.0, step=0.01, tooltip="Fraction of sampling where the adapter starts."
                ),
                io.Float.Input("end_at", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="Fraction of sampling where the adapter stops."),
                IP_GUIDANCE.input("guidance", "auto", "How the adapter's generation is guided:"),
                io.Float.Input(
                    "instruct_cfg",
                    default=FOUR_BRANCH_DEFAULTS[0],
                    min=0.0,
                    max=30.0,
                    step=0.1,
                    tooltip="4-branch mode only (plain model, Instruct KSampler / Instruct Guider): s_instr, guidance of the "
                    "instruction (full vs 'everything' branch). Reference default 6 (SDXL 5). The mode's g is the sampler's "
                    "text_cfg. Not used in the simple mode, under a core sampler or on an instruct model (a warning says so).",
                ),
                io.Float.Input(
                    "image_cfg",
                    default=FOUR_BRANCH_DEFAULTS[1],
                    min=0.0,
                    max=30.0,
                    step=0.1,
                    tooltip="4-branch mode only (plain model, Instruct KSampler / Instruct Guider): s_img, guidance of the "
                    "image (image-only vs unconditional branch). Reference default 1. This, not the sampler's image_cfg, "
                    "is the image scale of that mode. Not used in the simple mode, under a core sampler or on an instruct model.",
                ),
                io.Boolean.Input(
                    "auto_scale",
                    default=True,
                    tooltip="The reference's auto_scale: SD1.5 lowers the weight by 0.2 when the instruction mentions "
                    "composition or pose; SDXL sets it to 0.7 for composition.",
                ),
                io.Mask.Input(
                    "attn_mask", optional=True, tooltip="Optional: where in the output the adapter acts (white = full strength)."
                ),
            ],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="The patched clone of the model.")],
        )

    @classmethod
    def execute(
        cls,
        model,
        ipadapter,
        clip_vision,
        clip,
        image,
        task,
        instruction,
        prompt,
        negative_prompt,
        weight,
        start_at,
        end_at,
        guidance,
        instruct_cfg,
        image_cfg,
        auto_scale,
        attn_mask=None,
    ) -> io.NodeOutput:
        query = query_for(task, instruction)
        four_branch = reference_wants_four_branch(query) if guidance == "auto" else guidance == "four_branch"
        if auto_scale:
            weight = reference_auto_scale(query, weight, ipadapter.spec.base)
        tokens = project_token_sets(ipadapter, clip, clip_vision, image, query, prompt, negative_prompt)
        scales_set = (instruct_cfg, image_cfg) != FOUR_BRANCH_DEFAULTS
        spec = IPGuidance(four_branch=four_branch, instruct_cfg=instruct_cfg, image_cfg=image_cfg, scales_set=scales_set)
        return io.NodeOutput(apply(model, ipadapter, tokens, weight, start_at, end_at, attn_mask, spec))

    @classmethod
    def validate_inputs(cls, task: str, guidance: str) -> "bool | str":
        return cls.accept_choices(task=task, guidance=guidance)
