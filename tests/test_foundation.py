"""The pack loads like any custom node, registers well-formed V3 nodes, and the harness runs
what users run (a core-only InstructPix2Pix graph on the tiny models)."""

from __future__ import annotations

import logging
import math

import torch


def listed_nodes(comfy) -> list[str]:
    """The pack's node list, from its one source (``NODE_CLASSES`` in nodes/__init__.py)."""
    return [class_name for _module, class_name in comfy.pack("nodes").NODE_CLASSES]


def test_pack_registers_its_nodes_through_comfy_entrypoint(comfy):
    assert comfy.pack_loaded
    assert sorted(listed_nodes(comfy)) == comfy.pack_node_ids, "every listed node registers, and nothing else"
    module = __import__("sys").modules[comfy.pack_module_name]
    assert not hasattr(module, "NODE_CLASS_MAPPINGS"), "V1 mappings would make ComfyUI ignore comfy_entrypoint"


def test_node_ids_never_reuse_a_core_id(comfy):
    for node_id in comfy.pack_node_ids:
        schema = comfy.nodes.NODE_CLASS_MAPPINGS[node_id].GET_SCHEMA()
        assert schema.node_id == node_id
        assert node_id not in comfy.core_ids


def test_every_input_and_output_has_a_tooltip_and_the_node_a_description(comfy):
    for node_id in listed_nodes(comfy):
        info = comfy.nodes.NODE_CLASS_MAPPINGS[node_id].GET_NODE_INFO_V1()
        assert info["category"].startswith("instruct/"), node_id
        assert len(info["description"]) > 40, f"{node_id}: description too short"
        inputs = {**info["input"]["required"], **info["input"].get("optional", {})}
        assert inputs, node_id
        for name, spec in inputs.items():
            assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert len(info["output_tooltips"]) == len(info["output"]), node_id
        assert all(info["output_tooltips"]), f"{node_id} has an output without tooltip"


def test_ipadapter_folder_registered_with_explicit_extensions(comfy):
    paths, extensions = comfy.folder_paths.folder_names_and_paths["ipadapter"]
    assert {".bin", ".safetensors"} <= set(extensions)
    assert any(p.endswith("ipadapter") for p in paths)


def test_ipadapter_registration_keeps_configured_paths(comfy):
    folders = comfy.pack("models.folders")
    registry = comfy.folder_paths.folder_names_and_paths
    saved = registry["ipadapter"]
    try:
        registry["ipadapter"] = (["/from/extra_model_paths.yaml"], set())
        folders.register_ipadapter_folder()
        paths, extensions = registry["ipadapter"]
        assert paths == ["/from/extra_model_paths.yaml"]
        assert ".bin" in extensions
    finally:
        registry["ipadapter"] = saved


def test_tiny_models_are_byte_reproducible(comfy, tiny, tmp_path):
    import instruct_tiny_models as factory

    again = tmp_path / "again.safetensors"
    factory._save(factory.unet_state_dict(), again)
    assert factory.sha256(again) == factory.sha256(tiny["unet"])
    other = factory.unet_state_dict(seed=factory.SEED + 1)
    assert not torch.equal(other["input_blocks.0.0.weight"], factory.unet_state_dict()["input_blocks.0.0.weight"])


def core_ip2p_graph(comfy, image: str, seed: int = 0, steps: int = 2):
    g = comfy.graph()
    ckpt = g.node("CheckpointLoaderSimple", id="ckpt", ckpt_name="tiny-ip2p-sd15.safetensors")
    lora = g.node(
        "LoraLoader",
        id="lora",
        model=ckpt.out(0),
        clip=ckpt.out(1),
        lora_name="tiny-lora-sd15.safetensors",
        strength_model=1.0,
        strength_clip=1.0,
    )
    pos = g.node("CLIPTextEncode", id="pos", clip=lora.out(1), text="make it winter")
    neg = g.node("CLIPTextEncode", id="neg", clip=lora.out(1), text="")
    img = g.node("LoadImage", id="img", image=image)
    cn = g.node("ControlNetLoader", id="cnl", control_net_name="tiny-controlnet-sd15.safetensors")
    cna = g.node(
        "ControlNetApplyAdvanced",
        id="cna",
        positive=pos.out(0),
        negative=neg.out(0),
        control_net=cn.out(0),
        image=img.out(0),
        strength=1.0,
        start_percent=0.0,
        end_percent=1.0,
    )
    ip2p = g.node("InstructPixToPixConditioning", id="ip2p", positive=cna.out(0), negative=cna.out(1), vae=ckpt.out(2), pixels=img.out(0))
    guider = g.node(
        "DualCFGGuider",
        id="guider",
        model=lora.out(0),
        cond1=ip2p.out(0),
        cond2=ip2p.out(1),
        negative=cna.out(1),
        cfg_conds=7.5,
        cfg_cond2_negative=1.5,
        style="regular",
    )
    noise = g.node("RandomNoise", id="noise", noise_seed=seed)
    sampler = g.node("KSamplerSelect", id="ksel", sampler_name="euler")
    sigmas = g.node("BasicScheduler", id="sched", model=lora.out(0), scheduler="normal", steps=steps, denoise=1.0)
    sample = g.node(
        "SamplerCustomAdvanced",
        id="sample",
        noise=noise.out(0),
        guider=guider.out(0),
        sampler=sampler.out(0),
        sigmas=sigmas.out(0),
        latent_image=ip2p.out(2),
    )
    decode = g.node("VAEDecode", id="decode", samples=sample.out(0), vae=ckpt.out(2))
    g.node("SaveImage", id="save", images=decode.out(0), filename_prefix="smoke")
    return g.finalize()


def test_core_only_ip2p_graph_runs_on_the_tiny_models(comfy, tiny, log_capture):
    image = comfy.input_image("smoke.png")
    result = comfy.run(core_ip2p_graph(comfy, image))
    latent = result.output("sample")["samples"]
    decoded = result.output("decode")
    assert tuple(latent.shape) == (1, 4, 8, 8)
    assert tuple(decoded.shape) == (1, 64, 64, 3)
    assert torch.isfinite(latent).all() and torch.isfinite(decoded).all()
    assert result.ui["save"]["images"][0]["filename"].startswith("smoke")
    assert not [m for m in log_capture.messages(logging.WARNING) if "lora key not loaded" in m]
    model = result.output("lora")
    assert type(model.model).__name__ == "SD15_instructpix2pix"
    assert len(model.patches) == 3  # the three UNet LoRA targets were applied
    assert math.isclose(float(decoded.std()), float(decoded.std()))  # not NaN


def test_loading_the_pack_logs_no_warning_and_its_pyproject_parses(comfy, log_capture):
    import asyncio

    from instruct_harness import PACK_DIR

    assert asyncio.run(comfy.nodes.load_custom_node(str(PACK_DIR), ignore=comfy.core_ids))
    noisy = [m for m in log_capture.messages(logging.WARNING) if str(PACK_DIR) in m or "pyproject" in m or "Instruct" in m]
    assert not noisy
    from comfy_config import config_parser

    config = config_parser.extract_node_configuration(str(PACK_DIR))
    assert config.project.name == "comfyui-instruct"
    assert config.tool_comfy.publisher_id == "comfyui-instruct"


def test_one_broken_node_is_skipped_not_fatal(comfy, log_capture):
    import asyncio

    nodes_pkg = comfy.pack("nodes")
    saved = nodes_pkg.NODE_CLASSES
    try:
        nodes_pkg.NODE_CLASSES = (("loaders", "DoesNotExist"),) + saved
        node_list = asyncio.run(nodes_pkg.InstructExtension().get_node_list())
    finally:
        nodes_pkg.NODE_CLASSES = saved
    assert {n.GET_SCHEMA().node_id for n in node_list} == set(listed_nodes(comfy))
    assert any("DoesNotExist" in m for m in log_capture.messages(logging.ERROR))


def test_requirements_match_the_registry_dependencies():
    import tomllib

    from instruct_harness import PACK_DIR

    project = tomllib.loads((PACK_DIR / "pyproject.toml").read_text())["project"]
    lines = [line.strip() for line in (PACK_DIR / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert requirements == project["dependencies"]
    assert not [r for r in requirements if r.lower().startswith("torch")]
    assert not (PACK_DIR / "install.py").exists()
