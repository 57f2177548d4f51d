"""Instruct Merge on a real ComfyUI: instruct + s·(custom − base) key by key (the first convolution's
latent and image channels checked separately), saved with core Checkpoint Save and loaded back,
the fine-tune's own LoRA carried along, inputs untouched, wrong families refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch

CKPT = "checkpoints/tiny-ip2p-sd15.safetensors"
FIRST_CONV = "input_blocks.0.0.weight"
STRENGTH = 0.7


def unet_file(path: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    sd = safetensors.torch.load_file(str(path))
    return {k[len(prefix) :]: v.float() for k, v in sd.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def models(comfy, tiny):
    import folder_paths
    import nodes

    instruct = comfy.pack("models.instruct_loader").load_instruct(folder_paths.get_full_path("checkpoints", "tiny-ip2p-sd15.safetensors"))
    custom = nodes.CheckpointLoaderSimple().load_checkpoint("tiny-sd15-custom.safetensors")[0]
    base = nodes.CheckpointLoaderSimple().load_checkpoint("tiny-sd15-base.safetensors")[0]
    return {"instruct": instruct, "custom": custom, "base": base}


@pytest.fixture(scope="module")
def weights(tiny):
    return {
        "instruct": unet_file(tiny["checkpoint"], "model.diffusion_model."),
        "custom": unet_file(tiny["ckpt_custom"], "model.diffusion_model."),
        "base": unet_file(tiny["ckpt_base"], "model.diffusion_model."),
    }


def merge(comfy, instruct, custom, base, strength=STRENGTH):
    return (
        comfy.nodes.NODE_CLASS_MAPPINGS["InstructMerge"].execute(instruct=instruct, custom=custom, base=base, strength=strength).result[0]
    )


def patched_unet(model_patcher) -> dict[str, torch.Tensor]:
    """The weights ComfyUI computes for sampling (all patches applied), copied out."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([model_patcher], force_patch_weights=True)
    return {k: v.detach().float().clone() for k, v in model_patcher.model.diffusion_model.state_dict().items()}


def test_merge_adds_the_fine_tune_difference_key_by_key(comfy, models, weights):
    merged = patched_unet(merge(comfy, models["instruct"].model, models["custom"], models["base"]))
    inst, custom, base = weights["instruct"], weights["custom"], weights["base"]
    assert set(merged) == set(inst)
    for key in inst:
        if key == FIRST_CONV:
            continue
        expected = inst[key] + STRENGTH * (custom[key] - base[key])
        torch.testing.assert_close(merged[key], expected, rtol=0, atol=2e-6, msg=key)
    changed = [k for k in inst if k != FIRST_CONV and not torch.equal(merged[k], inst[k])]
    assert len(changed) > len(inst) // 2  # the fine-tune really moved the weights


def test_first_convolution_gets_the_delta_in_the_latent_channels_only(comfy, models, weights):
    merged = patched_unet(merge(comfy, models["instruct"].model, models["custom"], models["base"]))[FIRST_CONV]
    inst, delta = weights["instruct"][FIRST_CONV], weights["custom"][FIRST_CONV] - weights["base"][FIRST_CONV]
    assert merged.shape == inst.shape == (320, 8, 3, 3) and delta.shape == (320, 4, 3, 3)
    assert float(delta.abs().max()) > 1e-3
    torch.testing.assert_close(merged[:, :4], inst[:, :4] + STRENGTH * delta, rtol=0, atol=2e-6)
    assert torch.equal(merged[:, 4:], inst[:, 4:])  # the image channels stay the instruct model's


def test_inputs_are_untouched_and_strength_zero_is_the_instruct_model(comfy, models, weights):
    instruct = models["instruct"].model
    before = {name: dict(m.patches) for name, m in (("instruct", instruct), ("custom", models["custom"]), ("base", models["base"]))}
    merged = merge(comfy, instruct, models["custom"], models["base"])
    assert merged is not instruct and merged.model is instruct.model  # a patched clone, weights shared
    assert {name: dict(m.patches) for name, m in (("instruct", instruct), ("custom", models["custom"]), ("base", models["base"]))} == before
    assert len(merged.patches) == len(weights["instruct"])
    zero = patched_unet(merge(comfy, instruct, models["custom"], models["base"], strength=0.0))
    assert all(torch.equal(zero[k], weights["instruct"][k]) for k in zero)


def test_the_fine_tunes_own_lora_is_carried_into_the_merge(comfy, models, weights):
    import nodes

    custom_lora = nodes.LoraLoaderModelOnly().load_lora_model_only(models["custom"], "tiny-lora-sd15.safetensors", 1.0)[0]
    with_lora = patched_unet(merge(comfy, models["instruct"].model, custom_lora, models["base"]))
    without = patched_unet(merge(comfy, models["instruct"].model, models["custom"], models["base"]))
    lora_keys = {"input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "middle_block.1.transformer_blocks.0.attn2.to_v.weight"}
    lora_keys |= {"input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"}
    differing = {k for k in with_lora if not torch.equal(with_lora[k], without[k])}
    assert differing == lora_keys


@pytest.mark.slow  # a whole checkpoint (CLIP-L and the VAE in fp32) serialised and read back: 2.3 GB on top of the file's models
def test_merged_model_saves_with_core_checkpoint_save_and_loads_back_as_an_instruct_model(comfy, models, weights, tiny):
    g = comfy.graph()
    loader = g.node("InstructUNetLoader", id="load", model_name=CKPT, weights="auto", prediction="auto", weight_dtype="default")
    custom = g.node("CheckpointLoaderSimple", id="custom", ckpt_name="tiny-sd15-custom.safetensors")
    base = g.node("CheckpointLoaderSimple", id="base", ckpt_name="tiny-sd15-base.safetensors")
    merged = g.node("InstructMerge", id="merge", instruct=loader.out(0), custom=custom.out(0), base=base.out(0), strength=STRENGTH)
    g.node("CheckpointSave", id="save", model=merged.out(0), clip=loader.out(1), vae=loader.out(2), filename_prefix="checkpoints/merged")
    comfy.run(g.finalize())
    saved = sorted((Path(comfy.folder_paths.get_output_directory()) / "checkpoints").glob("merged*.safetensors"))[-1]
    on_disk = unet_file(saved, "model.diffusion_model.")
    inst, custom_w, base_w = weights["instruct"], weights["custom"], weights["base"]
    expected_conv = inst[FIRST_CONV].clone()
    expected_conv[:, :4] += STRENGTH * (custom_w[FIRST_CONV] - base_w[FIRST_CONV])
    torch.testing.assert_close(on_disk[FIRST_CONV], expected_conv, rtol=0, atol=2e-6)
    key = "middle_block.1.proj_in.weight"
    torch.testing.assert_close(on_disk[key], inst[key] + STRENGTH * (custom_w[key] - base_w[key]), rtol=0, atol=2e-6)

    reloaded = comfy.pack("models.instruct_loader").load_instruct(str(saved))
    assert comfy.pack("models.model_kind").is_instruct_model(reloaded.model)
    import nodes

    pos = nodes.CLIPTextEncode().encode(reloaded.clip, "make it winter")[0]
    neg = nodes.CLIPTextEncode().encode(reloaded.clip, "")[0]
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    cond = (
        comfy.nodes.NODE_CLASS_MAPPINGS["InstructImageConditioning"]
        .execute(
            positive=pos,
            negative=neg,
            vae=reloaded.vae,
            image=image,
            size_mode="crop",
            latent_output="empty",
        )
        .result
    )
    out = (
        comfy.nodes.NODE_CLASS_MAPPINGS["InstructKSampler"]
        .execute(
            model=reloaded.model,
            seed=1,
            steps=1,
            text_cfg=7.5,
            image_cfg=1.5,
            sampler_name="euler",
            scheduler="normal",
            positive=cond[0],
            negative=cond[1],
            latent_image=cond[2],
            denoise=1.0,
        )
        .result[0]["samples"]
    )
    assert out.shape == (1, 4, 8, 8) and bool(torch.isfinite(out).all())


def test_models_of_another_family_are_refused_by_name(comfy, models):
    import nodes

    errors = comfy.pack("models.errors")
    sd2 = nodes.UNETLoader().load_unet("tiny-sd2-unet.safetensors", "default")[0]
    assert comfy.pack("models.instruct_merge").family_of(sd2) == "SD2.x"
    with pytest.raises(errors.InstructInputError) as err:
        merge(comfy, models["instruct"].model, sd2, sd2)
    message = str(err.value)
    assert "InstructMerge: the models are of different families ('instruct' is SD1.5, 'custom' is SD2.x, 'base' is SD2.x)" in message
    assert "SD1.5 fine-tune and SD1.5 into an SD1.5 instruct model" in message
    with pytest.raises(errors.InstructInputError, match="'base' is SD2.x"):
        merge(comfy, models["instruct"].model, models["custom"], sd2)


def test_a_plain_model_as_instruct_is_refused(comfy, models):
    errors = comfy.pack("models.errors")
    with pytest.raises(errors.InstructInputError, match="'instruct' must be an 8-channel instruct model .* it is a plain SD1.5 model"):
        merge(comfy, models["base"], models["custom"], models["base"])


SDXL_UNET = dict(
    image_size=32,
    adm_in_channels=2816,
    model_channels=320,
    num_res_blocks=[2, 2, 2],
    channel_mult=[1, 2, 4],
    transformer_depth=[0, 0, 2, 2, 10, 10],
    transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
    transformer_depth_middle=10,
    context_dim=2048,
    num_head_channels=64,
    num_classes="sequential",
    use_linear_in_transformer=True,
    use_spatial_transformer=True,
    legacy=False,
    out_channels=4,
    use_temporal_attention=False,
    use_temporal_resblock=False,
)


def _meta_shapes(in_channels: int, **config) -> dict[str, tuple]:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(in_channels=in_channels, **config, device="meta", operations=comfy.ops.disable_weight_init)
    return {"diffusion_model." + k: tuple(v.shape) for k, v in unet.state_dict().items()}


def test_sdxl_plan_patches_every_weight_and_narrows_only_the_first_convolution(comfy):
    """Full-size SDXL shapes (meta device; ComfyUI detects them as SDXL and its instruct class)."""
    import comfy.model_detection as detection

    merge_mod = comfy.pack("models.instruct_merge")
    instruct, plain = _meta_shapes(8, **SDXL_UNET), _meta_shapes(4, **SDXL_UNET)
    as_meta = {k[len("diffusion_model.") :]: torch.empty(s, device="meta") for k, s in instruct.items()}
    assert type(detection.model_config_from_unet(as_meta, "")).__name__ == "SDXL_instructpix2pix"
    plan = merge_mod.plan_merge(instruct, plain, plain)
    assert set(plan.keys) == set(plain) and len(plan.keys) > 1600
    assert dict(plan.narrowed) == {merge_mod.FIRST_CONV: (1, 0, 4)}
    other = _meta_shapes(4, **{**SDXL_UNET, "context_dim": 768, "adm_in_channels": None, "num_classes": None})
    with pytest.raises(comfy.pack("models.errors").InstructInputError, match="the fine-tune does not fit the instruct model"):
        merge_mod.plan_merge(instruct, other, other)
    with pytest.raises(comfy.pack("models.errors").InstructInputError, match="'base' must be the model 'custom' was fine-tuned from"):
        merge_mod.plan_merge(instruct, plain, other)
