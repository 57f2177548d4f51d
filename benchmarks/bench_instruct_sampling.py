"""Benchmark: time per sampling step of the instruct paths on one model, side by side.

    python benchmarks/bench_instruct_sampling.py                       # CPU, tiny UNet, 64x64
    python benchmarks/bench_instruct_sampling.py --device cuda --size full --res 512 --dtype fp16

Rows: Instruct KSampler's guider, the same with a region mask and with the edit mask (restricting),
core DualCFGGuider (same conds), diffusers' StableDiffusionInstructPix2PixPipeline (same UNet
weights), and one raw batch-3 UNet call (the floor both guiders have to pay). Ratios are against
the raw call and against core. Random weights; the UNet is built by diffusers, saved in diffusers
layout and loaded through the pack's loader.
Needs ComfyUI (COMFYUI_PATH or ~/ComfyUI) and diffusers.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # where the one bootstrap lives
import pack_paths  # noqa: E402

pack_paths.install(dev=True)

import instruct_harness  # noqa: E402
from bench_common import best_of  # noqa: E402

FULL_SD15 = dict(in_channels=8, out_channels=4, cross_attention_dim=768, sample_size=64)


def build_unet(size: str):
    from diffusers import UNet2DConditionModel

    import instruct_tiny_models

    torch.manual_seed(0)
    if size == "tiny":
        return UNet2DConditionModel(**instruct_tiny_models.DIFFUSERS_UNET)
    return UNet2DConditionModel(**FULL_SD15)  # diffusers defaults are SD1.5's block layout


def timed(fn, device: str, repeat: int) -> tuple[float, float]:
    """(best seconds over `repeat` runs after one warm-up, peak memory in MiB during them)."""
    if device == "cuda":
        fn()
        torch.cuda.reset_peak_memory_stats()
    best = best_of(fn, device, repeat)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return best, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--res", type=int, default=64, help="image side in pixels (latent = res/8)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    opts = ap.parse_args()

    root, how = instruct_harness.find_comfyui()
    if root is None:
        sys.exit(f"benchmark needs ComfyUI: {how}")
    work = Path(tempfile.mkdtemp(prefix="instruct-bench-"))
    harness = instruct_harness.ComfyHarness(root, work / "run", work / "models", cpu=opts.device == "cpu")

    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import Guider_DualCFG

    dtype = torch.float16 if opts.dtype == "fp16" else torch.float32
    unet = build_unet(opts.size)
    unet_dir = work / "models" / "diffusers" / "bench-unet"
    unet.save_pretrained(unet_dir)
    loader = harness.pack("models.instruct_loader")
    model = loader.load_instruct(str(unet_dir), weight_dtype=opts.dtype).model
    guider_mod, dual = harness.pack("samplers.guider"), harness.pack("samplers.dual_cfg")

    device = torch.device(opts.device)
    side = opts.res // 8
    g = torch.Generator().manual_seed(1)
    text, negative = torch.randn(1, 77, 768, generator=g), torch.randn(1, 77, 768, generator=g)
    image = torch.randn(1, 4, side, side, generator=g)
    noise = torch.randn(1, 4, side, side, generator=g)
    pos = [[text, {"concat_latent_image": image}]]
    neg = [[negative, {"concat_latent_image": image}]]
    sched = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1
    )
    sched.set_timesteps(opts.steps)
    sigmas = sched.sigmas.float()
    sampler = comfy.samplers.sampler_object("euler")

    regions = harness.pack("samplers.regions")
    region = torch.zeros(1, opts.res, opts.res)
    region[:, opts.res // 4 : 3 * opts.res // 4, opts.res // 4 : 3 * opts.res // 4] = 1.0

    def instruct(region_mask=None, edit_mask=False):
        guider = guider_mod.InstructDualCFGGuider(model, dual.ScaleSchedule(7.5, 1.5))
        guider.set_conds(pos, neg)
        guider.set_region(region_mask, 16)
        if edit_mask:
            guider.track_edit_mask(regions.EditMaskOptions())
        guider.sample(noise.clone(), torch.zeros_like(noise), sampler, sigmas.clone(), disable_pbar=True, seed=0)

    def core():
        guider = Guider_DualCFG(model)
        guider.set_conds(pos, neg, [[negative, {}]])
        guider.set_cfg(7.5, 1.5)
        guider.sample(noise.clone(), torch.zeros_like(noise), sampler, sigmas.clone(), disable_pbar=True, seed=0)

    vae = AutoencoderKL(
        block_out_channels=(32,) * 4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
    )
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        unet=unet.to(device, dtype),
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)

    def reference():
        with torch.no_grad():
            pipe(
                prompt_embeds=text.to(device, dtype),
                negative_prompt_embeds=negative.to(device, dtype),
                image=image.to(device, dtype),
                num_inference_steps=opts.steps,
                output_type="latent",
                latents=noise.to(device, dtype),
            )

    import comfy.model_management as mm

    mm.load_models_gpu([model])
    diffusion_model = model.model.diffusion_model
    x3 = torch.randn(3, 8, side, side, device=device, dtype=dtype)
    t3 = torch.full((3,), 500.0, device=device)
    ctx3 = torch.cat([text, negative, negative]).to(device, dtype)

    def raw_unet():
        with torch.no_grad():
            for _ in range(opts.steps):
                diffusion_model(x3, t3, context=ctx3)

    rows = []
    for name, fn in (
        ("raw batch-3 UNet call", raw_unet),
        ("core DualCFGGuider", core),
        ("InstructKSampler guider", instruct),
        ("  + region_mask", lambda: instruct(region_mask=region)),
        ("  + edit mask (restricting)", lambda: instruct(edit_mask=True)),
        ("diffusers IP2P pipeline", reference),
    ):
        seconds, peak = timed(fn, opts.device, opts.repeat)
        rows.append((name, seconds / opts.steps, peak))
    floor = rows[0][1]
    core_step = rows[1][1]
    print(
        f"\n{opts.size} SD1.5-class UNet, {opts.res}x{opts.res}, {opts.steps} Euler steps, {opts.dtype}, {opts.device}"
        f" ({torch.cuda.get_device_name() if opts.device == 'cuda' else 'CPU'}), best of {opts.repeat}"
    )
    print(f"{'path':28s} {'s/step':>10s} {'x raw UNet':>11s} {'x core':>8s} {'peak MiB':>10s}")
    for name, per_step, peak in rows:
        print(f"{name:28s} {per_step:10.4f} {per_step / floor:11.2f} {per_step / core_step:8.2f} {peak:10.0f}")


if __name__ == "__main__":
    main()
