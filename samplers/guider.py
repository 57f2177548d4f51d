"""The dual-CFG guider: three branches built from positive/negative, evaluated through ComfyUI.

It is a ``comfy.samplers.CFGGuider``, so everything ComfyUI's sampling does for a guider keeps
working: model loading and offloading, ControlNet/GLIGEN/area/mask conds, LoRA and hook patches,
wrappers, ``calc_cond_batch``'s memory-aware batching, and the cfg hooks (which here see the whole
three-way guidance, not only its image half).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import torch

import comfy.model_sampling
import comfy.samplers

from ..models.errors import InstructError, InstructInputError
from ..models.geometry import Fit
from ..models.model_kind import family_of
from ..models.scale_homes import ScaleUse, unused_scales
from ..vocabulary import FIT_KEY, IP_GUIDANCE_ATTACHMENT, TOKEN_SETS_KEY, Branch
from .branches import build_branches, input_image
from .dual_cfg import (
    BRANCHES,
    EVERYTHING,
    FULL,
    IMAGE_ONLY,
    UNCOND,
    Chain,
    ScaleSchedule,
    StepScales,
    equivalent_cfg_pair,
    rescale_guidance,
)
from .regions import (
    EditMaskAccumulator,
    EditMaskOptions,
    check_batch,
    feather_inward,
    latent_feather,
    region_in_latent,
    require_painted,
)

log = logging.getLogger(__name__)

#: ``self.conds`` keys of the branches (``UNCOND`` stays "negative", as ComfyUI expects).
_COND_KEYS = {UNCOND: "negative", IMAGE_ONLY: "image_only", EVERYTHING: "everything", FULL: "positive"}

FOUR_BRANCHES = (UNCOND, IMAGE_ONLY, EVERYTHING, FULL)

#: Pre-CFG hooks (``sampler_pre_cfg_function``) that only read the guidance direction (cond − uncond),
#: the cond and the scale, by the module of the core node that sets them: the whole multi-branch
#: guidance, written as one CFG pair (``equivalent_cfg_pair``), is exactly what they act on.
#: APG: adaptive projected guidance; FreSca: frequency scaling; LatentApplyOperationCFG.
PAIR_SAFE_PRE_CFG_MODULES = frozenset({"nodes_apg", "nodes_fresca", "nodes_latent"})


def hook_node(fn: Any) -> str:
    """'APG (comfy_extras.nodes_apg)' for a hook closure defined in a node's execute."""
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{qualname.split('.')[0]} ({module})"


@dataclass(frozen=True)
class RegionOptions:
    """Region-restricted editing: a MASK the size of the input image and its inward feather (pixels)."""

    mask: torch.Tensor
    feather: int = 16


@dataclass(frozen=True)
class GuiderOptions:
    """Everything a node sets on the instruct guider, as one typed object (built from its widgets)."""

    schedule: ScaleSchedule
    guidance_rescale: float = 0.0
    region: Optional[RegionOptions] = None
    edit_mask: Optional[EditMaskOptions] = None


@dataclass
class _RegionRun:
    """Per-sampling state of region-restricted editing and of the edit mask.

    ``reference`` is the input image's latent in the model's latent space; outside the blend mask
    every model call sees ``noise_scaling(σ, noise, reference)`` (the input's noised trajectory,
    with the sampling's own noise) and returns ``reference``, as ComfyUI's inpainting does.
    """

    noise: torch.Tensor
    reference: Optional[torch.Tensor]
    fixed: Optional[torch.Tensor]  # a given region, [B,1,h,w] blend weights
    factor: int = 8  # pixels per latent cell
    edit: Optional[EditMaskAccumulator] = None
    options: Optional[EditMaskOptions] = None
    window_sigma: float = 0.0  # the edit mask accumulates while σ > window_sigma
    restricted: Optional[torch.Tensor] = None  # after the window: the given region times the edit mask, made once

    def accumulating(self, sigma: float) -> bool:
        return self.edit is not None and sigma > self.window_sigma

    def blend_mask(self, sigma: float) -> Optional[torch.Tensor]:
        if self.options is None or not self.options.restrict or sigma > self.window_sigma:
            return self.fixed
        if self.restricted is None:
            soft = self.edit.mask(self.options.blur, self.options.threshold, self.factor)
            if soft is None:  # nothing was accumulated: nothing to restrict to
                return self.fixed
            derived = feather_inward(soft, latent_feather(self.options.feather, self.factor))
            self.restricted = derived if self.fixed is None else self.fixed * derived
        return self.restricted


def _check_image_batch(family: Any, conds: dict[str, list], latent_batch: int) -> None:
    """Explicit broadcast rule: an image batch of 1 goes with any latent batch, N only with N."""
    if family is None:
        return
    for branch in (FULL, IMAGE_ONLY):
        for cond in conds.get(_COND_KEYS[branch], []):  # ComfyUI's converted conds: one dict each
            for image in family.images(cond):
                n = int(image.shape[0])
                if n != 1 and n != latent_batch:
                    raise InstructInputError(
                        f"the input image batch has {n} images but the latent batch has {latent_batch}. "
                        "Use one image (it is applied to every latent), or as many images as latents: match the "
                        "'batch_size' of the latent, or feed the latent from 'Instruct Image Conditioning'."
                    )


def _rescale_alpha(model_sampling: Any, sigma: torch.Tensor) -> Any:
    """α of ``rescale_guidance``: 1 for ε-prediction, σ_d²/(σ²+σ_d²) for v-prediction families."""
    if isinstance(model_sampling, comfy.model_sampling.V_PREDICTION):
        sigma_data = model_sampling.sigma_data
        s = sigma.reshape((-1,) + (1,) * 3)
        return sigma_data**2 / (s**2 + sigma_data**2)
    return 1.0


def _check_something_to_start_from(sigmas: torch.Tensor, latent_image: torch.Tensor) -> None:
    """No step to run returns the starting latent as it is; refuse that when it is empty (a flat grey image)."""
    if sigmas.shape[-1] >= 2 or bool(latent_image.any()):
        return
    raise InstructInputError(
        "no sampling step is left (denoise 0, or a sigma schedule with fewer than 2 values), so the output would "
        "be the starting latent, and it is empty (all zero): there is nothing to start from. Raise 'denoise' above 0 "
        "(1.0 edits from pure noise), or start from the input image: set 'latent_output' of Instruct Image Conditioning "
        "to 'image'."
    )


class InstructDualCFGGuider(comfy.samplers.CFGGuider):
    """The instruct guidance over ComfyUI's conds, skipping zero-weight branches.

    Edit model (any family, ``models.families``): ``u + s_I·(i − u) + s_T·(c − i)``. Plain model:
    ordinary CFG at text_cfg, or, when an IPAdapter-Instruct apply node asked for it, the reference's
    4-branch guidance ``u + s_img·(i − u) + g·(e − i) + s_instr·(c − e)`` with g = text_cfg. Each
    evaluated batch carries, in its transformer_options, the IPAdapter-Instruct token set of every
    branch, so an adapter patch routes tokens by branch without any global state.
    """

    def __init__(self, model_patcher: Any, schedule: ScaleSchedule, guidance_rescale: float = 0.0, node: str = "InstructGuider"):
        super().__init__(model_patcher)
        self.schedule = schedule
        self.guidance_rescale = float(guidance_rescale)
        self.node = node
        self.family = family_of(model_patcher)
        self.ip_guidance = model_patcher.get_attachment(IP_GUIDANCE_ATTACHMENT)
        use = ScaleUse(
            node,
            self.family is not None,
            self.ip_guidance,
            schedule.image_cfg,
            (schedule.image_start, schedule.image_end) != (0.0, 1.0),
        )
        self.four_branch = use.four_branch
        # The token set each branch attends to: on an edit model the image-only branch is unconditional for
        # the adapter (its image is the model's own input image); in the 4-branch mode every branch has its own set.
        if self.family is not None:
            self.branches, token_sets = BRANCHES, (Branch.UNCOND, Branch.UNCOND, Branch.FULL)
        elif self.four_branch:
            self.branches, token_sets = FOUR_BRANCHES, FOUR_BRANCHES
        else:
            self.branches, token_sets = (UNCOND, FULL), (Branch.UNCOND, Branch.FULL)
        self.token_sets = token_sets
        message = unused_scales(use)
        if message:
            log.warning("%s", message)
        self.cfg = schedule.text_cfg  # what generic code reading ``guider.cfg`` should see
        self.region_mask: Optional[torch.Tensor] = None
        self.region_feather = 0
        self.edit_mask_options: Optional[EditMaskOptions] = None
        #: After sampling with ``track_edit_mask``: the edit mask [B,1,h,w] in latent cells (None if no step ran).
        self.edit_mask: Optional[torch.Tensor] = None
        self._run: Optional[_RegionRun] = None
        self._warned_hooks: set[int] = set()
        self._constant: Optional[tuple[Chain, frozenset]] = None

    @property
    def pixel_factor(self) -> int:
        """Pixels per latent cell of this model's latent space."""
        return self.family.vae_factor if self.family is not None else 8

    def _require_edit_model(self, what: str) -> None:
        if self.family is None:
            raise InstructInputError(
                f"{what} needs an edit model and the input image of 'Instruct Image Conditioning' (the outside of the "
                "region is reconstructed from it, the edit mask compares the branches with and without the instruction); "
                "this model reads no input image. Load an edit model (InstructPix2Pix/CosXL Edit with 'Instruct UNet "
                "Loader'; Flux Kontext, Flux.2, Qwen-Image-Edit, OmniGen2, HiDream-E1 with 'Load Diffusion Model')."
            )

    def set_region(self, mask: Optional[torch.Tensor], feather: int = 0) -> None:
        """Restrict the edit to ``mask`` (a MASK the size of the input image): outside it every step
        sees the input image's noised latent, so the outside is reconstructed, not regenerated."""
        if mask is not None:
            self._require_edit_model("'region_mask'")
            require_painted(mask, "region_mask")
        self.region_mask, self.region_feather = mask, int(feather)

    def track_edit_mask(self, options: EditMaskOptions) -> None:
        """Derive the edit mask from the full and image-only branches during sampling (no extra model call)."""
        self._require_edit_model("the edit mask")
        self.edit_mask_options = options

    def set_conds(self, positive: list, negative: list) -> None:
        needs_uncond = self.schedule.image_cfg != 1.0
        branches = build_branches(self.family, positive, negative, four_branch=self.four_branch, needs_uncond=needs_uncond)
        self.inner_set_conds({_COND_KEYS[name]: conds for name, conds in branches.items()})

    def _step_chain(self, timestep: torch.Tensor) -> tuple[Chain, frozenset]:
        """The step's guidance and the branches it needs; made once per guider when no window changes them."""
        if self.schedule.is_constant:
            if self._constant is None:
                chain = self._chain(timestep)
                self._constant = (chain, chain.needed_branches())
            return self._constant
        chain = self._chain(timestep)
        return chain, chain.needed_branches()

    def _chain(self, timestep: torch.Tensor) -> Chain:
        if self.schedule.is_constant:
            scales = StepScales(self.schedule.text_cfg, self.schedule.image_cfg)
        else:
            ms = self.inner_model.model_sampling
            scales = self.schedule.at(float(timestep.reshape(-1)[0]), ms.percent_to_sigma)
        if self.family is not None:
            return scales.chain()
        if self.four_branch:
            g = self.ip_guidance
            return Chain(FOUR_BRANCHES, (g.image_cfg, scales.text, g.instruct_cfg), main=1)
        return Chain((UNCOND, FULL), (scales.text,))

    def predict_noise(self, x: torch.Tensor, timestep: torch.Tensor, model_options: dict = {}, seed: Optional[int] = None) -> torch.Tensor:  # noqa: B006 (core's signature)
        chain, needed = self._step_chain(timestep)
        if model_options.get("disable_cfg1_optimization", False):
            needed = frozenset(self.branches)
        run = self._run
        tracking = run is not None and run.accumulating(float(timestep.reshape(-1)[0]))
        if tracking:  # both are evaluated anyway unless image_cfg == text_cfg or a window switched one off
            needed = needed | {FULL, IMAGE_ONLY}
        conds = [self.conds.get(_COND_KEYS[name]) if name in needed else None for name in self.branches]
        options = {
            **model_options,
            "transformer_options": {**model_options.get("transformer_options", {}), TOKEN_SETS_KEY: self.token_sets},
        }
        out = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, options)
        preds = {name: (out[k] if conds[k] is not None else None) for k, name in enumerate(self.branches)}
        if tracking:
            run.edit.add(preds[FULL], preds[IMAGE_ONLY])
        combined = chain.combine(preds)

        reference = next(preds[name] for name in reversed(self.branches) if preds[name] is not None)
        if self.guidance_rescale > 0.0:
            alpha = _rescale_alpha(self.inner_model.model_sampling, timestep)
            combined = rescale_guidance(combined, reference, x, alpha, self.guidance_rescale)

        pre_cfg = self._pre_cfg_hooks(model_options.get("sampler_pre_cfg_function", []))
        if pre_cfg or "sampler_cfg_function" in model_options or model_options.get("sampler_post_cfg_function"):
            cond_pred, uncond_pred, k = self._cfg_pair(combined, reference, chain, preds)
            if pre_cfg:
                out = [cond_pred, uncond_pred]
                pair_conds = [self.conds.get("positive"), self.conds.get("negative")]
                for fn in pre_cfg:  # as core's sampling_function calls them, on the pair below
                    args = {"conds": pair_conds, "conds_out": out, "cond_scale": k, "timestep": timestep, "input": x}
                    out = fn({**args, "sigma": timestep, "model": self.inner_model, "model_options": model_options})
                cond_pred, uncond_pred = out[0], out[1]
            return comfy.samplers.cfg_function(
                self.inner_model,
                cond_pred,
                uncond_pred,
                k,
                x,
                timestep,
                model_options=model_options,
                cond=self.conds.get("positive"),
                uncond=self.conds.get("negative"),
            )
        return combined

    def _cfg_pair(self, combined: torch.Tensor, reference: torch.Tensor, chain: Chain, preds: dict) -> tuple:
        """The (cond, uncond, scale) the cfg hooks see: ordinary CFG's own pair when that is what is
        sampled, else the whole multi-branch guidance as one equivalent pair."""
        if self.branches == (UNCOND, FULL) and self.guidance_rescale == 0.0 and preds[UNCOND] is not None:
            return preds[FULL], preds[UNCOND], chain.scales[0]
        uncond_eff, k = equivalent_cfg_pair(combined, reference, chain)
        return reference, uncond_eff, k

    def _pre_cfg_hooks(self, hooks: list) -> list:
        """All of them for ordinary CFG; for three or four branches those in
        ``PAIR_SAFE_PRE_CFG_MODULES``. The others (TCFG, for one, rebuilds the unconditional
        prediction itself, which the multi-branch guidance does not have) are skipped, with one
        warning per hook naming its node."""
        if self.branches == (UNCOND, FULL):
            return list(hooks)
        kept = []
        for fn in hooks:
            if (getattr(fn, "__module__", "") or "").rsplit(".", 1)[-1] in PAIR_SAFE_PRE_CFG_MODULES:
                kept.append(fn)
            elif id(fn) not in self._warned_hooks:
                self._warned_hooks.add(id(fn))
                log.warning(
                    "%s: the pre-CFG hook of %s is not applied: it works on one unconditional prediction, and the "
                    "%d-branch guidance has none (APG, FreSca and LatentApplyOperationCFG do apply). Sample it with "
                    "core KSampler / CFGGuider instead.",
                    self.node,
                    hook_node(fn),
                    len(self.branches),
                )
        return kept

    def outer_predict_noise(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        model_options: dict = {},
        seed: Optional[int] = None,  # noqa: B006
    ) -> torch.Tensor:
        """Region blend around the whole prediction (wrappers included), like ComfyUI's inpainting.

        Why not core's own hook (a LATENT ``noise_mask`` → ``denoise_mask``, shaped per step by
        ``model_options["denoise_mask_function"]``, applied in ``KSamplerX0Inpaint``): it cannot give
        these results exactly. Core blends towards the *sampled* LATENT (``latent_image``: its noised
        ``scale_latent_inpaint(σ, noise, latent_image)`` into x, ``latent_image`` into the output),
        while region editing blends towards the *input image's* latent (``reference``, the processed
        ``concat_latent_image`` or reference latent) whatever latent is sampled; the default is an empty latent at denoise
        1.0, where core would pull the outside towards zeros. Handing core the reference as the sampled
        latent instead changes the start (``noise_scaling(σ_max, noise, latent_image)`` adds it), so the
        inside would differ too. The blend mask changes mid-run (edit-mask restriction),
        which ``denoise_mask_function`` could express, but only with a ``denoise_mask`` present on every
        step. The conditioner's ``mask`` input is core's path (noise mask on its LATENT output).
        """
        run = self._run
        mask = run.blend_mask(float(timestep.reshape(-1)[0])) if run is not None else None
        if mask is None:
            return super().outer_predict_noise(x, timestep, model_options, seed)
        if x.ndim == 5:  # [B,C,T,h,w] (Qwen-Image's latents): one mask for every frame
            mask = mask.unsqueeze(2)
        # Blended in fp32 whatever the latent's dtype (a half LATENT gives half noise and x): feathered
        # weights and the input's latent must not be rounded to half on the way.
        keep = 1.0 - mask
        noised = self.inner_model.scale_latent_inpaint(x=x.float(), sigma=timestep, noise=run.noise, latent_image=run.reference)
        out = super().outer_predict_noise((x.float() * mask + noised * keep).to(x.dtype), timestep, model_options, seed)
        return (out.float() * mask + run.reference * keep).to(out.dtype)

    def _recorded_fit(self) -> Optional[Fit]:
        """How Instruct Image Conditioning fitted the input image, when it made the conditioning."""
        return next((c[FIT_KEY] for c in self.original_conds.get("positive", []) if c.get(FIT_KEY) is not None), None)

    def _input_image(self, noise: torch.Tensor) -> torch.Tensor:
        spatial = tuple(noise.shape[2:]) if noise.ndim == 4 else tuple(noise.shape[-2:])
        image = input_image(self.family, self.original_conds.get("positive", []), spatial, int(noise.shape[1]))
        if image is None:
            f = self.pixel_factor
            sizes = ", ".join(
                f"{lat.shape[-1] * f}x{lat.shape[-2] * f}" for c in self.original_conds.get("positive", []) for lat in self.family.images(c)
            )
            raise InstructInputError(
                f"the latent to sample is {noise.shape[-1] * f}x{noise.shape[-2] * f} but the input image is {sizes or 'missing'}; "
                "region editing reconstructs the outside from the input image, so sample the latent output of 'Instruct Image "
                "Conditioning' (same size as the image)."
            )
        return image

    def _start_run(self, noise: torch.Tensor, sigmas: torch.Tensor, latent_shapes: Optional[list]) -> Optional[_RegionRun]:
        if self.region_mask is None and self.edit_mask_options is None:
            return None
        if latent_shapes is not None and len(latent_shapes) > 1:
            raise InstructInputError("region editing and the edit mask do not support nested (multi-part) latents.")
        reference = None
        fixed = None
        factor = self.pixel_factor
        if self.region_mask is not None or self.edit_mask_options.restrict:
            image = self._input_image(noise)
            reference = self.inner_model.process_latent_in(image.to(noise.device, torch.float32)).expand_as(noise).contiguous()
        if self.region_mask is not None:
            fit = self._recorded_fit()
            hw = tuple(noise.shape[-2:])
            fixed = region_in_latent(self.region_mask, hw, self.region_feather, "region_mask", factor, fit).to(noise.device)
            require_painted(fixed, "region_mask", cropped=True)
        run = _RegionRun(noise=noise.float(), reference=reference, fixed=fixed, factor=factor)
        if self.edit_mask_options is not None:
            steps = int(sigmas.shape[-1]) - 1
            k = self.edit_mask_options.window_steps(steps)
            run.edit, run.options, run.window_sigma = EditMaskAccumulator(), self.edit_mask_options, float(sigmas[k])
            if self.edit_mask_options.restrict and k >= steps:
                log.info("%s: the edit mask accumulates over every step, so no step is left to restrict", self.node)
        return run

    def inner_sample(self, noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed, **kwargs):
        self._run = self._start_run(noise, sigmas, kwargs.get("latent_shapes"))
        try:
            return super().inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed, **kwargs)
        finally:
            run, self._run = self._run, None
            if run is not None and run.edit is not None:
                self.edit_mask = run.edit.mask(run.options.blur, run.options.threshold, run.factor)

    def sample(
        self,
        noise: torch.Tensor,
        latent_image: torch.Tensor,
        sampler: Any,
        sigmas: torch.Tensor,
        denoise_mask=None,
        callback=None,
        disable_pbar: bool = False,
        seed: Optional[int] = None,
    ) -> torch.Tensor:
        try:
            _check_image_batch(self.family, self.original_conds, int(noise.shape[0]))
            _check_something_to_start_from(sigmas, latent_image)
            if self.region_mask is not None:
                masks = self.region_mask.reshape((-1,) + tuple(self.region_mask.shape[-2:])).shape[0]
                check_batch(int(masks), int(noise.shape[0]), "region_mask")
            self.edit_mask = None
            return super().sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        except InstructError as err:  # core's sampler nodes run this guider outside the node that made it
            raise err.at_node(self.node)


def build_guider(model_patcher: Any, positive: list, negative: list, options: GuiderOptions, node: str) -> InstructDualCFGGuider:
    """The guider a node hands to sampling, set up from its typed options; ``node`` names it in logs and errors."""
    guider = InstructDualCFGGuider(model_patcher, options.schedule, options.guidance_rescale, node=node)
    guider.set_conds(positive, negative)
    if options.region is not None:
        guider.set_region(options.region.mask, options.region.feather)
    if options.edit_mask is not None:
        guider.track_edit_mask(options.edit_mask)
    return guider
