"""Mask math of region editing (no ComfyUI): feathering, latent mapping, size rules, the edit-mask
accumulation and the pixel composite."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import pure

regions = pure("samplers.regions")
image_latent = pure("models.image_latent")
errors = pure("models.errors")


def square(h: int, w: int, top: int, left: int, size: int) -> torch.Tensor:
    m = torch.zeros(1, 1, h, w)
    m[..., top : top + size, left : left + size] = 1.0
    return m


def torch_resize(nchw: torch.Tensor, width: int, height: int) -> torch.Tensor:
    return F.interpolate(nchw, size=(height, width), mode="bilinear", align_corners=False)


def test_inward_feather_is_a_ramp_inside_and_exactly_zero_outside():
    m = square(20, 20, 4, 4, 12)
    out = regions.feather_inward(m, 3)
    assert torch.equal(out[m == 0], torch.zeros_like(out[m == 0]))
    row = out[0, 0, 10, 4:10].tolist()  # from the left edge inwards
    assert row == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    assert torch.equal(regions.feather_inward(m, 0), m)


def test_feather_treats_the_image_border_as_inside():
    m = torch.ones(1, 1, 6, 6)
    assert torch.equal(regions.feather_inward(m, 2), m)


def test_a_latent_cell_is_outside_only_when_all_its_pixels_are():
    px = torch.zeros(1, 32, 32)
    px[0, 9, 17] = 0.3  # one pixel in cell (1, 2)
    lat = regions.to_latent(px)
    assert lat.shape == (1, 1, 4, 4)
    assert lat[0, 0, 1, 2] == pytest.approx(0.3) and int((lat > 0).sum()) == 1
    assert torch.equal(regions.to_latent(regions.to_pixels(lat)), lat)  # pixels → latent inverts latent → pixels


@pytest.mark.parametrize(
    "size, expected",
    [((64, 48), (64, 48)), ((70, 52), (64, 48)), ((60, 45), (64, 48))],
    ids=["same", "cropped-by-conditioner", "resized-by-conditioner"],
)
def test_region_mask_sizes_the_conditioner_produces_are_accepted(size, expected):
    mask = torch.ones(size)
    assert regions.fit_to_image(mask, expected, "region_mask").shape == (1, *expected)


def test_region_mask_of_another_size_is_refused_with_both_sizes():
    with pytest.raises(errors.InstructInputError) as err:
        regions.region_in_latent(torch.ones(1, 128, 128), (8, 8), 0, "region_mask")
    message = str(err.value)
    assert message.startswith("'region_mask' is 128x128 but the image being edited is 64x64")  # the node layer names the node
    assert str(err.value.at_node("TestNode")).startswith("TestNode: 'region_mask' is 128x128")
    assert "mask editor" in message


def test_region_mask_batch_must_be_one_or_the_latent_batch():
    regions.check_batch(1, 3, "region_mask")
    regions.check_batch(3, 3, "region_mask")
    with pytest.raises(errors.InstructInputError, match="'region_mask' has a batch of 2 masks but 3 images"):
        regions.check_batch(2, 3, "region_mask")


def test_edit_mask_finds_where_the_branches_differ():
    acc = regions.EditMaskAccumulator()
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        image_only = torch.randn(2, 4, 16, 16, generator=g)
        full = image_only.clone()
        full[0, :, 2:7, 3:9] += 1.0 + step  # first image: a box changes
        full[1, :, 10:14, 0:5] -= 0.5  # second image: another box
        acc.add(full, image_only)
    mask = acc.mask(blur_px=0.0, threshold=0.5)
    expected = torch.zeros(2, 1, 16, 16)
    expected[0, :, 2:7, 3:9] = 1.0
    expected[1, :, 10:14, 0:5] = 1.0
    assert torch.equal(mask, expected)


def test_edit_mask_counts_every_step_the_same_whatever_its_scale():
    """Per-step maps are scaled to mean 1: scaling a step (σ, ε vs x0 parameterisation) changes nothing."""
    g = torch.Generator().manual_seed(1)
    steps = [(torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)) for _ in range(3)]
    a, b = regions.EditMaskAccumulator(), regions.EditMaskAccumulator()
    for k, (full, image_only) in enumerate(steps):
        a.add(full, image_only)
        b.add(full * (10.0**k), image_only * (10.0**k))
    torch.testing.assert_close(a.soft(8.0), b.soft(8.0), rtol=1e-5, atol=1e-6)
    soft = a.soft(0.0)
    assert float(soft.amax()) == pytest.approx(1.0) and float(soft.amin()) >= 0.0
    assert a.mask(0.0, 0.0) is not None and torch.equal(a.mask(0.0, 0.0), soft)  # threshold 0 = the soft map
    assert regions.EditMaskAccumulator().soft(0.0) is None


def test_blur_keeps_a_constant_map_constant_and_spreads_a_point():
    flat = torch.full((1, 1, 9, 9), 0.7)
    torch.testing.assert_close(regions.gaussian_blur(flat, 1.5), flat)
    point = torch.zeros(1, 1, 9, 9)
    point[..., 4, 4] = 1.0
    blurred = regions.gaussian_blur(point, 1.0)
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-5) and float(blurred[..., 4, 5]) > 0


def test_edit_mask_window_is_at_least_one_step():
    opts = regions.EditMaskOptions(steps=0.4)
    assert [opts.window_steps(n) for n in (1, 2, 10, 20)] == [1, 1, 4, 8]
    assert regions.EditMaskOptions(steps=1.0).window_steps(7) == 7


# ---- pixel composite ---------------------------------------------------------------------------------


def composite(edited, original, mask, feather=0, mode="crop", resolution="keep"):
    geometry = pure("models.geometry")
    mode, resolution = geometry.SizeMode(mode), geometry.Resolution(resolution)
    return image_latent.composite_into_original(edited, original, mask, feather, mode, torch_resize, resolution)


def test_composite_is_the_original_exactly_outside_the_mask():
    g = torch.Generator().manual_seed(2)
    original = torch.rand(1, 64, 48, 3, generator=g)
    edited = torch.rand(1, 64, 48, 3, generator=g)
    mask = torch.zeros(1, 64, 48)
    mask[:, 10:40, 8:30] = 1.0
    out = composite(edited, original, mask, feather=6)
    outside = mask[..., None].expand_as(out) == 0
    assert torch.equal(out[outside], original[outside])
    deep = (slice(None), slice(20, 30), slice(16, 22))
    assert torch.equal(out[deep], edited[deep])  # deeper than the feather: the edit itself
    edge = out[0, 25, 8]  # first pixel inside: 1/7 of the edit
    torch.testing.assert_close(edge, original[0, 25, 8] * 6 / 7 + edited[0, 25, 8] / 7)


def test_composite_puts_a_cropped_edit_back_into_the_full_original():
    g = torch.Generator().manual_seed(3)
    original = torch.rand(1, 70, 53, 4, generator=g)  # RGBA, not a multiple of 8: the conditioner cropped to 64x48
    edited = torch.rand(1, 64, 48, 3, generator=g)
    mask = torch.ones(1, 64, 48)  # the sampler's edit mask has the size of the edit
    out = composite(edited, original, mask)
    assert out.shape == (1, 70, 53, 3)
    assert torch.equal(out[:, 3:67, 2:50], edited)
    border = torch.ones(70, 53, dtype=torch.bool)
    border[3:67, 2:50] = False
    assert torch.equal(out[0][border], original[0, ..., :3][border])


def test_composite_of_a_resized_edit_scales_it_back():
    original = torch.rand(1, 60, 44, 3)
    edited = torch.rand(1, 64, 48, 3)
    mask = torch.zeros(1, 60, 44)
    mask[:, :30] = 1.0
    out = composite(edited, original, mask, mode="resize")
    assert out.shape == original.shape
    assert torch.equal(out[:, 30:], original[:, 30:])


def test_composite_refuses_an_edit_of_another_image():
    with pytest.raises(errors.InstructInputError) as err:
        composite(torch.rand(1, 32, 32, 3), torch.rand(1, 64, 64, 3), torch.ones(1, 64, 64))
    assert "the edited image is 32x32 but the original is 64x64" in str(err.value)
    assert "same size_mode" in str(err.value)
    with pytest.raises(errors.InstructInputError, match="the mask is 10x10; it must be the size of the original"):
        composite(torch.rand(1, 64, 64, 3), torch.rand(1, 64, 64, 3), torch.ones(1, 10, 10))
