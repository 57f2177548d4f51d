"""Every path of the pack in fp32, bf16 and fp16 on a real ComfyUI on the CPU.

**What makes the UNet compute in half on a CPU.** ComfyUI's loaders (``--bf16-unet``/``--fp16-unet``,
``--force-fp16``, ``model_options={"dtype": ...}``, the Instruct UNet Loader's ``weight_dtype``) only
choose the *storage* dtype there: ``model_management.unet_manual_cast`` asks ``should_use_fp16`` /
``should_use_bf16``, which answer False for a CPU device, so the model gets ``manual_cast_dtype =
float32`` and every layer casts its half weights up to fp32 (``test_storage_dtype_alone_computes_in_fp32``).
The UNet computes in half only with ``ModelPatcher.set_model_compute_dtype`` — core's
**ModelComputeDtype** node — which object-patches ``manual_cast_dtype`` and forces weight casting; that
is what a GPU user's fp16/bf16 model does, and what the graphs here use, with the weights stored in
the same dtype. A recorder asserts the stored weight dtype and the dtype of an activation inside the
UNet in every sampling call.

**Tolerances.** Each half run is compared with the same graph in fp32 by the relative L2 error
``‖half − fp32‖ / ‖fp32‖`` with the bound ``K·u``, u the unit roundoff of the mode (bf16 2⁻⁸, fp16
2⁻¹¹), K = 32, derived from the error model, not measured: one UNet call rounds its ≈12 stored weight
tensors and ≈30 intermediate results, each with relative error ≤ u; independent errors add in
quadrature, ≈ √42·u ≈ 6.5u per call; guidance (text_cfg 3, image_cfg 1.5: Σ|coefficients| = 5 over
branches whose errors are largely shared) and two sampler steps amplify that by at most ≈ 5 → 32u.
A dtype bug (a branch on the wrong tokens, an ignored image, an overflow) gives errors of order 1 or
non-finite values; the bound sits an order of magnitude below that for bf16, two for fp16. Every half
run must also differ from fp32 (proof that it did not silently run in fp32). What the README
promises exactly — the region's outside and the composite's pixels — is checked exactly in every mode.
"""

from __future__ import annotations

import types

import pytest
import torch

MODES = ("fp32", "bf16", "fp16")
HALF = ("bf16", "fp16")
#: Every graph sampled in every precision is the slow tier: a CPU has no half-precision kernels worth the name,
#: and the fp32 runs repeat graphs the other files run. The checks that compute in fp32 on half inputs stay quick.
IN_EVERY_PRECISION = pytest.mark.slow
DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
UNIT_ROUNDOFF = {"bf16": 2.0**-8, "fp16": 2.0**-11}
K = 32
CKPT = "checkpoints/tiny-ip2p-sd15.safetensors"
PIPELINE = "diffusers/tiny-ip2p-pipeline"
SAMPLING = dict(seed=3, steps=2, text_cfg=3.0, image_cfg=1.5, sampler_name="euler", scheduler="normal", denoise=1.0)


def rel_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30))


def assert_close_to_fp32(got: torch.Tensor, ref: torch.Tensor, mode: str, what: str) -> None:
    assert got.dtype == ref.dtype and got.shape == ref.shape, what
    assert torch.isfinite(got).all(), f"{what}: non-finite values in {mode}"
    if mode == "fp32":
        return
    err, bound = rel_error(got, ref), K * UNIT_ROUNDOFF[mode]
    assert err <= bound, f"{what}: relative error {err:.3g} in {mode} exceeds {K}·u = {bound:.3g}"
    assert not torch.equal(got, ref), f"{what}: {mode} gave exactly the fp32 result (did it compute in {mode}?)"


def assert_computed_in(records: list, mode: str) -> None:
    """Every UNet call stored its weights and computed in the mode's dtype; the sampler got fp32 back."""
    assert records, "the UNet was never called"
    for r in records:
        assert r["weight"] == DTYPE[mode] and r["activation"] == DTYPE[mode], r
        assert r["output"] == torch.float32, r


# ---- the graph runner -----------------------------------------------------------------------------------


def edit_graph(
    comfy,
    mode: str,
    source: str = "ldm",
    lora: bool = False,
    controlnet: bool = False,
    edm: bool = False,
    region: bool = False,
    edit_mask: bool = False,
    merge: bool = False,
):
    """One instruct-edit graph: loader (weights stored in the mode's dtype) → [merge] → [LoRA] → [EDM
    v-prediction] → ModelComputeDtype → dtype recorder → conditioner [+ ControlNet] → sampler → decode
    [→ composite]. Returns the run and the dtype records."""
    g = comfy.graph()
    loader = g.node(
        "InstructUNetLoader",
        id="load",
        model_name=CKPT if source == "ldm" else PIPELINE,
        weights="auto",
        prediction="auto",
        weight_dtype=mode,
    )
    model, clip, vae = loader.out(0), loader.out(1), loader.out(2)
    if merge:
        custom = g.node("CheckpointLoaderSimple", id="custom", ckpt_name="tiny-sd15-custom.safetensors")
        base = g.node("CheckpointLoaderSimple", id="base", ckpt_name="tiny-sd15-base.safetensors")
        model = g.node("InstructMerge", id="merge", instruct=model, custom=custom.out(0), base=base.out(0), strength=1.0).out(0)
    if lora:
        lo = g.node(
            "LoraLoader", id="lora", model=model, clip=clip, lora_name="tiny-lora-sd15.safetensors", strength_model=1.0, strength_clip=1.0
        )
        model, clip = lo.out(0), lo.out(1)
    if edm:  # CosXL Edit's sampling: EDM v-prediction, σ from 120 to 0.002
        model = g.node("ModelSamplingContinuousEDM", id="edm", model=model, sampling="v_prediction", sigma_max=120.0, sigma_min=0.002).out(
            0
        )
    if mode != "fp32":
        model = g.node("ModelComputeDtype", id="compute", model=model, dtype=mode).out(0)
    model = g.node("InstructTestRecordDtypes", id="rec", model=model).out(0)
    img = g.node("LoadImage", id="img", image=comfy.input_image("precision.png", height=64, width=64, seed=4))
    pos = g.node("CLIPTextEncode", id="pos", clip=clip, text="make it winter")
    neg = g.node("CLIPTextEncode", id="neg", clip=clip, text="")
    positive, negative = pos.out(0), neg.out(0)
    if controlnet:
        cn = g.node("ControlNetLoader", id="cnl", control_net_name="tiny-controlnet-sd15.safetensors")
        cna = g.node(
            "ControlNetApplyAdvanced",
            id="cna",
            positive=positive,
            negative=negative,
            control_net=cn.out(0),
            image=img.out(0),
            strength=1.0,
            start_percent=0.0,
            end_percent=1.0,
        )
        positive, negative = cna.out(0), cna.out(1)
    cond = g.node(
        "InstructImageConditioning",
        id="cond",
        positive=positive,
        negative=negative,
        vae=vae,
        image=img.out(0),
        size_mode="crop",
        latent_output="empty",
    )
    common = dict(model=model, positive=cond.out(0), negative=cond.out(1), latent_image=cond.out(2), **SAMPLING)
    if region:
        empty = g.node("SolidMask", id="m0", value=0.0, width=64, height=64)
        square = g.node("SolidMask", id="m1", value=1.0, width=32, height=32)
        mask = g.node("MaskComposite", id="region", destination=empty.out(0), source=square.out(0), x=8, y=16, operation="add")
        ks = g.node("InstructKSampler", id="ks", region_mask=mask.out(0), region_feather=8, **common)
    elif edit_mask:
        ks = g.node(
            "InstructKSamplerEditMask",
            id="ks",
            mask_steps=0.5,
            mask_blur=8.0,
            mask_threshold=0.0,
            restrict="restrict",
            region_feather=8,
            **common,
        )
    else:
        ks = g.node("InstructKSampler", id="ks", **common)
    dec = g.node("VAEDecode", id="dec", samples=ks.out(0), vae=vae)
    if region:
        g.node(
            "InstructRegionComposite",
            id="comp",
            edited=dec.out(0),
            original=img.out(0),
            mask=mask.out(0),
            feather=4,
            size_mode="crop",
        )
        g.node("PreviewImage", id="preview", images=g.lookup_node("comp").out(0))
    else:
        g.node("PreviewImage", id="preview", images=dec.out(0))
    comfy.test_nodes.DTYPES.clear()
    result = comfy.run(g.finalize())
    return result, list(comfy.test_nodes.DTYPES)


class _ReferenceOutputs:
    """What the tests read of an fp32 reference run (the image, conditioning, sampler, decoder and composite outputs),
    kept without the run's executor: it holds the graph's model, CLIP and VAE, 0.7 GB per variant."""

    KEPT = (("ks", 0), ("ks", 1), ("dec", 0), ("comp", 0), ("cond", 0), ("img", 0))

    def __init__(self, result) -> None:
        self._outputs = {}
        for node, slot in self.KEPT:
            try:
                self._outputs[(node, slot)] = result.output(node, slot)
            except (KeyError, IndexError):  # not in this variant's graph
                pass

    def output(self, node: str, slot: int = 0):
        return self._outputs[(node, slot)]


_fp32_runs: dict = {}


def run_edit(comfy, mode: str, **variant):
    """The graph in ``mode`` and, once per variant, in fp32 for reference."""
    key = tuple(sorted(variant.items()))
    if key not in _fp32_runs:
        _fp32_runs[key] = _ReferenceOutputs(edit_graph(comfy, "fp32", **variant)[0])
    result, records = edit_graph(comfy, mode, **variant) if mode != "fp32" else (_fp32_runs[key], None)
    return result, records, _fp32_runs[key]


# ---- what makes the UNet compute in half on a CPU --------------------------------------------------------


def test_storage_dtype_alone_computes_in_fp32_on_a_cpu(comfy, tiny):
    """ComfyUI on a CPU: half weights are manual-cast to fp32 (should_use_fp16/bf16 are False for a CPU),
    so a precision test needs ModelComputeDtype (see the module docstring)."""
    import comfy.model_management as mm

    cpu = torch.device("cpu")
    assert not mm.should_use_fp16(cpu) and not mm.should_use_bf16(cpu)
    assert mm.unet_manual_cast(torch.bfloat16, cpu) == torch.float32
    assert mm.unet_manual_cast(torch.float16, cpu) == torch.float32
    loaded = comfy.pack("models.instruct_loader").load_instruct(str(tiny["checkpoint"]), weight_dtype="bf16")
    assert loaded.model.model.diffusion_model.input_blocks[0][0].weight.dtype == torch.bfloat16
    assert loaded.model.model.manual_cast_dtype == torch.float32


# ---- the instruct edit, every path ----------------------------------------------------------------------

VARIANTS = {
    "ldm": {},
    "diffusers": {"source": "diffusers"},
    "cosxl_edm": {"edm": True},
    "lora_controlnet": {"lora": True, "controlnet": True},
    "merge": {"merge": True},
}


@IN_EVERY_PRECISION
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_instruct_edit_in_every_precision(comfy, tiny, tiny_diffusers, variant, mode):
    result, records, ref = run_edit(comfy, mode, **VARIANTS[variant])
    if mode != "fp32":
        assert_computed_in(records, mode)
    latent, ref_latent = result.output("ks")["samples"], ref.output("ks")["samples"]
    assert_close_to_fp32(latent, ref_latent, mode, f"{variant} latent")
    assert_close_to_fp32(result.output("dec"), ref.output("dec"), mode, f"{variant} decoded image")


@IN_EVERY_PRECISION
@pytest.mark.parametrize("mode", MODES)
def test_region_edit_and_composite_keep_the_outside_exactly_in_every_precision(comfy, tiny, mode):
    result, records, ref = run_edit(comfy, mode, region=True)
    if mode != "fp32":
        assert_computed_in(records, mode)
    latent = result.output("ks")["samples"]
    image_latent = result.output("cond")[0][1]["concat_latent_image"]
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:6, 1:5] = False  # the 32×32 box at (8, 16)
    # The README's promise: outside the region the result is the input's latent (up to the sampler's fp32
    # arithmetic on it, as in fp32: the blend replaces the half prediction there by the fp32 input latent).
    torch.testing.assert_close(latent[..., outside], image_latent[..., outside], rtol=1e-5, atol=1e-5)
    assert float((latent - image_latent)[..., 3:5, 2:4].abs().max()) > 0.1  # the region was edited
    assert_close_to_fp32(latent, ref.output("ks")["samples"], mode, "region latent")
    out, original = result.output("comp"), result.output("img")
    pixels_outside = torch.ones(64, 64, dtype=torch.bool)
    pixels_outside[16:48, 8:40] = False
    assert out.dtype == torch.float32 and torch.equal(out[0][pixels_outside], original[0][pixels_outside])
    assert_close_to_fp32(out, ref.output("comp"), mode, "composite")


@IN_EVERY_PRECISION
@pytest.mark.parametrize("mode", MODES)
def test_edit_mask_in_every_precision(comfy, tiny, mode):
    result, records, ref = run_edit(comfy, mode, edit_mask=True)
    if mode != "fp32":
        assert_computed_in(records, mode)
    soft, ref_soft = result.output("ks", 1), ref.output("ks", 1)
    assert soft.dtype == torch.float32  # accumulated in fp32 whatever the UNet's dtype
    assert float(soft.max()) == pytest.approx(1.0) and float(soft.min()) >= 0.0
    assert_close_to_fp32(soft, ref_soft, mode, "soft edit mask")
    assert_close_to_fp32(result.output("ks")["samples"], ref.output("ks")["samples"], mode, "edit-mask latent")


# ---- Instruct Merge: fp16 models, fp32 deltas ------------------------------------------------------------


def test_merge_deltas_are_applied_in_fp32_to_fp16_weights(comfy, tiny):
    """Every merged fp16 weight is within one fp16 ulp of instruct + (custom − base) computed exactly:
    the delta is accumulated in fp32 and rounded once (ComfyUI's stochastic rounding picks a neighbour).
    The image channels of the first convolution stay the instruct model's bits."""
    import comfy.model_management as mm
    import comfy.sd as comfy_sd

    instruct = comfy.pack("models.instruct_loader").load_instruct(str(tiny["checkpoint"]), weight_dtype="fp16").model
    custom = comfy_sd.load_checkpoint_guess_config(str(tiny["ckpt_custom"]), model_options={"dtype": torch.float16})[0]
    base = comfy_sd.load_checkpoint_guess_config(str(tiny["ckpt_base"]), model_options={"dtype": torch.float16})[0]
    merge = comfy.pack("models.instruct_merge")
    prefix = merge.PREFIX
    before = {k: v.clone() for k, v in instruct.model_state_dict(prefix).items()}
    c_sd, b_sd = custom.model_state_dict(prefix), base.model_state_dict(prefix)
    merged = merge.merge_into_instruct(instruct, custom, base, strength=1.0)
    mm.load_models_gpu([merged], force_full_load=True)
    try:
        after = {k: v.detach().clone() for k, v in merged.model.state_dict().items() if k.startswith(prefix)}
    finally:
        mm.unload_all_models()
    checked = 0
    for key, weight in after.items():
        if key not in c_sd:
            continue
        assert weight.dtype == torch.float16, key
        delta = c_sd[key].double() - b_sd[key].double()
        exact = before[key].double()
        if key == merge.FIRST_CONV:
            assert torch.equal(weight[:, 4:], before[key][:, 4:]), "the image channels changed"
            exact[:, :4] += delta
        else:
            exact += delta
        ulp = torch.exp2(torch.floor(torch.log2(exact.abs().clamp_min(2.0**-14))) - 10)
        worst = float(((weight.double() - exact).abs() / ulp).max())
        assert worst <= 1.0, f"{key}: {worst:.2f} fp16 ulps from the exact merge"
        checked += 1
    assert checked == len(c_sd)


# ---- text encoder and VAE in another precision than the UNet -----------------------------------------------


@pytest.fixture(scope="module")
def all_fp32() -> dict:
    """The all-fp32 run the text-encoder/VAE pairings compare with, once for the file (below)."""
    return {}


@IN_EVERY_PRECISION  # a bf16 UNet
@pytest.mark.parametrize("te,vae", [("fp16", "bf16"), ("bf16", "fp16"), ("fp32", "fp16")])
def test_half_unet_with_text_encoder_and_vae_of_other_precisions(comfy, tiny, all_fp32, te, vae):
    """bf16 UNet; CLIP weights and VAE in another dtype (ComfyUI's text encoders always compute in fp32,
    so CLIP's dtype is its storage; the VAE computes in its own dtype). Compared with all-fp32."""
    import comfy.sd as comfy_sd
    import comfy.utils as comfy_utils
    import nodes

    sd = comfy_utils.load_torch_file(str(tiny["checkpoint"]))
    vae_sd = {k[len("first_stage_model.") :]: v for k, v in sd.items() if k.startswith("first_stage_model.")}
    # 32×32: a half VAE runs torch's slow fallback convolutions on a CPU (about 40 s a decode at 64×64)
    image = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(7))
    cond_node = comfy.nodes.NODE_CLASS_MAPPINGS["InstructImageConditioning"]
    sampler = comfy.nodes.NODE_CLASS_MAPPINGS["InstructKSampler"]
    loader = comfy.pack("models.instruct_loader")

    def pipeline(unet: str, te_dtype: str, vae_dtype: str):
        _, clip, _, _ = comfy_sd.load_checkpoint_guess_config(
            str(tiny["checkpoint"]), output_vae=False, te_model_options={"dtype": DTYPE[te_dtype]}
        )
        # every weight in the text encoder's dtype; ComfyUI 0.8 keeps the scalar logit_scale (the contrastive
        # head's, unused by text encoding) in fp32 whatever the dtype asked for
        weights = {n: p.dtype for n, p in clip.cond_stage_model.named_parameters() if not n.endswith("logit_scale")}
        assert set(weights.values()) == {DTYPE[te_dtype]}, weights
        v = comfy_sd.VAE(sd=dict(vae_sd), dtype=DTYPE[vae_dtype])
        model = loader.load_instruct(str(tiny["checkpoint"]), weight_dtype=unet).model
        if unet != "fp32":
            model = comfy_extras_compute(model, unet)
        model = comfy.test_nodes.InstructTestRecordDtypes().patch(model)[0]
        pos = nodes.CLIPTextEncode().encode(clip, "make it winter")[0]
        neg = nodes.CLIPTextEncode().encode(clip, "")[0]
        c = cond_node.execute(positive=pos, negative=neg, vae=v, image=image, size_mode="crop", latent_output="empty").result
        comfy.test_nodes.DTYPES.clear()
        latent = sampler.execute(model=model, positive=c[0], negative=c[1], latent_image=c[2], **SAMPLING).result[0]
        records = list(comfy.test_nodes.DTYPES)
        decoded = v.decode(latent["samples"])
        return types.SimpleNamespace(
            text=pos[0][0], image_latent=c[0][0][1]["concat_latent_image"], latent=latent["samples"], decoded=decoded, records=records
        )

    if "ref" not in all_fp32:  # the same reference for every pairing: run once, kept without its autograd graph
        ref = pipeline("fp32", "fp32", "fp32")  # (called outside inference mode, its outputs hold their graphs: 0.4 GB)
        all_fp32["ref"] = types.SimpleNamespace(**{k: v.detach() if torch.is_tensor(v) else v for k, v in vars(ref).items()})
    ref = all_fp32["ref"]
    got = pipeline("bf16", te, vae)
    assert_computed_in(got.records, "bf16")
    assert got.text.dtype == torch.float32 and got.image_latent.dtype == torch.float32
    if te in ("fp32", "fp16"):  # the file's CLIP is fp16: stored as fp16 or fp32 it is the same numbers, computed in fp32
        assert torch.equal(got.text, ref.text)
    else:
        assert_close_to_fp32(got.text, ref.text, te, "text embedding")
    assert_close_to_fp32(got.image_latent, ref.image_latent, vae, "image latent")
    worst = "bf16"  # the UNet's, the coarsest of the three here
    assert_close_to_fp32(got.latent, ref.latent, worst, "sampled latent")
    assert_close_to_fp32(got.decoded, ref.decoded, worst, "decoded image")


def comfy_extras_compute(model, mode: str):
    """Core's ModelComputeDtype node (comfy_extras), as a graph would use it."""
    import nodes

    return nodes.NODE_CLASS_MAPPINGS["ModelComputeDtype"]().patch(model, mode)[0]


# ---- blends in fp32 whatever the inputs' dtype ---------------------------------------------------------------


@pytest.mark.parametrize("mode", HALF)
def test_composite_blends_a_half_edit_in_fp32_and_keeps_the_original_bits_outside(mode):
    from conftest import pure

    image_latent = pure("models.image_latent")
    g = torch.Generator().manual_seed(1)
    original, edited = torch.rand(1, 24, 24, 3, generator=g), torch.rand(1, 24, 24, 3, generator=g)
    mask = torch.zeros(1, 24, 24)
    mask[:, 4:20, 6:18] = 1.0

    def composite(e, o):
        return image_latent.composite_into_original(e, o, mask, 3, image_latent.SizeMode.CROP, None)

    got = composite(edited.to(DTYPE[mode]), original)
    expected = composite(edited.to(DTYPE[mode]).float(), original)  # the same half edit, blended in fp32
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)
    assert torch.equal(got[:, mask[0] == 0], original[:, mask[0] == 0])
    # a half original comes back with its own values outside (exactly representable in fp32)
    half_original = original.to(DTYPE[mode])
    out = composite(edited, half_original)
    assert torch.equal(out[:, mask[0] == 0], half_original.float()[:, mask[0] == 0])


@pytest.mark.parametrize("mode", HALF)
def test_region_blend_with_a_half_latent_keeps_the_input_latent_outside(comfy, tiny, mode):
    """A half LATENT makes ComfyUI's noise and first x half; the region blend still works in fp32, so
    the result outside the region is the input's latent as closely as with an fp32 latent."""
    import nodes

    loaded = comfy.pack("models.instruct_loader").load_instruct(str(tiny["checkpoint"]))
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(5))
    pos = nodes.CLIPTextEncode().encode(loaded.clip, "make it winter")[0]
    neg = nodes.CLIPTextEncode().encode(loaded.clip, "")[0]
    c = (
        comfy.nodes.NODE_CLASS_MAPPINGS["InstructImageConditioning"]
        .execute(positive=pos, negative=neg, vae=loaded.vae, image=image, size_mode="crop", latent_output="empty")
        .result
    )
    region = torch.zeros(1, 64, 64)
    region[:, 16:48, 8:40] = 1.0
    latent = {"samples": c[2]["samples"].to(DTYPE[mode])}
    out = (
        comfy.nodes.NODE_CLASS_MAPPINGS["InstructKSampler"]
        .execute(model=loaded.model, positive=c[0], negative=c[1], latent_image=latent, region_mask=region, region_feather=8, **SAMPLING)
        .result[0]["samples"]
    )
    image_latent = c[0][0][1]["concat_latent_image"]
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:6, 1:5] = False
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float()[..., outside], image_latent[..., outside], rtol=1e-5, atol=1e-5)


# ---- IPAdapter-Instruct: simple and 4-branch, plain and instruct models, one and two reference images --------
# (last in the file: its model stays loaded to the end)
# The adapter needs SD1.5's 16-layer layout: these run it at a tenth of the width (``NarrowSD15``, the adapter's
# layer widths read from its own file), one step at 64×64. Its weights are stored once, in fp16 (the generated
# weights are fp16 values, so every mode computes from the same numbers as with fp32 storage); ModelComputeDtype
# makes every layer compute in the mode's dtype. The bound (K·u, above) does not depend on the width.

IP_CASES = {
    "plain_simple_1": ("plain", "style", 1),
    "plain_4branch_1": ("plain", "object", 1),
    "plain_simple_2": ("plain", "style", 2),
    "plain_4branch_2": ("plain", "object", 2),
    "instruct_simple_1": ("instruct", "style", 1),  # last: the one-model cache loads the instruct model once
}


@pytest.fixture(scope="module")
def ip_env(comfy, narrow):
    import nodes

    import instruct_tiny_models as factory

    clip, vae = narrow.clip(), narrow.vae()  # the plain and instruct models' CLIP and VAE are the same seeded ones
    adapter = comfy.pack("models.ipadapter_apply").load_adapter(str(narrow["adapter_bin"]))
    images = torch.rand(2, 96, 80, 3, generator=torch.Generator().manual_seed(3))
    pos = nodes.CLIPTextEncode().encode(clip, "a cat in a garden")[0]
    neg = nodes.CLIPTextEncode().encode(clip, "blurry")[0]
    edit = (
        comfy.nodes.NODE_CLASS_MAPPINGS["InstructImageConditioning"]
        .execute(
            positive=pos,
            negative=neg,
            vae=vae,
            image=torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(4)),
            size_mode="crop",
            latent_output="empty",
        )
        .result
    )
    return types.SimpleNamespace(
        # "plain" or "instruct", stored in fp16: the fixture's cache keeps one model alive at a time
        model=lambda kind: narrow.model(kind, "fp16"),
        clip=clip,
        adapter=adapter,
        vision=factory.tiny_clip_vision(width=factory.NARROW_IMAGE_DIM),
        images=images,
        pos=pos,
        neg=neg,
        edit=edit,
        ref={},
        applied=(None, None),
    )


def ip_applied(comfy, env, case: str):
    """The case's adapted model, applied once for its three modes: the apply does not depend on the mode
    (ModelComputeDtype comes after it). Only the current case's is kept: an earlier one would keep its UNet
    alive beside the next."""
    if env.applied[0] == case:
        return env.applied[1]
    env.applied = (None, None)
    kind, task, n_images = IP_CASES[case]
    patched = (
        comfy.nodes.NODE_CLASS_MAPPINGS["IPAdapterInstructApply"]
        .execute(
            model=env.model(kind),
            ipadapter=env.adapter,
            clip_vision=env.vision,
            clip=env.clip,
            image=env.images[:n_images],
            task=task,
            instruction="",
            prompt="a cat in a garden",
            negative_prompt="blurry",
            weight=0.8,
            start_at=0.0,
            end_at=1.0,
            guidance="auto",
            instruct_cfg=4.0,
            image_cfg=1.5,
            auto_scale=True,
        )
        .result[0]
    )
    env.applied = (case, patched)
    return patched


def ip_run(comfy, env, case: str, mode: str):
    kind = IP_CASES[case][0]
    patched = ip_applied(comfy, env, case)
    if mode != "fp32":
        patched = comfy_extras_compute(patched, mode)
    patched = comfy.test_nodes.InstructTestRecordDtypes().patch(patched)[0]
    if kind == "plain":
        pos, neg, latent = env.pos, env.neg, {"samples": torch.zeros(1, 4, 8, 8)}
    else:
        pos, neg, latent = env.edit
    comfy.test_nodes.DTYPES.clear()
    out = (
        comfy.nodes.NODE_CLASS_MAPPINGS["InstructKSampler"]
        .execute(model=patched, positive=pos, negative=neg, latent_image=latent, **dict(SAMPLING, steps=1))
        .result[0]["samples"]
    )
    return out, list(comfy.test_nodes.DTYPES)


@IN_EVERY_PRECISION
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(IP_CASES))
def test_ipadapter_instruct_in_every_precision(comfy, ip_env, case, mode):
    if case not in ip_env.ref:
        ip_env.ref[case] = ip_run(comfy, ip_env, case, "fp32")[0]
    out, records = ip_run(comfy, ip_env, case, mode) if mode != "fp32" else (ip_env.ref[case], None)
    if mode != "fp32":
        assert records and all(r["activation"] == DTYPE[mode] and r["output"] == torch.float32 for r in records), records
        assert len(records) == 1  # one step: all branches in one batched call
    assert_close_to_fp32(out, ip_env.ref[case], mode, f"IPAdapter-Instruct {case}")
