"""IP-Adapter-Instruct architecture and file spec, against an independent implementation written
here from the published description (no ComfyUI needed)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import pure

spec_mod = pure("models.ipadapter_instruct")
errors = pure("models.errors")

SD15 = spec_mod.ResamplerConfig(
    dim=768, depth=4, num_queries=16, image_dim=1280, text_dim=768, output_dim=768, ff_mult=4, ff_mult_secondary=2
)


def random_groups(seed=0, cfg=SD15, widths=None):
    spec = spec_mod.AdapterSpec("SD1.5", cfg, {2 * i + 1: w for i, w in enumerate(widths or spec_mod.SD15_LAYERS)})
    proj_shapes, ip_shapes = spec_mod.expected_shapes(spec)
    g = torch.Generator().manual_seed(seed)
    image_proj = {
        k: torch.randn(s, generator=g) / (s[-1] ** 0.5 if len(s) > 1 else 4) + (1.0 if k.endswith("weight") and len(s) == 1 else 0.0)
        for k, s in proj_shapes.items()
    }
    ip = {k: torch.randn(s, generator=g) / s[-1] ** 0.5 for k, s in ip_shapes.items()}
    return image_proj, ip


# ---- an independent, functional implementation of the published resampler ---------------------


def ln(x, sd, p):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps=1e-5)


def perceiver(sd, p, context, latents, heads):
    context, lat = ln(context, sd, p + ".norm1"), ln(latents, sd, p + ".norm2")
    q = lat @ sd[p + ".to_q.weight"].T
    kv = torch.cat([context, lat], dim=1) @ sd[p + ".to_kv.weight"].T
    k, v = kv.chunk(2, dim=-1)
    b, n, d = q.shape
    split = lambda t: t.reshape(b, t.shape[1], heads, d // heads).permute(0, 2, 1, 3)  # noqa: E731
    attn = torch.softmax(split(q) @ split(k).transpose(-1, -2) / (d // heads) ** 0.5, dim=-1)
    out = (attn @ split(v)).permute(0, 2, 1, 3).reshape(b, n, d)
    return out @ sd[p + ".to_out.weight"].T


def ff(sd, p, x):
    h = ln(x, sd, p + ".0") @ sd[p + ".1.weight"].T
    return F.gelu(h) @ sd[p + ".3.weight"].T


def reference_resampler(sd, image, instruction, prompt, heads=12, depth=4):
    lin = lambda x, p: x @ sd[p + ".weight"].T + sd[p + ".bias"]  # noqa: E731
    x, ins, pr = lin(image, "proj_in"), lin(instruction, "proj_new_input"), lin(prompt, "proj_prompt_input")
    lat = sd["latents"].repeat(image.shape[0], 1, 1)
    for i in range(depth):  # image → prompt → instruction, each attention then feed-forward, residual
        for group, ctx in (("layers", x), ("prompt_layers", pr), ("new_input_layers", ins)):
            lat = perceiver(sd, f"{group}.{i}.0", ctx, lat, heads) + lat
            lat = ff(sd, f"{group}.{i}.1", lat) + lat
    return ln(lin(lat, "proj_out"), sd, "norm_out")


def test_projection_matches_the_independent_implementation():
    image_proj, ip = random_groups()
    adapter = spec_mod.build_adapter({"image_proj": image_proj, "ip_adapter": ip}, "x.bin")
    g = torch.Generator().manual_seed(1)
    image, instruction, prompt = (
        torch.randn(2, 257, 1280, generator=g),
        torch.randn(1, 77, 768, generator=g),
        torch.randn(1, 77, 768, generator=g),
    )
    with torch.no_grad():
        got = adapter.image_proj(image, instruction.expand(2, -1, -1), prompt.expand(2, -1, -1))
    expected = reference_resampler(image_proj, image, instruction.expand(2, -1, -1), prompt.expand(2, -1, -1))
    assert got.shape == (2, 16, 768)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_instruction_and_prompt_paths_are_not_interchangeable():
    image_proj, ip = random_groups()
    adapter = spec_mod.build_adapter({"image_proj": image_proj, "ip_adapter": ip}, "x.bin")
    g = torch.Generator().manual_seed(2)
    image, a, b = torch.randn(1, 257, 1280, generator=g), torch.randn(1, 77, 768, generator=g), torch.randn(1, 77, 768, generator=g)
    with torch.no_grad():
        assert not torch.allclose(adapter.image_proj(image, a, b), adapter.image_proj(image, b, a), atol=1e-4)


def test_ip_layers_keep_their_reference_numbers():
    image_proj, ip = random_groups()
    adapter = spec_mod.build_adapter({"image_proj": image_proj, "ip_adapter": ip}, "x.bin")
    torch.testing.assert_close(adapter.ip_layers["31_to_v_ip"].weight, ip["31.to_v_ip.weight"])
    assert len(adapter.ip_layers) == 32  # 16 layers × (k, v)


def test_flat_safetensors_prefixes_load_the_same():
    image_proj, ip = random_groups()
    flat = {f"image_proj.{k}": v for k, v in image_proj.items()} | {f"ip_adapter.{k}": v for k, v in ip.items()}
    a = spec_mod.build_adapter(flat, "x.safetensors")
    torch.testing.assert_close(a.image_proj.latents, image_proj["latents"])


def test_detection_reads_sd15_from_shapes():
    image_proj, ip = random_groups()
    spec = spec_mod.detect(image_proj, ip, "x")
    assert spec.base == "SD1.5" and spec.resampler == SD15 and len(spec.layer_dims) == 16
    assert [spec.layer_dims[n] for n in range(1, 32, 2)] == spec_mod.SD15_LAYERS


def test_layer_widths_come_from_the_file_and_are_still_checked_key_by_key_and_shape_by_shape():
    """A UNet of SD1.5's topology at other widths takes its own adapter (checked against the model when applied);
    the published layout's keys and every shape stay strict: to_k and to_v of a layer must agree."""
    narrow = [w // 10 for w in spec_mod.SD15_LAYERS]
    image_proj, ip = random_groups(widths=narrow)
    adapter = spec_mod.build_adapter({"image_proj": image_proj, "ip_adapter": ip}, "narrow.bin")
    assert [adapter.spec.layer_dims[n] for n in range(1, 32, 2)] == narrow
    assert tuple(adapter.ip_layers["31_to_v_ip"].weight.shape) == (128, 768)
    ip["5.to_v_ip.weight"] = torch.zeros(narrow[2] + 1, 768)  # one layer's value projection another width
    with pytest.raises(errors.InstructModelError, match=r"wrong shape 1 \(e.g. 5.to_v_ip.weight: \(65, 768\) vs \(64, 768\)\)"):
        spec_mod.build_adapter({"image_proj": image_proj, "ip_adapter": ip}, "narrow.bin")
    del ip["5.to_v_ip.weight"]
    with pytest.raises(errors.InstructModelError, match=r"missing 1 \(e.g. 5.to_v_ip.weight\)"):
        spec_mod.build_adapter({"image_proj": image_proj, "ip_adapter": ip}, "narrow.bin")


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda p, i: p.pop("prompt_layers.3.1.3.weight"), "missing 1"),
        (lambda p, i: i.update({"33.to_k_ip.weight": torch.zeros(320, 768)}), "unknown 1"),
        (lambda p, i: i.update({"31.to_k_ip.weight": torch.zeros(640, 768)}), "wrong shape"),
    ],
)
def test_strict_key_check(mutate, message):
    image_proj, ip = random_groups()
    mutate(image_proj, ip)
    with pytest.raises(errors.InstructModelError, match=message):
        spec_mod.build_adapter({"image_proj": image_proj, "ip_adapter": ip}, "x.bin")


@pytest.mark.parametrize(
    "image_proj,ip,message",
    [
        ({"proj.weight": torch.zeros(1), "norm.weight": torch.zeros(1)}, {"1.to_k_ip.weight": torch.zeros(1)}, "plain IP-Adapter"),
        ({"latents": torch.zeros(1, 16, 768), "proj_in.weight": torch.zeros(1)}, {"1.to_k_ip.weight": torch.zeros(1)}, "IP-Adapter Plus"),
        ({"proj.0.weight": torch.zeros(1)}, {"1.to_k_lora.down.weight": torch.zeros(1)}, "FaceID"),
        (
            {"latents": torch.zeros(1), "proj_out_big.weight": torch.zeros(1), "proj_new_input.weight": torch.zeros(1)},
            {"0.to_k_ip.weight": torch.zeros(1)},
            "SD3",
        ),
        ({"latents": torch.zeros(1)}, {}, "no 'ip_adapter' weights"),
    ],
)
def test_other_adapter_kinds_are_named(image_proj, ip, message):
    with pytest.raises(errors.InstructModelError, match=message):
        spec_mod.detect(image_proj, ip, "other.bin")


def test_layer_keys_follow_the_reference_order_with_the_middle_block():
    sd15 = spec_mod.layer_keys("SD1.5")
    assert list(sd15) == list(range(1, 32, 2))
    assert sd15[1] == ("input", 1, 0) and sd15[13] == ("output", 3, 0) and sd15[31] == ("middle", 0, 0)
    sdxl = spec_mod.layer_keys("SDXL")
    assert len(sdxl) == 70 and list(sdxl)[-1] == 139
    assert sdxl[1] == ("input", 4, 0) and sdxl[49] == ("output", 0, 0) and sdxl[121] == ("middle", 0, 0)
    assert sum(1 for key in sdxl.values() if key[0] == "middle") == 10
    assert [spec_mod.SDXL_LAYERS[(n - 1) // 2] for n in (1, 9, 109, 121)] == [640, 1280, 640, 1280]


def test_task_presets_and_the_reference_mode_rule():
    assert spec_mod.query_for("style", "") == "use the style"
    assert spec_mod.query_for("custom", "use the pose") == "use the pose"
    with pytest.raises(errors.InstructModelError, match="instruction' is empty"):
        spec_mod.query_for("custom", " ")
    simple = [spec_mod.TASKS[t] for t in ("everything", "style", "face")]
    four = [spec_mod.TASKS[t] for t in ("composition", "object")]
    assert not any(spec_mod.reference_wants_four_branch(q) for q in simple)
    assert all(spec_mod.reference_wants_four_branch(q) for q in four)
    assert spec_mod.reference_wants_four_branch("use the pose")
    assert spec_mod.reference_auto_scale("use the composition", 0.8, "SD1.5") == pytest.approx(0.6)
    assert spec_mod.reference_auto_scale("use the composition", 0.9, "SDXL") == pytest.approx(0.7)  # SDXL: set to 0.7
    assert spec_mod.reference_auto_scale("use the pose", 0.9, "SDXL") == 0.9  # SDXL's rule is composition only
    assert spec_mod.reference_auto_scale("use the pose", 0.8, "SD1.5") == pytest.approx(0.6)
    assert spec_mod.reference_auto_scale("use the style", 0.8, "SD1.5") == 0.8
