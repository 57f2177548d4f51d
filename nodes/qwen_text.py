"""Instruct Text Encode (Qwen-Image-Edit): the instruction and the negative with the image in their tokens,
plus the negative without it, which the unconditional branch of image guidance needs.

Qwen-Image-Edit reads the input image twice: as reference latents and inside its Qwen2.5-VL prompt. For
image guidance the unconditional branch must see neither, so the negative is also encoded without the
image (same instruction template, no vision tokens) and carried on the negative (``UNCOND_KEY``), where the
sampler finds it. The encoding itself is core's ``TextEncodeQwenImageEditPlus`` (2509/2511 template), called
without a VAE: the reference latents come from Instruct Image Conditioning, on the image's own grid.
"""

from __future__ import annotations

from typing import Optional

import torch

from comfy_api.latest import io
from comfy_extras.nodes_qwen import TextEncodeQwenImageEditPlus

from ..vocabulary import UNCOND_KEY, with_values
from .base import InstructNode
from .common import CATEGORY


def encode(clip, text: str, images: list[torch.Tensor]) -> list:
    """Core's Qwen-Image-Edit encoding of ``text`` with ``images`` in its vision tokens (none: the same template, no image)."""
    image1, image2, image3 = (images + [None, None, None])[:3]
    return TextEncodeQwenImageEditPlus.execute(clip=clip, prompt=text, image1=image1, image2=image2, image3=image3).result[0]


class InstructTextEncodeQwenImageEdit(InstructNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructTextEncodeQwenImageEdit",
            display_name="Instruct Text Encode (Qwen-Image-Edit)",
            category=f"{CATEGORY}/conditioning",
            description=(
                "Encodes the instruction and the negative for Qwen-Image-Edit (2509 / 2511) with the image(s) in the "
                "Qwen2.5-VL prompt, as core TextEncodeQwenImageEditPlus does, and also the negative without any image, so "
                "Instruct KSampler / Instruct Guider can sample image guidance (image_cfg ≠ 1: its unconditional branch "
                "sees the image neither in the tokens nor as reference latents). Then connect both outputs to Instruct "
                "Image Conditioning (with the model) for the reference latents."
            ),
            inputs=[
                io.Clip.Input("clip", tooltip="Qwen-Image's text encoder (qwen_2.5_vl_7b, Load CLIP type 'qwen_image')."),
                io.String.Input("prompt", multiline=True, dynamic_prompts=True, tooltip="The instruction, e.g. 'make the sky stormy'."),
                io.String.Input(
                    "negative_prompt",
                    multiline=True,
                    default="",
                    tooltip="Negative text (ComfyUI's template uses a blank one). Encoded with the image and, for the "
                    "unconditional branch, without it.",
                ),
                io.Image.Input("image", tooltip="The image to edit (its vision tokens enter both prompts)."),
                io.Image.Input("image2", optional=True, tooltip="A second reference image (2509 / 2511 take up to three)."),
                io.Image.Input("image3", optional=True, tooltip="A third reference image."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="The instruction with the image(s) in its tokens."),
                io.Conditioning.Output(
                    display_name="negative",
                    tooltip="The negative with the image(s) in its tokens, carrying its image-free encoding for the unconditional branch.",
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        clip,
        prompt: str,
        negative_prompt: str,
        image: torch.Tensor,
        image2: Optional[torch.Tensor] = None,
        image3: Optional[torch.Tensor] = None,
    ) -> io.NodeOutput:
        images = [i for i in (image, image2, image3) if i is not None]
        positive = encode(clip, prompt, images)
        negative = encode(clip, negative_prompt, images)
        unconditional = encode(clip, negative_prompt, [])
        return io.NodeOutput(positive, with_values(negative, {UNCOND_KEY: unconditional}))
