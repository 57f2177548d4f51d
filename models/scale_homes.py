"""Where each guidance scale acts, decided in one place and said in one message.

Three nodes hold scales: the sampler (text_cfg, image_cfg), IPAdapter-Instruct Apply (instruct_cfg,
image_cfg of its 4-branch guidance) and, implicitly, the model (an edit model samples its own text and
image guidance). Which of them act depends on all three at once, so only the code that samples knows:
Instruct KSampler / Instruct Guider, or IPAdapter-Instruct's patch under a core sampler. Both ask
:func:`unused_scales` and log what it returns, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..vocabulary import IPGuidance


@dataclass(frozen=True)
class ScaleUse:
    """The facts that decide where the scales act."""

    sampler: str  # the sampling node's name ("a core sampler" when it is not the pack's)
    reads_image: bool  # the model is an edit model (it reads an input image)
    adapter: Optional[IPGuidance]  # what an IPAdapter-Instruct apply asked for, if one is on the model
    image_cfg: float = 1.0  # the sampler's image_cfg (the pack's samplers only)
    image_window: bool = False  # the sampler's image_cfg window is not the whole sampling
    pack_sampler: bool = True  # False under core samplers, which sample plain CFG

    @property
    def four_branch(self) -> bool:
        """The 4-branch guidance is what gets sampled."""
        return bool(self.adapter and self.adapter.four_branch and self.pack_sampler and not self.reads_image)


def unused_scales(use: ScaleUse) -> Optional[str]:
    """One message naming every scale set where it has no effect, why, and where that scale lives; None when all act."""
    unused: list[str] = []
    adapter = use.adapter
    if adapter is not None and adapter.four_branch and not use.four_branch:
        if use.reads_image:
            why = "an edit model samples its own text and image guidance (this sampler's text_cfg and image_cfg)"
        else:
            why = "the 4-branch guidance is sampled only by Instruct KSampler / Instruct Guider; this one samples plain CFG"
        unused.append(
            f"IPAdapter-Instruct Apply's 4-branch guidance (instruct_cfg={adapter.instruct_cfg}, image_cfg={adapter.image_cfg}): {why}"
        )
    elif adapter is not None and not adapter.four_branch and adapter.scales_set:
        unused.append(
            f"IPAdapter-Instruct Apply's instruct_cfg={adapter.instruct_cfg} / image_cfg={adapter.image_cfg}: its guidance is "
            "'simple' (plain CFG at the sampler's cfg / text_cfg); choose guidance 'four_branch' to use them"
        )
    if use.pack_sampler and not use.reads_image and (use.image_cfg != 1.0 or use.image_window):
        window = " and its image_cfg_start/end window" if use.image_window else ""
        if use.four_branch:
            why = f"the image scale of IPAdapter-Instruct's 4-branch guidance is Apply's image_cfg ({adapter.image_cfg})"
        else:
            why = "this model reads no input image (image_cfg acts on edit models); set it to 1.0 here"
        unused.append(f"{use.sampler}'s image_cfg={use.image_cfg}{window}: {why}")
    if not unused:
        return None
    return f"{use.sampler}: scales that are not used: " + "; ".join(unused) + "."
