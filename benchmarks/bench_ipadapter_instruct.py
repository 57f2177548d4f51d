"""Benchmark: what IPAdapter-Instruct costs, on one full-size SD1.5 UNet (random weights).

    python benchmarks/bench_ipadapter_instruct.py                          # CPU, 64x64
    python benchmarks/bench_ipadapter_instruct.py --device cuda --res 512 --dtype fp16 --vision full

Prints the once-per-input cost (text and image encodings + the four projections) and the time per
sampling step of: the model alone (2-pass CFG), with the adapter in simple mode (2 passes), and in
the 4-branch mode (4 passes), with ratios against the model alone. Needs ComfyUI (COMFYUI_PATH or
~/ComfyUI). ``--vision full`` uses a full-size random CLIP-ViT-H/14 (632M) instead of the 2-layer
stand-in, for realistic encoding cost.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # where the one bootstrap lives
import pack_paths  # noqa: E402

pack_paths.install(dev=True)

import instruct_harness  # noqa: E402
from bench_common import best_of  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    ap.add_argument("--vision", choices=["tiny", "full"], default="tiny")
    opts = ap.parse_args()

    root, how = instruct_harness.find_comfyui()
    if root is None:
        sys.exit(f"benchmark needs ComfyUI: {how}")
    work = Path(tempfile.mkdtemp(prefix="ip-bench-"))
    harness = instruct_harness.ComfyHarness(root, work / "run", work / "models", cpu=opts.device == "cpu")

    import comfy.clip_vision
    import comfy.sd
    import instruct_tiny_models as factory
    import nodes

    dtype = {"fp16": torch.float16, "fp32": torch.float32}[opts.dtype]
    sd = {"model.diffusion_model." + k: v for k, v in factory.full_unet_state_dict().items()}
    sd.update(factory.clip_state_dict())
    model, clip, _, _ = comfy.sd.load_state_dict_guess_config(sd, output_vae=False, model_options={"dtype": dtype})
    del sd
    spec_mod, apply_mod = harness.pack("models.ipadapter_instruct"), harness.pack("models.ipadapter_apply")
    image_proj, ip_layers = factory.ip_instruct_groups(spec_mod, dtype=torch.float32)
    adapter = apply_mod.LoadedAdapter(spec_mod.build_adapter({"image_proj": image_proj, "ip_adapter": ip_layers}, "random"), "random")
    if opts.vision == "full":
        vision_sd = {}
        vision = comfy.clip_vision.ClipVisionModel(str(Path(comfy.clip_vision.__file__).parent / "clip_vision_config_h.json"))
        for name, tensor in vision.get_sd().items():
            vision_sd[name] = tensor if name.endswith("position_ids") else factory.fill(name, tensor.shape).to(tensor.dtype)
        vision.load_sd(vision_sd)
    else:
        vision = factory.tiny_clip_vision()
    image = torch.rand(1, 512, 512, 3)
    pos = nodes.CLIPTextEncode().encode(clip, "a cat in a garden")[0]
    neg = nodes.CLIPTextEncode().encode(clip, "blurry")[0]

    def encode():
        return apply_mod.project_token_sets(adapter, clip, vision, image, "use the composition", "a cat in a garden", "blurry")

    encode_s = best_of(encode, opts.device, opts.repeat)
    tokens = encode()
    guidance_simple = apply_mod.IPGuidance(False, 6.0, 1.5)
    guidance_four = apply_mod.IPGuidance(True, 6.0, 1.5)
    simple = apply_mod.apply(model, adapter, tokens, 0.8, 0.0, 1.0, None, guidance_simple)
    four = apply_mod.apply(model, adapter, tokens, 0.8, 0.0, 1.0, None, guidance_four)
    sampler = harness.nodes.NODE_CLASS_MAPPINGS["InstructKSampler"]
    latent = {"samples": torch.zeros(1, 4, opts.res // 8, opts.res // 8)}

    def sample(m):
        return lambda: sampler.execute(
            model=m,
            seed=0,
            steps=opts.steps,
            text_cfg=5.0,
            image_cfg=1.5,
            sampler_name="euler",
            scheduler="normal",
            positive=pos,
            negative=neg,
            latent_image=latent,
            denoise=1.0,
        )

    rows = [
        (name, best_of(sample(m), opts.device, opts.repeat) / opts.steps)
        for name, m in (("model alone (2 passes)", model), ("adapter, simple (2 passes)", simple), ("adapter, 4-branch (4 passes)", four))
    ]
    base = rows[0][1]
    print(f"\nSD1.5 (full size, random), {opts.res}x{opts.res}, {opts.dtype}, {opts.device}, CLIP vision: {opts.vision}")
    print(f"once per input (encodings + 4 projections): {encode_s:.4f} s")
    print(f"{'path':32s} {'s/step':>9s} {'x alone':>8s}")
    for name, per_step in rows:
        print(f"{name:32s} {per_step:9.4f} {per_step / base:8.2f}")


if __name__ == "__main__":
    main()
