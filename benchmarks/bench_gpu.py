"""GPU benchmark of the issue-14 targets, side by side in one process on one full-size random SD1.5
8-channel UNet (fp16, Euler, 20 steps by default) at 512² and 1024².

    python benchmarks/bench_gpu.py                      # CUDA, 512 and 1024, 20 steps
    python benchmarks/bench_gpu.py --quick              # smoke: 512 only, 4 steps
    python benchmarks/bench_gpu.py --device cpu --res 64 --steps 1 --quick   # plumbing dry run

Rows (s/step, peak MiB): the raw batch-3 UNet call and its GPU kernel time (torch.profiler), core
DualCFGGuider, Instruct KSampler's guider, IPAdapter-Instruct simple on that guider (instruct model),
a full-size plain 4-channel SD1.5 UNet with plain CFG, and IPAdapter-Instruct simple and 4-branch on it
(the 4-branch guidance exists on plain models only), diffusers' StableDiffusionInstructPix2PixPipeline
(same architecture, its own random weights).
Targets printed with PASS/FAIL: Instruct ≤ 1.02 × core; IP simple ≤ 1.08 × without; peak ≤ core + 2 %.
Needs ComfyUI (COMFYUI_PATH or ~/ComfyUI) and diffusers.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # where the one bootstrap lives
import pack_paths  # noqa: E402

pack_paths.install(dev=True)

import instruct_harness  # noqa: E402
from bench_common import best_of, sync  # noqa: E402


def peak_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(fn, device: str, repeat: int, steps: int) -> tuple[float, float]:
    """(best s/step after best_of's one warm-up, peak MiB of the warm-up and timed runs)."""
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return best_of(fn, device, repeat) / steps, peak_mib(device)


def kernel_seconds(fn, device: str, calls: int) -> float:
    """GPU kernel time per call from torch.profiler (sum of the device self time of every kernel);
    on a CPU (smoke run) the CPU self time of every op, so the same code path runs."""
    from torch.profiler import ProfilerActivity, profile

    activity = ProfilerActivity.CUDA if device == "cuda" else ProfilerActivity.CPU
    with profile(activities=[activity]) as prof:
        fn()
        sync(device)
    if device == "cuda":
        total_us = sum(getattr(e, "self_device_time_total", 0) for e in prof.key_averages())
        assert total_us > 0, "the profiler saw no CUDA kernel time"
    else:
        total_us = sum(e.self_cpu_time_total for e in prof.key_averages())
    return total_us / 1e6 / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    ap.add_argument("--res", type=int, nargs="+", default=None, help="image sides (default 512 1024; --quick: 512)")
    ap.add_argument("--steps", type=int, default=None, help="Euler steps (default 20; --quick: 4)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="smoke run: one size, few steps, one repeat")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    opts = ap.parse_args()
    cpu_smoke = opts.device == "cpu"  # a CPU runs every row once at a tiny size (plumbing only)
    res_list = opts.res or ([64] if cpu_smoke else [512] if opts.quick else [512, 1024])
    steps = opts.steps or (1 if cpu_smoke else 4 if opts.quick else 20)
    repeat = 1 if opts.quick else opts.repeat
    device = opts.device

    root, how = instruct_harness.find_comfyui()
    if root is None:
        sys.exit(f"benchmark needs ComfyUI: {how}")
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    t0 = time.perf_counter()
    harness = instruct_harness.ComfyHarness(root, work / "run", work / "models", cpu=device == "cpu")

    import comfy.model_management as mm
    import comfy.samplers
    import comfy.sd
    import instruct_tiny_models as factory
    import nodes
    from comfy_extras.nodes_custom_sampler import Guider_DualCFG
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel

    dtype = torch.float16
    sd = {"model.diffusion_model." + k: v for k, v in factory.full_unet_state_dict(in_channels=8).items()}
    sd.update(factory.clip_state_dict())
    model, clip, _, _ = comfy.sd.load_state_dict_guess_config(sd, output_vae=False, model_options={"dtype": dtype})
    del sd
    guider_mod, dual = harness.pack("samplers.guider"), harness.pack("samplers.dual_cfg")
    spec_mod, apply_mod = harness.pack("models.ipadapter_instruct"), harness.pack("models.ipadapter_apply")
    image_proj, ip_layers = factory.ip_instruct_groups(spec_mod, dtype=torch.float32)
    adapter = apply_mod.LoadedAdapter(spec_mod.build_adapter({"image_proj": image_proj, "ip_adapter": ip_layers}, "random"), "random")
    tokens = apply_mod.project_token_sets(
        adapter, clip, factory.tiny_clip_vision(), torch.rand(1, 512, 512, 3), "use the composition", "a cat in a garden", "blurry"
    )
    simple = apply_mod.apply(model, adapter, tokens, 0.8, 0.0, 1.0, None, apply_mod.IPGuidance(False, 6.0, 1.5))
    # The 4-branch guidance exists on plain (4-channel) models only (on an instruct model the dual-CFG
    # branches apply), so it is measured on a full-size plain SD1.5 UNet against plain CFG on that model.
    plain_sd = {"model.diffusion_model." + k: v for k, v in factory.full_unet_state_dict(in_channels=4).items()}
    plain = comfy.sd.load_state_dict_guess_config(plain_sd, output_vae=False, output_clip=False, model_options={"dtype": dtype})[0]
    del plain_sd
    plain_simple = apply_mod.apply(plain, adapter, tokens, 0.8, 0.0, 1.0, None, apply_mod.IPGuidance(False, 6.0, 1.5))
    plain_four = apply_mod.apply(plain, adapter, tokens, 0.8, 0.0, 1.0, None, apply_mod.IPGuidance(True, 6.0, 1.5))
    pos = nodes.CLIPTextEncode().encode(clip, "turn it into a watercolor")[0]
    neg = nodes.CLIPTextEncode().encode(clip, "blurry")[0]
    text, negative = pos[0][0], neg[0][0]
    sampler = comfy.samplers.sampler_object("euler")
    sched = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1
    )
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.float()
    torch.manual_seed(0)
    with torch.device(device):
        d_unet = UNet2DConditionModel(in_channels=8, out_channels=4, cross_attention_dim=768, sample_size=64).to(dtype)
    blocks = dict(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    vae = AutoencoderKL(block_out_channels=(32,) * 4, **blocks)
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae.to(device, dtype),
        text_encoder=None,
        tokenizer=None,
        unet=d_unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    print(f"setup {time.perf_counter() - t0:.1f} s", flush=True)

    results = []
    for res in res_list:
        side = res // 8
        g = torch.Generator().manual_seed(1)
        image = torch.randn(1, 4, side, side, generator=g)
        noise = torch.randn(1, 4, side, side, generator=g)
        cpos = [[text, {**pos[0][1], "concat_latent_image": image}]]
        cneg = [[negative, {**neg[0][1], "concat_latent_image": image}]]

        def instruct(m=model):
            guider = guider_mod.InstructDualCFGGuider(m, dual.ScaleSchedule(7.5, 1.5))
            guider.set_conds(cpos, cneg)
            guider.sample(noise.clone(), torch.zeros_like(noise), sampler, sigmas.clone(), disable_pbar=True, seed=0)

        def plain_cfg(m=plain):  # ordinary CFG (text_cfg) on the plain model, or the adapter's guidance on it
            guider = guider_mod.InstructDualCFGGuider(m, dual.ScaleSchedule(7.5, 1.0))
            guider.set_conds(pos, neg)
            guider.sample(noise.clone(), torch.zeros_like(noise), sampler, sigmas.clone(), disable_pbar=True, seed=0)

        def core():
            guider = Guider_DualCFG(model)
            guider.set_conds(cpos, cneg, neg)
            guider.set_cfg(7.5, 1.5)
            guider.sample(noise.clone(), torch.zeros_like(noise), sampler, sigmas.clone(), disable_pbar=True, seed=0)

        def reference():
            with torch.no_grad():
                pipe(
                    prompt_embeds=text.to(device, dtype),
                    negative_prompt_embeds=negative.to(device, dtype),
                    image=image.to(device, dtype),
                    num_inference_steps=steps,
                    output_type="latent",
                    latents=noise.to(device, dtype),
                )

        mm.load_models_gpu([model])
        unet = model.model.diffusion_model
        x3 = torch.randn(3, 8, side, side, device=device, dtype=dtype)
        t3 = torch.full((3,), 500.0, device=device, dtype=dtype)
        ctx3 = torch.cat([text, negative, negative]).to(device, dtype)

        def raw():
            with torch.no_grad():
                for _ in range(steps):
                    unet(x3, t3, context=ctx3)

        rows = {}
        for name, fn in (
            ("raw batch-3 UNet call", raw),
            ("core DualCFGGuider", core),
            ("Instruct KSampler guider", instruct),
            ("IPAdapter simple", lambda: instruct(simple)),
            ("plain model, CFG", plain_cfg),
            ("plain + IPAdapter simple", lambda: plain_cfg(plain_simple)),
            ("plain + IPAdapter 4-branch", lambda: plain_cfg(plain_four)),
            ("diffusers IP2P pipeline", reference),
        ):
            try:
                rows[name] = measure(fn, device, repeat, steps)
            except Exception as e:  # one failing row must not cost the others (device time is scarce)
                print(f"{res}px {name}: FAILED {type(e).__name__}: {e}", flush=True)
                rows[name] = (float("nan"), float("nan"))
            print(f"{res}px {name}: {rows[name][0]:.4f} s/step, peak {rows[name][1]:.0f} MiB", flush=True)
        try:
            kernel = kernel_seconds(raw, device, steps)
        except Exception as e:
            print(f"{res}px profiler: FAILED {type(e).__name__}: {e}", flush=True)
            kernel = float("nan")
        results.append((res, rows, kernel))
        mm.unload_all_models()

    name_dev = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"\nfull-size random SD1.5 8-channel UNet, fp16, {steps} Euler steps, {device} ({name_dev}), best of {repeat}")
    report = []
    for res, rows, kernel in results:
        core_s, core_peak = rows["core DualCFGGuider"]
        inst_s, inst_peak = rows["Instruct KSampler guider"]
        print(f"\n{res}x{res}")
        print(f"{'path':28s} {'s/step':>9s} {'x core':>7s} {'peak MiB':>9s}")
        for name, (s, peak) in rows.items():
            print(f"{name:28s} {s:9.4f} {s / core_s:7.3f} {peak:9.0f}")
        print(f"{'raw UNet GPU kernel time':28s} {kernel:9.4f}")
        targets = [
            ("Instruct / core s/step", inst_s / core_s, 1.02),
            ("IP simple / without s/step", rows["IPAdapter simple"][0] / inst_s, 1.08),
            ("plain: IP simple / without", rows["plain + IPAdapter simple"][0] / rows["plain model, CFG"][0], 1.08),
            ("Instruct peak / core peak", inst_peak / core_peak, 1.02),
        ]
        for label, ratio, limit in targets:
            verdict = "PASS" if ratio <= limit else "FAIL"
            print(f"target {label:28s} {ratio:6.3f} (<= {limit}) {verdict}")
        report.append({"res": res, "rows": rows, "kernel_s_per_call": kernel, "targets": {t[0]: t[1] for t in targets}})
    if opts.json:
        opts.json.write_text(json.dumps({"device": name_dev, "steps": steps, "repeat": repeat, "results": report}, indent=1))


if __name__ == "__main__":
    main()
