"""The dual-CFG combination against the InstructPix2Pix formula, on synthetic predictions."""

from __future__ import annotations

import itertools

import pytest
import torch

from conftest import pure

dual = pure("samplers.dual_cfg")


def preds(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) for name in dual.BRANCHES}


def formula(p, s_t, s_i):
    u, i, c = p[dual.UNCOND], p[dual.IMAGE_ONLY], p[dual.FULL]
    return u + s_i * (i - u) + s_t * (c - i)


SCALES = [(7.5, 1.5), (7.5, 1.0), (5.0, 5.0), (0.0, 1.5), (1.0, 1.0), (0.0, 0.0), (1.0, 1.5), (3.0, 0.0), (0.0, 1.0)]


@pytest.mark.parametrize("s_t,s_i", SCALES)
def test_combination_equals_the_formula(s_t, s_i):
    p = preds()
    torch.testing.assert_close(dual.combine(p, dual.StepScales(s_t, s_i)), formula(p, s_t, s_i), rtol=0, atol=1e-12)


@pytest.mark.parametrize("s_t,s_i", SCALES)
def test_skipped_branches_do_not_change_the_result(s_t, s_i):
    scales = dual.StepScales(s_t, s_i)
    p = preds()
    needed = scales.needed_branches()
    partial = {name: (p[name] if name in needed else None) for name in dual.BRANCHES}
    torch.testing.assert_close(dual.combine(partial, scales), formula(p, s_t, s_i), rtol=0, atol=1e-12)


def test_exactly_the_zero_weight_branches_are_skipped():
    assert dual.StepScales(7.5, 1.5).needed_branches() == {dual.FULL, dual.IMAGE_ONLY, dual.UNCOND}
    assert dual.StepScales(7.5, 1.0).needed_branches() == {dual.FULL, dual.IMAGE_ONLY}  # no uncond pass
    assert dual.StepScales(1.5, 1.5).needed_branches() == {dual.FULL, dual.UNCOND}  # no image-only pass
    assert dual.StepScales(0.0, 1.5).needed_branches() == {dual.IMAGE_ONLY, dual.UNCOND}  # no full pass
    assert dual.StepScales(1.0, 1.0).needed_branches() == {dual.FULL}
    assert dual.StepScales(0.0, 0.0).needed_branches() == {dual.UNCOND}


def test_coefficients_sum_to_one_so_the_combination_is_affine():
    for s_t, s_i in itertools.product([0.0, 1.0, 2.5, 7.5], [0.0, 1.0, 1.5]):
        assert sum(dual.StepScales(s_t, s_i).coefficients().values()) == pytest.approx(1.0)
    # affine ⇒ same result on noise predictions and on x0 = x − σ·ε
    p = preds(1)
    x, sigma = torch.randn(2, 4, 8, 8, dtype=torch.float64), 3.7
    x0 = {k: x - sigma * v for k, v in p.items()}
    scales = dual.StepScales(7.5, 1.5)
    torch.testing.assert_close(dual.combine(x0, scales), x - sigma * dual.combine(p, scales))


def test_core_arithmetic_order_is_kept_bit_for_bit():
    """With image_cfg = 1, core DualCFGGuider computes ``0 + (i − 0)·1 + (c − i)·s_T`` (zeros for the
    skipped negative); the same bits must come out here."""
    p = {k: v.float() for k, v in preds(2).items()}
    core = torch.zeros_like(p[dual.IMAGE_ONLY]) + (p[dual.IMAGE_ONLY] - 0) * 1.0 + (p[dual.FULL] - p[dual.IMAGE_ONLY]) * 7.5
    mine = dual.combine({dual.FULL: p[dual.FULL], dual.IMAGE_ONLY: p[dual.IMAGE_ONLY], dual.UNCOND: None}, dual.StepScales(7.5, 1.0))
    assert torch.equal(core, mine)


@pytest.mark.parametrize("s_t,s_i", [(7.5, 1.5), (1.0, 1.5), (0.0, 1.5), (1.0, 1.0), (2.0, 1.0)])
def test_equivalent_cfg_pair_reproduces_the_three_way_result(s_t, s_i):
    p = preds(3)
    scales = dual.StepScales(s_t, s_i)
    combined = formula(p, s_t, s_i)
    uncond_eff, k = dual.equivalent_cfg_pair(combined, p[dual.FULL], scales)
    torch.testing.assert_close(uncond_eff + k * (p[dual.FULL] - uncond_eff), combined, rtol=1e-9, atol=1e-9)


def test_rescale_matches_diffusers_formula_on_noise_predictions():
    """diffusers: noise_cfg·(std_text/std_cfg)·φ + noise_cfg·(1−φ), on ε; here on x0 with α = 1."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    sigma = 2.0
    eps_text = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    eps_cfg = 3 * torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    phi = 0.7
    std_t = eps_text.std(dim=(1, 2, 3), keepdim=True)
    std_c = eps_cfg.std(dim=(1, 2, 3), keepdim=True)
    expected_eps = phi * eps_cfg * (std_t / std_c) + (1 - phi) * eps_cfg
    out_x0 = dual.rescale_guidance(x - sigma * eps_cfg, x - sigma * eps_text, x, 1.0, phi)
    torch.testing.assert_close((x - out_x0) / sigma, expected_eps)
    assert dual.rescale_guidance(x, x * 2, x, 1.0, 0.0) is x


def test_schedule_windows_switch_a_scale_to_one_outside():
    def p2s(p):  # a decreasing percent → sigma map like ComfyUI's
        return 0.0 if p >= 1 else 10.0 * (1 - p)

    s = dual.ScaleSchedule(7.5, 1.5, text_start=0.0, text_end=0.5, image_start=0.2, image_end=1.0)
    assert s.at(9.9, p2s) == dual.StepScales(7.5, 1.0)  # early: image guidance not yet on
    assert s.at(6.0, p2s) == dual.StepScales(7.5, 1.5)
    assert s.at(2.0, p2s) == dual.StepScales(1.0, 1.5)  # late: text guidance off
    assert dual.ScaleSchedule(7.5, 1.5).is_constant
    with pytest.raises(ValueError, match="text_cfg window"):
        dual.ScaleSchedule(7.5, 1.5, text_start=0.8, text_end=0.2)
