"""Workflows saved by 0.1.0 keep running, and give the same images.

0.1.0 saved long phrases as combo values ("crop to multiple of 8", "auto (EMA when present)", …); 0.2.0
offers short tokens. The shipped 0.1.0 workflows (UI and API, frozen in ``tests/data/workflows_0.1.0``)
hold every pack node; each is validated by ComfyUI, run, and compared with the same prompt written in
tokens. The phrases no shipped workflow used are checked node by node.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from headless.prompts import formats as wf
from test_workflows import substitute

LEGACY = Path(__file__).resolve().parent / "data" / "workflows_0.1.0"
NAMES = sorted(p.stem for p in LEGACY.glob("*.json"))
ADAPTER = {"ipadapter_instruct_sd15", "instruct_edit_ip_style"}  # SD1.5's layout (the narrow test model)


def legacy(name: str, api: bool = False) -> dict:
    return json.loads((LEGACY / ("api" if api else "") / f"{name}.json").read_text())


def phrases(comfy) -> dict[str, str]:
    """Every 0.1.0 phrase → its token, over all the pack's choices."""
    mod = comfy.pack("nodes.choices")
    out: dict[str, str] = {}
    for choice in vars(mod).values():
        if isinstance(choice, mod.Choice):
            out.update(choice.legacy)
    return out


def in_tokens(comfy, api: dict) -> dict:
    table = phrases(comfy)
    api = copy.deepcopy(api)
    for node in api.values():
        for name, value in node["inputs"].items():
            if isinstance(value, str) and value in table:
                node["inputs"][name] = table[value]
    return api


def saved_images(result, api: dict) -> list[torch.Tensor]:
    out = []
    for node in api.values():
        if node["class_type"] == "SaveImage":
            source, slot = node["inputs"]["images"]
            out.append(result.output(source, slot))
    return out


def test_the_frozen_workflows_hold_every_pack_node_and_old_phrases(comfy):
    used = {n["class_type"] for name in NAMES for n in legacy(name, api=True).values()}
    assert set(comfy.pack_node_ids) - {"InstructTextEncodeQwenImageEdit"} <= used
    values = {v for name in NAMES for n in legacy(name, api=True).values() for v in n["inputs"].values() if isinstance(v, str)}
    assert {"crop to multiple of 8", "empty (denoise 1.0)", "auto (EMA when present)", "auto (as the reference)"} <= values


@pytest.mark.parametrize("name", NAMES)
def test_a_0_1_0_ui_workflow_maps_onto_todays_widgets_as_saved(comfy, name):
    """New widgets were only appended, so 0.1.0's positional widget values land on the same inputs."""
    object_info = comfy.all_object_info()
    assert wf.ui_to_api(legacy(name), object_info) == legacy(name, api=True)


#: The quick tier runs the one that holds the loader, the conditioner, the edit-mask KSampler and the composite.
QUICK = ("instruct_edit_mask",)


@pytest.mark.parametrize("name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in NAMES])
def test_a_0_1_0_api_prompt_validates_runs_and_equals_its_token_twin(comfy, tiny, narrow, name):
    old = legacy(name, api=True)
    adapter = name in ADAPTER
    painted = (16, 48, 8, 40) if any("region_mask" in n["inputs"] for n in old.values()) else None
    image = comfy.input_image(f"legacy-{name}.png", seed=3, painted=painted)
    ok, error, _, node_errors = comfy.validate(substitute(old, image, adapter=adapter))
    assert ok, f"{error} {node_errors}"
    try:
        before = saved_images(comfy.run(substitute(old, image, adapter=adapter)), old)
        after = saved_images(comfy.run(substitute(in_tokens(comfy, old), image, adapter=adapter)), old)
    finally:
        if adapter:
            narrow.release()
    assert before and len(before) == len(after)
    for a, b in zip(before, after):
        assert torch.equal(a, b)


def test_every_old_phrase_is_accepted_where_it_was_offered_and_nothing_else(comfy):
    nodes = comfy.nodes.NODE_CLASS_MAPPINGS
    cases = {
        "InstructImageConditioning": {"size_mode": "resize to multiple of 8", "latent_output": "input image (for denoise < 1)"},
        "InstructRegionComposite": {"size_mode": "crop to multiple of 8"},
        "InstructUNetLoader": {"weights": "non-EMA", "prediction": "v-prediction EDM (CosXL Edit)"},
        "InstructKSamplerEditMask": {"restrict": "off: only output the mask"},
        "IPAdapterInstructApply": {"task": "custom (instruction text)", "guidance": "4-branch"},
    }
    for node_id, values in cases.items():
        assert nodes[node_id].validate_inputs(**values) is True, node_id
    refused = nodes["InstructImageConditioning"].validate_inputs(size_mode="crop to multiple of 16", latent_output="empty")
    assert refused == "'size_mode' is 'crop to multiple of 16', which is not one of: crop, pad, resize"
    assert nodes["IPAdapterInstructApply"].validate_inputs(task="style", guidance="simple (2-pass CFG)") is True


def test_old_phrases_reach_execute_as_tokens(comfy, tiny):
    """The base class converts a saved phrase before execute runs: the loader gets 'non_ema', not 'non-EMA'."""
    loader = comfy.nodes.NODE_CLASS_MAPPINGS["InstructUNetLoader"]
    name = "checkpoints/" + Path(tiny["checkpoint_ema"]).name

    def conv_in(weights: str) -> torch.Tensor:
        model = loader.execute(model_name=name, weights=weights, prediction="auto", weight_dtype="default").result[0]
        return model.model.diffusion_model.input_blocks[0][0].weight.detach().clone()

    assert torch.equal(conv_in("non-EMA"), conv_in("non_ema"))
    assert torch.equal(conv_in("EMA"), conv_in("ema"))
    assert not torch.equal(conv_in("ema"), conv_in("non_ema"))
    cosxl = loader.execute(model_name=name, weights="auto", prediction="v-prediction EDM (CosXL Edit)", weight_dtype="default")
    assert (
        type(cosxl.result[0].model.model_sampling).__name__
        == type(
            loader.execute(model_name=name, weights="auto", prediction="v_edm", weight_dtype="default").result[0].model.model_sampling
        ).__name__
    )


def test_old_size_and_latent_phrases_give_the_same_conditioning(comfy, tiny):
    import nodes

    cond = nodes.NODE_CLASS_MAPPINGS["InstructImageConditioning"]
    loaded = comfy.pack("models.instruct_loader").load_instruct(str(tiny["checkpoint"]))
    pos = nodes.CLIPTextEncode().encode(loaded.clip, "make it night")[0]
    image = torch.rand(1, 60, 45, 3, generator=torch.Generator().manual_seed(4))
    old = cond.execute(
        positive=pos,
        negative=pos,
        vae=loaded.vae,
        image=image,
        size_mode="resize to multiple of 8",
        latent_output="input image (for denoise < 1)",
    )
    new = cond.execute(positive=pos, negative=pos, vae=loaded.vae, image=image, size_mode="resize", latent_output="image")
    assert torch.equal(old.result[2]["samples"], new.result[2]["samples"])
    assert tuple(new.result[2]["samples"].shape) == (1, 4, 8, 6)
