"""Instruct Merge node: turn a fine-tune into an instruct model (the arithmetic is in ``models/``)."""

from __future__ import annotations

from comfy_api.latest import io

from ..models.instruct_merge import merge_into_instruct
from .base import InstructNode
from .common import CATEGORY


class InstructMerge(InstructNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstructMerge",
            display_name="Instruct Merge (fine-tune → instruct)",
            category=f"{CATEGORY}/loaders",
            description=(
                "Turns any SD1.5 / SDXL fine-tune into an instruct model: instruct + strength · (custom − base) on every "
                "UNet weight, the first convolution included (the fine-tune's change goes into the 4 noisy-latent "
                "input channels; the 4 image channels stay the instruct model's; core add-difference merges skip this "
                "weight). The result works with every instruct node and saves with core Checkpoint Save."
            ),
            inputs=[
                io.Model.Input("instruct", tooltip="The instruct model (Instruct UNet Loader), e.g. InstructPix2Pix or CosXL Edit."),
                io.Model.Input("custom", tooltip="Your fine-tune (Load Checkpoint), of the same family as the instruct model."),
                io.Model.Input(
                    "base",
                    tooltip="The model the fine-tune was trained from (SD1.5 v1-5 for SD1.5 fine-tunes, SDXL base 1.0 for SDXL).",
                ),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=-2.0,
                    max=3.0,
                    step=0.05,
                    tooltip="How much of the fine-tune's difference is added (1.0 = all of it; 0.5–0.8 keeps more of the "
                    "instruct model's editing ability).",
                ),
            ],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="The merged instruct model (a patched clone; inputs unchanged).")],
        )

    @classmethod
    def execute(cls, instruct, custom, base, strength) -> io.NodeOutput:
        return io.NodeOutput(merge_into_instruct(instruct, custom, base, strength))
