"""ControlNet in every branch on the edit families ComfyUI has ControlNets for (Flux.1 Kontext, Qwen-Image-Edit):
a tiny ControlNet built and wrapped as ComfyUI's loaders do (``family_models.tiny_controlnet``), applied with core
ControlNetApplyAdvanced before or after Instruct Image Conditioning, reaches the unconditional, image-only and full
branches, and the Instruct Guider equals core DualCFGGuider wired the same way bit for bit."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import family_models

TEXT_CFG, IMAGE_CFG = 4.0, 1.5
STEPS = 2
UNCOND, IMAGE_ONLY, FULL = 0, 1, 2  # the guider's branch order in calc_cond_batch
#: (family, ControlNet kind) of every tiny ControlNet.
CASES = [(family, kind) for family, kinds in family_models.CONTROLNET_KINDS.items() for kind in kinds]
IMAGE_KEYS = ("reference_latents", "reference_latents_method", "concat_latent_image")


@dataclass
class Env:
    family: str
    model: object
    vae: object
    pos: list  # text only
    neg: list  # text only (Qwen-Image-Edit: carrying its image-free encoding, as Instruct Text Encode gives it)
    uncond: list  # the text of the unconditional branch (Qwen-Image-Edit: the image-free encoding)
    image: torch.Tensor  # the input image
    hint: torch.Tensor  # the ControlNet's image


@pytest.fixture(autouse=True)
def _inference_mode():
    """As inside a ComfyUI graph: its models and VAEs hold parameters that require grad."""
    with torch.inference_mode():
        yield


@pytest.fixture(scope="module")
def envs(comfy):
    """One Env per family, built on first use."""
    built: dict[str, Env] = {}

    def get(family: str) -> Env:
        if family not in built:
            pos = family_models.text_conditioning(family, seed=1)
            neg = uncond = family_models.text_conditioning(family, seed=2)
            if family == "qwen_image_edit":
                vocabulary = comfy.pack("vocabulary")
                uncond = family_models.text_conditioning(family, seed=3)
                neg = vocabulary.with_values(neg, {vocabulary.UNCOND_KEY: uncond})
            image = torch.rand(1, 40, 56, 3, generator=torch.Generator().manual_seed(7))
            hint = torch.zeros(1, 40, 56, 3)
            hint[:, 8:30, 12:44] = 1.0  # a bright box, the kind of map a ControlNet reads
            built[family] = Env(
                family, family_models.tiny_model(family), family_models.tiny_vae(family, comfy.models_dir), pos, neg, uncond, image, hint
            )
        return built[family]

    return get


@pytest.fixture(scope="module")
def runs():
    """Results shared between the cases: per family the Instruct Guider's result without a ControlNet, per
    (family, kind, order) its result with one."""
    return {}


def condition(comfy, e: Env, pos: list, neg: list) -> tuple[list, list, dict]:
    return (
        comfy.nodes.NODE_CLASS_MAPPINGS["InstructImageConditioning"]
        .execute(positive=pos, negative=neg, vae=e.vae, image=e.image, size_mode="crop", latent_output="empty", model=e.model)
        .result
    )


def apply_controlnet(e: Env, control_net, pos: list, neg: list) -> tuple[list, list]:
    import nodes

    # The VAE encodes the hint for the latent-input ControlNets (InstantX); core ignores it for the others (XLabs).
    return nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, control_net, e.hint, 1.0, 0.0, 1.0, vae=e.vae)


def without_image(comfy, e: Env, negative: list) -> list:
    """The unconditional branch as core DualCFGGuider's ``negative``: the negative with everything it carries
    (the ControlNet), without the image (Qwen-Image-Edit: its image-free text encoding in place of its text)."""
    drop = IMAGE_KEYS + (comfy.pack("vocabulary").UNCOND_KEY,)
    out = []
    for tensor, extras in negative:
        kept = {k: v for k, v in extras.items() if k not in drop}
        if e.family == "qwen_image_edit":
            (tensor, text_extras), *_ = e.uncond
            kept.update(text_extras)
        out.append([tensor, kept])
    return out


class ControlRecorder:
    """Model function wrapper: per model call, its branches and whether each branch's slice of every control
    tensor the call received is non-zero."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], list[bool]]] = []

    def __call__(self, apply_model, args):
        branches = list(args["cond_or_uncond"])
        control = args["c"].get("control")
        got = [False] * len(branches)
        if control is not None:
            tensors = [t for key in ("input", "middle", "output") for t in control.get(key, []) if t is not None]
            if tensors:
                slices = [[t.chunk(len(branches))[k] for t in tensors] for k in range(len(branches))]
                got = [all(bool(s.abs().sum() > 0) for s in per_branch) for per_branch in slices]
        self.calls.append((branches, got))
        return apply_model(args["input"], args["timestep"], **args["c"])

    def branches_with_control(self) -> list[int]:
        return sorted(b for branches, got in self.calls for b, ok in zip(branches, got) if ok)

    def branches(self) -> list[int]:
        return sorted(b for branches, _ in self.calls for b in branches)


def recorded(model):
    m, recorder = model.clone(), ControlRecorder()
    m.set_model_unet_function_wrapper(recorder)
    return m, recorder


def run_guider(guider, latent: torch.Tensor, seed: int = 11) -> torch.Tensor:
    import comfy.samplers as samplers

    sigmas = samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "simple", STEPS)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return guider.sample(noise, latent, samplers.sampler_object("euler"), sigmas, seed=seed)


def instruct(comfy, model, pos: list, neg: list):
    node = comfy.nodes.NODE_CLASS_MAPPINGS["InstructGuider"]
    return node.execute(model=model, positive=pos, negative=neg, text_cfg=TEXT_CFG, image_cfg=IMAGE_CFG).result[0]


def core_dual(model, cond1: list, cond2: list, negative: list):
    from comfy_extras.nodes_custom_sampler import DualCFGGuider

    return DualCFGGuider.execute(
        model=model, cond1=cond1, cond2=cond2, negative=negative, cfg_conds=TEXT_CFG, cfg_cond2_negative=IMAGE_CFG, style="regular"
    ).result[0]


@pytest.mark.parametrize(
    "family,kind",
    [pytest.param(f, k, marks=() if n == 0 else pytest.mark.slow, id=f"{f}-{k}") for n, (f, k) in enumerate(CASES)],
)
@pytest.mark.parametrize("order", ["controlnet_first", pytest.param("image_first", marks=pytest.mark.slow)])
def test_controlnet_reaches_every_branch_and_equals_core_dual_cfg_guider(comfy, envs, runs, family, kind, order):
    e = envs(family)
    control_net = family_models.tiny_controlnet(family, kind=kind)
    if order == "controlnet_first":  # text → ControlNet → Instruct Image Conditioning
        pos_cn, neg_cn = apply_controlnet(e, control_net, e.pos, e.neg)
        pos, neg, latent = condition(comfy, e, pos_cn, neg_cn)
        negative = without_image(comfy, e, neg_cn)
    else:  # text → Instruct Image Conditioning → ControlNet
        pos_img, neg_img, latent = condition(comfy, e, e.pos, e.neg)
        pos, neg = apply_controlnet(e, control_net, pos_img, neg_img)
        negative = without_image(comfy, e, neg)
    applied = pos[0][1]["control"]
    assert neg[0][1]["control"] is applied and negative[0][1]["control"] is applied
    assert not any(k in negative[0][1] for k in IMAGE_KEYS) and any(k in neg[0][1] for k in IMAGE_KEYS)
    start = latent["samples"]

    model, mine_calls = recorded(e.model)
    mine = run_guider(instruct(comfy, model, pos, neg), start)
    assert mine_calls.branches() == sorted([UNCOND, IMAGE_ONLY, FULL] * STEPS)  # every branch, every step
    assert mine_calls.branches_with_control() == mine_calls.branches(), f"a branch without the control: {mine_calls.calls}"

    model, core_calls = recorded(e.model)
    core = run_guider(core_dual(model, pos, neg, negative), start)
    assert core_calls.calls == mine_calls.calls  # the same batches, the control in each
    assert torch.equal(mine, core)

    # The check can fail: core wired with a negative that lacks the ControlNet samples its uncond without it.
    model, lacking_calls = recorded(e.model)
    lacking_negative = [[t, {k: v for k, v in x.items() if k not in ("control", "control_apply_to_uncond")}] for t, x in negative]
    lacking = run_guider(core_dual(model, pos, neg, lacking_negative), start)
    assert UNCOND not in lacking_calls.branches_with_control() and not torch.equal(lacking, mine)

    if family not in runs:
        plain_pos, plain_neg, _ = condition(comfy, e, e.pos, e.neg)
        runs[family] = run_guider(instruct(comfy, e.model, plain_pos, plain_neg), start)
    assert not torch.equal(mine, runs[family])  # the ControlNet acts

    runs[(family, kind, order)] = mine
    other = runs.get((family, kind, "image_first" if order == "controlnet_first" else "controlnet_first"))
    if other is not None:  # before or after the conditioner: the same sampling
        assert torch.equal(mine, other)


def test_a_family_without_a_controlnet_class_is_refused():
    with pytest.raises(ValueError, match="no ControlNet class for hidream_e1"):
        family_models.tiny_controlnet("hidream_e1")
    with pytest.raises(ValueError, match="kinds"):
        family_models.tiny_controlnet("qwen_image_edit", kind="xlabs")
