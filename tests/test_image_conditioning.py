"""Instruct Image Conditioning: size rules, channels, masks, batches, encode-once."""

from __future__ import annotations

import pytest
import torch

from conftest import pure

image_latent = pure("models.image_latent")
geometry = pure("models.geometry")
errors = pure("models.errors")


def nearest_resize(nchw, width, height):
    return torch.nn.functional.interpolate(nchw, size=(height, width), mode="nearest")


# ---- pure rules ------------------------------------------------------------------------------


def fit(img, mode, cell=8, resolution="keep"):
    fitted = geometry.plan(img.shape[1], img.shape[2], geometry.SizeMode(mode), cell, geometry.Resolution(resolution))
    return fitted.apply(img, nearest_resize)


def test_crop_keeps_the_centre_like_core():
    img = torch.arange(70 * 61).float().reshape(1, 70, 61, 1).expand(1, 70, 61, 3)
    out = fit(img, "crop")
    assert tuple(out.shape) == (1, 64, 56, 3)
    torch.testing.assert_close(out, img[:, 3:67, 2:58, :])


def test_resize_goes_to_the_nearest_multiple_of_the_cell():
    img = torch.rand(2, 70, 61, 3)
    out = fit(img, "resize")
    assert tuple(out.shape) == (2, 72, 64, 3)
    assert out.min() >= 0 and out.max() <= 1
    assert tuple(fit(img, "resize", cell=16).shape) == (2, 64, 64, 3)


def test_pad_extends_right_and_bottom_and_keeps_every_pixel():
    img = torch.rand(1, 70, 61, 3)
    out = fit(img, "pad", cell=16)
    assert tuple(out.shape) == (1, 80, 64, 3)
    assert torch.equal(out[:, :70, :61], img)  # the image itself, on its own grid
    assert torch.equal(out[:, 70:, :61], img[:, 69:70].expand(1, 10, 61, 3))  # edge replicated


def test_sizes_already_on_the_grid_are_untouched():
    img = torch.rand(1, 64, 48, 3)
    assert torch.equal(fit(img, "crop"), img)
    assert torch.equal(fit(img, "pad", cell=16), img)


def test_tiny_images_are_refused_unless_padded():
    with pytest.raises(errors.InstructInputError, match="at least 8x8 pixels"):
        fit(torch.rand(1, 5, 40, 3), "crop")
    assert tuple(fit(torch.rand(1, 5, 40, 3), "pad").shape) == (1, 8, 40, 3)


def test_grey_and_rgba_become_rgb():
    grey = torch.rand(1, 8, 8, 1)
    rgb = image_latent.to_rgb(grey)
    assert rgb.shape[-1] == 3 and torch.equal(rgb[..., 0], rgb[..., 2])
    rgba = torch.rand(1, 8, 8, 4)
    assert torch.equal(image_latent.to_rgb(rgba), rgba[..., :3])
    with pytest.raises(errors.InstructInputError, match="2 channels"):
        image_latent.to_rgb(torch.rand(1, 8, 8, 2))


def test_mask_follows_the_images_fit():
    mask = torch.zeros(1, 70, 61)
    mask[:, 3:67, 2:58] = 1.0
    crop = geometry.plan(70, 61, geometry.SizeMode.CROP, 8)
    fitted = crop.apply_mask(mask, nearest_resize)
    assert tuple(fitted.shape) == (1, 64, 56) and bool((fitted == 1).all())
    padded = geometry.plan(70, 61, geometry.SizeMode.PAD, 16).apply_mask(mask, nearest_resize)
    assert tuple(padded.shape) == (1, 80, 64) and torch.equal(padded[:, :70, :61], mask) and not bool(padded[:, 70:].any())


def test_batch_rule_one_or_same():
    image_latent.check_batches(4, 1, "mask")
    image_latent.check_batches(4, 4, "mask")
    with pytest.raises(errors.InstructInputError, match="mask has a batch of 3 but the image batch is 4"):
        image_latent.check_batches(4, 3, "mask")


# ---- the node on a real ComfyUI ---------------------------------------------------------------


@pytest.fixture(scope="module")
def parts(comfy, tiny):
    import folder_paths

    import nodes

    loaded = comfy.pack("models.instruct_loader").load_instruct(folder_paths.get_full_path("checkpoints", "tiny-ip2p-sd15.safetensors"))
    pos = nodes.CLIPTextEncode().encode(loaded.clip, "make it night")[0]
    neg = nodes.CLIPTextEncode().encode(loaded.clip, "")[0]
    return loaded, pos, neg, comfy.nodes.NODE_CLASS_MAPPINGS["InstructImageConditioning"]


def run(node, pos, neg, **kw):
    kw.setdefault("size_mode", "crop")
    kw.setdefault("latent_output", "empty")
    return node.execute(positive=pos, negative=neg, **kw).result


def test_the_image_latent_is_the_unscaled_vae_encoding_on_both_conds(comfy, parts):
    loaded, pos, neg, node = parts
    image = torch.rand(1, 70, 61, 3, generator=torch.Generator().manual_seed(1))
    p, n, latent = run(node, pos, neg, vae=loaded.vae, image=image)
    expected = loaded.vae.encode(image[:, 3:67, 2:58, :])
    torch.testing.assert_close(p[0][1]["concat_latent_image"], expected)
    assert n[0][1]["concat_latent_image"] is p[0][1]["concat_latent_image"]  # encoded once, shared
    assert tuple(latent["samples"].shape) == (1, 4, 8, 7) and torch.count_nonzero(latent["samples"]) == 0
    assert "concat_latent_image" not in pos[0][1]  # inputs untouched


def test_same_latent_as_core_instruct_pix2pix_conditioning(comfy, parts):
    from comfy_extras.nodes_ip2p import InstructPixToPixConditioning

    loaded, pos, neg, node = parts
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(2))
    core = InstructPixToPixConditioning.execute(positive=pos, negative=neg, pixels=image, vae=loaded.vae).result
    mine = run(node, pos, neg, vae=loaded.vae, image=image)
    assert torch.equal(core[0][0][1]["concat_latent_image"], mine[0][0][1]["concat_latent_image"])
    assert torch.equal(core[2]["samples"], mine[2]["samples"])


def test_pre_encoded_latent_is_used_instead_of_encoding(comfy, parts):
    loaded, pos, neg, node = parts
    pre = {"samples": torch.randn(2, 4, 8, 8)}
    p, n, latent = run(node, pos, neg, image_latent=pre, latent_output="image")
    assert p[0][1]["concat_latent_image"] is pre["samples"]
    torch.testing.assert_close(latent["samples"], pre["samples"])


def test_mask_gives_the_encoded_image_with_a_noise_mask(comfy, parts):
    loaded, pos, neg, node = parts
    image = torch.rand(1, 64, 64, 3)
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 16:48] = 1
    p, n, latent = run(node, pos, neg, vae=loaded.vae, image=image, mask=mask)
    assert torch.count_nonzero(latent["samples"]) > 0
    assert tuple(latent["noise_mask"].shape) == (1, 1, 64, 64)


def test_missing_image_is_refused(comfy, parts):
    loaded, pos, neg, node = parts
    with pytest.raises(comfy.pack("models.errors").InstructInputError, match="connect 'image' and 'vae'"):
        run(node, pos, neg, vae=loaded.vae)


def test_grey_rgba_and_odd_sizes_run_through_the_sampler(comfy, parts):
    loaded, pos, neg, node = parts
    for image in (torch.rand(1, 37, 45, 1), torch.rand(1, 40, 41, 4)):
        for mode in ("crop", "resize"):
            p, n, latent = run(node, pos, neg, vae=loaded.vae, image=image, size_mode=mode)
            sampler = comfy.nodes.NODE_CLASS_MAPPINGS["InstructKSampler"]
            out = sampler.execute(
                model=loaded.model,
                seed=0,
                steps=1,
                text_cfg=7.5,
                image_cfg=1.5,
                sampler_name="euler",
                scheduler="normal",
                positive=p,
                negative=n,
                latent_image=latent,
                denoise=1.0,
            ).result[0]
            assert out["samples"].shape == latent["samples"].shape and torch.isfinite(out["samples"]).all()


def test_the_unscaled_latent_is_right_for_every_family(comfy):
    """The conditioner attaches the unscaled latent; ComfyUI's instruct models scale it where the
    family needs it: CosXL Edit (EDM v-prediction) by the SDXL factor, diffusers-trained SDXL and
    SD1.5 instruct models not at all. Checked on the real model classes, built on the meta device
    from an SDXL-instruct-shaped state dict (with and without CosXL's markers)."""
    pytest.importorskip("diffusers")
    from diffusers import UNet2DConditionModel

    import comfy.model_detection as detection

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            in_channels=8,
            cross_attention_dim=2048,
            block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )
    ldm = comfy.pack("models.diffusers_unet").diffusers_to_ldm(unet.state_dict(), "unet")
    latent, noise = torch.randn(1, 4, 8, 8), torch.zeros(1, 4, 8, 8)

    def concat(markers: dict):
        sd = {**ldm, **markers}
        config = detection.model_config_from_unet(sd, "")
        config.set_inference_dtype(torch.float32, None)
        model = config.get_model(sd, "", device="meta")
        return model.concat_cond(concat_latent_image=latent, noise=noise, device="cpu")

    cosxl = concat({"edm_vpred.sigma_max": torch.tensor(120.0), "edm_vpred.sigma_min": torch.tensor(0.002)})
    torch.testing.assert_close(cosxl, latent * 0.13025)
    torch.testing.assert_close(concat({}), latent)
