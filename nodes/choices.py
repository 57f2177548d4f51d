"""The combo values of the node interface: short stable tokens, their prose in the tooltip, and the
0.1.0 phrases they replace.

A combo value is saved verbatim in every workflow, so it must never change once released; what it
means is said in the tooltip, which can. Workflows saved by 0.1.0 hold long phrases: each ``Choice``
maps them to its tokens, nodes accept them in ``validate_inputs`` (ComfyUI then skips its own list
check for that input) and ``InstructNode`` converts them before ``execute`` runs, so an old
workflow runs exactly as a new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from comfy_api.latest import io

from ..models.geometry import Resolution, SizeMode
from ..models.image_latent import LatentMode
from ..models.instruct_loader import Prediction
from ..models.ipadapter_instruct import CUSTOM_TASK, TASKS
from ..models.state_dict import EmaMode


@dataclass(frozen=True)
class Choice:
    """One combo: token → what it means, and the 0.1.0 phrases that map onto tokens."""

    meanings: Mapping[str, str]
    legacy: Mapping[str, str] = field(default_factory=dict)

    @property
    def tokens(self) -> list[str]:
        return list(self.meanings)

    def tooltip(self, intro: str) -> str:
        return intro + "\n" + "\n".join(f"• {token}: {meaning}" for token, meaning in self.meanings.items())

    def input(self, name: str, default: str, intro: str, **kwargs: Any) -> "ChoiceInput":
        return ChoiceInput(name, self, default, intro, **kwargs)

    def token(self, value: Any) -> Any:
        """The token a saved value stands for (a token stays itself; anything else is left to validation)."""
        return self.legacy.get(value, value) if isinstance(value, str) else value

    def problem(self, name: str, value: Any) -> Optional[str]:
        """Why ``value`` is not accepted for input ``name``, or None."""
        if self.token(value) in self.meanings:
            return None
        return f"'{name}' is '{value}', which is not one of: {', '.join(self.tokens)}"


class ChoiceInput(io.Combo.Input):
    """A combo input whose options are a ``Choice``'s tokens (the node converts saved 0.1.0 values)."""

    def __init__(self, name: str, choice: Choice, default: str, intro: str, **kwargs: Any) -> None:
        super().__init__(name, options=choice.tokens, default=default, tooltip=choice.tooltip(intro), **kwargs)
        self.choice = choice


def check_choices(schema: io.Schema, values: Mapping[str, Any]) -> "bool | str":
    """``validate_inputs`` of a node with choice inputs: True, or every problem in one message."""
    problems = [
        spec.choice.problem(spec.id, values[spec.id])
        for spec in schema.inputs
        if isinstance(spec, ChoiceInput) and values.get(spec.id) is not None
    ]
    problems = [p for p in problems if p]
    return "; ".join(problems) if problems else True


def to_tokens(schema: io.Schema, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every choice input's saved value replaced by its token."""
    for spec in schema.inputs:
        if isinstance(spec, ChoiceInput) and spec.id in values:
            values[spec.id] = spec.choice.token(values[spec.id])
    return values


SIZE_MODE = Choice(
    {
        SizeMode.CROP.value: "centre-crop the remainder (core's rule); Instruct Region Composite restores the cropped border",
        SizeMode.PAD.value: "extend the right and bottom edges to the next multiple; the composite cuts the extension off, so "
        "nothing is cropped or resampled",
        SizeMode.RESIZE.value: "resize to the nearest multiple (keeps the whole picture, slight stretch; resized back by the composite)",
    },
    legacy={"crop to multiple of 8": SizeMode.CROP.value, "resize to multiple of 8": SizeMode.RESIZE.value},
)

RESOLUTION = Choice(
    {
        Resolution.KEEP.value: "edit at the image's own size (input and output line up pixel for pixel)",
        Resolution.MEGAPIXEL.value: "scale to about 1 megapixel, aspect ratio kept (Qwen-Image-Edit's own scaling; what the "
        "large edit models were trained at); the composite scales the edit back",
        Resolution.KONTEXT.value: "Flux Kontext's preferred size nearest in aspect ratio (centre crop, then scale, like core "
        "FluxKontextImageScale); the composite puts the edit back on the original",
    }
)

LATENT_OUTPUT = Choice(
    {
        LatentMode.EMPTY.value: "an empty latent of the image's size, for denoise 1.0 (the usual edit)",
        LatentMode.IMAGE.value: "the encoded input image, for denoise < 1 (stays closer to the input)",
    },
    legacy={"empty (denoise 1.0)": LatentMode.EMPTY.value, "input image (for denoise < 1)": LatentMode.IMAGE.value},
)

EMA_WEIGHTS = Choice(
    {
        EmaMode.AUTO.value: "the EMA copy when the file carries one (what the original InstructPix2Pix samples with)",
        EmaMode.EMA.value: "the EMA copy (refused when the file has none)",
        EmaMode.NON_EMA.value: "the raw training weights",
    },
    legacy={"auto (EMA when present)": EmaMode.AUTO.value, "EMA": EmaMode.EMA.value, "non-EMA": EmaMode.NON_EMA.value},
)

PREDICTION = Choice(
    {
        Prediction.AUTO.value: "read it from the file (CosXL Edit carries EDM v-prediction markers)",
        Prediction.EPS.value: "ε-prediction (InstructPix2Pix, MagicBrush, sdxl-instructpix2pix)",
        Prediction.COSXL.value: "EDM v-prediction with the SDXL-scaled image latent, as CosXL Edit expects (for a CosXL Edit UNet "
        "saved without its markers)",
    },
    legacy={"v-prediction EDM (CosXL Edit)": Prediction.COSXL.value},
)

RESTRICT = Choice(
    {
        "restrict": "restrict the steps after mask_steps to the mask (outside it the input is reconstructed)",
        "mask_only": "sample exactly like Instruct KSampler and only output the mask",
    },
    legacy={"restrict the rest of the sampling": "restrict", "off: only output the mask": "mask_only"},
)

IP_GUIDANCE = Choice(
    {
        "auto": "as the reference decides: plain CFG when the instruction mentions style/colour/everything/face, "
        "else the 4-branch guidance",
        "simple": "plain 2-pass CFG (any sampler; its scale is the sampler's cfg / text_cfg)",
        "four_branch": "the reference's 4-branch guidance (plain model, Instruct KSampler / Instruct Guider)",
    },
    legacy={"auto (as the reference)": "auto", "simple (2-pass CFG)": "simple", "4-branch": "four_branch"},
)

IP_TASK = Choice(
    {
        **{task: f"'{query}'" for task, query in TASKS.items()},
        CUSTOM_TASK: "the instruction written in 'instruction', e.g. 'use the pose' or 'extract the bird'",
    },
    legacy={"custom (instruction text)": CUSTOM_TASK},
)
