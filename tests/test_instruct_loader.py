"""Instruct UNet Loader: every published layout loads into ComfyUI's instruct classes, every bad
file is refused with a message that names it and the fix."""

from __future__ import annotations

import pickle

import pytest
import torch

import instruct_tiny_models as factory


def load(comfy, path, **kw):
    return comfy.pack("models.instruct_loader").load_instruct(str(path), **kw)


def errors(comfy):
    return comfy.pack("models.errors")


def conv_in(model) -> torch.Tensor:
    return model.model.diffusion_model.input_blocks[0][0].weight.detach().float()


def test_ldm_checkpoint_gives_model_clip_and_vae(comfy, tiny):
    loaded = load(comfy, tiny["checkpoint"])
    assert type(loaded.model.model).__name__ == "SD15_instructpix2pix"
    assert loaded.clip is not None and loaded.vae is not None
    expected = factory.unet_state_dict()["input_blocks.0.0.weight"].float()
    torch.testing.assert_close(conv_in(loaded.model), expected)


def test_ema_weights_are_used_by_default_and_raw_on_request(comfy, tiny):
    ema = factory.unet_state_dict(seed=factory.SEED)["input_blocks.0.0.weight"].float()
    raw = factory.unet_state_dict(seed=factory.SEED + 1)["input_blocks.0.0.weight"].float()
    auto = load(comfy, tiny["checkpoint_ema"])
    torch.testing.assert_close(conv_in(auto.model), ema)
    assert auto.notes == ["EMA weights"]
    torch.testing.assert_close(conv_in(load(comfy, tiny["checkpoint_ema"], weights="non_ema").model), raw)
    torch.testing.assert_close(conv_in(load(comfy, tiny["checkpoint_ema"], weights="ema").model), ema)


def test_asking_for_ema_from_a_file_without_it_is_refused(comfy, tiny):
    with pytest.raises(errors(comfy).InstructModelError, match="carries no EMA copy.*'weights'"):
        load(comfy, tiny["checkpoint"], weights="ema")


def test_bare_ldm_unet(comfy, tiny):
    loaded = load(comfy, tiny["unet"])
    assert type(loaded.model.model).__name__ == "SD15_instructpix2pix"
    assert loaded.clip is None and loaded.vae is None


@pytest.mark.parametrize("kind", ["unet_file", "unet_folder"])
def test_diffusers_unet_layouts_load_with_the_same_weights(comfy, tiny_diffusers, kind):
    loaded = load(comfy, tiny_diffusers[kind])
    assert type(loaded.model.model).__name__ == "SD15_instructpix2pix"
    reference = factory.diffusers_unet().state_dict()
    torch.testing.assert_close(conv_in(loaded.model), reference["conv_in.weight"])
    attn = loaded.model.model.diffusion_model.middle_block[1].transformer_blocks[0].attn2.to_k.weight
    torch.testing.assert_close(attn.detach().float(), reference["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"])


def test_diffusers_pipeline_folder_gives_clip_and_vae_too(comfy, tiny_diffusers):
    loaded = load(comfy, tiny_diffusers["pipeline"])
    assert type(loaded.model.model).__name__ == "SD15_instructpix2pix"
    assert loaded.clip is not None and loaded.vae is not None
    latent = loaded.vae.encode(torch.rand(1, 64, 64, 3))
    assert tuple(latent.shape) == (1, 4, 8, 8)


@pytest.mark.parametrize("prefixed", [False, True], ids=["transformers-5-keys", "text_model-prefixed-keys"])
def test_pipeline_text_encoder_equals_transformers_in_both_key_layouts(comfy, tiny_diffusers, tmp_path, prefixed):
    """The pipeline's CLIP gives transformers' own last hidden state on the same tokens, whichever
    transformers release saved the file (5 drops the ``text_model.`` prefix; core alone would then
    leave the weights uninitialised and the conditioning NaN)."""
    import shutil

    import safetensors.torch
    from transformers import CLIPTextModel

    source = tiny_diffusers["pipeline"]
    folder = tmp_path / "pipeline"
    shutil.copytree(source, folder)
    te_file = folder / "text_encoder" / "model.safetensors"
    sd = safetensors.torch.load_file(str(te_file))
    assert "embeddings.token_embedding.weight" in sd  # the factory's transformers 5 layout
    if prefixed:  # as transformers 4 and the published pipelines have it
        sd = {f"text_model.{k}": v for k, v in sd.items()}
        safetensors.torch.save_file(sd, str(te_file))
    clip = load(comfy, folder).clip
    text = "make it a snowy winter day"
    hidden = comfy.pack("models.ipadapter_apply").clip_l_last_hidden(clip, text)
    ids = torch.tensor([[token for token, _ in clip.tokenize(text, disable_weights=True)["l"][0]]])
    reference = CLIPTextModel.from_pretrained(str(source / "text_encoder"), torch_dtype=torch.float32)
    with torch.no_grad():
        expected = reference(input_ids=ids).last_hidden_state
    assert torch.isfinite(hidden).all()
    torch.testing.assert_close(hidden.float(), expected, rtol=1e-4, atol=1e-4)


def test_core_cannot_load_the_sd15_diffusers_unet_but_the_pack_can(comfy, tiny_diffusers):
    import comfy.sd as comfy_sd

    with pytest.raises(RuntimeError, match="Could not detect model type"):
        comfy_sd.load_diffusion_model(str(tiny_diffusers["unet_file"]))
    assert load(comfy, tiny_diffusers["unet_file"]).model is not None


def test_cosxl_prediction_override_adds_and_strips_the_edm_markers(comfy):
    loader = comfy.pack("models.instruct_loader")
    sd = {}
    loader._apply_prediction(sd, loader.Prediction.COSXL, "")
    assert float(sd["edm_vpred.sigma_max"]) == 120.0 and float(sd["edm_vpred.sigma_min"]) == pytest.approx(0.002)
    sd["edm_vpred.sigma_max"] = torch.tensor(80.0)
    loader._apply_prediction(sd, loader.Prediction.COSXL, "")
    assert float(sd["edm_vpred.sigma_max"]) == 80.0  # the file's own value wins
    loader._apply_prediction(sd, loader.Prediction.EPS, "")
    assert not sd


def test_cosxl_markers_survive_on_a_bare_unet(comfy):
    """Core detection reads the CosXL markers from the dict the pack hands it (UNETLoader on a full
    CosXL file drops them); checked here on the detection step alone, since an SDXL-class UNet
    cannot be shrunk below ComfyUI's pinned SDXL depth."""
    import comfy.supported_models as sm

    config = sm.SDXL_instructpix2pix(dict(sm.SDXL_instructpix2pix.unet_config))
    markers = {"edm_vpred.sigma_max": torch.tensor(120.0), "edm_vpred.sigma_min": torch.tensor(0.002)}
    assert config.model_type(markers).name == "V_PREDICTION_EDM"
    assert config.model_type({}).name == "EPS"


@pytest.mark.parametrize(
    "name,message",
    [
        ("checkpoint_4ch", r"4-channel model .*not an 8-channel instruct model: use Load Checkpoint"),
        ("checkpoint_9ch", r"9-channel inpainting model.*Load Checkpoint"),
        ("corrupt", r"Cannot read .*truncated, corrupt"),
        ("lora", r"holds no UNet weights.*LoRA"),
    ],
)
def test_bad_files_are_refused_with_the_file_and_the_fix(comfy, tiny, name, message):
    with pytest.raises(errors(comfy).InstructModelError, match=message) as info:
        load(comfy, tiny[name])
    assert str(tiny[name]) in str(info.value)


def test_unsupported_8_channel_family_is_refused_before_building(comfy, tmp_path):
    sd = factory.unet_state_dict(context_dim=1024, use_linear_in_transformer=True, num_heads=-1, num_head_channels=64)
    path = tmp_path / "sd2-like-8ch.safetensors"
    factory._save(sd, path)
    with pytest.raises(errors(comfy).InstructModelError, match="no instruct class for.*SD20"):
        load(comfy, path)


class Payload:
    def __reduce__(self):
        return (print, ("this would run arbitrary code",))


def test_pickles_are_loaded_weights_only(comfy, tmp_path):
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"x": Payload()}}, f, protocol=2)
    with pytest.raises(errors(comfy).InstructModelError, match="weights-only") as info:
        load(comfy, path)
    message = str(info.value)
    assert message.startswith(f"Refused to load '{path}': it calls ") and "print" in message and "could run code" in message
    assert "weights_only" not in message and info.value.__cause__ is None  # torch's advice to run the code is not passed on


def test_pickled_adapters_are_refused_the_same_way(comfy, tmp_path):
    path = tmp_path / "evil-adapter.bin"
    with open(path, "wb") as f:
        pickle.dump({"image_proj": {"x": Payload()}}, f)
    with pytest.raises(errors(comfy).InstructModelError, match=f"Refused to load '{path}'") as info:
        comfy.pack("models.ipadapter_apply").load_adapter(str(path))
    assert "weights_only" not in str(info.value)


def test_node_lists_all_three_folders_and_loads_through_the_graph(comfy, tiny, tiny_diffusers):
    node = comfy.nodes.NODE_CLASS_MAPPINGS["InstructUNetLoader"]
    options = node.GET_NODE_INFO_V1()["input"]["required"]["model_name"][1]["options"]
    assert "checkpoints/tiny-ip2p-sd15.safetensors" in options
    assert "diffusion_models/tiny-ip2p-sd15-unet.safetensors" in options
    assert "diffusers/tiny-ip2p-pipeline" in options and "diffusers/tiny-ip2p-unet" in options
    assert not any(o.startswith("diffusers/tiny-ip2p-pipeline/") for o in options)
    model, clip, vae = node.execute(
        model_name="checkpoints/tiny-ip2p-sd15.safetensors", weights="auto", prediction="auto", weight_dtype="fp16"
    ).result
    assert model.model.diffusion_model.input_blocks[0][0].weight.dtype == torch.float16


def test_missing_model_names_the_folders(comfy):
    with pytest.raises(errors(comfy).InstructModelError, match="not found.*models/checkpoints"):
        comfy.pack("models.folders").resolve_source("checkpoints/gone.safetensors")


def test_lora_and_freeu_accept_the_loaded_model(comfy, tiny):
    import nodes

    from comfy_extras.nodes_freelunch import FreeU

    loaded = load(comfy, tiny["checkpoint"])
    model, clip = nodes.LoraLoader().load_lora(loaded.model, loaded.clip, "tiny-lora-sd15.safetensors", 1.0, 1.0)
    assert len(model.patches) == 3 and len(loaded.model.patches) == 0  # the input model is untouched
    patched = FreeU().patch(model, 1.1, 1.2, 0.9, 0.2)[0]
    assert "output_block_patch" in patched.model_options["transformer_options"].get("patches", {})


@pytest.mark.parametrize(
    "config,expected",
    [
        ({"in_channels": 8, "cross_attention_dim": 768}, "SD15_instructpix2pix"),  # timbrooks diffusers release layout
        (
            {
                "in_channels": 8,
                "cross_attention_dim": 2048,
                "block_out_channels": (320, 640, 1280),
                "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                "transformer_layers_per_block": (1, 2, 10),
                "attention_head_dim": (5, 10, 20),
                "use_linear_projection": True,
                "addition_embed_type": "text_time",
                "addition_time_embed_dim": 256,
                "projection_class_embeddings_input_dim": 2816,
            },
            "SDXL_instructpix2pix",
        ),
    ],
)
def test_full_size_diffusers_layouts_convert_to_the_instruct_classes(comfy, config, expected):
    """Full SD1.5 and SDXL (sdxl-instructpix2pix-768 style) diffusers UNets, built on the meta
    device (shapes only), convert to ldm names that ComfyUI detects as its instruct classes."""
    pytest.importorskip("diffusers")
    from diffusers import UNet2DConditionModel

    import comfy.model_detection as detection

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    ldm = comfy.pack("models.diffusers_unet").diffusers_to_ldm(unet.state_dict(), "unet")
    assert type(detection.model_config_from_unet(ldm, "")).__name__ == expected
