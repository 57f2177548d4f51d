"""Edit masks and region-restricted editing on a real ComfyUI: no extra UNet call for the mask, the
mask is |full − image_only| of the early steps, the outside follows the input's noised trajectory
at every step, the pixel composite is exact outside the mask, and bad inputs name the fix."""

from __future__ import annotations

import pytest
import torch

from instruct_sampling import encode_edit, instruct_ksampler, load_tiny_instruct, with_unet_wrapper

CKPT = "checkpoints/tiny-ip2p-sd15.safetensors"
FULL, IMAGE_ONLY = 2, 1  # indices of the branches in the guider's calc_cond_batch call


@pytest.fixture(scope="module")
def loaded(comfy, tiny):
    return load_tiny_instruct(comfy)


def encode(comfy, loaded, instruction: str, negative: str = "", seed: int = 5):
    return encode_edit(comfy, loaded.clip, loaded.vae, instruction, negative, seed)


@pytest.fixture(scope="module")
def edit(comfy, loaded):
    return encode(comfy, loaded, "make it winter")


class Recorder:
    """UNet function wrapper: records each batched call (branches, σ, input, x0 output); can add a
    change to the full branch's output inside a box, to make the instruction's effect local."""

    def __init__(self, full_box: tuple[slice, slice] | None = None) -> None:
        self.calls: list[dict] = []
        self.full_box = full_box

    def __call__(self, apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        branches = list(args["cond_or_uncond"])
        if self.full_box is not None:
            out = out.clone()
            for k, chunk in enumerate(out.chunk(len(branches))):
                if branches[k] == FULL:
                    chunk[:, :, self.full_box[0], self.full_box[1]] += 1.0
        self.calls.append(
            {"branches": branches, "sigma": float(args["timestep"][0]), "input": args["input"].clone(), "output": out.clone()}
        )
        return out

    def chunk(self, call: dict, key: str, branch: int) -> torch.Tensor:
        return call[key].chunk(len(call["branches"]))[call["branches"].index(branch)]


def recorded(model, **kw):
    rec = Recorder(**kw)
    return with_unet_wrapper(model, rec), rec


COMMON = dict(seed=3, text_cfg=7.5, image_cfg=1.5, scheduler="normal", denoise=1.0)


def ksampler(comfy, model, e, steps=4, sampler="euler", **extra):
    return instruct_ksampler(comfy, model, e["pos"], e["neg"], e["latent"], steps=steps, sampler=sampler, **extra)


def edit_mask_sampler(comfy, model, e, steps=4, sampler="euler", restrict=True, blur=0.0, threshold=0.5, mask_steps=0.5, feather=0):
    regions_nodes = comfy.pack("nodes.regions")
    out = regions_nodes.InstructKSamplerEditMask.execute(
        model=model,
        steps=steps,
        sampler_name=sampler,
        positive=e["pos"],
        negative=e["neg"],
        latent_image=e["latent"],
        mask_steps=mask_steps,
        mask_blur=blur,
        mask_threshold=threshold,
        restrict="restrict" if restrict else "mask_only",
        region_feather=feather,
        **COMMON,
    ).result
    return out[0]["samples"], out[1]


def box_mask(top: int, left: int, height: int, width: int, size: int = 64) -> torch.Tensor:
    m = torch.zeros(1, size, size)
    m[:, top : top + height, left : left + width] = 1.0
    return m


def trajectory(loaded, e, sigma: float) -> torch.Tensor:
    """The input image's noised latent at σ with the sampler's noise (what the outside must see)."""
    import comfy.sample

    noise = comfy.sample.prepare_noise(e["latent"]["samples"], COMMON["seed"])
    reference = loaded.model.model.process_latent_in(e["image_latent"])
    return noise * sigma + reference


# ---- in graphs (first in the file: each loads its own checkpoint, before the module's model is loaded) ----


def region_graph(comfy, image: str, height: int, width: int, box: tuple[int, int, int, int]):
    """Loader → Load Image → instruction/negative → conditioner, and a box MASK (x, y, w, h) made with
    core mask nodes, drawn on the input image's size."""
    g = comfy.graph()
    loader = g.node("InstructUNetLoader", id="load", model_name=CKPT, weights="auto", prediction="auto", weight_dtype="default")
    img = g.node("LoadImage", id="img", image=comfy.input_image(image, height=height, width=width, seed=4))
    pos = g.node("CLIPTextEncode", id="pos", clip=loader.out(1), text="make it winter")
    neg = g.node("CLIPTextEncode", id="neg", clip=loader.out(1), text="")
    cond = g.node(
        "InstructImageConditioning",
        id="cond",
        positive=pos.out(0),
        negative=neg.out(0),
        vae=loader.out(2),
        image=img.out(0),
        size_mode="crop",
        latent_output="empty",
    )
    x, y, w, h = box
    empty = g.node("SolidMask", id="m0", value=0.0, width=width, height=height)
    square = g.node("SolidMask", id="m1", value=1.0, width=w, height=h)
    region = g.node("MaskComposite", id="region", destination=empty.out(0), source=square.out(0), x=x, y=y, operation="add")
    return g, loader, img, cond, region


def test_guider_restricts_the_region_in_a_custom_sampling_graph(comfy, tiny):
    g, loader, img, cond, region = region_graph(comfy, "region-guider.png", 64, 64, (32, 8, 24, 24))
    guider = g.node(
        "InstructGuider",
        id="guider",
        model=loader.out(0),
        positive=cond.out(0),
        negative=cond.out(1),
        text_cfg=7.5,
        image_cfg=1.5,
        region_mask=region.out(0),
        region_feather=0,
    )
    g.node(
        "SamplerCustomAdvanced",
        id="sca",
        noise=g.node("RandomNoise", id="noise", noise_seed=9).out(0),
        guider=guider.out(0),
        sampler=g.node("KSamplerSelect", id="ks", sampler_name="euler_ancestral").out(0),
        sigmas=g.node("BasicScheduler", id="bs", model=loader.out(0), scheduler="normal", steps=3, denoise=1.0).out(0),
        latent_image=cond.out(2),
    )
    g.node("SaveLatent", id="save", samples=g.lookup_node("sca").out(0), filename_prefix="region_guider")
    result = comfy.run(g.finalize())
    out = result.output("sca")["samples"]
    image_latent = result.output("cond")[0][1]["concat_latent_image"]
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[1:4, 4:7] = False
    torch.testing.assert_close(out[..., outside], image_latent[..., outside], rtol=1e-5, atol=1e-5)
    assert float((out - image_latent)[..., 1:4, 4:7].abs().max()) > 0.1


def test_pixel_composite_is_exactly_the_original_outside_the_mask_in_a_graph(comfy, tiny):
    g, loader, img, cond, region = region_graph(comfy, "region-composite.png", 70, 67, (20, 12, 30, 26))
    ks = g.node(
        "InstructKSampler",
        id="ks",
        model=loader.out(0),
        steps=2,
        sampler_name="euler",
        positive=cond.out(0),
        negative=cond.out(1),
        latent_image=cond.out(2),
        region_mask=region.out(0),
        region_feather=8,
        **COMMON,
    )
    dec = g.node("VAEDecode", id="dec", samples=ks.out(0), vae=loader.out(2))
    g.node(
        "InstructRegionComposite",
        id="comp",
        edited=dec.out(0),
        original=img.out(0),
        mask=region.out(0),
        feather=4,
        size_mode="crop",
    )
    g.node("PreviewImage", id="preview", images=g.lookup_node("comp").out(0))
    result = comfy.run(g.finalize())
    out, original = result.output("comp"), result.output("img")
    assert out.shape == original.shape == (1, 70, 67, 3)
    outside = torch.ones(70, 67, dtype=torch.bool)
    outside[12:38, 20:50] = False
    assert torch.equal(out[0][outside], original[0][outside])
    assert not torch.equal(out[0, 20:30, 28:42], original[0, 20:30, 28:42])


# ---- the edit mask ------------------------------------------------------------------------------------


@pytest.mark.parametrize("restrict", [False, True], ids=["mask-only", "restricting"])
def test_edit_mask_costs_no_extra_unet_call(comfy, loaded, edit, restrict):
    plain_model, plain_rec = recorded(loaded.model)
    plain = ksampler(comfy, plain_model, edit)
    mask_model, mask_rec = recorded(loaded.model)
    latent, mask = edit_mask_sampler(comfy, mask_model, edit, restrict=restrict)
    assert [c["branches"] for c in mask_rec.calls] == [c["branches"] for c in plain_rec.calls]
    assert [c["input"].shape for c in mask_rec.calls] == [c["input"].shape for c in plain_rec.calls]
    assert len(plain_rec.calls) == 4 and sorted(plain_rec.calls[0]["branches"]) == [0, 1, 2]
    assert mask.shape == (1, 64, 64) and set(mask.unique().tolist()) <= {0.0, 1.0}
    if not restrict:
        assert torch.equal(latent, plain)  # only observing: the sampling is Instruct KSampler's


def test_edit_mask_is_the_full_minus_image_only_difference_of_the_early_steps(comfy, loaded, edit):
    model, rec = recorded(loaded.model)
    _, soft = edit_mask_sampler(comfy, model, edit, steps=4, mask_steps=0.5, threshold=0.0, restrict=False)
    # independent: the recorded branch predictions of the first two steps
    total = 0
    for call in rec.calls[:2]:
        diff = (rec.chunk(call, "output", FULL) - rec.chunk(call, "output", IMAGE_ONLY)).abs().mean(dim=1)
        total = total + diff / diff.mean()
    expected = total / total.amax()
    expected = expected.repeat_interleave(8, dim=-2).repeat_interleave(8, dim=-1)
    torch.testing.assert_close(soft, expected, rtol=1e-4, atol=1e-5)
    assert float(soft.amin()) < 0.9  # a real map, not a constant


def test_a_local_instruction_effect_gives_exactly_that_region(comfy, loaded):
    same_text = encode(comfy, loaded, "a photo", negative="a photo")  # full and image-only differ only where we say
    model, rec = recorded(loaded.model, full_box=(slice(2, 5), slice(3, 7)))
    _, mask = edit_mask_sampler(comfy, model, same_text, restrict=False, blur=0.0, threshold=0.5)
    assert torch.equal(mask, box_mask(16, 24, 24, 32))


def test_restricting_to_the_edit_mask_keeps_the_outside_on_the_input_trajectory_after_the_mask_steps(comfy, loaded):
    same_text = encode(comfy, loaded, "a photo", negative="a photo")
    model, rec = recorded(loaded.model, full_box=(slice(2, 5), slice(3, 7)))
    latent, mask = edit_mask_sampler(comfy, model, same_text, steps=4, mask_steps=0.5, restrict=True)
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:5, 3:7] = False
    first = rec.chunk(rec.calls[0], "input", FULL)
    assert not torch.allclose(first[..., outside], trajectory(loaded, same_text, rec.calls[0]["sigma"])[..., outside])
    for call in rec.calls[2:]:  # after the two mask steps
        for branch in call["branches"]:
            x = rec.chunk(call, "input", branch)
            torch.testing.assert_close(x[..., outside], trajectory(loaded, same_text, call["sigma"])[..., outside], rtol=0, atol=1e-6)
    torch.testing.assert_close(latent[..., outside], same_text["image_latent"][..., outside], rtol=1e-5, atol=1e-5)


# ---- region-restricted editing ----------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m"])
def test_outside_the_region_every_step_sees_the_input_trajectory_and_the_result_is_the_input(comfy, loaded, edit, sampler):
    model, rec = recorded(loaded.model)
    region = box_mask(16, 8, 32, 32)  # latent cells rows 2..5, cols 1..4
    out = ksampler(comfy, model, edit, steps=3, sampler=sampler, region_mask=region, region_feather=8)
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:6, 1:5] = False
    assert len(rec.calls) == 3
    for call in rec.calls:
        expected = trajectory(loaded, edit, call["sigma"])
        for branch in call["branches"]:
            torch.testing.assert_close(rec.chunk(call, "input", branch)[..., outside], expected[..., outside], rtol=0, atol=1e-6)
    torch.testing.assert_close(out[..., outside], edit["image_latent"][..., outside], rtol=1e-5, atol=1e-5)
    inside = (out - edit["image_latent"])[..., 3:5, 2:4]  # deeper than the one-cell feather
    assert float(inside.abs().max()) > 0.1  # the region was edited


def test_the_last_step_blends_the_guided_prediction_with_the_input_by_the_feathered_weights(comfy, loaded, edit):
    """Euler's last step returns the blended x0: D·m + input·(1 − m), with D the dual-CFG combination
    of the recorded branch predictions and m the inward ramp (a 4×4-cell region, 2 cells of feather: 1/3 then 2/3)."""
    model, rec = recorded(loaded.model)
    out = ksampler(comfy, model, edit, steps=2, region_mask=box_mask(16, 8, 32, 32), region_feather=16)
    weight = torch.zeros(8, 8)
    weight[2:6, 1:5] = 1 / 3
    weight[3:5, 2:4] = 2 / 3
    last = rec.calls[-1]
    pred = {b: rec.chunk(last, "output", b) for b in last["branches"]}  # ComfyUI's apply_model returns x0
    x0 = pred[0] + 1.5 * (pred[IMAGE_ONLY] - pred[0]) + 7.5 * (pred[FULL] - pred[IMAGE_ONLY])
    reference = loaded.model.model.process_latent_in(edit["image_latent"])
    expected = loaded.model.model.process_latent_out(x0 * weight + reference * (1 - weight))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


# ---- bad inputs ---------------------------------------------------------------------------------------------


def test_a_region_mask_of_another_size_names_both_sizes(comfy, loaded, edit):
    errors = comfy.pack("models.errors")
    with pytest.raises(errors.InstructInputError) as err:
        ksampler(comfy, loaded.model, edit, steps=1, region_mask=torch.ones(1, 128, 96))
    assert "InstructKSampler: 'region_mask' is 96x128 but the image being edited is 64x64" in str(err.value)


def test_region_and_edit_mask_need_an_edit_model(comfy, loaded, tiny):
    import nodes

    errors = comfy.pack("models.errors")
    plain = nodes.CheckpointLoaderSimple().load_checkpoint("tiny-sd15-base.safetensors")[0]
    pos = nodes.CLIPTextEncode().encode(loaded.clip, "a cat")[0]
    neg = nodes.CLIPTextEncode().encode(loaded.clip, "")[0]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    plain_conds = {"pos": pos, "neg": neg, "latent": latent}
    with pytest.raises(errors.InstructInputError, match="'region_mask' needs an edit model .* this model reads no input image"):
        ksampler(comfy, plain, plain_conds, steps=1, region_mask=box_mask(0, 0, 8, 8))
    with pytest.raises(errors.InstructInputError, match="the edit mask needs an edit model .* the edit mask compares the branches"):
        edit_mask_sampler(comfy, plain, plain_conds, steps=1)


def test_region_editing_needs_the_latent_of_the_input_image_size(comfy, loaded, edit):
    errors = comfy.pack("models.errors")
    bigger = {**edit, "latent": {"samples": torch.zeros(1, 4, 16, 16)}}
    with pytest.raises(errors.InstructInputError, match="the latent to sample is 128x128 but the input image is 64x64"):
        ksampler(comfy, loaded.model, bigger, steps=1, region_mask=box_mask(0, 0, 8, 8, size=64))
