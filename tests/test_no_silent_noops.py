"""Inputs that used to do nothing (or something meaningless) without a word are refused in real
ComfyUI graphs, with a message that names the input or file and says how to fix it: an unpainted
region mask, NaN/inf in a FLOAT input, denoise 0 on an empty latent, a damaged diffusers folder."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

CKPT = "checkpoints/tiny-ip2p-sd15.safetensors"
EMPTY_LATENT = "empty"
IMAGE_LATENT = "image"
SAMPLING = dict(seed=3, steps=2, sampler_name="euler", scheduler="normal", text_cfg=7.5, image_cfg=1.5)


def edit_graph(comfy, image: str, height: int = 64, width: int = 64, latent_output: str = EMPTY_LATENT):
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
        latent_output=latent_output,
    )
    return g, loader, cond


def ksampler(g, loader, cond, **inputs):
    values = {**SAMPLING, "denoise": 1.0, **inputs}
    ks = g.node(
        "InstructKSampler", id="ks", model=loader.out(0), positive=cond.out(0), negative=cond.out(1), latent_image=cond.out(2), **values
    )
    g.node("SaveLatent", id="save", samples=ks.out(0), filename_prefix="noops")
    return ks


def custom_sampling(g, loader, cond, denoise: float = 1.0, **guider_inputs):
    values = {"text_cfg": 7.5, "image_cfg": 1.5, **guider_inputs}
    guider = g.node("InstructGuider", id="guider", model=loader.out(0), positive=cond.out(0), negative=cond.out(1), **values)
    sca = g.node(
        "SamplerCustomAdvanced",
        id="sca",
        noise=g.node("RandomNoise", id="noise", noise_seed=9).out(0),
        guider=guider.out(0),
        sampler=g.node("KSamplerSelect", id="sel", sampler_name="euler").out(0),
        sigmas=g.node("BasicScheduler", id="bs", model=loader.out(0), scheduler="normal", steps=2, denoise=denoise).out(0),
        latent_image=cond.out(2),
    )
    g.node("SaveLatent", id="save", samples=sca.out(0), filename_prefix="noops")
    return sca


def failure(comfy, g) -> dict:
    """Run a graph that must fail at execution; the error ComfyUI reports to the UI."""
    result = comfy.run(g.finalize(), expect_success=False)
    error = comfy.execution_error(result)
    assert error is not None, "the graph ran although it had to be refused"
    return error


def solid(g, id: str, value: float, width: int, height: int):
    return g.node("SolidMask", id=id, value=value, width=width, height=height)


# ---- an unpainted region mask -------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["InstructKSampler", "InstructGuider"])
def test_an_unpainted_region_mask_is_an_error_that_says_how_to_paint_it(comfy, tiny, sampler):
    g, loader, cond = edit_graph(comfy, "noops-region.png")
    region = solid(g, "region", 0.0, 64, 64).out(0)
    if sampler == "InstructKSampler":
        ksampler(g, loader, cond, region_mask=region, region_feather=0)
    else:
        custom_sampling(g, loader, cond, region_mask=region, region_feather=0)
    error = failure(comfy, g)
    assert error["node_type"] == sampler
    message = error["exception_message"]
    assert f"{sampler}: 'region_mask' is empty (all zero), so nothing would be edited" in message
    assert "Open in MaskEditor" in message and "disconnect 'region_mask'" in message
    assert error["exception_type"].endswith("InstructInputError")


def test_a_region_painted_only_in_the_cropped_border_is_an_error(comfy, tiny):
    # 70 rows are centre-cropped to 64 (rows 3..66): paint in rows 68..69 never reaches the edit.
    g, loader, cond = edit_graph(comfy, "noops-border.png", height=70, width=64)
    stripe = solid(g, "stripe", 1.0, 64, 2)
    region = g.node(
        "MaskComposite", id="region", destination=solid(g, "m0", 0.0, 64, 70).out(0), source=stripe.out(0), x=0, y=68, operation="add"
    )
    ksampler(g, loader, cond, region_mask=region.out(0), region_feather=0)
    message = failure(comfy, g)["exception_message"]
    assert "InstructKSampler: 'region_mask' is empty inside the image being edited" in message
    assert "cropped away" in message


def test_a_batch_names_the_unpainted_masks(comfy, tiny):
    g, loader, cond = edit_graph(comfy, "noops-batch.png")
    painted = solid(g, "painted", 1.0, 64, 64)
    empty = solid(g, "empty", 0.0, 64, 64)
    masks = g.node("MaskToImage", id="i0", mask=painted.out(0)), g.node("MaskToImage", id="i1", mask=empty.out(0))
    batch = g.node("ImageBatch", id="batch", image1=masks[0].out(0), image2=masks[1].out(0))
    region = g.node("ImageToMask", id="region", image=batch.out(0), channel="red")
    batch_latent = g.node("RepeatLatentBatch", id="rep", samples=cond.out(2), amount=2)
    ks = g.node(
        "InstructKSampler",
        id="ks",
        model=loader.out(0),
        positive=cond.out(0),
        negative=cond.out(1),
        latent_image=batch_latent.out(0),
        denoise=1.0,
        region_mask=region.out(0),
        region_feather=0,
        **SAMPLING,
    )
    g.node("SaveLatent", id="save", samples=ks.out(0), filename_prefix="noops")
    assert "InstructKSampler: mask 2 of the 2 in 'region_mask' is empty (all zero)" in failure(comfy, g)["exception_message"]


def test_a_painted_region_still_edits(comfy, tiny):
    """The check refuses only empty masks: a painted one runs (and changes the inside)."""
    g, loader, cond = edit_graph(comfy, "noops-painted.png")
    region = g.node(
        "MaskComposite",
        id="region",
        destination=solid(g, "m0", 0.0, 64, 64).out(0),
        source=solid(g, "m1", 1.0, 24, 24).out(0),
        x=8,
        y=8,
        operation="add",
    )
    ksampler(g, loader, cond, region_mask=region.out(0), region_feather=0)
    result = comfy.run(g.finalize())
    out, image_latent = result.output("ks")["samples"], result.output("cond")[0][1]["concat_latent_image"]
    assert float((out - image_latent)[..., 1:4, 1:4].abs().max()) > 0.1
    torch.testing.assert_close(out[..., 5:, 5:], image_latent[..., 5:, 5:], rtol=1e-5, atol=1e-5)


# ---- NaN / inf in FLOAT inputs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "name", "value", "how"),
    [
        ("InstructKSampler", "text_cfg", "nan", "widget"),
        ("InstructKSampler", "image_cfg", "nan", "core Float node"),
        ("InstructKSampler", "denoise", "inf", "link"),
        ("InstructGuider", "guidance_rescale", "nan", "widget"),
        ("InstructGuider", "text_cfg", "-inf", "link"),
    ],
)
def test_a_non_finite_float_is_refused_with_the_inputs_name(comfy, tiny, node, name, value, how):
    g, loader, cond = edit_graph(comfy, "noops-nan.png")
    if how == "widget":
        setting = float(value)
    elif how == "core Float node":
        setting = g.node("PrimitiveFloat", id="float", value=float(value)).out(0)
    else:
        setting = g.node("InstructTestFloatFromText", id="float", text=value).out(0)
    if node == "InstructKSampler":
        ksampler(g, loader, cond, **{name: setting})
    else:
        custom_sampling(g, loader, cond, **{name: setting})
    error = failure(comfy, g)
    assert error["node_type"] == node
    assert f"{node}: '{name}' is {float(value)}, not a finite number" in error["exception_message"]
    assert error["exception_type"].endswith("InstructInputError")


def test_edit_mask_floats_are_checked_too(comfy, tiny):
    g, loader, cond = edit_graph(comfy, "noops-editmask.png")
    node = g.node(
        "InstructKSamplerEditMask",
        id="em",
        model=loader.out(0),
        positive=cond.out(0),
        negative=cond.out(1),
        latent_image=cond.out(2),
        denoise=1.0,
        mask_steps=0.5,
        mask_blur=float("nan"),
        mask_threshold=0.5,
        restrict="restrict",
        region_feather=0,
        **SAMPLING,
    )
    g.node("SaveLatent", id="save", samples=node.out(0), filename_prefix="noops")
    assert "InstructKSamplerEditMask: 'mask_blur' is nan, not a finite number" in failure(comfy, g)["exception_message"]


def test_every_node_of_the_pack_checks_its_float_inputs(comfy):
    """One shared check: every registered node derives from InstructNode, whose execute is wrapped."""
    base = comfy.pack("nodes.base")
    checked = 0
    for node_id in comfy.pack_node_ids:
        cls = comfy.nodes.NODE_CLASS_MAPPINGS[node_id]
        assert issubclass(cls, base.InstructNode), f"{node_id} does not derive from InstructNode"
        assert getattr(cls.execute.__func__, "_instruct_finite_checked", False), f"{node_id}.execute is not checked"
        checked += bool(base.float_inputs(cls.GET_SCHEMA()))
    assert checked >= 5  # the samplers, the edit-mask sampler, merge, IP-Adapter apply


def test_finite_floats_pass_unchanged(comfy):
    base = comfy.pack("nodes.base")
    specs = base.float_inputs(comfy.nodes.NODE_CLASS_MAPPINGS["InstructKSampler"].GET_SCHEMA())
    base.check_finite_floats(specs, {"text_cfg": 7.5, "image_cfg": 0, "denoise": 1e30})
    with pytest.raises(comfy.pack("models.errors").InstructInputError, match="'image_cfg' is nan"):
        base.check_finite_floats(specs, {"image_cfg": math.nan})


# ---- denoise 0 on an empty latent ---------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["InstructKSampler", "InstructGuider"])
def test_denoise_zero_on_an_empty_latent_is_an_error(comfy, tiny, sampler):
    g, loader, cond = edit_graph(comfy, "noops-denoise.png")
    if sampler == "InstructKSampler":
        ksampler(g, loader, cond, denoise=0.0)
    else:
        custom_sampling(g, loader, cond, denoise=0.0)
    message = failure(comfy, g)["exception_message"]
    assert f"{sampler}: no sampling step is left (denoise 0" in message
    assert "it is empty (all zero): there is nothing to start from" in message
    assert f"'{IMAGE_LATENT}'" in message


def test_denoise_zero_on_the_image_latent_returns_it(comfy, tiny):
    """With something to start from, denoise 0 is allowed: the result is the starting latent itself."""
    g, loader, cond = edit_graph(comfy, "noops-denoise-image.png", latent_output=IMAGE_LATENT)
    ksampler(g, loader, cond, denoise=0.0)
    result = comfy.run(g.finalize())
    start = result.output("cond", 2)["samples"]
    assert bool(start.any())
    assert torch.equal(result.output("ks")["samples"], start)


# ---- a damaged diffusers pipeline folder --------------------------------------------------------------


def _truncated(source: Path, target: Path) -> None:
    with open(source, "rb") as f:
        target.write_bytes(f.read(1 << 20))


def _foreign(source: Path, target: Path) -> None:
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.out.2.weight": torch.zeros(4, 4)}, str(target))


@pytest.fixture(scope="module")
def diffusers_root(comfy, tmp_path_factory):
    """A second 'diffusers' folder (registered the way extra_model_paths.yaml does) for damaged copies."""
    import folder_paths

    root = tmp_path_factory.mktemp("diffusers-damaged")
    folder_paths.add_model_folder_path("diffusers", str(root))
    return root


@pytest.mark.parametrize("part", ["text_encoder", "vae"])
@pytest.mark.parametrize("damage", [_truncated, _foreign], ids=["truncated", "wrong-keys"])
def test_a_damaged_pipeline_file_is_named(comfy, tiny_diffusers, diffusers_root, part, damage):
    source = tiny_diffusers["pipeline"]
    name = f"broken-{part}-{damage.__name__.strip('_')}"
    folder = diffusers_root / name
    folder.mkdir()
    for entry in os.listdir(source):  # everything else is the intact tiny pipeline
        if entry != part:
            os.symlink(source / entry, folder / entry)
    bad = folder / part / ("model.safetensors" if part == "text_encoder" else "diffusion_pytorch_model.safetensors")
    bad.parent.mkdir()
    os.symlink(source / part / "config.json", bad.parent / "config.json")
    damage(source / part / bad.name, bad)

    g = comfy.graph()
    loader = g.node(
        "InstructUNetLoader",
        id="load",
        model_name=f"diffusers/{name}",
        weights="auto",
        prediction="auto",
        weight_dtype="default",
    )
    latent = g.node("EmptyLatentImage", id="latent", width=64, height=64, batch_size=1)
    g.node("PreviewImage", id="preview", images=g.node("VAEDecode", id="dec", samples=latent.out(0), vae=loader.out(2)).out(0))
    error = failure(comfy, g)
    assert error["node_type"] == "InstructUNetLoader"
    assert error["exception_type"].endswith("InstructModelError")
    message = error["exception_message"]
    assert f"'{bad}'" in message
    assert "download" in message
    if damage is _foreign:
        assert "is not a" in message and "found e.g. model.diffusion_model.out.2.weight" in message
