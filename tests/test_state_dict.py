"""Layout detection, channel checks and EMA selection on synthetic state dicts (no ComfyUI)."""

from __future__ import annotations

import pytest
import torch

from conftest import pure

sd_mod = pure("models.state_dict")
errors = pure("models.errors")


def ldm(channels=8):
    return {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, channels, 3, 3),
        "model.diffusion_model.out.2.weight": torch.zeros(4, 320, 3, 3),
    }


def test_layouts_are_told_apart_by_keys():
    assert sd_mod.classify(ldm(), "f") is sd_mod.Layout.LDM_CHECKPOINT
    assert sd_mod.classify({"input_blocks.0.0.weight": torch.zeros(1)}, "f") is sd_mod.Layout.LDM_UNET
    assert sd_mod.classify({"conv_in.weight": torch.zeros(1)}, "f") is sd_mod.Layout.DIFFUSERS_UNET
    with pytest.raises(errors.InstructModelError, match="'vae.safetensors' holds no UNet weights"):
        sd_mod.classify({"decoder.conv_in.weight": torch.zeros(1)}, "vae.safetensors")


@pytest.mark.parametrize("channels,message", [(4, "4-channel"), (9, "9-channel inpainting"), (6, "6 channels")])
def test_non_instruct_channel_counts_are_refused(channels, message):
    with pytest.raises(errors.InstructModelError, match=message):
        sd_mod.require_instruct_channels(channels, "m.safetensors")
    sd_mod.require_instruct_channels(8, "m.safetensors")


def test_ema_key_naming_follows_the_original_checkpoint():
    assert sd_mod.ema_key("model.diffusion_model.input_blocks.0.0.weight") == "model_ema.diffusion_modelinput_blocks00weight"


def test_ema_selection_swaps_in_the_ema_copy_and_drops_ema_keys():
    sd = ldm()
    raw = sd["model.diffusion_model.input_blocks.0.0.weight"]
    for key in list(sd):
        sd[sd_mod.ema_key(key)] = torch.ones_like(sd[key])
    sd["model_ema.decay"] = torch.tensor(0.999)
    out, used = sd_mod.select_weights(dict(sd), sd_mod.EmaMode.AUTO, "f")
    assert used and not any(k.startswith("model_ema.") for k in out)
    assert torch.equal(out["model.diffusion_model.input_blocks.0.0.weight"], torch.ones_like(raw))
    out, used = sd_mod.select_weights(dict(sd), sd_mod.EmaMode.NON_EMA, "f")
    assert not used and out["model.diffusion_model.input_blocks.0.0.weight"] is raw


def test_partial_ema_copy_is_not_used():
    sd = ldm()
    sd[sd_mod.ema_key("model.diffusion_model.input_blocks.0.0.weight")] = torch.ones(320, 8, 3, 3)
    assert not sd_mod.has_full_ema(sd)
    with pytest.raises(errors.InstructModelError, match="no EMA copy"):
        sd_mod.select_weights(sd, sd_mod.EmaMode.EMA, "f")
