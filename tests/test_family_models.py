"""The tiny instruction-edit family models (testing/family_models.py) against real ComfyUI: each samples with
core's CFGGuider and reference/concat conditioning attached by core's own nodes, pairs with its tiny VAE, the
Qwen2.5-VL encoder runs under core's TextEncodeQwenImageEditPlus, and ComfyUI's detection makes the right
class of every published full-size layout."""

from __future__ import annotations

import pytest
import torch

import family_models as fm

#: (family, tiny_model options) sampled end to end.
SAMPLED = [(family, {}) for family in fm.FAMILIES] + [("flux_kontext", {"guidance_embed": False}), ("qwen_image_edit", {"variant": "2511"})]
#: Latent cells of the test image (odd both ways, not square).
CELLS = (3, 5)
#: Class ComfyUI's detection picks for each published file, and the model_base class it builds.
PUBLISHED_CLASS = {
    ("flux_kontext", "dev"): "Flux",
    ("flux2", "dev"): "Flux2",
    ("qwen_image_edit", "2509"): "QwenImage",
    ("qwen_image_edit", "2511"): "QwenImage",
    ("omnigen2", "v1"): "Omnigen2",
    ("hidream_e1", "e1.1"): "HiDream",
    ("hidream_e1", "e1"): "HiDream",
}
#: Advertised sizes of the released models, in billions of parameters.
PUBLISHED_BILLIONS = {"flux_kontext": 12, "flux2": 32, "qwen_image_edit": 20, "omnigen2": 4, "hidream_e1": 17}
#: unet_config keys that are widths, depths or text sizes: the only ones a tiny config may differ in.
SIZE_KEYS = {
    "hidden_size",
    "num_heads",
    "depth",
    "depth_single_blocks",
    "axes_dim",
    "context_in_dim",
    "vec_in_dim",
    "num_layers",
    "num_single_layers",
    "num_refiner_layers",
    "attention_head_dim",
    "num_attention_heads",
    "num_kv_heads",
    "multiple_of",
    "axes_dims_rope",
    "axes_dim_rope",
    "caption_channels",
    "llama_layers",
    "text_emb_dim",
    "text_feat_dim",
    "joint_attention_dim",
}


@pytest.fixture(scope="module")
def vaes(comfy):
    """The tiny VAEs, loaded once per family."""
    cache: dict = {}

    def get(family: str):
        if family not in cache:
            cache[family] = fm.tiny_vae(family, comfy.models_dir)
        return cache[family]

    return get


def picture(height: int, width: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A smooth seeded RGB IMAGE [B,H,W,3] in 0..1."""
    coarse = torch.rand(batch, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=True).movedim(1, -1)


def image_for(family: str, cells: tuple[int, int] = CELLS, batch: int = 1) -> torch.Tensor:
    scale = fm.spec(family).downscale
    return picture(cells[0] * scale, cells[1] * scale, batch)


def sample(
    model, positive: list, negative: list, latent: torch.Tensor, cfg: float = 2.0, steps: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, noise): ``steps`` Euler steps (simple schedule) with core's CFGGuider, as SamplerCustomAdvanced runs it."""
    import comfy.sample
    import comfy.samplers

    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    latent = comfy.sample.fix_empty_latent_channels(model, latent)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        out = guider.sample(noise, latent, comfy.samplers.sampler_object("euler"), sigmas, disable_pbar=True, seed=7)
    return out, noise


def with_reference(conditioning: list, latent: torch.Tensor) -> list:
    """What core ReferenceLatent outputs for this conditioning and LATENT."""
    from comfy_extras.nodes_edit_model import ReferenceLatent

    return ReferenceLatent.execute(conditioning=conditioning, latent={"samples": latent}).result[0]


def edit_conds(family: str, vae, image: torch.Tensor) -> tuple[list, list, torch.Tensor]:
    """(positive, negative, reference latent) with the image attached as the family's workflows attach it:
    HiDream-E1 through core InstructPixToPixConditioning (``concat_latent_image``), the others through core
    ReferenceLatent on both branches."""
    positive, negative = fm.text_conditioning(family, seed=1), fm.text_conditioning(family, seed=2)
    with torch.inference_mode():
        if family == "hidream_e1":
            from comfy_extras.nodes_ip2p import InstructPixToPixConditioning

            positive, negative, _ = InstructPixToPixConditioning.execute(positive=positive, negative=negative, pixels=image, vae=vae).result
            return positive, negative, positive[0][1]["concat_latent_image"]
        latent = vae.encode(image)
    return with_reference(positive, latent), with_reference(negative, latent), latent


def relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean() / b.abs().mean())


@pytest.mark.slow  # the families' sampling is the quick tier's in test_edit_families.py
@pytest.mark.parametrize("family, options", SAMPLED, ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={w}" for k, w in v.items()))
def test_tiny_model_samples_an_edit_and_pairs_with_its_vae(comfy, vaes, family, options):
    model = fm.tiny_model(family, **options)
    vae = vaes(family)
    image = image_for(family)
    positive, negative, reference = edit_conds(family, vae, image)
    assert tuple(reference.shape) == fm.latent_shape(family, *image.shape[1:3])

    empty = torch.zeros_like(reference.squeeze(2) if reference.ndim == 5 else reference)  # Qwen: EmptySD3LatentImage's 4-D
    out, noise = sample(model, positive, negative, empty)
    assert out.shape == reference.shape, "5-D for Qwen-Image (fix_empty_latent_channels adds the frame axis)"
    assert torch.isfinite(out).all()
    assert relative_change(out, noise) > 0.05 and out.abs().mean() > 0.05

    plain, _ = sample(model, fm.text_conditioning(family, seed=1), fm.text_conditioning(family, seed=2), empty)
    assert relative_change(out, plain) > 1e-3, "the reference image must change the result"

    with torch.inference_mode():
        decoded = vae.decode(out)
    assert decoded.shape[-3:] == image.shape[1:]
    assert torch.isfinite(decoded).all()


@pytest.mark.slow
@pytest.mark.parametrize("family", fm.FAMILIES)
def test_tiny_vae_encodes_and_decodes_odd_sizes(comfy, vaes, family):
    vae = vaes(family)
    s = fm.spec(family)
    image = image_for(family, batch=2)
    ragged = torch.nn.functional.pad(image.movedim(-1, 1), (0, 3, 0, 5), mode="replicate").movedim(1, -1)  # not a multiple: cropped
    with torch.inference_mode():
        latent = vae.encode(image)
        cropped = vae.encode(ragged)
        decoded = vae.decode(latent)
    assert vae.latent_channels == s.latent_channels
    assert tuple(latent.shape) == fm.latent_shape(family, image.shape[1], image.shape[2], batch=2) == tuple(cropped.shape)
    if s.latent_ndim == 5:
        # ComfyUI's Wan 2.1 VAE reads an image batch as the frames of one clip: two images make one latent frame.
        assert tuple(latent.shape) == (1, 16, 1, *CELLS)
        assert tuple(decoded.shape) == (1, 1, *image.shape[1:])
    else:
        assert tuple(latent.shape) == (2, s.latent_channels, *CELLS)
        assert decoded.shape == image.shape
    assert torch.isfinite(latent).all() and torch.isfinite(decoded).all()
    assert fm.vae_file(family, comfy.models_dir).parent == comfy.models_dir / "vae", "where core VAELoader finds it"


@pytest.mark.parametrize("family", fm.FAMILIES)
def test_text_conditioning_fits_the_tiny_model(comfy, family):
    config = fm.unet_config(family)
    [[context, extras]] = fm.text_conditioning(family, tokens=5, batch=2)
    width = {
        "flux_kontext": "context_in_dim",
        "flux2": "context_in_dim",
        "qwen_image_edit": "joint_attention_dim",
        "omnigen2": "text_feat_dim",
    }
    expected = config[width[family]] if family in width else config["caption_channels"][0]
    assert tuple(context.shape) == (2, 5, expected)
    assert "pooled_output" in extras
    if family == "flux_kontext":
        assert tuple(extras["pooled_output"].shape) == (2, config["vec_in_dim"]) and extras["guidance"] == 3.5
    if family in ("flux2", "omnigen2"):
        assert extras["attention_mask"].dtype == torch.long and tuple(extras["attention_mask"].shape) == (2, 5)
    if family == "hidream_e1":
        assert tuple(extras["pooled_output"].shape) == (2, config["text_emb_dim"])
        assert tuple(extras["conditioning_llama3"].shape) == (2, len(config["llama_layers"]), 5, config["caption_channels"][1])
    assert not torch.equal(context, fm.text_conditioning(family, seed=fm.SEED + 1, tokens=5, batch=2)[0][0])
    assert torch.equal(context, fm.text_conditioning(family, tokens=5, batch=2)[0][0])


@pytest.mark.parametrize("family", fm.FAMILIES)
def test_tiny_model_is_seeded(comfy, family):
    one, same, other = (fm.tiny_model(family, seed=s).model.diffusion_model.state_dict() for s in (fm.SEED, fm.SEED, fm.SEED + 1))
    assert one.keys() == same.keys() == other.keys()
    assert all(torch.equal(one[k], same[k]) for k in one)
    assert any(not torch.equal(one[k], other[k]) for k in one if one[k].numel() > 1 and one[k].std() > 0)


@pytest.mark.parametrize("family", fm.FAMILIES)
def test_tiny_config_differs_from_the_published_one_only_in_sizes(comfy, family):
    detected = fm.published_config(family).unet_config
    tiny = fm.model_config(family)
    assert type(tiny).__name__ == fm.spec(family).config_class
    for key, value in detected.items():
        if key in SIZE_KEYS or key in ("dtype", "default_ref_method"):
            continue
        assert key in tiny.unet_config and tiny.unet_config[key] == value, key


def test_kontext_without_guidance_embedding_is_a_schnell_class_model(comfy):
    model = fm.tiny_model("flux_kontext", guidance_embed=False)
    assert type(model.model.model_config).__name__ == "FluxSchnell"
    assert type(fm.tiny_model("flux_kontext").model.model_config).__name__ == "Flux"


@pytest.mark.slow
def test_qwen_2511_modulates_the_reference_at_timestep_zero(comfy, vaes):
    m2509, m2511 = fm.tiny_model("qwen_image_edit", variant="2509"), fm.tiny_model("qwen_image_edit", variant="2511")
    assert "__index_timestep_zero__" in m2511.model.diffusion_model.state_dict()
    assert "__index_timestep_zero__" not in m2509.model.diffusion_model.state_dict()
    positive, negative, reference = edit_conds("qwen_image_edit", vaes("qwen_image_edit"), image_for("qwen_image_edit"))
    empty = torch.zeros_like(reference)
    assert relative_change(sample(m2511, positive, negative, empty)[0], sample(m2509, positive, negative, empty)[0]) > 1e-3
    text = fm.text_conditioning("qwen_image_edit", seed=1), fm.text_conditioning("qwen_image_edit", seed=2)
    assert torch.equal(sample(m2511, *text, empty)[0], sample(m2509, *text, empty)[0]), "without a reference they are the same model"


def test_tiny_qwen_clip_under_text_encode_qwen_image_edit_plus(comfy, vaes):
    from comfy_extras.nodes_qwen import TextEncodeQwenImageEditPlus

    clip = fm.tiny_qwen_edit_clip()
    prompt = "make the sky red"
    image, other = picture(61, 93, seed=1), picture(61, 93, seed=2)
    with torch.inference_mode():
        with_image = TextEncodeQwenImageEditPlus.execute(clip=clip, prompt=prompt, image1=image).result[0]
        other_image = TextEncodeQwenImageEditPlus.execute(clip=clip, prompt=prompt, image1=other).result[0]
        text_only = TextEncodeQwenImageEditPlus.execute(clip=clip, prompt=prompt).result[0]
        plain = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))
    width = fm.unet_config("qwen_image_edit")["joint_attention_dim"]
    for cond in (with_image, other_image, text_only, plain):
        assert len(cond) == 1 and cond[0][0].shape[0] == 1 and cond[0][0].shape[-1] == width
        assert torch.isfinite(cond[0][0]).all()
        assert cond[0][1]["pooled_output"] is None
    # 61x93 is scaled to ~384x384 pixels and to 28-pixel steps: a 22x34 grid of patches, merged 2x2 into 187 tokens.
    assert with_image[0][0].shape[1] - text_only[0][0].shape[1] > 187
    assert relative_change(with_image[0][0], other_image[0][0]) > 1e-2, "the image enters the text tokens"

    model = fm.tiny_model("qwen_image_edit")
    with torch.inference_mode():
        reference = vaes("qwen_image_edit").encode(image_for("qwen_image_edit"))
    out, _ = sample(model, with_reference(with_image, reference), with_reference(text_only, reference), torch.zeros_like(reference))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("family, variant", list(PUBLISHED_CLASS))
def test_published_layout_is_detected_as_its_family(comfy, family, variant):
    config = fm.published_config(family, variant)
    assert type(config).__name__ == PUBLISHED_CLASS[(family, variant)]
    layout = fm.published_state_dict(family, variant)
    assert all(t.device.type == "meta" for t in layout.values())
    assert round(sum(t.numel() for t in layout.values()) / 1e9) == PUBLISHED_BILLIONS[family]
    model = config.get_model(layout, "", device="meta")
    assert type(model).__name__ == PUBLISHED_CLASS[(family, variant)]
    if family == "qwen_image_edit":
        method = "index_timestep_zero" if variant == "2511" else "index"
        assert config.unet_config.get("default_ref_method", "index") == method
        assert model.diffusion_model.default_ref_method == method
    if family == "flux_kontext":
        assert config.unet_config["guidance_embed"] is True
