"""The shipped workflows: UI files valid against the live node schemas, equal to their API twins,
and every API workflow executed on the test models (model file names substituted)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import family_workflows
from instruct_harness import PACK_DIR

from headless.prompts import formats as wf

WORKFLOWS = sorted((PACK_DIR / "workflows").glob("*.json"))
NAMES = [p.stem for p in WORKFLOWS]
MODEL_INPUTS = {
    "model_name",
    "ckpt_name",
    "lora_name",
    "control_net_name",
    "ipadapter_file",
    "clip_name",
    "image",
    "unet_name",
    "vae_name",
    *(f"clip_name{i}" for i in range(1, 5)),
}


def load(name: str, api: bool = False) -> dict:
    return json.loads((PACK_DIR / "workflows" / ("api" if api else "") / f"{name}.json").read_text())


def test_every_capability_ships_a_workflow():
    assert len(NAMES) >= 10
    for name in NAMES:
        assert (PACK_DIR / "workflows" / f"{name}.jpg").is_file(), f"{name}: no thumbnail"
        assert (PACK_DIR / "workflows" / "api" / f"{name}.json").is_file(), f"{name}: no API twin"
        ui = load(name)
        notes = [n for n in ui["nodes"] if n["type"] == "Note"]
        assert notes and len(notes[0]["widgets_values"][0]) > 100, f"{name}: no Note explaining the settings"
        assert ui["version"] == 0.4


@pytest.fixture(scope="module")
def object_info(comfy):
    return comfy.all_object_info()


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_validates_against_the_live_schemas(comfy, object_info, name):
    assert wf.check_ui_against_schemas(load(name), object_info, MODEL_INPUTS) == []


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_and_its_api_twin_are_the_same_graph(comfy, object_info, name):
    assert wf.ui_to_api(load(name), object_info) == load(name, api=True)


def test_the_checker_catches_broken_workflows(comfy, object_info):
    ui = load("instruct_edit_sd15")
    broken = copy.deepcopy(ui)
    sampler = next(n for n in broken["nodes"] if n["type"] == "InstructKSampler")
    sampler["widgets_values"][3] = 500.0  # text_cfg above its max
    sampler["widgets_values"][5] = "no_such_sampler"
    broken["links"][0][5] = "MODEL"
    broken["nodes"].append({"id": 99, "type": "NoSuchNode", "inputs": [], "outputs": [], "widgets_values": []})
    problems = "\n".join(wf.check_ui_against_schemas(broken, object_info, MODEL_INPUTS))
    assert "text_cfg: 500.0 outside" in problems and "no_such_sampler" in problems
    assert "unknown node type NoSuchNode" in problems and "link 1:" in problems


def substitute(api: dict, image: str, adapter: bool) -> dict:
    """Point every model input at the test models; 64x64 and 2 steps to keep it quick.

    The adapter workflows get SD1.5's layout at a tenth of the width (``NarrowSD15``), built in memory by a test
    loader node (the adapter needs its 16 layers; loading a checkpoint file is not what they test), its own
    adapter file, and the 2-layer CLIP vision stand-in: a full-size random ViT-H file (1.3 GB, 2.5 GB in memory)
    would test only core's CLIPVisionLoader."""
    api = family_workflows.substitute_family(copy.deepcopy(api))
    names = {
        ("InstructUNetLoader", "model_name"): "checkpoints/tiny-ip2p-sd15.safetensors",
        ("ControlNetLoader", "control_net_name"): "tiny-controlnet-sd15.safetensors",
        ("LoraLoader", "lora_name"): "tiny-lora-sd15.safetensors",
        ("IPAdapterInstructLoader", "ipadapter_file"): "ip-adapter-instruct-sd15narrow-random.bin",
        ("LoadImage", "image"): image,
        ("EmptyLatentImage", "width"): 64,
        ("EmptyLatentImage", "height"): 64,
        ("InstructKSampler", "steps"): 2,
        ("InstructKSamplerEditMask", "steps"): 2,
        ("BasicScheduler", "steps"): 2,
    }
    for node in api.values():
        for (kind, name), value in names.items():
            if node["class_type"] == kind and name in node["inputs"]:
                node["inputs"][name] = value
    for node in api.values():  # core's CLIP vision loader: the 2-layer stand-in of the narrow adapter's width
        if node["class_type"] == "CLIPVisionLoader":
            node["class_type"], node["inputs"] = "InstructTestTinyClipVision", {"width": "narrow"}
    if adapter:  # same outputs (MODEL, CLIP, VAE) as the loaders they stand in for
        for node in api.values():
            kind = {"InstructUNetLoader": "instruct", "CheckpointLoaderSimple": "plain"}.get(node["class_type"])
            if kind:
                node["class_type"], node["inputs"] = "InstructTestFullSD15", {"kind": kind, "weight_dtype": "fp16", "width": "narrow"}
        return api
    for node in api.values():  # Instruct Merge: a fine-tune and its base of the tiny instruct model's size
        if node["class_type"] == "InstructMerge":
            for role, ckpt in (("custom", "tiny-sd15-custom.safetensors"), ("base", "tiny-sd15-base.safetensors")):
                api[node["inputs"][role][0]]["inputs"]["ckpt_name"] = ckpt
    return api


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_executes_and_saves_an_image(comfy, tiny, narrow, name):
    api = load(name, api=True)
    uses_adapter = any(n["class_type"] == "IPAdapterInstructApply" for n in api.values())  # needs SD1.5's real layout
    # a region edit needs a painted region (an empty region_mask is refused, test_no_silent_noops.py)
    painted = (16, 48, 8, 40) if any("region_mask" in n["inputs"] for n in api.values()) else None
    image = comfy.input_image(f"{name}.png", seed=2, painted=painted)
    try:
        result = comfy.run(substitute(api, image, adapter=uses_adapter))
    finally:
        if uses_adapter:
            narrow.release()  # its model, CLIP and VAE would stay beside the next workflow's checkpoint
    save = next(k for k, n in api.items() if n["class_type"] == "SaveImage")
    images = result.ui[save]["images"]
    assert len(images) == 1
    saved = Path(comfy.folder_paths.get_output_directory()) / images[0]["subfolder"] / images[0]["filename"]
    assert saved.is_file() and saved.stat().st_size > 0
