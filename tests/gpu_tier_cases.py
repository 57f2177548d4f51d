"""The GPU tier's cases for ONE ComfyUI memory mode, in their own process (tests/test_gpu.py runs
this file once per mode: ComfyUI reads --lowvram/--novram/--reserve-vram once, at import).

Environment: INSTRUCT_GPU_MODE (normal | lowvram | novram), INSTRUCT_GPU_REF (the CPU fp32
reference, from gpu_tier_reference.py), INSTRUCT_GPU_REPORT (a JSON-lines file the errors are
appended to), INSTRUCT_GPU_DEVICE=cpu for a dry run of the plumbing on a CPU (placement checks off).

``lowvram`` also reserves all but about LOWVRAM_BUDGET_GIB of the free GPU memory (ComfyUI's
--reserve-vram), so the full-size UNet really is split between GPU and CPU on a large GPU.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

import gpu_tier_graphs as graphs
import instruct_harness
from headless.runner.comfyui import put_on_path

MODE = os.environ.get("INSTRUCT_GPU_MODE", "normal")
DEVICE = os.environ.get("INSTRUCT_GPU_DEVICE", "cuda")
DTYPES = ("fp16", "bf16")
#: ‖GPU − CPU fp32‖ / ‖CPU fp32‖ of the final latent (3 Euler steps, random full-size weights).
TOLERANCE = {"fp16": 0.05, "bf16": 0.12}
#: weights ComfyUI may keep on the GPU in --lowvram mode: about half the fp16 SD1.5 UNet (1.6 GiB)
LOWVRAM_BUDGET_GIB = 0.8 + 0.8  # ComfyUI's minimum inference memory + the weights' share
#: GPU memory still allocated after unloading every model (cuBLAS workspaces, the probe's caches)
LEAK_SLACK = 256 << 20

pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="GPU tier: no CUDA device")


@pytest.fixture(scope="session")
def gpu():
    root, how = instruct_harness.find_comfyui()
    if root is None:
        pytest.skip(f"GPU tier: {how}")
    put_on_path(root)
    from comfy.cli_args import args

    args.lowvram, args.novram = MODE == "lowvram", MODE == "novram"
    if MODE == "lowvram" and DEVICE == "cuda":
        free, _ = torch.cuda.mem_get_info()
        args.reserve_vram = max(0.0, free / 2**30 - LOWVRAM_BUDGET_GIB)
    from instruct_tiny_models import cache_dir

    harness = instruct_harness.ComfyHarness(root, Path(tempfile.mkdtemp(prefix=f"gpu-tier-{MODE}-")), cache_dir(), cpu=DEVICE == "cpu")
    graphs.prepare(harness)
    import comfy.model_management as mm

    expected = {"normal": "NORMAL_VRAM", "lowvram": "LOW_VRAM", "novram": "NO_VRAM"}[MODE] if DEVICE == "cuda" else "DISABLED"
    assert mm.vram_state.name == expected, f"ComfyUI runs in {mm.vram_state.name}, expected {expected}"
    harness.mm = mm
    harness.reference = torch.load(os.environ["INSTRUCT_GPU_REF"], weights_only=True)
    mm.unload_all_models()
    harness.baseline = torch.cuda.memory_allocated() if DEVICE == "cuda" else 0
    return harness


def report(name: str, dtype: str, error: float, **extra) -> None:
    line = {"mode": MODE, "dtype": dtype, "case": name, "rel_error": round(error, 5), "tolerance": TOLERANCE[dtype], **extra}
    print(json.dumps(line))  # noqa: T201  (the error per case, shown with -rA)
    path = os.environ.get("INSTRUCT_GPU_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")


def check_close(h, name: str, value: torch.Tensor, dtype: str) -> None:
    assert value.device.type == "cpu", f"{name}: a node output left on {value.device} (ComfyUI keeps outputs on the CPU)"
    assert torch.isfinite(value).all(), f"{name}: non-finite values in {dtype}"
    error = graphs.relative_error(value, h.reference[name])
    report(name, dtype, error)
    assert error <= TOLERANCE[dtype], f"{name}: relative error {error:.4f} against CPU fp32 > {TOLERANCE[dtype]} in {dtype}"


def probes(h) -> list:
    found = list(h.test_nodes.PROBES)
    h.test_nodes.PROBES.clear()
    assert found, "the probe saw no UNet call"
    return found


def check_placement(records: list, full_size: bool) -> None:
    """Every UNet input on the GPU; the weights held there as the memory mode says."""
    if DEVICE != "cuda":
        return
    for rec in records:
        wrong = {k: d for k, d in rec["devices"].items() if not d.startswith("cuda")}
        assert not wrong, f"UNet inputs not on the GPU: {wrong}"
        assert rec["load_device"].startswith("cuda")
    loaded, size = records[-1]["loaded"], records[-1]["size"]
    if MODE == "normal":
        assert loaded == size, f"normal mode loaded {loaded} of {size} bytes"
    elif MODE == "novram":
        assert loaded < 0.1 * size, f"--novram kept {loaded} of {size} bytes on the GPU"
    elif full_size:
        assert 0 < loaded < size, f"--lowvram with a reserve: expected a partial load, got {loaded} of {size} bytes"


def offload_everything(h) -> None:
    """What ComfyUI does under memory pressure between prompts: every model back to its offload device."""
    h.mm.unload_all_models()
    gc.collect()
    h.mm.soft_empty_cache()
    if DEVICE == "cuda":
        left = torch.cuda.memory_allocated() - h.baseline
        assert left < LEAK_SLACK, f"{left / 2**20:.0f} MiB still on the GPU after unloading every model"


@pytest.mark.parametrize("dtype", DTYPES)
def test_instruct_edit(gpu, dtype):
    h = gpu
    h.test_nodes.PROBES.clear()
    result = graphs.Session(h).run(graphs.edit_graph(h, dtype))
    check_placement(probes(h), full_size=True)
    check_close(h, "edit", graphs.latent(result, "ks"), dtype)
    image = result.output("dec")
    assert image.device.type == "cpu" and torch.isfinite(image).all()
    offload_everything(h)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ipadapter_offloaded_and_reloaded_across_two_prompts(gpu, dtype):
    h = gpu
    session = graphs.Session(h)
    for i, text in enumerate(graphs.PROMPTS):
        h.test_nodes.PROBES.clear()
        result = session.run(graphs.ipadapter_graph(h, dtype, text))
        check_placement(probes(h), full_size=True)
        check_close(h, f"ip_simple_{i}", graphs.latent(result, "simple"), dtype)
        check_close(h, f"ip_four_{i}", graphs.latent(result, "four"), dtype)
        offload_everything(h)  # the second prompt reloads the same cached, patched models


@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_offloaded_and_reloaded_across_two_prompts(gpu, dtype):
    h = gpu
    session = graphs.Session(h)
    for i, text in enumerate(graphs.PROMPTS):
        h.test_nodes.PROBES.clear()
        result = session.run(graphs.merge_graph(h, dtype, text))
        check_placement(probes(h), full_size=False)
        check_close(h, f"merge_{i}", graphs.latent(result, "ks"), dtype)
        offload_everything(h)


@pytest.mark.parametrize("dtype", DTYPES)
def test_model_on_the_gpu_conditioning_image_on_the_cpu(gpu, dtype):
    """The model is loaded onto the GPU first; the picture and its latent stay CPU tensors."""
    h = gpu
    import nodes

    node = h.nodes.NODE_CLASS_MAPPINGS
    model, clip, vae = (
        node["InstructUNetLoader"]
        .execute(model_name=graphs.FULL_INSTRUCT, weights="auto", prediction="auto", weight_dtype=dtype)
        .result[:3]
    )
    h.mm.load_models_gpu([model])
    if DEVICE == "cuda" and MODE == "normal":
        assert {p.device.type for p in model.model.diffusion_model.parameters()} == {"cuda"}
    image = nodes.LoadImage().load_image(graphs.IMAGE)[0]
    assert image.device.type == "cpu"
    pos = nodes.CLIPTextEncode().encode(clip, graphs.PROMPTS[0])[0]
    neg = nodes.CLIPTextEncode().encode(clip, graphs.NEGATIVE)[0]
    cpos, cneg, lat = (
        node["InstructImageConditioning"]
        .execute(positive=pos, negative=neg, vae=vae, image=image, size_mode="crop", latent_output="empty")
        .result[:3]
    )
    assert cpos[0][1]["concat_latent_image"].device.type == "cpu"
    probed = h.test_nodes.InstructTestDeviceProbe().patch(model)[0]
    h.test_nodes.PROBES.clear()
    out = (
        node["InstructKSampler"]
        .execute(
            model=probed,
            seed=graphs.SEED,
            steps=graphs.STEPS,
            text_cfg=7.5,
            image_cfg=1.5,
            sampler_name="euler",
            scheduler="normal",
            positive=cpos,
            negative=cneg,
            latent_image=lat,
            denoise=1.0,
        )
        .result[0]["samples"]
    )
    check_placement(probes(h), full_size=True)
    check_close(h, "edit", out, dtype)
    del model, probed
    offload_everything(h)
