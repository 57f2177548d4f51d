"""The InstructPix2Pix dual-guidance combination, as pure tensor math.

    out = e(∅,∅) + s_I · (e(I,∅) − e(∅,∅)) + s_T · (e(I,T) − e(I,∅))

Expanded, the three branch coefficients are s_T (full), s_I − s_T (image-only) and 1 − s_I
(unconditional). They sum to 1, so the combination is affine and can be applied to ComfyUI's
denoised (x0) predictions exactly as to noise predictions. A branch whose coefficient is exactly
zero does not influence the result and is not evaluated.

Nothing here imports ComfyUI: the guider (``samplers/guider.py``) feeds these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional

import torch

from ..vocabulary import Branch

#: Branch names, in the order the guider hands conds to ComfyUI's ``calc_cond_batch``. The order is
#: core ``DualCFGGuider``'s ([negative, middle, positive]) so that identical settings give identical
#: batches, and therefore identical images.
UNCOND = Branch.UNCOND
IMAGE_ONLY = Branch.IMAGE_ONLY
EVERYTHING = Branch.EVERYTHING  # IP-Adapter-Instruct's fourth branch (instruction "everything")
FULL = Branch.FULL
BRANCHES: tuple[Branch, ...] = (UNCOND, IMAGE_ONLY, FULL)


@dataclass(frozen=True)
class Chain:
    """A guidance of the form ``b0 + a1·(b1 − b0) + a2·(b2 − b1) + …`` over named branches.

    Branches run from the least to the most conditioned; ``scales[k]`` weighs ``b[k+1] − b[k]``.
    InstructPix2Pix is (uncond, image_only, full) with (s_I, s_T); ordinary CFG is (uncond, full)
    with (cfg,); IP-Adapter-Instruct's 4-branch mode is (uncond, image_only, everything, full) with
    (s_img, g, s_instr). Branch k's weight is ``a_k − a_{k+1}`` (a_0 = 1, a_n = 0): the weights sum
    to 1, so the combination is affine and works on denoised predictions.
    """

    branches: tuple[str, ...]
    scales: tuple[float, ...]
    main: int = -1  # the scale a hook should see as "the" CFG scale

    def coefficients(self) -> dict[str, float]:
        a = (1.0, *self.scales, 0.0)
        return {name: a[k] - a[k + 1] for k, name in enumerate(self.branches)}

    def needed_branches(self) -> frozenset[str]:
        needed = frozenset(name for name, c in self.coefficients().items() if c != 0.0)
        return needed if needed else frozenset((self.branches[-1],))

    def combine(self, preds: Mapping[str, Optional[torch.Tensor]]) -> torch.Tensor:
        """Evaluated in chain order; a skipped branch (weight 0) is stood in for by its nearest
        evaluated neighbour (left first), which makes its differences exactly 0.0."""
        values = [preds.get(name) for name in self.branches]
        if all(v is None for v in values):
            raise ValueError("guidance combination needs at least one evaluated branch")
        filled = []
        for k, v in enumerate(values):
            if v is None:
                left = next((filled[j] for j in range(k - 1, -1, -1) if filled[j] is not None), None)
                v = left if left is not None else next(x for x in values[k + 1 :] if x is not None)
            filled.append(v)
        out = filled[0]
        for k, scale in enumerate(self.scales):
            out = out + (filled[k + 1] - filled[k]) * scale
        return out

    def pair_scale(self) -> float:
        """A scale k ≠ 1 for ``equivalent_cfg_pair`` (the main one when it is not 1), or 1.0."""
        order = [self.scales[self.main]] + list(reversed(self.scales))
        return next((k for k in order if not math.isclose(k, 1.0)), 1.0)


@dataclass(frozen=True)
class StepScales:
    """The two guidance scales in force at one sampling step."""

    text: float
    image: float

    def chain(self) -> Chain:
        return Chain(BRANCHES, (self.image, self.text))

    def coefficients(self) -> dict[str, float]:
        """Weight of each branch in the combined prediction (they sum to 1)."""
        return self.chain().coefficients()

    def needed_branches(self) -> frozenset[str]:
        """Branches whose coefficient is not zero; at least one is always needed."""
        return self.chain().needed_branches()


def combine(preds: Mapping[str, Optional[torch.Tensor]], scales: "StepScales | Chain") -> torch.Tensor:
    """``u + s_I·(i − u) + s_T·(c − i)``, evaluated in that order (core's order)."""
    chain = scales.chain() if isinstance(scales, StepScales) else scales
    return chain.combine(preds)


def equivalent_cfg_pair(combined: torch.Tensor, reference: torch.Tensor, scales: "StepScales | Chain") -> tuple[torch.Tensor, float]:
    """Express a multi-branch result as one ordinary CFG pair ``(reference, uncond_eff, k)``.

    ComfyUI's ``sampler_cfg_function`` hooks (RescaleCFG and friends) expect one cond, one
    uncond and one scale. Core ``DualCFGGuider`` shows them only the image pair, so the text term
    escapes them. Here they get the *whole* guidance: ``uncond_eff + k·(reference − uncond_eff)``
    equals ``combined`` exactly (in exact arithmetic), with ``k`` the text scale (another scale
    when the text scale is 1, where one pair cannot carry any guidance).
    """
    chain = scales.chain() if isinstance(scales, StepScales) else scales
    k = chain.pair_scale()
    if math.isclose(k, 1.0):
        # No guidance at all: the combination is the reference branch itself.
        return reference, 1.0
    # float64: the division by (1 − k) would otherwise amplify float32 round-off.
    uncond_eff = (combined.double() - reference.double() * k) / (1.0 - k)
    return uncond_eff.to(combined.dtype), k


def rescale_guidance(combined: torch.Tensor, text_branch: torch.Tensor, x: torch.Tensor, alpha: float, multiplier: float) -> torch.Tensor:
    """diffusers' ``guidance_rescale`` (Lin et al. 2023, §3.4), applied to denoised predictions.

    diffusers rescales the model-output-space guided prediction to the per-sample std of the text
    branch's prediction. A model output is ``β·(α·x − denoised)`` for a σ-dependent α (1 for
    ε-prediction, σ_d²/(σ²+σ_d²) for v-prediction) and β; β cancels in the std ratio, so the rescale
    is done on ``y = α·x − denoised`` and mapped back.
    """
    if multiplier == 0.0:
        return combined
    y_cfg = x * alpha - combined
    y_text = x * alpha - text_branch
    dims = tuple(range(1, y_cfg.ndim))
    std_text = y_text.std(dim=dims, keepdim=True)
    std_cfg = y_cfg.std(dim=dims, keepdim=True)
    y_rescaled = y_cfg * (std_text / std_cfg)
    y_final = multiplier * y_rescaled + (1.0 - multiplier) * y_cfg
    return x * alpha - y_final


@dataclass(frozen=True)
class ScaleSchedule:
    """Text and image scales with a [start, end] window each, in sampling percent (0 = first step).

    Outside its window a scale is 1.0, i.e. that guidance is switched off for those steps, and the
    branch it needed is skipped. Windows are compared in σ, like ComfyUI's own start/end percents.
    """

    text_cfg: float
    image_cfg: float
    text_start: float = 0.0
    text_end: float = 1.0
    image_start: float = 0.0
    image_end: float = 1.0

    def __post_init__(self) -> None:
        for name, start, end in (("text_cfg", self.text_start, self.text_end), ("image_cfg", self.image_start, self.image_end)):
            if not (0.0 <= start <= end <= 1.0):
                raise ValueError(f"{name} window start={start} end={end} is invalid: need 0 <= start <= end <= 1")

    def at(self, sigma: float, percent_to_sigma) -> StepScales:
        """Scales in force at ``sigma`` (``percent_to_sigma`` maps 0..1 to σ, decreasing)."""
        return StepScales(
            text=self.text_cfg if _inside(sigma, self.text_start, self.text_end, percent_to_sigma) else 1.0,
            image=self.image_cfg if _inside(sigma, self.image_start, self.image_end, percent_to_sigma) else 1.0,
        )

    @property
    def is_constant(self) -> bool:
        return (self.text_start, self.text_end, self.image_start, self.image_end) == (0.0, 1.0, 0.0, 1.0)


def _inside(sigma: float, start: float, end: float, percent_to_sigma) -> bool:
    if start <= 0.0 and end >= 1.0:
        return True
    sigma_start = percent_to_sigma(start)  # larger σ: earlier
    sigma_end = percent_to_sigma(end)
    return sigma_end <= sigma <= sigma_start
