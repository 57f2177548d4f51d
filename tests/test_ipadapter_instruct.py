"""IPAdapter-Instruct on a real ComfyUI with a (random) SD1.5 UNet at a tenth of the width (``NarrowSD15``:
SD1.5's topology and 16 cross-attention layers, CLIP-L's context, each adapter layer's width read from its
file): loading, the patched UNet against diffusers' own IP-Adapter attention, token routing per branch, both
guidance modes against their formulas, stacking, cloning, LoRA + ControlNet in one graph, bad inputs."""

from __future__ import annotations

import types

import pytest
import torch

import instruct_tiny_models as factory
from instruct_sampling import empty_latent, instruct_ksampler, with_unet_wrapper


@pytest.fixture(autouse=True)
def _release_loaded_models():
    """After each test, ComfyUI lets go of the models it loaded for it, so the UNets of this file and the
    next do not pile up."""
    yield
    import gc

    import comfy.model_management as mm

    mm.unload_all_models()
    gc.collect()
    mm.soft_empty_cache()


ADAPTER = "ip-adapter-instruct-sd15narrow-random"  # .bin / .safetensors, for the narrow UNet


class Env(types.SimpleNamespace):
    """The module's shared inputs. ``model`` is the plain narrow model of the ``narrow`` fixture's one-model
    cache, asked for at each use: the instruct tests at the end of the file replace it there."""

    @property
    def model(self):
        return self.narrow.model("plain")


@pytest.fixture(scope="module")
def env(comfy, narrow):
    import nodes

    clip = narrow.clip()  # the UNet is loaded at its first use (Env.model), after the tests that need none
    apply_mod = comfy.pack("models.ipadapter_apply")
    adapter = apply_mod.load_adapter(str(narrow["adapter_bin"]))
    vision = factory.tiny_clip_vision(width=factory.NARROW_IMAGE_DIM)
    image = torch.rand(1, 96, 80, 3, generator=torch.Generator().manual_seed(3))
    pos = nodes.CLIPTextEncode().encode(clip, "a cat in a garden")[0]
    neg = nodes.CLIPTextEncode().encode(clip, "blurry")[0]
    return Env(
        narrow=narrow,
        clip=clip,
        adapter=adapter,
        vision=vision,
        image=image,
        pos=pos,
        neg=neg,
        apply_mod=apply_mod,
        node=comfy.nodes.NODE_CLASS_MAPPINGS["IPAdapterInstructApply"],
    )


def apply_node(env, model=None, **kw):
    args = dict(
        model=model or env.model,
        ipadapter=env.adapter,
        clip_vision=env.vision,
        clip=env.clip,
        image=env.image,
        task="style",
        instruction="",
        prompt="a cat in a garden",
        negative_prompt="blurry",
        weight=0.8,
        start_at=0.0,
        end_at=1.0,
        guidance="auto",
        instruct_cfg=6.0,
        image_cfg=1.0,
        auto_scale=True,
    )
    args.update(kw)
    return env.node.execute(**args).result[0]


class TokenSpy:
    """Records which token set each batch chunk used, by wrapping TokenSets.for_chunks."""

    def __init__(self, comfy):
        self.cls = comfy.pack("models.ipadapter_patch").TokenSets
        self.calls: list = []

    def __enter__(self):
        original = self.original = self.cls.for_chunks
        spy = self

        def for_chunks(inner, names, chunk, device, dtype):
            spy.calls.append(tuple(names))
            return original(inner, names, chunk, device, dtype)

        self.cls.for_chunks = for_chunks
        return self

    def __exit__(self, *exc):
        self.cls.for_chunks = self.original


def latent(n=1):
    return empty_latent(n)


def run_sampler(comfy, model, pos, neg, steps=1, text_cfg=5.0, image_cfg=1.5, seed=1, lat=None):
    return instruct_ksampler(comfy, model, pos, neg, lat or latent(), text_cfg, image_cfg, steps=steps, seed=seed)


def _resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


# ---- loading ----------------------------------------------------------------------------------


def test_loader_node_reads_bin_and_safetensors_into_a_managed_module(comfy, narrow):
    node = comfy.nodes.NODE_CLASS_MAPPINGS["IPAdapterInstructLoader"]
    options = node.GET_NODE_INFO_V1()["input"]["required"]["ipadapter_file"][1]["options"]
    assert f"{ADAPTER}.bin" in options
    a = node.execute(ipadapter_file=f"{ADAPTER}.bin").result[0]
    b = node.execute(ipadapter_file=f"{ADAPTER}.safetensors").result[0]
    import comfy.model_patcher as comfy_mp

    assert isinstance(a.patcher, comfy_mp.ModelPatcher)
    assert a.spec.base == "SD1.5" and [a.spec.layer_dims[n] for n in range(1, 32, 2)] == factory.sd15_layer_widths(
        comfy.pack("models.ipadapter_instruct"), factory.NARROW_CHANNELS
    )  # each layer's width, as the file has it
    torch.testing.assert_close(a.module.ip_layers["31_to_k_ip"].weight, b.module.ip_layers["31_to_k_ip"].weight)


def test_plus_adapter_file_is_refused(comfy, narrow):
    errors = comfy.pack("models.errors")
    with pytest.raises(errors.InstructModelError, match="IP-Adapter Plus.*IPAdapter Plus pack"):
        comfy.pack("models.ipadapter_apply").load_adapter(str(narrow["plus_adapter"]))


def test_corrupt_adapter_is_refused(comfy, narrow, tmp_path):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(narrow["adapter_safetensors"].read_bytes()[:1000])
    with pytest.raises(comfy.pack("models.errors").InstructModelError, match="Cannot read .*cut.safetensors"):
        comfy.pack("models.ipadapter_apply").load_adapter(str(bad))


# ---- applying outside inference mode (the first test that loads the UNet) ----


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc/self/statm")
def test_applies_outside_inference_mode_leave_nothing_alive(comfy, env):
    """ComfyUI runs nodes under inference mode; a script calling the node directly does not. The
    projection used to record an autograd graph there that kept the encoders' fp32 weight copies alive:
    about 0.4 GB more resident memory after every apply, freed by nothing."""
    import ctypes
    import gc

    import comfy.model_management as mm

    def settle() -> float:
        mm.unload_all_models()
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return _resident_mib()

    assert torch.is_grad_enabled()
    apply_node(env)
    before = settle()
    for _ in range(3):
        apply_node(env)
    grown = settle() - before
    assert grown < 150, f"three applies left {grown:.0f} MiB alive"


# ---- patching ---------------------------------------------------------------------------------


def test_every_cross_attention_layer_is_patched_including_the_middle_block(comfy, env):
    patched = apply_node(env)
    replace = patched.model_options["transformer_options"]["patches_replace"]["attn2"]
    assert len(replace) == 16 and ("middle", 0, 0) in replace
    assert sorted(p.layer for p in replace.values()) == list(range(1, 32, 2))
    assert "patches_replace" not in env.model.model_options.get("transformer_options", {})  # input untouched
    assert env.adapter.patcher in patched.model_patches_models()  # managed with the UNet


def test_cloning_shares_the_adapter_weights(comfy, env):
    patched = apply_node(env)
    clone = patched.clone().clone()
    a = patched.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1, 0)]
    b = clone.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1, 0)]
    assert a.adapter.model.ip_layers["1_to_k_ip"].weight.data_ptr() == b.adapter.model.ip_layers["1_to_k_ip"].weight.data_ptr()
    assert a.tokens is b.tokens


def test_projection_runs_at_apply_time_not_per_step(comfy, env):
    calls = []
    handle = env.adapter.module.image_proj.register_forward_hook(lambda *a: calls.append(1))
    try:
        patched = apply_node(env, task="composition")
        assert len(calls) == 4  # the four token sets
        run_sampler(comfy, patched, env.pos, env.neg, steps=2)
        assert len(calls) == 4
    finally:
        handle.remove()


def _diffusers_unet_from(model, cfg: dict = factory.NARROW_SD15_UNET):
    """The same UNet weights in a diffusers UNet2DConditionModel of SD1.5's layout at the narrow width (names
    through ComfyUI's own map).

    Built empty and handed ComfyUI's own fp32 tensors (``assign``), not a second copy of the weights;
    neither model writes to its weights."""
    from diffusers import UNet2DConditionModel

    import comfy.utils as comfy_utils

    to_ldm = comfy_utils.unet_to_diffusers(dict(cfg))
    ldm = model.model.diffusion_model.state_dict()
    assert all(v.dtype == torch.float32 for v in ldm.values())
    widths = tuple(cfg["model_channels"] * m for m in cfg["channel_mult"])
    with torch.device("meta"):
        unet = UNet2DConditionModel(in_channels=4, cross_attention_dim=768, attention_head_dim=8, block_out_channels=widths)
    unet.load_state_dict({d: ldm[k] for d, k in to_ldm.items() if k in ldm}, strict=True, assign=True)
    return unet.eval()


def _diffusers_ip_unet(adapter, unet, num_tokens, scale):
    """diffusers' own IP-Adapter processors on ``unet`` for ``num_tokens`` appended tokens, with ``adapter``'s weights."""
    from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0

    processors = {}
    weights = adapter.module.ip_layers
    chans = unet.config.block_out_channels
    for index, name in enumerate(unet.attn_processors):
        if name.endswith("attn1.processor"):
            processors[name] = AttnProcessor2_0()
            continue
        block = None if name.startswith("mid_block") else int(name.split(".")[1])
        hidden = chans[-1] if block is None else (chans[block] if name.startswith("down_blocks") else list(reversed(chans))[block])
        proc = IPAdapterAttnProcessor2_0(hidden, 768, num_tokens=(num_tokens,), scale=scale)
        proc.to_k_ip[0].weight.data = weights[f"{index}_to_k_ip"].weight.detach().float().clone()
        proc.to_v_ip[0].weight.data = weights[f"{index}_to_v_ip"].weight.detach().float().clone()
        processors[name] = proc
    unet.set_attn_processor(processors)
    return unet


def _patched_against_diffusers(env, model, adapter, cfg: dict, vision) -> None:
    """One evaluation of ``model`` patched with ``adapter`` against diffusers' IP-Adapter attention on the same weights."""
    import comfy.model_management as mm

    tokens = env.apply_mod.project_token_sets(adapter, env.clip, vision, env.image, "use the style", "a cat", "blurry")
    guidance = env.apply_mod.IPGuidance(four_branch=False, instruct_cfg=6.0, image_cfg=1.0)
    patched = env.apply_mod.apply(model, adapter, tokens, 0.7, 0.0, 1.0, None, guidance)
    unet = _diffusers_ip_unet(adapter, _diffusers_unet_from(model, cfg), 16, 0.7)

    g = torch.Generator().manual_seed(8)
    x = torch.randn(1, 4, 8, 8, generator=g)
    text = env.pos[0][0].float()
    t = torch.tensor([500.0])
    with torch.no_grad():
        expected = unet(x, t, encoder_hidden_states=torch.cat([text, tokens["full"].float()], dim=1)).sample
        mm.load_models_gpu([patched])
        to = {
            "patches_replace": patched.model_options["transformer_options"]["patches_replace"],
            "cond_or_uncond": [0],
            "sigmas": torch.tensor([1.0]),
        }
        got = patched.model.diffusion_model(x, t, context=text, transformer_options=to)
        plain = model.model.diffusion_model(x, t, context=text, transformer_options={})
    assert not torch.allclose(got, plain, atol=1e-3)  # the adapter changes the output
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_one_patched_unet_evaluation_matches_diffusers_ip_adapter_attention(comfy, env):
    """Independent path: diffusers' own IPAdapterAttnProcessor2_0 on every attention processor, the
    reference's key numbering (index in ``unet.attn_processors``, down → up → mid), tokens appended."""
    _patched_against_diffusers(env, env.model, env.adapter, factory.NARROW_SD15_UNET, env.vision)


def test_the_published_layout_on_the_full_size_unet_matches_diffusers(comfy, env, full):
    """The adapter at the published widths (SD1.5's 320/640/1280, as ip-adapter-instruct-sd15.bin has them) on
    the full-size UNet: the production shapes, checked the same way (slow: 860M parameters)."""
    adapter = env.apply_mod.load_adapter(str(full["adapter_bin"]))
    assert [adapter.spec.layer_dims[n] for n in range(1, 32, 2)] == comfy.pack("models.ipadapter_instruct").SD15_LAYERS
    try:
        _patched_against_diffusers(env, full.model("plain"), adapter, factory.FULL_SD15_UNET, factory.tiny_clip_vision())
    finally:
        full.release(keep_clip_vae=True)


# ---- guidance ---------------------------------------------------------------------------------


def _branch_predictions(comfy, model, pos, neg, capture):
    """A one-call sampler that records the guider's combined prediction and each branch alone."""
    import comfy.samplers as comfy_samplers

    def one_call(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        guider = model_k.inner_model
        sigma = sigmas[:1].expand(x.shape[0])
        capture["combined"] = model_k(x, sigma, **extra_args)
        options = extra_args["model_options"]
        from_guider = getattr(guider, "branches", None)
        token_key = comfy.pack("samplers.guider").TOKEN_SETS_KEY
        if from_guider:
            keys = {"uncond": "negative", "image_only": "image_only", "everything": "everything", "full": "positive"}
            names = list(from_guider)
            conds = [guider.conds[keys[n]] for n in names]
            options = {**options, "transformer_options": {**options.get("transformer_options", {}), token_key: guider.token_sets}}
        else:
            names = ["full", "uncond"]
            conds = [guider.conds["positive"], guider.conds["negative"]]
        for k, name in enumerate(names):
            only = [c if j == k else None for j, c in enumerate(conds)]
            capture[name] = comfy_samplers.calc_cond_batch(guider.inner_model, only, x, sigma, options)[k]
        return x

    return comfy_samplers.KSAMPLER(one_call)


def test_four_branch_mode_against_its_formula_with_reference_routing(comfy, env):
    patched = apply_node(env, task="object", instruct_cfg=4.0, image_cfg=1.5)  # object → 4-branch
    guider = comfy.pack("samplers.guider").InstructDualCFGGuider(patched, comfy.pack("samplers.dual_cfg").ScaleSchedule(5.0, 1.5))
    guider.set_conds(env.pos, env.neg)
    assert guider.branches == ("uncond", "image_only", "everything", "full")
    capture = {}
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with TokenSpy(comfy) as spy:
        guider.sample(
            noise, torch.zeros_like(noise), _branch_predictions(comfy, patched, env.pos, env.neg, capture), torch.tensor([8.0, 0.0]), seed=0
        )
    u, i, e, c = (capture[k] for k in ("uncond", "image_only", "everything", "full"))
    expected = u + 1.5 * (i - u) + 5.0 * (e - i) + 4.0 * (c - e)
    torch.testing.assert_close(capture["combined"], expected, rtol=1e-4, atol=1e-4)
    # one batch of four chunks (ComfyUI may order them its own way), each with the reference's token set
    assert any(sorted(c) == sorted(("uncond", "image_only", "everything", "full")) for c in spy.calls)
    assert not torch.allclose(e, i, atol=1e-4) and not torch.allclose(i, u, atol=1e-4)


def test_simple_mode_with_core_ksampler_routes_full_and_uncond_tokens(comfy, env):
    import comfy.samplers as comfy_samplers

    import nodes

    patched = apply_node(env, task="style")
    with TokenSpy(comfy) as spy:
        core = nodes.common_ksampler(patched, 1, 1, 5.0, "euler", "normal", env.pos, env.neg, latent())[0]["samples"]
    assert any(sorted(c) == ["full", "uncond"] for c in spy.calls)  # cond → full tokens, uncond → uncond tokens
    mine = run_sampler(comfy, patched, env.pos, env.neg, steps=1, text_cfg=5.0)
    torch.testing.assert_close(mine, core, rtol=1e-5, atol=1e-5)  # simple mode = ordinary CFG either way
    capture = {}
    guider = comfy_samplers.CFGGuider(patched)
    guider.set_conds(env.pos, env.neg)
    guider.set_cfg(5.0)
    noise = torch.randn(1, 4, 8, 8)
    guider.sample(
        noise, torch.zeros_like(noise), _branch_predictions(comfy, patched, env.pos, env.neg, capture), torch.tensor([8.0, 0.0]), seed=0
    )
    torch.testing.assert_close(capture["combined"], capture["uncond"] + 5.0 * (capture["full"] - capture["uncond"]), rtol=1e-4, atol=1e-4)


def test_four_branch_mode_under_a_core_sampler_warns_once(comfy, env, log_capture):
    import nodes

    patched = apply_node(env, task="composition")
    nodes.common_ksampler(patched, 1, 1, 5.0, "euler", "normal", env.pos, env.neg, latent())
    warnings = [m for m in log_capture.messages() if "4-branch guidance" in m]
    assert len(warnings) == 1


def test_instruct_ip2p_model_routes_positive_tokens_to_full_and_negative_to_the_rest(comfy, env, tiny):
    """On an instruct model the dual-CFG branches carry (uncond, uncond, full) token sets. The tiny
    instruct UNet lacks SD1.5's layout (the adapter is refused on it), so routing is checked at the guider level."""
    guider_mod = comfy.pack("samplers.guider")
    loaded = comfy.pack("models.instruct_loader").load_instruct(str(tiny["unet"]))  # the bare UNet file: no CLIP/VAE to load
    guider = guider_mod.InstructDualCFGGuider(loaded.model, comfy.pack("samplers.dual_cfg").ScaleSchedule(7.5, 1.5))
    assert guider.branches == ("uncond", "image_only", "full") and guider.token_sets == ("uncond", "uncond", "full")
    with pytest.raises(comfy.pack("models.errors").InstructInputError, match="no cross-attention layer"):
        apply_node(env, model=loaded.model)


# ---- several reference images ------------------------------------------------------------------


def images(n):
    return torch.rand(n, 96, 80, 3, generator=torch.Generator().manual_seed(30 + n))


def unbatched(model):
    """A clone whose conds are evaluated one per UNet call (what ComfyUI does when memory is short):
    a CALC_COND_BATCH wrapper, ComfyUI's own extension point, hands calc_cond_batch one cond at a time
    at its own index, so ``cond_or_uncond`` is what an unbatched run sees."""
    import comfy.patcher_extension as ext

    def one_at_a_time(executor, inner, conds, x, t, options):
        out = [torch.zeros_like(x) for _ in conds]
        for i, cond in enumerate(conds):
            if cond is not None:
                out[i] = executor(inner, [cond if j == i else None for j in range(len(conds))], x, t, options)[i]
        return out

    m = model.clone()
    ext.add_wrapper_with_key(ext.WrappersMP.CALC_COND_BATCH, "test-unbatched", one_at_a_time, m.model_options, is_model_options=True)
    return m


@pytest.mark.parametrize("count", [3])  # 2 images: test_precision.py
def test_several_images_concatenate_their_tokens_and_batched_cond_uncond_match_diffusers(comfy, env, count):
    """B images: the full set is the B single-image sets side by side (16·B tokens), the unconditional
    set the zero image's 16. One UNet call on a [cond, uncond] batch equals diffusers' IP-Adapter
    attention run per branch with 16·B and 16 appended tokens."""
    import comfy.model_management as mm

    pics = images(count)
    tokens = env.apply_mod.project_token_sets(env.adapter, env.clip, env.vision, pics, "use the object", "a cat", "blurry")
    assert tuple(tokens["full"].shape) == (1, 16 * count, 768) and tuple(tokens["uncond"].shape) == (1, 16, 768)
    for k in range(count):
        alone = env.apply_mod.project_token_sets(env.adapter, env.clip, env.vision, pics[k : k + 1], "use the object", "a cat", "blurry")
        for name in ("full", "image_only", "everything"):
            torch.testing.assert_close(tokens[name][:, 16 * k : 16 * (k + 1)], alone[name], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(tokens["uncond"], alone["uncond"])
    guidance = env.apply_mod.IPGuidance(four_branch=False, instruct_cfg=6.0, image_cfg=1.0)
    patched = env.apply_mod.apply(env.model, env.adapter, tokens, 0.7, 0.0, 1.0, None, guidance)

    g = torch.Generator().manual_seed(9)
    x = torch.randn(1, 4, 8, 8, generator=g)
    t = torch.tensor([500.0])
    pos, neg = env.pos[0][0].float(), env.neg[0][0].float()
    with torch.no_grad():
        cond_unet = _diffusers_ip_unet(env.adapter, _diffusers_unet_from(env.model), 16 * count, 0.7)
        expected_cond = cond_unet(x, t, encoder_hidden_states=torch.cat([pos, tokens["full"].float()], dim=1)).sample
        uncond_unet = _diffusers_ip_unet(env.adapter, cond_unet, 16, 0.7)
        expected_uncond = uncond_unet(x, t, encoder_hidden_states=torch.cat([neg, tokens["uncond"].float()], dim=1)).sample
        mm.load_models_gpu([patched])
        to = {
            "patches_replace": patched.model_options["transformer_options"]["patches_replace"],
            "cond_or_uncond": [0, 1],
            "sigmas": torch.tensor([1.0, 1.0]),
        }
        got = patched.model.diffusion_model(x.repeat(2, 1, 1, 1), t.repeat(2), context=torch.cat([pos, neg]), transformer_options=to)
    torch.testing.assert_close(got[:1], expected_cond, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[1:], expected_uncond, rtol=1e-4, atol=1e-4)


def recorded(model):
    """A clone recording ``cond_or_uncond`` of every UNet call (batched: several indices in one call)."""
    calls: list = []

    def record(apply_model, args):
        calls.append(list(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    return with_unet_wrapper(model, record), calls


def _sample_core(patched, pos, neg, lat):
    import nodes

    return nodes.common_ksampler(patched, 1, 1, 5.0, "euler", "normal", pos, neg, lat)[0]["samples"]


@pytest.fixture(scope="module")
def base_runs() -> dict:
    """The model without the adapter, sampled batched, and its batching floor, per model and sampler (below)."""
    return {}


def assert_batching_changes_nothing(sample, together, apart, base_model, base_runs: dict, base_key: tuple) -> None:
    """Batched and unbatched sampling of the adapted model agree up to the UNet's own batching floor.

    CPU kernels pick other blockings for other batch sizes, so even without the adapter a batched step
    differs from an unbatched one by a few float32 roundings, amplified by the random full-size weights
    (about 2e-3 here). The adapter must add nothing beyond that floor: a wrong token set for a chunk
    would differ by the size of the adapter's effect, orders of magnitude more.

    The model without the adapter samples the same whatever the task, so its batched run and its floor are
    computed once per ``base_key`` (the model and the sampler) for the task variants."""
    if base_key not in base_runs:
        plain, plain_calls = recorded(base_model)
        plain_together = sample(plain).detach()
        assert any(len(c) > 1 for c in plain_calls)
        base_runs[base_key] = (plain_together, (plain_together - sample(unbatched(plain))).abs().max().item())
    plain_together, floor = base_runs[base_key]
    difference = (together - apart).abs().max().item()
    effect = (together - plain_together).abs().max().item()
    assert difference <= 2 * floor + 1e-5, f"batched vs unbatched {difference:.3g} > 2 x the UNet's own batching floor {floor:.3g}"
    assert effect > 100 * max(difference, 1e-6), f"the adapter's effect {effect:.3g} must stand far above the batching floor"


@pytest.mark.parametrize("count", [3])  # 2 images: test_precision.py
@pytest.mark.parametrize("task", ["style", "object"])  # simple 2-pass / 4-branch guidance
@pytest.mark.parametrize("sampler", ["core", "instruct"])
def test_several_images_sample_the_same_batched_and_unbatched_on_a_plain_model(comfy, env, base_runs, count, task, sampler):
    patched = apply_node(env, image=images(count), task=task)
    lat = latent()

    def sample(model):
        if sampler == "core":
            return _sample_core(model, env.pos, env.neg, lat)
        return run_sampler(comfy, model, env.pos, env.neg, steps=1, text_cfg=5.0, image_cfg=1.5, lat=lat)

    patched, calls = recorded(patched)
    together = sample(patched)
    if not any(len(c) > 1 for c in calls):  # ComfyUI batches only when it estimates the memory is there
        pytest.skip("ComfyUI did not batch cond and uncond on this machine (free memory too low)")
    calls.clear()
    apart = sample(unbatched(patched))
    assert calls and all(len(c) == 1 for c in calls)
    # 4-branch: apply's image_cfg is 1.0 here, so the unconditional pass has weight 0 and is skipped
    branches = 3 if (task == "object" and sampler == "instruct") else 2
    assert len({c[0] for c in calls}) == branches
    assert torch.isfinite(together).all()
    assert_batching_changes_nothing(sample, together, apart, env.model, base_runs, ("plain model", sampler))


@pytest.mark.parametrize("count", [3])  # 2 images: test_precision.py
def test_four_branch_formula_with_several_images(comfy, env, count):
    """Combined (batched) prediction against the formula over each branch evaluated alone."""
    patched = apply_node(env, image=images(count), task="object", instruct_cfg=4.0, image_cfg=1.5)
    guider = comfy.pack("samplers.guider").InstructDualCFGGuider(patched, comfy.pack("samplers.dual_cfg").ScaleSchedule(5.0, 1.5))
    guider.set_conds(env.pos, env.neg)
    capture = {}
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    guider.sample(
        noise, torch.zeros_like(noise), _branch_predictions(comfy, patched, env.pos, env.neg, capture), torch.tensor([8.0, 0.0]), seed=0
    )
    u, i, e, c = (capture[k] for k in ("uncond", "image_only", "everything", "full"))
    torch.testing.assert_close(capture["combined"], u + 1.5 * (i - u) + 5.0 * (e - i) + 4.0 * (c - e), rtol=1e-4, atol=1e-4)


# ---- one home for each scale ----------------------------------------------------------------------


def test_four_branch_image_scale_is_the_apply_nodes_and_a_set_sampler_image_cfg_is_reported(comfy, env, log_capture):
    patched = apply_node(env, task="object", instruct_cfg=4.0, image_cfg=1.5)
    at_one = run_sampler(comfy, patched, env.pos, env.neg, text_cfg=5.0, image_cfg=1.0)
    assert not [m for m in log_capture.messages() if "not used" in m]
    at_three = run_sampler(comfy, patched, env.pos, env.neg, text_cfg=5.0, image_cfg=3.0)
    torch.testing.assert_close(at_three, at_one, rtol=0, atol=0)  # the sampler's image_cfg has no branch here
    warnings = [m for m in log_capture.messages() if "scales that are not used" in m]
    assert len(warnings) == 1
    assert (
        "InstructKSampler's image_cfg=3.0: the image scale of IPAdapter-Instruct's 4-branch guidance is Apply's image_cfg (1.5)"
        in (warnings[0])
    )
    other = run_sampler(comfy, apply_node(env, task="object", instruct_cfg=4.0, image_cfg=2.5), env.pos, env.neg, image_cfg=1.0)
    assert not torch.allclose(other, at_one, atol=1e-5)  # Apply's image_cfg is the one that acts


def test_four_branch_scales_set_in_the_simple_mode_are_reported_once_where_it_samples(comfy, env, log_capture):
    run_sampler(comfy, apply_node(env, task="style"), env.pos, env.neg, image_cfg=1.0)
    assert not [m for m in log_capture.messages() if "not used" in m]
    run_sampler(comfy, apply_node(env, task="style", instruct_cfg=4.0), env.pos, env.neg, image_cfg=1.0)
    warnings = [m for m in log_capture.messages() if "not used" in m]
    assert len(warnings) == 1 and "instruct_cfg=4.0 / image_cfg=1.0: its guidance is 'simple'" in warnings[0]
    assert "choose guidance 'four_branch' to use them" in warnings[0]


# ---- composition --------------------------------------------------------------------------------


def test_stacking_two_applies_chains_both_adapters(comfy, env):
    import comfy.model_management as mm

    one = apply_node(env, weight=0.5, task="style")
    two = apply_node(env, model=one, weight=0.3, task="everything")
    replace = two.model_options["transformer_options"]["patches_replace"]["attn2"]
    outer = replace[("middle", 0, 0)]
    assert outer.previous is one.model_options["transformer_options"]["patches_replace"]["attn2"][("middle", 0, 0)]
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500.0])
    text = env.pos[0][0]

    def run(m):
        mm.load_models_gpu([m])
        to = {
            "patches_replace": m.model_options["transformer_options"].get("patches_replace", {}),
            "cond_or_uncond": [0],
            "sigmas": torch.tensor([1.0]),
        }
        with torch.no_grad():
            return m.model.diffusion_model(x, t, context=text, transformer_options=to)

    base, first, both = run(env.model), run(one), run(two)
    assert not torch.allclose(first, both, atol=1e-4) and not torch.allclose(base, first, atol=1e-4)


def test_weight_zero_and_outside_the_window_leave_the_model_unchanged(comfy, env):
    base = run_sampler(comfy, env.model, env.pos, env.neg)
    assert torch.equal(run_sampler(comfy, apply_node(env, weight=0.0), env.pos, env.neg), base)
    assert torch.equal(run_sampler(comfy, apply_node(env, start_at=0.5, end_at=1.0), env.pos, env.neg, steps=1), base)


def test_attention_mask_limits_where_the_adapter_acts(comfy, env):
    mask = torch.zeros(1, 64, 64)
    base = run_sampler(comfy, env.model, env.pos, env.neg)
    masked = run_sampler(comfy, apply_node(env, attn_mask=mask), env.pos, env.neg)
    torch.testing.assert_close(masked, base, rtol=1e-5, atol=1e-5)  # all-zero mask: no adapter anywhere


def test_an_adapter_made_for_other_layer_widths_is_refused_at_apply_naming_both(comfy, env):
    """The loader takes each layer's width from the file (a narrow UNet has its own adapter); the apply checks
    every width against the model's layer, so a file for another UNet never reaches a mismatched matmul."""
    spec_mod = comfy.pack("models.ipadapter_instruct")
    image_proj, ip_layers = factory.ip_instruct_groups(
        spec_mod, channels=2 * factory.NARROW_CHANNELS, dim=factory.NARROW_RESAMPLER_DIM, image_dim=factory.NARROW_IMAGE_DIM
    )
    wider = env.apply_mod.LoadedAdapter(spec_mod.build_adapter({"image_proj": image_proj, "ip_adapter": ip_layers}, "wide.bin"), "wide.bin")
    with pytest.raises(comfy.pack("models.errors").InstructInputError) as err:
        apply_node(env, ipadapter=wider)
    assert "'wide.bin' was made for a UNet whose cross-attention layer ('input', 1, 0) (adapter layer 1) is 64 wide" in str(err.value)
    assert "this model's is 32" in str(err.value)


def test_adapter_for_another_base_is_refused(comfy, env):
    fake = types.SimpleNamespace(
        spec=types.SimpleNamespace(base="SDXL", resampler=types.SimpleNamespace(output_dim=2048)), source="ip-adapter-instruct-sdxl.bin"
    )
    with pytest.raises(comfy.pack("models.errors").InstructInputError, match="SDXL adapter but the model is SD1.5.*sd15"):
        env.apply_mod.check_base(env.model, fake)


# ---- with cubiq's IPAdapter (IPAdapter Plus), kept outside the repo -----------------------------


@pytest.fixture(scope="module")
def ipadapter_plus(comfy):
    """cubiq/ComfyUI_IPAdapter_plus from IPADAPTER_PLUS_PATH (default /root/ComfyUI_IPAdapter_plus)."""
    import importlib.util
    import os
    import sys
    from pathlib import Path

    root = Path(os.environ.get("IPADAPTER_PLUS_PATH", "/root/ComfyUI_IPAdapter_plus"))
    if not (root / "IPAdapterPlus.py").is_file():
        pytest.skip(f"cubiq's ComfyUI_IPAdapter_plus not found at {root} (set IPADAPTER_PLUS_PATH to a checkout)")
    name = "ipadapter_plus_under_test"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name + ".IPAdapterPlus"]


def plain_ip_adapter_sd15(widths, seed=11):
    """A plain SD1.5 IP-Adapter in cubiq's two-group format (4 tokens from 1024-d image_embeds), seeded, with
    the given layer widths (cubiq sizes its projections from the file)."""
    g = torch.Generator().manual_seed(seed)
    image_proj = {
        "proj.weight": torch.randn(4 * 768, 1024, generator=g) / 32,
        "proj.bias": torch.zeros(4 * 768),
        "norm.weight": torch.ones(768),
        "norm.bias": torch.zeros(768),
    }
    ip = {}
    for i, width in enumerate(widths):
        for kind in ("k", "v"):
            ip[f"{2 * i + 1}.to_{kind}_ip.weight"] = torch.randn(width, 768, generator=g) / 28
    return {"image_proj": image_proj, "ip_adapter": ip}


def _cubiq(plus, env, model):
    """cubiq's apply as ComfyUI runs it, without autograd: called bare, its CLIP-vision encoding recorded a
    graph that the embeddings in the patch keep, and with it fp32 casts of the encoder's weights (0.4 GB)."""
    apply = plus.IPAdapterAdvanced().apply_ipadapter
    widths = [env.adapter.spec.layer_dims[n] for n in range(1, 32, 2)]  # the narrow UNet's, as its adapter file has them
    with torch.no_grad():
        return apply(model, plain_ip_adapter_sd15(widths), weight=0.8, image=env.image, clip_vision=env.vision)[0]


def test_cubiq_ipadapter_then_instruct_stacks_both(comfy, env, ipadapter_plus):
    cubiq_only = _cubiq(ipadapter_plus, env, env.model)
    both = apply_node(env, model=cubiq_only, task="style")
    instruct_only = apply_node(env, task="style")
    outs = {
        n: run_sampler(comfy, m, env.pos, env.neg)
        for n, m in [("base", env.model), ("cubiq", cubiq_only), ("both", both), ("instruct", instruct_only)]
    }
    assert not torch.allclose(outs["cubiq"], outs["base"], atol=1e-4)
    assert not torch.allclose(outs["both"], outs["cubiq"], atol=1e-4) and not torch.allclose(outs["both"], outs["instruct"], atol=1e-4)
    replace = both.model_options["transformer_options"]["patches_replace"]["attn2"]
    assert type(replace[("input", 1, 0)].previous).__name__ == "Attn2Replace"  # ours wraps cubiq's


def test_cubiq_ipadapter_after_instruct_is_refused_with_the_order_that_works(comfy, env, ipadapter_plus):
    """SD1.5: cubiq registers at two-part keys, which ComfyUI shadows by ours, so its adapter would
    silently not run: sampling refuses, naming the order that works (SDXL: cubiq's ``add`` on our
    patch refuses at apply time with the same message)."""
    errors = comfy.pack("models.errors")
    late = _cubiq(ipadapter_plus, env, apply_node(env, task="style"))
    with pytest.raises(errors.InstructInputError, match="Apply the IPAdapter Plus node first and IPAdapter-Instruct Apply after"):
        run_sampler(comfy, late, env.pos, env.neg)
    with pytest.raises(errors.InstructInputError, match="Apply the IPAdapter Plus node first"):
        import nodes

        nodes.common_ksampler(late, 1, 1, 5.0, "euler", "normal", env.pos, env.neg, latent())
    patch = apply_node(env, task="style").model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1, 0)]
    with pytest.raises(errors.InstructInputError, match="Apply the IPAdapter Plus node first"):
        patch.add(lambda *a: 0, sigma_start=1.0, sigma_end=0.0)


# ---- LoRA + ControlNet + the adapter in one graph (its UNet stored in fp16: the cache swaps models here) ----


def test_lora_controlnet_and_adapter_in_one_graph(comfy, env, narrow, log_capture):
    image = comfy.input_image("ip.png", seed=5)
    g = comfy.graph()
    # the narrow checkpoint, built in memory, its UNet stored in fp16, beside a ControlNet of its width and a second adapter
    ckpt = g.node("InstructTestFullSD15", id="ckpt", kind="plain", weight_dtype="fp16", width="narrow")
    lora = g.node(
        "LoraLoader",
        id="lora",
        model=ckpt.out(0),
        clip=ckpt.out(1),
        lora_name="narrow-lora-sd15-random.safetensors",
        strength_model=1.0,
        strength_clip=1.0,
    )
    ipl = g.node("IPAdapterInstructLoader", id="ipl", ipadapter_file=f"{ADAPTER}.bin")
    cv = g.node("InstructTestTinyClipVision", id="cv", width="narrow")
    img = g.node("LoadImage", id="img", image=image)
    ipa = g.node(
        "IPAdapterInstructApply",
        id="ipa",
        model=lora.out(0),
        ipadapter=ipl.out(0),
        clip_vision=cv.out(0),
        clip=lora.out(1),
        image=img.out(0),
        task="object",
        instruction="",
        prompt="a cat",
        negative_prompt="",
        weight=0.7,
        start_at=0.0,
        end_at=1.0,
        guidance="auto",
        instruct_cfg=4.0,
        image_cfg=1.5,
        auto_scale=True,
    )
    rec = g.node("InstructTestRecordUNetCalls", id="rec", model=ipa.out(0))
    pos = g.node("CLIPTextEncode", id="pos", clip=lora.out(1), text="a cat")
    neg = g.node("CLIPTextEncode", id="neg", clip=lora.out(1), text="")
    cnl = g.node("InstructTestFullControlNet", id="cnl", width="narrow")
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
    empty = g.node("EmptyLatentImage", id="empty", width=64, height=64, batch_size=1)
    ks = g.node(
        "InstructKSampler",
        id="ks",
        model=rec.out(0),
        seed=1,
        steps=1,
        text_cfg=5.0,
        image_cfg=1.0,
        sampler_name="euler",
        scheduler="normal",
        positive=cna.out(0),
        negative=cna.out(1),
        latent_image=empty.out(0),
        denoise=1.0,
    )
    g.node("SaveImage", id="save", images=g.node("VAEDecode", id="dec", samples=ks.out(0), vae=ckpt.out(2)).out(0), filename_prefix="ip")
    comfy.test_nodes.CALLS.clear()
    result = comfy.run(g.finalize())
    calls = list(comfy.test_nodes.CALLS)
    assert len(calls) == 1 and sorted(calls[0]["branches"]) == [0, 1, 2, 3]  # the 4-branch mode
    assert all(n > 0 for n in calls[0]["control_chunk_norms"])  # control on every branch
    assert len(result.output("lora").patches) == 3
    assert not [m for m in log_capture.messages() if "lora key not loaded" in m]
    assert torch.isfinite(result.output("dec")).all()


# ---- on an instruct model (after the plain-model tests: the one-model cache swaps the plain model out) ----


@pytest.fixture(scope="module")
def instruct_env(comfy, env, narrow):
    model, clip, vae = narrow.load("instruct", "fp16")  # the 8-channel narrow UNet, stored in fp16
    loaded = types.SimpleNamespace(model=model, clip=clip, vae=vae)
    cond = (
        comfy.nodes.NODE_CLASS_MAPPINGS["InstructImageConditioning"]
        .execute(
            positive=env.pos,
            negative=env.neg,
            vae=loaded.vae,
            image=torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(4)),
            size_mode="crop",
            latent_output="empty",
        )
        .result
    )
    return types.SimpleNamespace(loaded=loaded, pos=cond[0], neg=cond[1], lat=cond[2])


def test_adapter_on_an_instruct_model_with_the_dual_cfg_path(comfy, env, instruct_env):
    ie = instruct_env
    patched = apply_node(env, model=ie.loaded.model, task="style", clip=ie.loaded.clip)
    with TokenSpy(comfy) as spy:
        out = run_sampler(comfy, patched, ie.pos, ie.neg, steps=1, text_cfg=7.5, image_cfg=1.5, lat=ie.lat)
    assert torch.isfinite(out).all()
    # full branch → the adapter's positive tokens, image-only and unconditional → its negative tokens
    assert any(sorted(c) == ["full", "uncond", "uncond"] for c in spy.calls)


@pytest.mark.parametrize("count", [3])  # 2 images: test_precision.py
@pytest.mark.parametrize("task", ["style", "object"])
@pytest.mark.parametrize("sampler", ["core", "instruct"])
def test_several_images_sample_the_same_batched_and_unbatched_on_an_instruct_model(
    comfy, env, instruct_env, base_runs, count, task, sampler, log_capture
):
    ie = instruct_env
    patched = apply_node(env, model=ie.loaded.model, clip=ie.loaded.clip, image=images(count), task=task)

    def sample(model):
        if sampler == "core":
            return _sample_core(model, ie.pos, ie.neg, ie.lat)
        return run_sampler(comfy, model, ie.pos, ie.neg, steps=1, text_cfg=7.5, image_cfg=1.5, lat=ie.lat)

    patched, calls = recorded(patched)
    together = sample(patched)
    if not any(len(c) > 1 for c in calls):
        pytest.skip("ComfyUI did not batch cond and uncond on this machine (free memory too low)")
    apart = sample(unbatched(patched))
    assert torch.isfinite(together).all()
    assert_batching_changes_nothing(sample, together, apart, ie.loaded.model, base_runs, ("instruct model", sampler))
    if task == "object" and sampler == "instruct":  # the 4-branch request cannot be met on an instruct model
        assert [m for m in log_capture.messages() if "an edit model samples its own text and image guidance" in m]


# ---- encodings (at the end, beside the smallest UNet: their reference encoders would add to the fp32 UNet's peak) ----


def test_text_encoding_is_clip_l_last_layer_77_tokens_without_weights(comfy, env):
    """Against transformers' CLIPTextModel on the same weights: last_hidden_state, 77 tokens, truncated,
    padded with the end token, parentheses taken literally; a CLIPSetLastLayer upstream changes nothing."""
    import os

    import comfy.sd1_clip as sd1_clip
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok_dir = os.path.join(os.path.dirname(sd1_clip.__file__), "sd1_tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir, model_max_length=77)
    hf = CLIPTextModel(CLIPTextConfig(**dict(factory.CLIP_L_TEXT_CONFIG, num_hidden_layers=factory.NARROW_CLIP_LAYERS)))
    prefix = "clip_l.transformer." if any(k.startswith("text_model.") for k in hf.state_dict()) else "clip_l.transformer.text_model."
    sd = {k[len(prefix) :]: v.float() for k, v in env.clip.get_sd().items() if k.startswith(prefix)}
    missing, _ = hf.load_state_dict(sd, strict=False)
    assert not [m for m in missing if "position_ids" not in m]
    text = "a (red:1.5) " + "house " * 90  # weight syntax and more than 77 tokens
    ids = tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    ids[ids == tokenizer.pad_token_id] = tokenizer.eos_token_id  # SD pads with the end token
    with torch.no_grad():
        expected = hf(ids).last_hidden_state
    skipped = env.clip.clone()
    skipped.clip_layer(-2)
    got = env.apply_mod.clip_l_last_hidden(skipped, text)
    assert tuple(got.shape) == (1, 77, 768)
    torch.testing.assert_close(got.float(), expected, rtol=1e-3, atol=1e-3)


def test_unconditional_image_is_zero_after_normalisation(comfy, env):
    zero = env.apply_mod.zero_image_hidden(env.vision)
    black = env.apply_mod.image_hidden(env.vision, torch.zeros(1, 224, 224, 3))
    assert tuple(zero.shape) == (1, 257, factory.NARROW_IMAGE_DIM)  # penultimate states: 256 patches and the class token
    assert not torch.allclose(zero, black)  # a black picture is not the mean-grey zero input


# ---- SDXL text encoding (at the end: its SDXL CLIP takes 1.2 GB while it runs, beside the smallest UNet) ----


def test_sdxl_encoding_uses_clip_l_alone_at_its_last_layer(comfy, env):
    """On an SDXL CLIP the adapter's text inputs are CLIP-L's last-layer (final-LN) states — the same
    numbers the SD1.5 path gives for the same CLIP-L weights — not the 2048-d SDXL conditioning.
    (CLIP-G is shrunk to 3 layers here, CLIP-L to the narrow environment's; only CLIP-L's half is used.)"""
    import comfy.sd as comfy_sd
    import comfy.supported_models as sm

    target = sm.SDXL(dict(sm.SDXL.unet_config)).clip_target()
    layers = {"clip_g_model_config": {"num_hidden_layers": 3}, "clip_l_model_config": {"num_hidden_layers": factory.NARROW_CLIP_LAYERS}}
    sdxl_clip = comfy_sd.CLIP(target, model_options=layers)
    prefix = "clip_l.transformer."
    l_weights = {k[len(prefix) :]: v for k, v in env.clip.get_sd().items() if k.startswith(prefix)}
    missing, _ = sdxl_clip.cond_stage_model.clip_l.load_sd(l_weights)
    assert not [m for m in missing if "position_ids" not in m]
    with torch.no_grad():  # CLIP-G's seeded weights set in place, not built as a second copy beside it
        for name, tensor in sdxl_clip.cond_stage_model.clip_g.state_dict().items():
            if not name.endswith("position_ids"):
                tensor.copy_(factory.fill("g." + name, tensor.shape))
    text = "use the composition"
    on_sdxl = env.apply_mod.clip_l_last_hidden(sdxl_clip, text)
    on_sd15 = env.apply_mod.clip_l_last_hidden(env.clip, text)
    assert tuple(on_sdxl.shape) == (1, 77, 768)
    torch.testing.assert_close(on_sdxl, on_sd15, rtol=1e-4, atol=1e-4)
    default_cond = sdxl_clip.encode_from_tokens(sdxl_clip.tokenize(text))
    assert default_cond.shape[-1] == 2048
    assert not torch.allclose(default_cond[..., :768].float(), on_sd15.float(), atol=1e-2)  # penultimate, no final LN
