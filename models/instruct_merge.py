"""Instruct merge: ``instruct + strength · (custom − base)``, the first convolution included.

InstructPix2Pix was fine-tuned from SD with four extra input channels initialised at zero, so a
fine-tune's change to the 4-channel input convolution belongs in the instruct model's first four
(noisy-latent) channels, and its four image channels stay as they are. Core's add-difference
merge skips that weight (shape mismatch); here it is patched through a narrowed patch (ComfyUI's
patch ``offset``) on input channels 0..3.

Everything goes through ``ModelPatcher.add_patches`` on a clone of the instruct model, referencing
the custom and base weights (with their own patches, e.g. a LoRA) lazily: nothing is copied,
LoRA/ControlNet/other patches compose, offloading works, and core checkpoint-save nodes save the
merged weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .errors import InstructInputError
from .model_kind import is_instruct_model

PREFIX = "diffusion_model."
FIRST_CONV = PREFIX + "input_blocks.0.0.weight"
LATENT_CHANNELS = 4

#: ComfyUI model-config classes → family names (the nearest one in the class's MRO wins).
FAMILIES = {
    "SD15": "SD1.5",
    "SD20": "SD2.x",
    "SDXLRefiner": "SDXL Refiner",
    "SDXL": "SDXL",
    "SSD1B": "SSD-1B",
    "Segmind_Vega": "Segmind Vega",
    "KOALA_700M": "KOALA-700M",
    "KOALA_1B": "KOALA-1B",
}


def family_of(model_patcher: Any) -> str:
    config = getattr(getattr(model_patcher, "model", None), "model_config", None)
    if config is None:
        return "unknown"
    for cls in type(config).__mro__:
        if cls.__name__ in FAMILIES:
            return FAMILIES[cls.__name__]
    return type(config).__name__


@dataclass(frozen=True)
class MergePlan:
    """Which keys are patched, and the few that go into a slice (``(dim, start, length)``)."""

    keys: tuple[str, ...]
    narrowed: Mapping[str, tuple[int, int, int]]


def plan_merge(instruct: Mapping[str, tuple], custom: Mapping[str, tuple], base: Mapping[str, tuple]) -> MergePlan:
    """Check three models' diffusion weights (key → shape) fit together; say how to patch each key."""
    if set(custom) != set(base):
        only = sorted(set(custom) ^ set(base))
        raise InstructInputError(
            f"'custom' and 'base' have different weights ({len(only)} keys differ, e.g. {only[0]}); 'base' must be "
            "the model 'custom' was fine-tuned from (e.g. SD1.5 for an SD1.5 fine-tune)."
        )
    mismatched = [k for k in custom if tuple(custom[k]) != tuple(base[k])]
    if mismatched:
        k = mismatched[0]
        raise InstructInputError(
            f"'custom' and 'base' differ in shape at {k} ({tuple(custom[k])} vs {tuple(base[k])}); 'base' must be "
            "the model 'custom' was fine-tuned from."
        )
    narrowed: dict[str, tuple[int, int, int]] = {}
    problems = []
    for k in custom:
        target = instruct.get(k)
        shape = tuple(custom[k])
        if target is None:
            problems.append(f"{k} missing from 'instruct'")
        elif tuple(target) == shape:
            continue
        elif (
            k == FIRST_CONV
            and len(shape) == 4
            and shape[1] == LATENT_CHANNELS
            and target[1] > shape[1]
            and (
                target[0],
                *target[2:],
            )
            == (shape[0], *shape[2:])
        ):
            narrowed[k] = (1, 0, LATENT_CHANNELS)  # the fine-tune's delta into the noisy-latent channels
        else:
            problems.append(f"{k}: {shape} vs {tuple(target)}")
    if problems:
        raise InstructInputError(
            f"the fine-tune does not fit the instruct model ({len(problems)} weights, e.g. {problems[0]}). "
            "Merge a fine-tune of the instruct model's own family (SD1.5 fine-tune into an SD1.5 instruct model, "
            "SDXL into SDXL / CosXL Edit)."
        )
    return MergePlan(tuple(custom), narrowed)


def _shapes(patches: Mapping[str, list]) -> dict[str, tuple]:
    return {k: tuple(v[0][0].shape) for k, v in patches.items()}


def merge_into_instruct(instruct: Any, custom: Any, base: Any, strength: float) -> Any:
    """A clone of ``instruct`` patched with ``strength · (custom − base)``; the inputs are not touched."""
    if not is_instruct_model(instruct):
        raise InstructInputError(
            f"'instruct' must be an 8-channel instruct model (load it with 'Instruct UNet Loader'); it is a plain "
            f"{family_of(instruct)} model. Connect your fine-tune to 'custom' and its base model to 'base'."
        )
    families = {"instruct": family_of(instruct), "custom": family_of(custom), "base": family_of(base)}
    if len(set(families.values())) != 1:
        listed = ", ".join(f"'{name}' is {fam}" for name, fam in families.items())
        raise InstructInputError(
            f"the models are of different families ({listed}). Merge a fine-tune of the instruct model's own "
            "family with its base (SD1.5 fine-tune and SD1.5 into an SD1.5 instruct model; SDXL into SDXL / CosXL Edit)."
        )
    custom_kp = custom.get_key_patches(PREFIX)
    base_kp = base.get_key_patches(PREFIX)
    instruct_shapes = {k: tuple(v.shape) for k, v in instruct.model_state_dict(PREFIX).items()}
    plan = plan_merge(instruct_shapes, _shapes(custom_kp), _shapes(base_kp))
    merged = instruct.clone()
    if strength == 0.0:
        return merged
    for k in plan.keys:
        offset: Optional[tuple[int, int, int]] = plan.narrowed.get(k)
        key = k if offset is None else (k, offset)
        merged.add_patches({key: custom_kp[k]}, strength, 1.0)
        merged.add_patches({key: base_kp[k]}, -strength, 1.0)
    return merged
