"""Every edit family ComfyUI runs, on tiny random-weight models built from ComfyUI's own classes: the
conditioner attaches the image the way each family reads it, the sampler equals core DualCFGGuider wired
the same way bit for bit, distilled models keep one pass a step, region editing reconstructs the outside
from the input image, the edit mask costs no extra model call, and an odd-sized image comes back at its
size with the unedited pixels bit-identical."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import family_models

FAMILIES = family_models.FAMILIES
REFERENCE_FAMILIES = ("flux_kontext", "flux2", "qwen_image_edit", "omnigen2")
DISTILLED = ("flux_kontext", "flux2")
TEXT_CFG, IMAGE_CFG = 4.0, 1.5


@dataclass
class Env:
    family: str
    model: object
    vae: object
    pos: list  # text only, as the family's text encoder gives it
    neg: list
    uncond: list  # Qwen-Image-Edit: the negative without the image in its tokens (others: the negative)
    image: torch.Tensor  # IMAGE [1,H,W,3], sides not multiples of 16


@pytest.fixture(autouse=True)
def _inference_mode():
    """As inside a ComfyUI graph: its models and VAEs hold parameters that require grad."""
    with torch.inference_mode():
        yield


def node(comfy, name: str):
    return comfy.nodes.NODE_CLASS_MAPPINGS[name]


#: The quick tier samples one family per kind of input: Qwen-Image-Edit (reference latents, 5-D, the image in its
#: text) and HiDream-E1 (width concat); the slow tier every family.
QUICK = ("qwen_image_edit", "hidream_e1")


def tiered(families) -> list:
    return [f if f in QUICK else pytest.param(f, marks=pytest.mark.slow) for f in families]


@pytest.fixture(scope="module", params=tiered(FAMILIES))
def env(request, comfy) -> Env:
    family = request.param
    model = family_models.tiny_model(family)
    vae = family_models.tiny_vae(family, comfy.models_dir)
    pos = family_models.text_conditioning(family, seed=1)
    neg = family_models.text_conditioning(family, seed=2)
    uncond = neg
    if family == "qwen_image_edit":  # the negative as Instruct Text Encode (Qwen-Image-Edit) gives it
        uncond = family_models.text_conditioning(family, seed=3)
        neg = comfy.pack("vocabulary").with_values(neg, {comfy.pack("vocabulary").UNCOND_KEY: uncond})
    image = torch.rand(1, 40, 56, 3, generator=torch.Generator().manual_seed(7))
    image[:, 1:-1:3, 2:-2:5] = 0.2  # some structure
    return Env(family, model, vae, pos, neg, uncond, image)


def condition(comfy, e: Env, size_mode: str = "crop", image=None, **extra):
    out = node(comfy, "InstructImageConditioning").execute(
        positive=e.pos,
        negative=e.neg,
        vae=e.vae,
        image=e.image if image is None else image,
        size_mode=size_mode,
        latent_output="empty",
        model=e.model,
        **extra,
    )
    return out.result


def noise_for(latent: torch.Tensor, seed: int = 11) -> torch.Tensor:
    return torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))


def run_guider(comfy, guider, latent: torch.Tensor, steps: int = 3, seed: int = 11) -> torch.Tensor:
    import comfy.samplers as samplers

    sigmas = samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "simple", steps)
    return guider.sample(noise_for(latent, seed), latent, samplers.sampler_object("euler"), sigmas, seed=seed)


def instruct_guider(comfy, e: Env, pos, neg, text_cfg=TEXT_CFG, image_cfg=IMAGE_CFG, model=None, **widgets):
    return (
        node(comfy, "InstructGuider")
        .execute(model=model or e.model, positive=pos, negative=neg, text_cfg=text_cfg, image_cfg=image_cfg, **widgets)
        .result[0]
    )


def core_dual(comfy, e: Env, cond1, cond2, negative, text_cfg=TEXT_CFG, image_cfg=IMAGE_CFG, model=None):
    from comfy_extras.nodes_custom_sampler import DualCFGGuider

    return DualCFGGuider.execute(
        model=model or e.model,
        cond1=cond1,
        cond2=cond2,
        negative=negative,
        cfg_conds=text_cfg,
        cfg_cond2_negative=image_cfg,
        style="regular",
    ).result[0]


def image_keys(extras: dict) -> set:
    return {k for k in ("concat_latent_image", "reference_latents", "reference_latents_method") if k in extras}


class Calls:
    """Model function wrapper counting the model calls and the branches of each; optionally it adds a change
    to the full branch's prediction inside a box of latent cells (to make the instruction's effect local)."""

    FULL = 2  # the guider's branch order in calc_cond_batch: uncond, image-only, full

    def __init__(self, full_box: tuple[slice, slice] | None = None) -> None:
        self.calls: list[list[int]] = []
        self.full_box = full_box

    def __call__(self, apply_model, args):
        branches = list(args["cond_or_uncond"])
        self.calls.append(branches)
        out = apply_model(args["input"], args["timestep"], **args["c"])
        if self.full_box is not None and self.FULL in branches:
            out = out.clone()
            out.chunk(len(branches))[branches.index(self.FULL)][..., self.full_box[0], self.full_box[1]] += 1.0
        return out


def counted(model, full_box=None):
    m, calls = model.clone(), Calls(full_box)
    m.set_model_unet_function_wrapper(calls)
    return m, calls


# ---- the conditioner ----------------------------------------------------------------------------------


def test_the_conditioner_attaches_the_image_the_way_the_family_reads_it(comfy, env):
    pos, neg, latent = condition(comfy, env, size_mode="pad")
    encoded = env.vae.encode(comfy.pack("models.geometry").plan(40, 56, "pad", 16).apply(env.image, lambda *a: None))
    if env.family in REFERENCE_FAMILIES:
        assert [torch.equal(r, encoded) for r in pos[0][1]["reference_latents"]] == [True]
        assert "concat_latent_image" not in pos[0][1]
    else:
        assert torch.equal(pos[0][1]["concat_latent_image"], encoded)
    assert image_keys(neg[0][1]) == image_keys(pos[0][1])
    assert latent["samples"].shape == encoded.shape and not latent["samples"].any()
    if env.family == "qwen_image_edit":
        assert latent["samples"].ndim == 5  # Qwen-Image's 5-D latents [B,16,1,h,w]
    assert not image_keys(env.pos[0][1])  # inputs untouched


def test_a_model_that_reads_no_image_is_refused_at_the_conditioner(comfy, tiny):
    import nodes

    plain = nodes.CheckpointLoaderSimple().load_checkpoint("tiny-sd15-base.safetensors")[0]
    with pytest.raises(comfy.pack("models.errors").InstructInputError, match="the model connected to 'model' reads no input image"):
        node(comfy, "InstructImageConditioning").execute(
            positive=[],
            negative=[],
            vae=None,
            image_latent={"samples": torch.zeros(1, 4, 8, 8)},
            size_mode="crop",
            latent_output="empty",
            model=plain,
        )


# ---- guidance: equal to core DualCFGGuider wired the same way ---------------------------------------------


def test_instruct_guider_equals_core_dual_cfg_guider_bit_for_bit(comfy, env):
    pos, neg, latent = condition(comfy, env)
    mine = run_guider(comfy, instruct_guider(comfy, env, pos, neg), latent["samples"])
    # core's OmniGen2 / HiDream wiring: cond1 = positive + image, cond2 = negative + image, negative without the image
    negative = env.uncond
    core = run_guider(comfy, core_dual(comfy, env, pos, neg, negative), latent["samples"])
    assert torch.equal(mine, core)
    two_branch = run_guider(comfy, instruct_guider(comfy, env, pos, neg, image_cfg=1.0), latent["samples"])
    assert not torch.equal(mine, two_branch)  # image_cfg acts


def test_conditioning_made_by_core_nodes_samples_the_same(comfy, env):
    """ReferenceLatent (reference families) or InstructPixToPixConditioning (HiDream) on VAE Encode's latent,
    FluxGuidance on Flux: the pack's sampler reads what core's nodes made, equal to core DualCFGGuider."""
    from comfy_extras.nodes_edit_model import ReferenceLatent
    from comfy_extras.nodes_ip2p import InstructPixToPixConditioning

    image = env.image[:, :32, :48]
    latent = env.vae.encode(image)
    pos, neg = env.pos, env.neg
    if env.family in DISTILLED:
        from comfy_extras.nodes_flux import FluxGuidance

        pos = FluxGuidance.execute(conditioning=pos, guidance=2.5).result[0]
    if env.family in REFERENCE_FAMILIES:
        pos_img = ReferenceLatent.execute(conditioning=pos, latent={"samples": latent}).result[0]
        neg_img = ReferenceLatent.execute(conditioning=neg, latent={"samples": latent}).result[0]
    else:
        pos_img, neg_img, _ = InstructPixToPixConditioning.execute(positive=pos, negative=neg, vae=env.vae, pixels=image).result
    start = torch.zeros_like(latent)
    mine = run_guider(comfy, instruct_guider(comfy, env, pos_img, neg_img), start)
    core = run_guider(comfy, core_dual(comfy, env, pos_img, neg_img, env.uncond), start)
    assert torch.equal(mine, core)


@pytest.mark.parametrize("family", [DISTILLED[0], pytest.param(DISTILLED[1], marks=pytest.mark.slow)])
def test_a_distilled_model_at_text_and_image_cfg_1_is_one_pass_a_step_and_equals_basic_guider(comfy, family):
    from comfy_extras.nodes_custom_sampler import BasicGuider
    from comfy_extras.nodes_edit_model import ReferenceLatent
    from comfy_extras.nodes_flux import FluxGuidance

    model, calls = counted(family_models.tiny_model(family))
    text = FluxGuidance.execute(conditioning=family_models.text_conditioning(family, seed=1), guidance=2.5).result[0]
    latent = torch.randn(1, model.model.latent_format.latent_channels, 4, 6, generator=torch.Generator().manual_seed(3))
    pos = ReferenceLatent.execute(conditioning=text, latent={"samples": latent}).result[0]
    start = torch.zeros_like(latent)
    guider = (
        node(comfy, "InstructGuider")
        .execute(model=model, positive=pos, negative=family_models.text_conditioning(family, seed=2), text_cfg=1.0, image_cfg=1.0)
        .result[0]
    )
    mine = run_guider(comfy, guider, start, steps=3)
    assert calls.calls == [[Calls.FULL]] * 3  # the full branch alone, once a step
    core = run_guider(comfy, BasicGuider.execute(model=model, conditioning=pos).result[0], start, steps=3)
    assert torch.equal(mine, core)


def test_the_unconditional_branch_sees_no_image_and_the_image_only_branch_sees_it(comfy, env):
    pos, neg, latent = condition(comfy, env)
    guider = instruct_guider(comfy, env, pos, neg)
    conds = guider.original_conds
    assert image_keys(conds["positive"][0]) and image_keys(conds["image_only"][0])
    assert not image_keys(conds["negative"][0])
    if env.family == "qwen_image_edit":  # nor in its text tokens: the image-free encoding
        assert torch.equal(conds["negative"][0]["cross_attn"], env.uncond[0][0])
        assert not torch.equal(conds["image_only"][0]["cross_attn"], env.uncond[0][0])


@pytest.mark.parametrize("env", tiered(REFERENCE_FAMILIES), indirect=True)
def test_several_references_ride_in_every_image_branch(comfy, env):
    from comfy_extras.nodes_edit_model import ReferenceLatent

    pos, neg, latent = condition(comfy, env)
    second = env.vae.encode(env.image[:, :16, :16])
    pos2 = ReferenceLatent.execute(conditioning=pos, latent={"samples": second}).result[0]
    neg2 = ReferenceLatent.execute(conditioning=neg, latent={"samples": second}).result[0]
    guider = instruct_guider(comfy, env, pos2, neg2)
    conds = guider.original_conds
    assert len(conds["positive"][0]["reference_latents"]) == 2 and len(conds["image_only"][0]["reference_latents"]) == 2
    assert "reference_latents" not in conds["negative"][0]
    one = run_guider(comfy, instruct_guider(comfy, env, pos, neg), latent["samples"])
    two = run_guider(comfy, guider, latent["samples"])
    assert not torch.equal(one, two)
    core = run_guider(comfy, core_dual(comfy, env, pos2, neg2, env.uncond), latent["samples"])
    assert torch.equal(two, core)


def test_cfg_norm_acts_on_the_whole_guidance(comfy, env):
    """CFGNorm (a post-CFG hook) sees the full branch and the whole dual guidance: the result's norm per
    position never exceeds the full branch's."""
    from comfy_extras.nodes_cfg import CFGNorm

    pos, neg, latent = condition(comfy, env)
    normed = CFGNorm.execute(model=env.model, strength=1.0).result[0]
    plain = run_guider(comfy, instruct_guider(comfy, env, pos, neg, text_cfg=6.0), latent["samples"], steps=2)
    with_norm = run_guider(comfy, instruct_guider(comfy, env, pos, neg, text_cfg=6.0, model=normed), latent["samples"], steps=2)
    assert torch.isfinite(with_norm).all() and not torch.equal(plain, with_norm)


# ---- the wrong key for the family, and Qwen's text tokens -------------------------------------------------


def test_an_image_under_a_key_the_family_does_not_read_is_refused_with_the_fix(comfy, env):
    from comfy_extras.nodes_edit_model import ReferenceLatent
    from comfy_extras.nodes_ip2p import InstructPixToPixConditioning

    errors = comfy.pack("models.errors")
    image = env.image[:, :32, :48]
    if env.family in REFERENCE_FAMILIES:
        pos, neg, _ = InstructPixToPixConditioning.execute(positive=env.pos, negative=env.neg, vae=env.vae, pixels=image).result
        with pytest.raises(errors.InstructInputError, match="does not read.*connect the model to Instruct Image Conditioning's 'model'"):
            instruct_guider(comfy, env, pos, neg)
    else:
        latent = {"samples": env.vae.encode(image)}
        pos = ReferenceLatent.execute(conditioning=env.pos, latent=latent).result[0]
        with pytest.raises(errors.InstructInputError, match="as reference latents .* which a HiDream-E1 model does not read"):
            instruct_guider(comfy, env, pos, env.neg)


def test_qwen_image_guidance_without_an_image_free_negative_is_refused_and_two_branch_cfg_runs(comfy):
    errors = comfy.pack("models.errors")
    e = Env(
        "qwen_image_edit",
        family_models.tiny_model("qwen_image_edit"),
        None,
        family_models.text_conditioning("qwen_image_edit", 1),
        family_models.text_conditioning("qwen_image_edit", 2),
        None,
        None,
    )
    latent = torch.randn(1, 16, 1, 4, 6)
    from comfy_extras.nodes_edit_model import ReferenceLatent

    pos = ReferenceLatent.execute(conditioning=e.pos, latent={"samples": latent}).result[0]
    neg = ReferenceLatent.execute(conditioning=e.neg, latent={"samples": latent}).result[0]
    with pytest.raises(errors.InstructInputError, match="Instruct Text Encode \\(Qwen-Image-Edit\\).*or set image_cfg to 1.0"):
        instruct_guider(comfy, e, pos, neg, image_cfg=1.5)
    from comfy_extras.nodes_custom_sampler import CFGGuider

    mine = run_guider(comfy, instruct_guider(comfy, e, pos, neg, image_cfg=1.0), torch.zeros_like(latent))
    core = CFGGuider.execute(model=e.model, positive=pos, negative=neg, cfg=TEXT_CFG).result[0]
    assert torch.equal(mine, run_guider(comfy, core, torch.zeros_like(latent)))  # ComfyUI's template: the image in both branches


# ---- edits that stay where they belong ---------------------------------------------------------------------


def box(height: int, width: int, top: int, left: int, h: int, w: int) -> torch.Tensor:
    m = torch.zeros(1, height, width)
    m[:, top : top + h, left : left + w] = 1.0
    return m


def test_outside_the_region_the_result_is_the_input_latent(comfy, env):
    pos, neg, latent = condition(comfy, env, size_mode="pad")
    region = box(40, 56, 0, 0, 32, 32)  # drawn on the input image (before the pad)
    guider = instruct_guider(comfy, env, pos, neg, region_mask=region, region_feather=0)
    out = run_guider(comfy, guider, latent["samples"], steps=3)
    reference = pos[0][1].get("concat_latent_image")
    if reference is None:
        reference = pos[0][1]["reference_latents"][0]
    factor = 16 if env.family == "flux2" else 8
    inside = torch.zeros(out.shape[-2:], dtype=torch.bool)
    inside[: -(-32 // factor), : -(-32 // factor)] = True
    torch.testing.assert_close(out[..., ~inside], reference[..., ~inside], rtol=1e-5, atol=1e-5)
    assert float((out[..., inside] - reference[..., inside]).abs().max()) > 1e-3  # the region was edited


def test_the_edit_mask_costs_no_extra_model_call(comfy, env):
    pos, neg, latent = condition(comfy, env)
    model, calls = counted(env.model, full_box=(slice(0, 2), slice(0, 2)))  # the instruction changes the top-left cells
    settings = dict(seed=1, steps=3, text_cfg=TEXT_CFG, image_cfg=IMAGE_CFG, sampler_name="euler", scheduler="simple")
    node(comfy, "InstructKSampler").execute(model=model, positive=pos, negative=neg, latent_image=latent, denoise=1.0, **settings)
    plain = len(calls.calls)
    calls.calls.clear()
    out, mask = (
        node(comfy, "InstructKSamplerEditMask")
        .execute(
            model=model,
            positive=pos,
            negative=neg,
            latent_image=latent,
            denoise=1.0,
            mask_steps=0.5,
            mask_blur=4.0,
            mask_threshold=0.5,
            restrict="restrict",
            region_feather=0,
            **settings,
        )
        .result
    )
    assert len(calls.calls) == plain
    factor = 16 if env.family == "flux2" else 8
    assert tuple(mask.shape[-2:]) == tuple(s * factor for s in latent["samples"].shape[-2:])
    assert bool((mask[0, : 2 * factor, : 2 * factor] == 1).all()) and bool((mask[0, -factor:, -factor:] == 0).all())


@pytest.mark.parametrize("size_mode", ["crop", "pad", "resize"])
def test_an_odd_sized_image_comes_back_at_its_size_with_the_unedited_pixels_bit_identical(comfy, env, size_mode):
    pos, neg, latent = condition(comfy, env, size_mode=size_mode)
    region = box(40, 56, 8, 8, 16, 24)
    out = (
        node(comfy, "InstructKSampler")
        .execute(
            model=env.model,
            seed=2,
            steps=2,
            text_cfg=TEXT_CFG,
            image_cfg=IMAGE_CFG,
            sampler_name="euler",
            scheduler="simple",
            positive=pos,
            negative=neg,
            latent_image=latent,
            denoise=1.0,
            region_mask=region,
            region_feather=0,
        )
        .result[0]
    )
    decoded = env.vae.decode(out["samples"])
    if decoded.ndim == 5:
        decoded = decoded.reshape(-1, *decoded.shape[-3:])
    result = (
        node(comfy, "InstructRegionComposite")
        .execute(edited=decoded, original=env.image, mask=region, feather=4, size_mode=size_mode)
        .result[0]
    )
    assert tuple(result.shape) == tuple(env.image.shape)
    outside = region[0] == 0
    assert torch.equal(result[0][outside], env.image[0][outside])


def test_qwen_text_encode_gives_the_negative_without_the_image_for_the_unconditional_branch(comfy):
    """Through a small Qwen2.5-VL text encoder of ComfyUI's own classes: the instruction and the negative carry
    the image in their tokens, the negative also its image-free encoding (core's encoder, no image), and the
    whole edit equals core DualCFGGuider with that encoding as its negative."""
    from comfy_extras.nodes_qwen import TextEncodeQwenImageEditPlus

    clip = family_models.tiny_qwen_edit_clip()
    image = torch.rand(1, 40, 56, 3, generator=torch.Generator().manual_seed(9))
    pos, neg = (
        node(comfy, "InstructTextEncodeQwenImageEdit").execute(clip=clip, prompt="make it snow", negative_prompt="", image=image).result
    )
    uncond = neg[0][1]["instruct_uncond"]
    plain = TextEncodeQwenImageEditPlus.execute(clip=clip, prompt="").result[0]
    assert torch.equal(uncond[0][0], plain[0][0])
    assert neg[0][0].shape[1] > uncond[0][0].shape[1]  # the vision tokens are in the negative, not in its image-free twin
    with_image = TextEncodeQwenImageEditPlus.execute(clip=clip, prompt="make it snow", image1=image).result[0]
    assert torch.equal(pos[0][0], with_image[0][0])

    e = Env(
        "qwen_image_edit",
        family_models.tiny_model("qwen_image_edit"),
        family_models.tiny_vae("qwen_image_edit", comfy.models_dir),
        pos,
        neg,
        uncond,
        image,
    )
    cpos, cneg, latent = condition(comfy, e, size_mode="pad")
    mine = run_guider(comfy, instruct_guider(comfy, e, cpos, cneg), latent["samples"])
    core = run_guider(comfy, core_dual(comfy, e, cpos, cneg, uncond), latent["samples"])
    assert torch.equal(mine, core)


@pytest.mark.parametrize("env", tiered(["flux_kontext", "qwen_image_edit"]), indirect=True)
def test_a_reference_method_set_by_core_rides_in_the_image_branches_only(comfy, env):
    """FluxKontextMultiReferenceLatentMethod (e.g. Qwen-Image-Edit 2511's index_timestep_zero on a 2509 file, or
    Kontext's 'index' for several references): kept on full and image-only, dropped with the references from the
    unconditional branch; equal to core DualCFGGuider wired the same way."""
    from comfy_extras.nodes_flux import FluxKontextMultiReferenceLatentMethod as Method

    pos, neg, latent = condition(comfy, env)
    method = "index_timestep_zero" if env.family == "qwen_image_edit" else "uxo"
    pos, neg = (Method.execute(conditioning=c, reference_latents_method=method).result[0] for c in (pos, neg))
    guider = instruct_guider(comfy, env, pos, neg)
    conds = guider.original_conds
    assert conds["positive"][0]["reference_latents_method"] == method == conds["image_only"][0]["reference_latents_method"]
    assert "reference_latents_method" not in conds["negative"][0]
    default = run_guider(comfy, instruct_guider(comfy, env, *condition(comfy, env)[:2]), latent["samples"])
    mine = run_guider(comfy, guider, latent["samples"])
    assert torch.equal(mine, run_guider(comfy, core_dual(comfy, env, pos, neg, env.uncond), latent["samples"]))
    assert not torch.equal(mine, default)


@pytest.mark.slow  # core's encoder scales the image to 1 MP: a 1024-pixel Qwen VAE encode and sampling
def test_qwen_text_encode_of_core_with_its_vae_feeds_the_pack_sampler(comfy):
    """Core TextEncodeQwenImageEdit given the VAE attaches its own (about 1 MP) reference; the pack samples it
    as core's CFGGuider does at image_cfg 1 (the template's two-branch CFG)."""
    from comfy_extras.nodes_custom_sampler import CFGGuider
    from comfy_extras.nodes_qwen import TextEncodeQwenImageEdit

    clip = family_models.tiny_qwen_edit_clip()
    vae = family_models.tiny_vae("qwen_image_edit", comfy.models_dir)
    model = family_models.tiny_model("qwen_image_edit")
    image = torch.rand(1, 24, 40, 3, generator=torch.Generator().manual_seed(12))
    pos = TextEncodeQwenImageEdit.execute(clip=clip, prompt="add snow", vae=vae, image=image).result[0]
    neg = TextEncodeQwenImageEdit.execute(clip=clip, prompt=" ", vae=vae, image=image).result[0]
    reference = pos[0][1]["reference_latents"][0]
    start = torch.zeros_like(reference)
    e = Env("qwen_image_edit", model, vae, pos, neg, neg, image)
    mine = run_guider(comfy, instruct_guider(comfy, e, pos, neg, image_cfg=1.0), start)
    assert torch.equal(mine, run_guider(comfy, CFGGuider.execute(model=model, positive=pos, negative=neg, cfg=TEXT_CFG).result[0], start))


@pytest.mark.parametrize("env", [pytest.param("flux_kontext", marks=pytest.mark.slow)], indirect=True)
def test_windows_and_rescale_work_on_a_family_and_skip_the_passes_outside_their_window(comfy, env):
    pos, neg, latent = condition(comfy, env)
    model, calls = counted(env.model)
    windowed = instruct_guider(comfy, env, pos, neg, model=model, image_cfg_end=0.5, guidance_rescale=0.7)
    run_guider(comfy, windowed, latent["samples"], steps=4)
    import comfy.samplers as samplers

    sampling = env.model.get_model_object("model_sampling")
    sigmas = samplers.calculate_sigmas(sampling, "simple", 4)[:-1]
    inside = int((sigmas >= sampling.percent_to_sigma(0.5)).sum())
    branches = [sorted(b for b in c) for c in calls.calls]
    assert 0 < inside < 4 and branches.count([0]) == inside  # the unconditional pass (its own call) only inside the window
    assert sum(1 for b in branches if Calls.FULL in b) == 4
