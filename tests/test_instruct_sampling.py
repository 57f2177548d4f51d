"""Instruct KSampler / Instruct Guider on a real ComfyUI: equal to core DualCFGGuider, branch
skipping counted, ControlNet captured in every branch, hooks, schedules, bad inputs."""

from __future__ import annotations

import pytest
import torch

from instruct_sampling import encode_edit, load_tiny_instruct, with_unet_wrapper
from instruct_sampling import instruct_ksampler as sample

CKPT = "checkpoints/tiny-ip2p-sd15.safetensors"


@pytest.fixture(scope="module")
def loaded(comfy, tiny):
    return load_tiny_instruct(comfy)


@pytest.fixture(scope="module")
def conds(comfy, loaded):
    return encode_edit(comfy, loaded.clip, loaded.vae, "make it winter")


class CallRecorder:
    """A UNet function wrapper that records what every batched UNet call evaluated."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, apply_model, args):
        c = args["c"]
        control = c.get("control")
        chunk_norms = None
        if control is not None:
            first = next(t for t in control["output"] if t is not None)
            chunk_norms = [float(x.norm()) for x in first.chunk(len(args["cond_or_uncond"]))]
        self.calls.append(
            {
                "branches": list(args["cond_or_uncond"]),
                "batch": int(args["input"].shape[0]),
                "control_chunk_norms": chunk_norms,
                "concat": c.get("c_concat"),
            }
        )
        return apply_model(args["input"], args["timestep"], **c)


def recorded(model):
    rec = CallRecorder()
    return with_unet_wrapper(model, rec), rec


def test_same_image_as_core_dual_cfg_guider_wired_equivalently(comfy, tiny):
    image = comfy.input_image("equal.png", seed=7)
    g = comfy.graph()
    ckpt = g.node("CheckpointLoaderSimple", id="ckpt", ckpt_name="tiny-ip2p-sd15.safetensors")
    img = g.node("LoadImage", id="img", image=image)
    pos = g.node("CLIPTextEncode", id="pos", clip=ckpt.out(1), text="turn it into a watercolor")
    neg = g.node("CLIPTextEncode", id="neg", clip=ckpt.out(1), text="blurry")
    # core: five nodes and the raw negative wired twice
    ip2p = g.node("InstructPixToPixConditioning", id="ip2p", positive=pos.out(0), negative=neg.out(0), vae=ckpt.out(2), pixels=img.out(0))
    guider = g.node(
        "DualCFGGuider",
        id="guider",
        model=ckpt.out(0),
        cond1=ip2p.out(0),
        cond2=ip2p.out(1),
        negative=neg.out(0),
        cfg_conds=7.5,
        cfg_cond2_negative=1.5,
        style="regular",
    )
    core = g.node(
        "SamplerCustomAdvanced",
        id="core",
        noise=g.node("RandomNoise", id="noise", noise_seed=11).out(0),
        guider=guider.out(0),
        sampler=g.node("KSamplerSelect", id="ks", sampler_name="euler").out(0),
        sigmas=g.node("BasicScheduler", id="bs", model=ckpt.out(0), scheduler="normal", steps=3, denoise=1.0).out(0),
        latent_image=ip2p.out(2),
    )
    # pack: loader → conditioner → sampler
    loader = g.node("InstructUNetLoader", id="iload", model_name=CKPT, weights="auto", prediction="auto", weight_dtype="default")
    icond = g.node(
        "InstructImageConditioning",
        id="icond",
        positive=pos.out(0),
        negative=neg.out(0),
        vae=loader.out(2),
        image=img.out(0),
        size_mode="crop",
        latent_output="empty",
    )
    mine = g.node(
        "InstructKSampler",
        id="mine",
        model=loader.out(0),
        seed=11,
        steps=3,
        text_cfg=7.5,
        image_cfg=1.5,
        sampler_name="euler",
        scheduler="normal",
        positive=icond.out(0),
        negative=icond.out(1),
        latent_image=icond.out(2),
        denoise=1.0,
    )
    for node_id, latent in (("dc", core.out(0)), ("dm", mine.out(0))):
        g.node(
            "SaveImage",
            id=f"save_{node_id}",
            images=g.node("VAEDecode", id=node_id, samples=latent, vae=ckpt.out(2)).out(0),
            filename_prefix=node_id,
        )
    result = comfy.run(g.finalize())
    core_latent = result.output("core")["samples"]
    mine_latent = result.output("mine")["samples"]
    assert torch.isfinite(mine_latent).all() and mine_latent.abs().max() > 0
    assert torch.equal(core_latent, mine_latent)
    assert torch.equal(result.output("dc"), result.output("dm"))


def test_controlnet_lora_and_the_three_nodes_in_one_graph(comfy, tiny, log_capture):
    """The user's graph: loader → LoRA → text → ControlNet → image conditioning → sampler; the
    recorder node captures the control signal of every batched UNet call inside the run."""
    image = comfy.input_image("graph.png", seed=3)
    g = comfy.graph()
    loader = g.node("InstructUNetLoader", id="load", model_name=CKPT, weights="auto", prediction="auto", weight_dtype="default")
    lora = g.node(
        "LoraLoader",
        id="lora",
        model=loader.out(0),
        clip=loader.out(1),
        lora_name="tiny-lora-sd15.safetensors",
        strength_model=1.0,
        strength_clip=1.0,
    )
    rec = g.node("InstructTestRecordUNetCalls", id="rec", model=lora.out(0))
    pos = g.node("CLIPTextEncode", id="pos", clip=lora.out(1), text="make it autumn")
    neg = g.node("CLIPTextEncode", id="neg", clip=lora.out(1), text="")
    img = g.node("LoadImage", id="img", image=image)
    cnl = g.node("ControlNetLoader", id="cnl", control_net_name="tiny-controlnet-sd15.safetensors")
    cna = g.node(
        "ControlNetApplyAdvanced",
        id="cna",
        positive=pos.out(0),
        negative=neg.out(0),
        control_net=cnl.out(0),
        image=img.out(0),
        strength=1.0,
        start_percent=0.0,
        end_percent=1.0,
    )
    cond = g.node(
        "InstructImageConditioning",
        id="cond",
        positive=cna.out(0),
        negative=cna.out(1),
        vae=loader.out(2),
        image=img.out(0),
        size_mode="crop",
        latent_output="empty",
    )
    ks = g.node(
        "InstructKSampler",
        id="ks",
        model=rec.out(0),
        seed=4,
        steps=2,
        text_cfg=7.5,
        image_cfg=1.5,
        sampler_name="euler_ancestral",
        scheduler="normal",
        positive=cond.out(0),
        negative=cond.out(1),
        latent_image=cond.out(2),
        denoise=1.0,
    )
    dec = g.node("VAEDecode", id="dec", samples=ks.out(0), vae=loader.out(2))
    g.node("SaveImage", id="save", images=dec.out(0), filename_prefix="graph")
    comfy.test_nodes.CALLS.clear()
    result = comfy.run(g.finalize())
    calls = list(comfy.test_nodes.CALLS)
    assert len(calls) == 2
    for call in calls:
        assert sorted(call["branches"]) == [0, 1, 2]
        assert call["control_chunk_norms"] and all(n > 0 for n in call["control_chunk_norms"])
    assert not [m for m in log_capture.messages() if "lora key not loaded" in m]
    assert len(result.output("lora").patches) == 3
    assert tuple(result.output("dec").shape) == (1, 64, 64, 3)


@pytest.mark.parametrize(
    "text_cfg,image_cfg,expected",
    [
        (7.5, 1.5, [0, 1, 2]),  # uncond, image-only, full
        (7.5, 1.0, [1, 2]),  # image_cfg 1: no unconditional pass
        (1.5, 1.5, [0, 2]),  # equal scales: no image-only pass
        (0.0, 1.5, [0, 1]),  # text_cfg 0: no full pass
        (1.0, 1.0, [2]),
    ],
)
def test_only_branches_with_nonzero_weight_are_evaluated(comfy, loaded, conds, text_cfg, image_cfg, expected):
    model, rec = recorded(loaded.model)
    sample(comfy, model, conds["pos"], conds["neg"], conds["latent"], text_cfg, image_cfg, steps=2)
    assert len(rec.calls) == 2  # one batched UNet call per step
    for call in rec.calls:
        assert sorted(call["branches"]) == expected
        assert call["batch"] == len(expected)


def test_unconditional_branch_sees_a_zero_image_and_the_others_the_input(comfy, loaded, conds):
    model, rec = recorded(loaded.model)
    sample(comfy, model, conds["pos"], conds["neg"], conds["latent"], steps=1)
    call = rec.calls[0]
    image_channels = call["concat"]
    assert image_channels.shape[1] == 4
    chunks = dict(zip(call["branches"], image_channels.chunk(3)))
    expected = conds["pos"][0][1]["concat_latent_image"]
    assert torch.count_nonzero(chunks[0]) == 0
    torch.testing.assert_close(chunks[1], expected)
    torch.testing.assert_close(chunks[2], expected)


def test_controlnet_reaches_all_three_branches(comfy, loaded, conds, tiny):
    import comfy.controlnet as comfy_controlnet
    import nodes

    cnet = comfy_controlnet.load_controlnet(str(tiny["controlnet"]))
    hint = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(9))
    pos, neg = nodes.ControlNetApplyAdvanced().apply_controlnet(conds["raw_pos"], conds["raw_neg"], cnet, hint, 1.0, 0.0, 1.0)
    cond_node = comfy.nodes.NODE_CLASS_MAPPINGS["InstructImageConditioning"]
    pos, neg, latent = cond_node.execute(
        positive=pos,
        negative=neg,
        vae=loaded.vae,
        image=conds["image"],
        size_mode="crop",
        latent_output="empty",
    ).result
    model, rec = recorded(loaded.model)
    with_cn = sample(comfy, model, pos, neg, latent, steps=2)
    for call in rec.calls:
        assert sorted(call["branches"]) == [0, 1, 2]
        assert call["control_chunk_norms"] is not None, "no control signal in the batched call"
        assert all(n > 0 for n in call["control_chunk_norms"]), "a branch got a zero control signal"
    without = sample(comfy, loaded.model, conds["pos"], conds["neg"], latent, steps=2)
    assert not torch.allclose(with_cn, without)


def test_controlnet_applied_after_the_conditioner_works_the_same(comfy, loaded, conds, tiny):
    import comfy.controlnet as comfy_controlnet
    import nodes

    cnet = comfy_controlnet.load_controlnet(str(tiny["controlnet"]))
    hint = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(9))
    before = nodes.ControlNetApplyAdvanced().apply_controlnet(conds["raw_pos"], conds["raw_neg"], cnet, hint, 1.0, 0.0, 1.0)
    cond_node = comfy.nodes.NODE_CLASS_MAPPINGS["InstructImageConditioning"]
    p1, n1, latent = cond_node.execute(
        positive=before[0],
        negative=before[1],
        vae=loaded.vae,
        image=conds["image"],
        size_mode="crop",
        latent_output="empty",
    ).result
    p2, n2 = nodes.ControlNetApplyAdvanced().apply_controlnet(conds["pos"], conds["neg"], cnet, hint, 1.0, 0.0, 1.0)
    torch.testing.assert_close(sample(comfy, loaded.model, p1, n1, latent), sample(comfy, loaded.model, p2, n2, latent))


def test_raw_negative_without_image_gets_the_image_for_its_image_only_branch(comfy, loaded, conds):
    """The classic miswiring (raw CLIPTextEncode negative) samples the same formula."""
    wired = sample(comfy, loaded.model, conds["pos"], conds["neg"], conds["latent"])
    raw = sample(comfy, loaded.model, conds["pos"], conds["raw_neg"], conds["latent"])
    torch.testing.assert_close(wired, raw, rtol=0, atol=0)


def test_cfg_hooks_see_the_whole_three_way_guidance(comfy, loaded, conds):
    seen = []

    def plain_cfg(args):
        seen.append(args)
        return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"]

    hooked = loaded.model.clone()
    hooked.set_model_sampler_cfg_function(plain_cfg)
    model, rec = recorded(hooked)
    with_hook = sample(comfy, model, conds["pos"], conds["neg"], conds["latent"], steps=2)
    without = sample(comfy, loaded.model, conds["pos"], conds["neg"], conds["latent"], steps=2)
    torch.testing.assert_close(with_hook, without, rtol=1e-4, atol=1e-4)  # float32 round-off of the pair
    assert seen and all(a["cond_scale"] == 7.5 for a in seen)


def test_rescale_cfg_and_guidance_rescale_change_the_result(comfy, loaded, conds):
    from comfy_extras.nodes_model_advanced import RescaleCFG

    base = sample(comfy, loaded.model, conds["pos"], conds["neg"], conds["latent"])
    rescaled_model = RescaleCFG().patch(loaded.model, 0.7)[0]
    with_rescale_cfg = sample(comfy, rescaled_model, conds["pos"], conds["neg"], conds["latent"])
    with_option = sample(comfy, loaded.model, conds["pos"], conds["neg"], conds["latent"], guidance_rescale=0.7)
    assert torch.isfinite(with_rescale_cfg).all() and torch.isfinite(with_option).all()
    assert not torch.allclose(base, with_rescale_cfg) and not torch.allclose(base, with_option)


def test_schedule_window_drops_the_branch_outside_it(comfy, loaded, conds):
    model, rec = recorded(loaded.model)
    sample(comfy, model, conds["pos"], conds["neg"], conds["latent"], steps=4, image_cfg_end=0.5)
    branch_sets = [sorted(c["branches"]) for c in rec.calls]
    assert branch_sets[0] == [0, 1, 2]
    assert branch_sets[-1] == [1, 2]  # image guidance off late: no unconditional pass


def test_guider_node_with_sampler_custom_advanced(comfy, loaded, conds):
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced

    import comfy.samplers as comfy_samplers

    guider = (
        comfy.nodes.NODE_CLASS_MAPPINGS["InstructGuider"]
        .execute(model=loaded.model, positive=conds["pos"], negative=conds["neg"], text_cfg=7.5, image_cfg=1.5)
        .result[0]
    )
    sigmas = comfy_samplers.calculate_sigmas(loaded.model.get_model_object("model_sampling"), "normal", 2)
    out = SamplerCustomAdvanced.execute(
        noise=Noise_RandomNoise(3),
        guider=guider,
        sampler=comfy_samplers.sampler_object("euler"),
        sigmas=sigmas,
        latent_image=conds["latent"],
    ).result[0]["samples"]
    torch.testing.assert_close(out, sample(comfy, loaded.model, conds["pos"], conds["neg"], conds["latent"]), rtol=0, atol=0)


def test_denoise_below_one_starts_from_the_encoded_image(comfy, loaded, conds):
    cond_node = comfy.nodes.NODE_CLASS_MAPPINGS["InstructImageConditioning"]
    pos, neg, latent = cond_node.execute(
        positive=conds["raw_pos"],
        negative=conds["raw_neg"],
        vae=loaded.vae,
        image=conds["image"],
        size_mode="crop",
        latent_output="image",
    ).result
    assert torch.count_nonzero(latent["samples"]) > 0
    node = comfy.nodes.NODE_CLASS_MAPPINGS["InstructKSampler"]
    out = node.execute(
        model=loaded.model,
        seed=1,
        steps=4,
        text_cfg=7.5,
        image_cfg=1.5,
        sampler_name="euler",
        scheduler="normal",
        positive=pos,
        negative=neg,
        latent_image=latent,
        denoise=0.0,
    ).result[0]
    torch.testing.assert_close(out["samples"], latent["samples"])  # denoise 0: nothing sampled


def test_progress_and_preview_callback_fire_every_step(comfy, loaded, conds):
    import comfy.utils as comfy_utils

    updates = []
    comfy_utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: updates.append((value, total)))
    try:
        sample(comfy, loaded.model, conds["pos"], conds["neg"], conds["latent"], steps=3)
    finally:
        comfy_utils.set_progress_bar_global_hook(None)
    assert (3, 3) in updates and len(updates) >= 3


def test_interruption_stops_sampling(comfy, loaded, conds):
    import comfy.model_management as mm

    def interrupt_on_first_call(apply_model, args):
        mm.interrupt_current_processing(True)
        return apply_model(args["input"], args["timestep"], **args["c"])

    model = loaded.model.clone()
    model.set_model_unet_function_wrapper(interrupt_on_first_call)
    import comfy.utils as comfy_utils

    comfy_utils.set_progress_bar_global_hook(lambda *a, **k: mm.throw_exception_if_processing_interrupted())
    try:
        with pytest.raises(mm.InterruptProcessingException):
            sample(comfy, model, conds["pos"], conds["neg"], conds["latent"], steps=3)
    finally:
        comfy_utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)


# ---- plain models and bad inputs -------------------------------------------------------------


def test_plain_model_with_plain_conds_is_ordinary_cfg(comfy, tiny, conds):
    import comfy.sd as comfy_sd

    import nodes

    model, clip, vae, _ = comfy_sd.load_checkpoint_guess_config(str(tiny["checkpoint_4ch"]), output_vae=False, output_clip=False)
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    mine = sample(comfy, model, conds["raw_pos"], conds["raw_neg"], latent, text_cfg=6.0, image_cfg=1.5)
    core = nodes.common_ksampler(model, 3, 2, 6.0, "euler", "normal", conds["raw_pos"], conds["raw_neg"], latent)[0]["samples"]
    assert torch.equal(mine, core)


def test_plain_model_with_an_image_latent_is_refused(comfy, tiny, conds):
    import comfy.sd as comfy_sd

    errors = comfy.pack("models.errors")
    model = comfy_sd.load_checkpoint_guess_config(str(tiny["checkpoint_4ch"]), output_vae=False, output_clip=False)[0]
    with pytest.raises(errors.InstructInputError, match="this model reads none.*would silently ignore the image.*Instruct UNet Loader"):
        sample(comfy, model, conds["pos"], conds["neg"], {"samples": torch.zeros(1, 4, 8, 8)})


def test_missing_image_latent_is_refused(comfy, loaded, conds):
    errors = comfy.pack("models.errors")
    with pytest.raises(errors.InstructInputError, match="'positive' conditioning has no input image.*Instruct Image Conditioning"):
        sample(comfy, loaded.model, conds["raw_pos"], conds["raw_neg"], conds["latent"])


def test_image_batch_that_does_not_match_the_latent_batch_is_refused(comfy, loaded, conds):
    errors = comfy.pack("models.errors")
    two = [[t, {**d, "concat_latent_image": d["concat_latent_image"].repeat(2, 1, 1, 1)}] for t, d in conds["pos"]]
    with pytest.raises(errors.InstructInputError, match="image batch has 2 images but the latent batch has 3"):
        sample(comfy, loaded.model, two, conds["neg"], {"samples": torch.zeros(3, 4, 8, 8)})


def test_one_image_broadcasts_over_a_latent_batch(comfy, loaded, conds):
    out = sample(comfy, loaded.model, conds["pos"], conds["neg"], {"samples": torch.zeros(2, 4, 8, 8)})
    assert out.shape[0] == 2 and not torch.allclose(out[0], out[1])  # different noise, same image


def test_inputs_are_never_mutated(comfy, loaded, conds):
    before_pos = [dict(d) for _, d in conds["pos"]]
    before_opts = repr(sorted(loaded.model.model_options))
    sample(comfy, loaded.model, conds["pos"], conds["neg"], conds["latent"], guidance_rescale=0.5, text_cfg_end=0.5)
    assert [set(d) for _, d in conds["pos"]] == [set(d) for d in before_pos]
    assert repr(sorted(loaded.model.model_options)) == before_opts


def test_area_mask_and_gligen_of_the_negative_reach_both_of_its_branches(comfy, loaded, conds):
    neg = [[t, {**d, "area": (4, 4, 0, 0), "mask": torch.ones(1, 8, 8), "gligen": ("position", None, [])}] for t, d in conds["neg"]]
    guider = comfy.pack("samplers.guider").InstructDualCFGGuider(loaded.model, comfy.pack("samplers.dual_cfg").ScaleSchedule(7.5, 1.5))
    guider.set_conds(conds["pos"], neg)
    for key in ("image_only", "negative"):
        (entry,) = guider.original_conds[key]
        assert entry["area"] == (4, 4, 0, 0) and entry["gligen"][0] == "position" and entry["mask"].shape == (1, 8, 8)
    assert "concat_latent_image" in guider.original_conds["image_only"][0]
    assert "concat_latent_image" not in guider.original_conds["negative"][0]


# ---- pre-CFG hooks of core nodes, and scales that would have no effect --------------------------


def plain_model(tiny):
    import comfy.sd as comfy_sd

    return comfy_sd.load_checkpoint_guess_config(str(tiny["checkpoint_4ch"]), output_vae=False, output_clip=False)[0]


@pytest.mark.parametrize("hook", ["APG", "TCFG"])
def test_pre_cfg_hooks_of_core_nodes_on_a_plain_model_are_exactly_core_ksamplers(comfy, tiny, conds, hook):
    from comfy_extras.nodes_apg import APG
    from comfy_extras.nodes_tcfg import TCFG

    import nodes

    model = plain_model(tiny)
    hooked = APG.execute(model, eta=0.3, norm_threshold=2.0, momentum=-0.5)[0] if hook == "APG" else TCFG.execute(model)[0]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    mine = sample(comfy, hooked, conds["raw_pos"], conds["raw_neg"], latent, text_cfg=6.0, image_cfg=1.0)
    core = nodes.common_ksampler(hooked, 3, 2, 6.0, "euler", "normal", conds["raw_pos"], conds["raw_neg"], latent)[0]["samples"]
    torch.testing.assert_close(mine, core, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mine, sample(comfy, model, conds["raw_pos"], conds["raw_neg"], latent, text_cfg=6.0, image_cfg=1.0))


def test_apg_acts_on_the_whole_three_way_guidance(comfy, loaded, conds):
    """One euler step returns the guided x0. APG written out independently on the pair
    (reference = full branch, uncond_eff) that carries the whole three-way guidance at scale s_T."""
    from comfy_extras.nodes_apg import APG

    def x0(model, text_cfg, image_cfg):
        return sample(comfy, model, conds["pos"], conds["neg"], conds["latent"], text_cfg=text_cfg, image_cfg=image_cfg, steps=1).double()

    combined, full = x0(loaded.model, 7.5, 1.5), x0(loaded.model, 1.0, 1.0)
    k, eta = 7.5, 0.25
    uncond_eff = (combined - k * full) / (1 - k)
    guidance = full - uncond_eff
    unit = full / torch.linalg.vector_norm(full, dim=(-1, -2, -3), keepdim=True)
    parallel = (guidance * unit).sum(dim=(-1, -2, -3), keepdim=True) * unit
    expected = full + k * (guidance - parallel + eta * parallel)
    got = x0(APG.execute(loaded.model, eta=eta, norm_threshold=0.0, momentum=0.0)[0], 7.5, 1.5)
    assert not torch.allclose(got, combined, atol=1e-3)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_a_pre_cfg_hook_that_needs_one_uncond_is_skipped_on_three_branches_with_one_warning(comfy, loaded, conds, log_capture):
    from comfy_extras.nodes_tcfg import TCFG

    hooked = TCFG.execute(loaded.model)[0]
    got = sample(comfy, hooked, conds["pos"], conds["neg"], conds["latent"], steps=3)
    torch.testing.assert_close(got, sample(comfy, loaded.model, conds["pos"], conds["neg"], conds["latent"], steps=3))
    warnings = [m for m in log_capture.messages() if "pre-CFG hook of TCFG (comfy_extras.nodes_tcfg)" in m]
    assert len(warnings) == 1 and "not applied" in warnings[0]


def test_image_cfg_on_a_plain_model_is_reported_unused(comfy, tiny, conds, log_capture):
    model = plain_model(tiny)
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    sample(comfy, model, conds["raw_pos"], conds["raw_neg"], latent, text_cfg=6.0, image_cfg=1.0, steps=1)
    assert not [m for m in log_capture.messages() if "is not used" in m]
    sample(comfy, model, conds["raw_pos"], conds["raw_neg"], latent, text_cfg=6.0, image_cfg=1.0, steps=1, image_cfg_end=0.5)
    sample(comfy, model, conds["raw_pos"], conds["raw_neg"], latent, text_cfg=6.0, image_cfg=1.5, steps=1)
    warnings = [m for m in log_capture.messages() if "scales that are not used" in m]
    assert len(warnings) == 2 and "image_cfg=1.0 and its image_cfg_start/end window" in warnings[0] and "image_cfg=1.5" in warnings[1]
    assert "this model reads no input image (image_cfg acts on edit models); set it to 1.0 here" in warnings[1]
