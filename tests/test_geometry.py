"""The image's way onto a model's grid and back (no ComfyUI): every fit has an inverse that puts the edit
back where it came from, and where nothing is resampled input and output line up pixel for pixel."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import pure

geometry = pure("models.geometry")
image_latent = pure("models.image_latent")
errors = pure("models.errors")


def resize(nchw: torch.Tensor, width: int, height: int) -> torch.Tensor:
    return F.interpolate(nchw, size=(height, width), mode="bilinear", align_corners=False)


def plan(h, w, mode, cell=16, resolution="keep"):
    return geometry.plan(h, w, geometry.SizeMode(mode), cell, geometry.Resolution(resolution))


@pytest.mark.parametrize("mode", ["crop", "pad", "resize"])
@pytest.mark.parametrize("cell", [8, 16])
def test_every_keep_fit_lands_on_the_grid(mode, cell):
    fit = plan(45, 61, mode, cell)
    assert fit.size[0] % cell == 0 and fit.size[1] % cell == 0
    out = fit.apply(torch.rand(2, 45, 61, 3), resize)
    assert tuple(out.shape) == (2, *fit.size, 3)


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_crop_and_pad_are_exact_on_the_input_grid(mode):
    image = torch.rand(1, 45, 61, 3, generator=torch.Generator().manual_seed(1))
    fit = plan(45, 61, mode)
    assert fit.is_exact
    canvas, covered = fit.restore(fit.apply(image, resize), resize)
    assert tuple(canvas.shape) == (1, 45, 61, 3)
    assert torch.equal(canvas[0][covered], image[0][covered])  # the round trip moves no pixel
    if mode == "pad":
        assert bool(covered.all())
    else:  # the centre crop: a border the edit does not cover, under a cell wide
        assert int(covered.sum()) == 32 * 48 and bool(covered[6:38, 6:54].all())


def test_resize_and_1mp_are_inverted_by_resampling_back_and_say_so():
    fit = plan(45, 61, "resize", 16)
    assert not fit.is_exact and fit.size == (48, 64)
    big = plan(600, 800, "pad", 16, "1mp")
    assert big.scaled == (887, 1182) and big.size == (896, 1184)
    assert abs(big.scaled[0] * big.scaled[1] - 1024 * 1024) < 2000
    canvas, covered = big.restore(torch.rand(1, 896, 1184, 3), resize)
    assert tuple(canvas.shape) == (1, 600, 800, 3) and bool(covered.all())
    assert "scaled to 1182x887" in big.describe()


def test_kontext_picks_the_preferred_size_nearest_in_aspect_and_puts_the_edit_back_in_its_frame():
    fit = plan(600, 1000, "crop", 16, "kontext")
    assert fit.size == (800, 1328)  # 1328x800 is the preferred size nearest to 5:3
    top, left, fh, fw = fit.frame
    assert (top, fh, fw, left) == (0, 600, 996, 2)  # the centre of the image at 1328:800
    canvas, covered = fit.restore(torch.rand(1, *fit.size, 3), resize)
    assert tuple(canvas.shape[1:3]) == (600, 1000)
    assert not bool(covered[:, :left].any()) and bool(covered[:, left + 2 : left + fw - 2].all())


def test_masks_follow_the_fit_and_padding_is_outside():
    mask = torch.zeros(1, 45, 61)
    mask[:, 10:20, 10:30] = 1
    padded = plan(45, 61, "pad").apply_mask(mask, resize)
    assert tuple(padded.shape) == (1, 48, 64) and torch.equal(padded[:, :45, :61], mask) and not bool(padded[:, 45:].any())
    back = plan(45, 61, "pad").restore_mask(padded, resize)
    assert torch.equal(back, mask)


def test_too_small_for_a_cell_is_refused_unless_padded():
    with pytest.raises(errors.InstructInputError, match="at least 16x16 pixels .* Use size_mode 'pad'"):
        plan(12, 40, "crop")
    assert plan(12, 40, "pad").size == (16, 48)


def test_the_composite_finds_the_fit_from_the_sizes_for_either_cell():
    for cell in (8, 16):
        fit = plan(45, 61, "crop", cell)
        found = image_latent.find_fit((45, 61), fit.size, geometry.SizeMode.CROP, geometry.Resolution.KEEP)
        assert found.size == fit.size
    with pytest.raises(
        errors.InstructInputError, match="the edited image is 32x32 but the original is 61x45, which size_mode 'pad' .* make 64x48\\."
    ):
        image_latent.find_fit((45, 61), (32, 32), geometry.SizeMode.PAD, geometry.Resolution.KEEP)


def test_the_composite_without_a_mask_is_the_whole_edit_on_the_original_grid():
    original = torch.rand(1, 45, 61, 3, generator=torch.Generator().manual_seed(2))
    edited = torch.rand(1, 48, 64, 3, generator=torch.Generator().manual_seed(3))
    out = image_latent.composite_into_original(
        edited, original, torch.ones(1, 45, 61), 0, geometry.SizeMode.PAD, resize, geometry.Resolution.KEEP
    )
    assert torch.equal(out, edited[:, :45, :61])
