"""Benchmark: time per sampling step and peak memory of the instruction-edit families, core vs the pack.

    python benchmarks/bench_edit_families.py                                    # CPU, tiny models, 64x64
    python benchmarks/bench_edit_families.py --device cuda --size full --dtype bf16 --res 1024
    python benchmarks/bench_edit_families.py --size full --blocks 1 --families omnigen2 --steps 1 --repeat 1
                                                                                # plumbing check of the full path

Families: flux_kontext, flux2, qwen_image_edit, omnigen2, hidream_e1, each a model of ComfyUI's own class.
--size tiny: the test suite's tiny models (testing/family_models.py, seeded weights). --size full: the
published layout (what ComfyUI's detection makes of the released file: published_config), built empty on
the device in --dtype and every parameter filled in place with seeded normal values (std 0.02): random
weights, no file. --blocks N keeps N blocks of each kind at full width (a plumbing check on a small
machine; its timings are not the model's). Text conditioning is random, shaped like the family's text
encoder output: widths from the model's unet_config (or its class's defaults), token counts as ComfyUI's
encoders give them (Flux T5 256, Flux.2 padded to 512 by the model, Qwen-Image-Edit 32 text + 188 vision
tokens and 32 for the image-free negative, OmniGen2 64, HiDream T5 128 + Llama 128 x 32 layers).
The input image is a random latent of the sampled latent's size (the reference latent, or HiDream's
concat image). The default families are those that fit: a family whose weights plus working memory
exceed the free memory (GPU: torch.cuda.mem_get_info; CPU: MemAvailable) is skipped with its numbers.

Rows per family (s/step: the best of --repeat runs after one warm-up, the rows interleaved round by round;
"x core" and every time ratio: the median over the rounds of the two rows' runs in the same round; peak MiB:
the CUDA allocator's peak, on a CPU the process's peak RSS, each reset per row; calls/step: model calls a
step and their batch sizes, counted in the warm-up):
  (a) core DualCFGGuider wired as ComfyUI's examples: cond1 = positive + image, cond2 = negative + image,
      negative without the image (Qwen-Image-Edit: the negative encoded without the image); on tiny models
      it is timed twice (--aa): the A/A ratio is the noise floor of the run;
  (b) the pack's Instruct Guider, same scales (text_cfg 4, image_cfg 1.5), same conditioning;
  (c) (b) with a region_mask (the left half of the image, feather 16 px);
  (d) (b) at image_cfg 1.0: two branches, the image in both (and core DualCFGGuider at cfg2 1.0 beside it);
  (e) one comfy.samplers.calc_cond_batch call per line, at the first step, on the guider's own conds: the
      unconditional branch alone (no image: shorter sequence), the image-only and full branches alone,
      the two image branches batched, the three branches as the guiders hand them (ComfyUI batches only
      conds of the same shape, so the uncond is a call of its own), and the three image branches batched
      (a hypothetical batch of 3 of equal length: what one call would cost);
  (f) (--overhead) the same guiders with the model call stubbed (a zero prediction): what each guider costs
      per step around the model, and the ratio that cost alone implies at the measured s/step.
Targets, PASS/FAIL per family: Instruct / core <= 1.02; region / no region <= 1.03. --json PATH writes
every number, each run's seconds included (after each family, so a run cut short keeps what it measured).
A family or a row that fails is reported and the run goes on.

On a CPU the default is one torch thread and process CPU time (--clock cpu): on a machine shared with
other work, time spent waiting for a core is not the code's. Tiny models make a step a few milliseconds,
so the guiders' Python work (ComfyUI's and the pack's) is a visible share of it; on a GPU at full size
a step is the model. Needs ComfyUI (COMFYUI_PATH or ~/ComfyUI).
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import math
import platform
import re
import resource
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # where the one bootstrap lives
import pack_paths  # noqa: E402

pack_paths.install(dev=True)

import instruct_harness  # noqa: E402

FAMILIES = ("flux_kontext", "flux2", "qwen_image_edit", "omnigen2", "hidream_e1")
TEXT_CFG, IMAGE_CFG = 4.0, 1.5
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
GiB = 2**30
#: FluxGuidance of the templates (flux_kontext_dev_basic 2.5, image_flux2 4).
FLUX_GUIDANCE = {"flux_kontext": 2.5, "flux2": 4.0}
#: Text tokens per family at full size, as ComfyUI's encoders hand them to the model: Flux's T5 tokenizer pads
#: to 256; Flux.2's Mistral text is short (Flux2.extra_conds pads it to 512); Qwen-Image-Edit: the prompt after
#: the template (its vision tokens are added below); OmniGen2: template + prompt; HiDream: T5 and Llama pad to 128.
FULL_TOKENS = {"flux_kontext": 256, "flux2": 64, "qwen_image_edit": 32, "omnigen2": 64, "hidream_e1": 128}
#: Qwen2.5-VL vision tokens of the picture in Qwen-Image-Edit's prompt (scaled to a 384x384 area, 28-px cells).
QWEN_VISION_TOKENS = {"full": 188, "tiny": 4}
TINY_TOKENS = 8
#: Keys that hold the block counts of each family's unet_config (--blocks).
BLOCK_KEYS = {
    "flux_kontext": ("depth", "depth_single_blocks"),
    "flux2": ("depth", "depth_single_blocks"),
    "qwen_image_edit": ("num_layers",),
    "omnigen2": ("num_layers", "num_refiner_layers"),
    "hidream_e1": ("num_layers", "num_single_layers"),
}
#: Room kept free beyond weights and ComfyUI's own working-memory estimate (CUDA context, cuBLAS, fragmentation).
RESERVE_BYTES = 3 * GiB

ROWS = (
    ("core", "(a) core DualCFGGuider"),
    ("core_again", "(a) the same again (A/A: noise floor)"),
    ("instruct", "(b) Instruct Guider"),
    ("region", "(c) Instruct Guider + region_mask"),
    ("two_branch", "(d) Instruct Guider, image_cfg 1.0"),
    ("core_two_branch", "(d) core DualCFGGuider, cfg2 1.0"),
)
BRANCH_ROWS = (
    ("uncond", "uncond alone (no image)"),
    ("image_only", "image-only alone"),
    ("full", "full alone"),
    ("pair", "image-only + full, batched"),
    ("guider", "uncond, image-only, full (as run)"),
    ("batch3", "3 image branches batched (hyp.)"),
)


# ---- measuring -------------------------------------------------------------------------------------


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    """Start a new peak: the CUDA allocator's, or the process's peak RSS (Linux: ``clear_refs`` 5 resets VmHWM)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # ru_maxrss below is then the peak since start


def peak_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        found = re.search(r"VmHWM:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
        if found:
            return int(found.group(1)) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def free_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    try:
        found = re.search(r"MemAvailable:\s+(\d+)\s+kB", Path("/proc/meminfo").read_text())
        if found:
            return int(found.group(1)) * 1024
    except OSError:
        pass
    return 1 << 60


#: What ``timed`` reads: wall-clock time, or the process's CPU time (``--clock cpu``: on a CPU shared with other
#: work, time spent waiting for a core is not the code's; with one torch thread it is the work done).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = [time.perf_counter]


def timed(fn: Callable[[], Any], device: str) -> float:
    sync(device)
    t0 = _clock[0]()
    fn()
    sync(device)
    return _clock[0]() - t0


class CallCounter:
    """model_function_wrapper counting the model calls and the batch size of each (warm-up runs only)."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, apply_model, args):
        self.batches.append(len(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])


def stub_model(apply_model, args):
    """model_function_wrapper that skips the model: a zero prediction of the input's shape (``--overhead``)."""
    return torch.zeros_like(args["input"])


def with_counter(model_options: dict, counter: CallCounter) -> dict:
    return {**model_options, "model_function_wrapper": counter}


def calls_text(batches: list[int], steps: int) -> str:
    """'2 (1+2)': model calls per step and the batch size of each (those of the first step)."""
    if not batches or steps <= 0:
        return "-"
    per_step = len(batches) / steps
    first = batches[: max(1, round(per_step))]
    shown = f"{per_step:g}" if per_step != int(per_step) else str(int(per_step))
    return f"{shown} ({'+'.join(str(b) for b in sorted(first))})"


def interleaved(fns: dict[str, Callable[[], Any]], device: str, repeat: int) -> dict[str, list[float]]:
    """Seconds of each fn in ``repeat`` rounds, each round running every fn once in turn, every other round in
    reverse order (load drift and position hit them alike); a fn that fails is reported, dropped and gets NaN."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    live = dict(fns)
    for r in range(repeat):
        items = list(live.items())
        for name, fn in items if r % 2 == 0 else items[::-1]:
            try:
                samples[name].append(timed(fn, device))
            except Exception as e:  # noqa: BLE001 (a row that fails must not cost the others)
                print(f"  {name}: FAILED in a timed run: {type(e).__name__}: {e}", flush=True)
                del live[name]
    for name in fns:
        samples[name] += [math.nan] * (repeat - len(samples[name]))
    return samples


def best(samples: list[float]) -> float:
    return math.nan if not samples or any(math.isnan(x) for x in samples) else min(samples)


def paired(num: list[float], den: list[float]) -> float:
    """Median over the rounds of num/den measured in the same round: slow drift of the machine cancels."""
    values = sorted(n / d for n, d in zip(num, den) if d and not math.isnan(n) and not math.isnan(d))
    if not values or len(values) < len(num):
        return math.nan
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


# ---- models and conditioning -----------------------------------------------------------------------


@dataclass
class Built:
    family: str
    patcher: Any
    config_class: str
    params: int
    weight_bytes: int


def class_default(model: Any, key: str) -> Any:
    """``key`` of the model's unet_config, else the default of its diffusion-model class's argument."""
    value = model.model_config.unet_config.get(key)
    if value is not None:
        return value
    param = inspect.signature(type(model.diffusion_model).__init__).parameters.get(key)
    if param is None or param.default is inspect.Parameter.empty:
        raise KeyError(f"{type(model.diffusion_model).__name__} has no {key!r}")
    return param.default


def model_config(family: str, size: str, blocks: Optional[int]):
    import family_models

    if size == "tiny":
        return family_models.model_config(family), {}
    config = family_models.published_config(family)
    layout = family_models.published_state_dict(family)
    if blocks:
        cfg = config.unet_config
        for key in BLOCK_KEYS[family]:
            cfg[key] = min(int(cfg[key]), blocks)
        if family == "hidream_e1":  # one Llama layer per block: the text projections are counted from this list
            cfg["llama_layers"] = list(cfg["llama_layers"])[: cfg["num_layers"] + cfg["num_single_layers"]]
    return config, layout


def working_bytes(meta_model: Any, latent: tuple[int, ...], family: str) -> int:
    """ComfyUI's own estimate of the batched pair's working memory (``memory_required``), times the 1.5 margin
    ``calc_cond_batch`` asks for before it batches; HiDream's concat image doubles the width it sees."""
    shape = [2, *latent[1:]]
    if family == "hidream_e1":
        shape[-1] *= 2
    ref = torch.empty(latent, device="meta")
    extra = meta_model.extra_conds_shapes(reference_latents=[ref]) if family != "hidream_e1" else {}
    cond_shapes = {k: [v, v] for k, v in extra.items()}
    return int(1.5 * meta_model.memory_required(shape, cond_shapes=cond_shapes))


def build(family: str, opts: argparse.Namespace, latent: tuple[int, ...]) -> tuple[Optional[Built], Optional[str]]:
    """(the model, None) or (None, why it is skipped)."""
    import comfy.model_patcher
    import family_models

    dtype = DTYPES[opts.dtype]
    device = torch.device(opts.device)
    config, layout = model_config(family, opts.size, opts.blocks)
    config.set_inference_dtype(dtype, None)
    meta = config.get_model(layout, "", device="meta")
    params = sum(p.numel() for p in meta.diffusion_model.parameters())
    weights = sum(p.numel() * p.element_size() for p in meta.diffusion_model.parameters())
    working = working_bytes(meta, latent, family)
    free = free_bytes(opts.device)
    need = weights + working + RESERVE_BYTES
    del meta
    if need > free:
        return None, (
            f"does not fit: {params / 1e9:.1f} B parameters = {weights / GiB:.1f} GiB of {opts.dtype} weights + "
            f"{working / GiB:.1f} GiB working memory (ComfyUI's estimate x 1.5) + {RESERVE_BYTES / GiB:.0f} GiB reserve "
            f"= {need / GiB:.1f} GiB > {free / GiB:.1f} GiB free on {opts.device}"
        )
    with torch.no_grad():
        model = config.get_model(layout, "", device=device)
        if opts.size == "tiny":
            family_models.fill_module(model.diffusion_model, opts.seed)  # the test suite's seeded weights
        else:
            g = torch.Generator(device=device).manual_seed(opts.seed)
            for _, p in sorted(model.diffusion_model.named_parameters()):
                if p.is_floating_point():
                    p.normal_(0.0, 0.02, generator=g)
    # CUDA runs under --highvram (set before ComfyUI starts): the weights are made on the GPU and stay there.
    offload = device if opts.device == "cuda" else torch.device("cpu")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=offload)
    return Built(family, patcher, type(config).__name__, params, weights), None


def randn(seed: int, role: str, *shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + sum(ord(c) * 31**i for i, c in enumerate(role))) % 2**63)
    return torch.randn(shape, generator=g)


def text(family: str, model: Any, size: str, seed: int, role: str, tokens: Optional[int] = None) -> list:
    """A CONDITIONING shaped like the family's text encoder output (widths from the model)."""
    n = tokens or (TINY_TOKENS if size == "tiny" else FULL_TOKENS[family])
    key = f"{family}.{role}"
    if family in ("flux_kontext", "flux2"):
        context = randn(seed, key + ".ctx", 1, n, class_default(model, "context_in_dim"))
        vec = model.model_config.unet_config.get("vec_in_dim")
        extras = {"pooled_output": randn(seed, key + ".pooled", 1, vec) if vec else None, "guidance": FLUX_GUIDANCE[family]}
        if family == "flux2":
            extras["attention_mask"] = torch.ones(1, n, dtype=torch.long)
        return [[context, extras]]
    if family == "qwen_image_edit":
        return [[randn(seed, key + ".ctx", 1, n, class_default(model, "joint_attention_dim")), {"pooled_output": None}]]
    if family == "omnigen2":
        context = randn(seed, key + ".ctx", 1, n, class_default(model, "text_feat_dim"))
        return [[context, {"pooled_output": None, "attention_mask": torch.ones(1, n, dtype=torch.long)}]]
    t5_width, llama_width = class_default(model, "caption_channels")
    layers = max(class_default(model, "llama_layers")) + 1
    return [
        [
            randn(seed, key + ".t5", 1, n, t5_width),
            {
                "pooled_output": randn(seed, key + ".pooled", 1, class_default(model, "text_emb_dim")),
                "conditioning_llama3": randn(seed, key + ".llama", 1, layers, n, llama_width),
            },
        ]
    ]


@dataclass
class Conds:
    pos: list  # positive + image
    neg: list  # negative + image (Qwen-Image-Edit: also carrying its image-free encoding, as the pack's encoder gives it)
    uncond: list  # the negative without the image (core's third input)
    latent_shape: tuple[int, ...]


def conditioning(harness: Any, family: str, model: Any, opts: argparse.Namespace, latent: tuple[int, ...]) -> Conds:
    import node_helpers
    from comfy_extras.nodes_edit_model import ReferenceLatent

    image = randn(opts.seed, f"{family}.image", *latent)
    if family == "qwen_image_edit":  # the picture is in the prompt too: vision tokens in positive and negative
        vision = QWEN_VISION_TOKENS[opts.size]
        n = TINY_TOKENS if opts.size == "tiny" else FULL_TOKENS[family]
        pos = text(family, model, opts.size, opts.seed, "pos", n + vision)
        neg = text(family, model, opts.size, opts.seed, "neg", n + vision)
        uncond = text(family, model, opts.size, opts.seed, "uncond", n)
        vocabulary = harness.pack("vocabulary")
        neg = vocabulary.with_values(neg, {vocabulary.UNCOND_KEY: uncond})
    else:
        pos = text(family, model, opts.size, opts.seed, "pos")
        neg = uncond = text(family, model, opts.size, opts.seed, "neg")
    if family == "hidream_e1":  # what InstructPixToPixConditioning sets: the image beside the noise
        attach = lambda c: node_helpers.conditioning_set_values(c, {"concat_latent_image": image})  # noqa: E731
    else:
        attach = lambda c: ReferenceLatent.execute(conditioning=c, latent={"samples": image}).result[0]  # noqa: E731
    return Conds(attach(pos), attach(neg), uncond, latent)


# ---- one family ------------------------------------------------------------------------------------


def branch_probe(patcher: Any, original_conds: dict, device: str, repeat: int) -> Any:
    """A guider over the Instruct Guider's own branch conds that, at its first step (model loaded, conds
    processed by ComfyUI), times single ``calc_cond_batch`` calls of the branches in the ways of ``BRANCH_ROWS``
    (``.result``); it then samples the full branch alone."""
    import comfy.samplers

    class Probe(comfy.samplers.CFGGuider):
        def __init__(self) -> None:
            super().__init__(patcher)
            self.original_conds = {k: list(v) for k, v in original_conds.items()}
            self.result: Optional[dict] = None

        def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 (core's signature)
            if self.result is None:
                self.result = measure_branches(self.inner_model, self.conds, x, timestep, model_options, device, repeat)
            return comfy.samplers.calc_cond_batch(self.inner_model, [self.conds["positive"]], x, timestep, model_options)[0]

    return Probe()


def measure_branches(model, conds: dict, x, timestep, model_options: dict, device: str, repeat: int) -> dict:
    import comfy.samplers

    u, i, f = conds["negative"], conds["image_only"], conds["positive"]
    variants = {"uncond": [u], "image_only": [i], "full": [f], "pair": [None, i, f], "guider": [u, i, f], "batch3": [i, i, f]}
    out = {}
    fns = {}
    for name, cond_list in variants.items():
        counter = CallCounter()
        try:
            reset_peak(device)
            comfy.samplers.calc_cond_batch(model, cond_list, x, timestep, with_counter(model_options, counter))  # warm-up, counted
            sync(device)
            out[name] = {"calls": len(counter.batches), "batches": counter.batches, "peak_mib": peak_mib(device)}
            fns[name] = lambda cl=cond_list: comfy.samplers.calc_cond_batch(model, cl, x, timestep, model_options)
        except Exception as e:  # noqa: BLE001
            print(f"  branch call {name}: FAILED {type(e).__name__}: {e}", flush=True)
            out[name] = {"calls": 0, "batches": [], "peak_mib": math.nan, "s_per_call": math.nan, "error": f"{type(e).__name__}: {e}"}
    for name, runs in interleaved(fns, device, repeat).items():
        out[name]["s_per_call"] = best(runs)
        out[name]["samples_s"] = runs
    return out


def run_family(harness: Any, family: str, opts: argparse.Namespace) -> dict:
    import comfy.samplers
    import family_models
    from comfy_extras.nodes_custom_sampler import DualCFGGuider

    t_start = time.perf_counter()
    latent = family_models.latent_shape(family, opts.res, opts.res)
    built, skipped = build(family, opts, latent)
    if built is None:
        return {"status": "skipped", "reason": skipped}
    model = built.patcher
    conds = conditioning(harness, family, model.model, opts, latent)
    instruct_node = harness.nodes.NODE_CLASS_MAPPINGS["InstructGuider"]
    region = torch.zeros(1, opts.res, opts.res)
    region[:, :, : opts.res // 2] = 1.0  # the left half of the image

    def instruct(image_cfg: float = IMAGE_CFG, **widgets):
        return instruct_node.execute(
            model=model, positive=conds.pos, negative=conds.neg, text_cfg=TEXT_CFG, image_cfg=image_cfg, **widgets
        ).result[0]

    def core(image_cfg: float = IMAGE_CFG):
        return DualCFGGuider.execute(
            model=model,
            cond1=conds.pos,
            cond2=conds.neg,
            negative=conds.uncond,
            cfg_conds=TEXT_CFG,
            cfg_cond2_negative=image_cfg,
            style="regular",
        ).result[0]

    makers = {
        "core": core,
        "core_again": core,
        "instruct": instruct,
        "region": lambda: instruct(region_mask=region, region_feather=16),
        "two_branch": lambda: instruct(image_cfg=1.0),
        "core_two_branch": lambda: core(image_cfg=1.0),
    }
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", opts.steps)
    sampler = comfy.samplers.sampler_object("euler")
    noise = randn(opts.seed, f"{family}.noise", *latent)
    start = torch.zeros(latent)

    def sample(guider, steps_sigmas=sigmas):
        return guider.sample(noise.clone(), start.clone(), sampler, steps_sigmas.clone(), disable_pbar=True, seed=opts.seed)

    rows: dict[str, dict] = {}
    guiders: dict[str, Any] = {}
    fns: dict[str, Callable[[], Any]] = {}
    for key, _ in ROWS:  # warm-up of each row, counted, with its own peak
        if key == "core_again" and not opts.aa:
            continue
        counter = CallCounter()
        try:
            guider = makers[key]()
            plain_options = guider.model_options
            guider.model_options = with_counter(plain_options, counter)
            reset_peak(opts.device)
            t0 = time.perf_counter()
            sample(guider)
            sync(opts.device)
            warm = time.perf_counter() - t0
            rows[key] = {"peak_mib": peak_mib(opts.device), "calls": calls_text(counter.batches, opts.steps), "warmup_s": warm}
            guider.model_options = plain_options
            guiders[key] = guider
            fns[key] = lambda g=guider: sample(g)
        except Exception as e:  # noqa: BLE001
            print(f"  {key}: FAILED {type(e).__name__}: {e}", flush=True)
            if opts.verbose:
                traceback.print_exc()
            rows[key] = {"s_per_step": math.nan, "peak_mib": math.nan, "calls": "-", "error": f"{type(e).__name__}: {e}"}
    for key, runs in interleaved(fns, opts.device, opts.repeat).items():
        rows[key]["s_per_step"] = best(runs) / opts.steps
        rows[key]["samples_s"] = runs

    overhead: dict = {}
    if opts.overhead:  # the same guiders with the model call replaced by a stub: what each guider adds per step
        stubbed = {}
        for key, guider in guiders.items():
            plain_options = guider.model_options
            guider.model_options = {**plain_options, "model_function_wrapper": stub_model}
            stubbed[key] = (guider, plain_options)
        try:
            fns_stub = {key: (lambda g=g: sample(g)) for key, (g, _) in stubbed.items()}
            for fn in fns_stub.values():
                fn()
            for key, runs in interleaved(fns_stub, opts.device, 2 * opts.repeat).items():
                overhead[key] = {"s_per_step": best(runs) / opts.steps, "samples_s": runs}
        except Exception as e:  # noqa: BLE001
            print(f"  overhead: FAILED {type(e).__name__}: {e}", flush=True)
        finally:
            for guider, plain_options in stubbed.values():
                guider.model_options = plain_options

    branches: dict = {}
    if "instruct" in guiders:
        try:
            probe = branch_probe(model, guiders["instruct"].original_conds, opts.device, opts.repeat)
            sample(probe, sigmas[:2])
            branches = probe.result or {}
        except Exception as e:  # noqa: BLE001
            print(f"  branch calls: FAILED {type(e).__name__}: {e}", flush=True)
            if opts.verbose:
                traceback.print_exc()
            branches = {"error": f"{type(e).__name__}: {e}"}
    result = {
        "status": "ok",
        "config_class": built.config_class,
        "params": built.params,
        "weight_gib": built.weight_bytes / GiB,
        "latent": list(latent),
        "rows": rows,
        "branches": branches,
        "overhead": overhead,
        "seconds": time.perf_counter() - t_start,
    }
    result["ratios"] = ratios(result)
    return result


def release(device: str) -> None:
    import comfy.model_management as mm

    mm.unload_all_models()
    mm.cleanup_models()
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


# ---- report ----------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def ratios(res: dict) -> dict:
    """Time ratios: the median over the rounds of the two rows' runs in the same round (``paired``); memory:
    the rows' peaks."""
    nan = [math.nan]
    runs = {k: v.get("samples_s", nan) for k, v in res["rows"].items()}
    calls = {k: v.get("samples_s", nan) for k, v in res["branches"].items() if isinstance(v, dict)}
    peak = {k: v.get("peak_mib", math.nan) for k, v in res["rows"].items()}
    step = {k: v.get("s_per_step", math.nan) for k, v in res["rows"].items()}
    over = {k: v.get("s_per_step", math.nan) for k, v in res.get("overhead", {}).items()}

    def rows(a: str, b: str) -> float:
        return paired(runs.get(a, nan), runs.get(b, nan))

    def summed(*names: str) -> list[float]:
        return [sum(t) for t in zip(*(calls.get(n, nan) for n in names))]

    return {
        "A/A core/core": rows("core_again", "core"),
        "instruct/core": rows("instruct", "core"),
        "region/no region": rows("region", "instruct"),
        "2-branch/3-branch": rows("two_branch", "instruct"),
        "instruct/core 2-branch": rows("two_branch", "core_two_branch"),
        "peak instruct/core": ratio(peak.get("instruct", math.nan), peak.get("core", math.nan)),
        "peak region/no region": ratio(peak.get("region", math.nan), peak.get("instruct", math.nan)),
        "uncond/image-only call": paired(calls.get("uncond", nan), calls.get("image_only", nan)),
        "as run/3 separate calls": paired(calls.get("guider", nan), summed("uncond", "image_only", "full")),
        "as run/(uncond + batched pair)": paired(calls.get("guider", nan), summed("uncond", "pair")),
        "as run/3 batched (hyp.)": paired(calls.get("guider", nan), calls.get("batch3", nan)),
        "overhead instruct-core ms/step": 1000 * (over.get("instruct", math.nan) - over.get("core", math.nan)),
        "overhead region-instruct ms/step": 1000 * (over.get("region", math.nan) - over.get("instruct", math.nan)),
        "implied instruct/core": 1 + ratio(over.get("instruct", math.nan) - over.get("core", math.nan), step.get("core", math.nan)),
        "implied region/no region": 1
        + ratio(over.get("region", math.nan) - over.get("instruct", math.nan), step.get("instruct", math.nan)),
    }


TARGETS = (("instruct/core", 1.02), ("region/no region", 1.03))
#: The ratio (f) implies for each target: the guider's own cost per step over the measured s/step.
IMPLIED = {"instruct/core": "implied instruct/core", "region/no region": "implied region/no region"}


def print_family(family: str, res: dict, opts: argparse.Namespace) -> None:
    if res["status"] != "ok":
        print(f"\n{family}: {res['status'].upper()}: {res.get('reason', '')}", flush=True)
        return
    lat = "x".join(str(d) for d in res["latent"])
    print(
        f"\n{family} ({res['config_class']}, {res['params'] / 1e9:.3g} B params, {res['weight_gib']:.2f} GiB), latent {lat}, "
        f"{res['seconds']:.0f} s"
    )
    nan = [math.nan]
    core = res["rows"].get("core", {}).get("samples_s", nan)
    print(f"  {'path':38s} {'s/step':>9s} {'x core':>7s} {'calls/step':>11s} {'peak MiB':>9s}")
    for key, label in ROWS:
        if key not in res["rows"]:
            continue
        row = res["rows"][key]
        s, x = row.get("s_per_step", math.nan), paired(row.get("samples_s", nan), core)
        print(f"  {label:38s} {s:9.4f} {x:7.3f} {row.get('calls', '-'):>11s} {row.get('peak_mib', math.nan):9.0f}")
    br = res["branches"]
    if "error" in br:
        print(f"  (e) branch calls: FAILED {br['error']}")
    elif br:
        ref = br.get("image_only", {}).get("samples_s", nan)
        print(f"  {'(e) one calc_cond_batch call':38s} {'s/call':>9s} {'x img-only':>10s} {'calls':>8s} {'peak MiB':>9s}")
        for key, label in BRANCH_ROWS:
            row = br.get(key, {})
            s, x = row.get("s_per_call", math.nan), paired(row.get("samples_s", nan), ref)
            batches = "+".join(str(b) for b in sorted(row.get("batches", []))) or "-"
            print(f"  {label:38s} {s:9.4f} {x:10.3f} {batches:>8s} {row.get('peak_mib', math.nan):9.0f}")
        sep = [sum(t) for t in zip(*(br.get(k, {}).get("samples_s", nan) for k in ("uncond", "image_only", "full")))]
        print(f"  {'3 separate calls (sum of the first 3)':38s} {best(sep):9.4f} {paired(sep, ref):10.3f}")
    over = res.get("overhead", {})
    if over:
        parts = ", ".join(f"{k} {1000 * v['s_per_step']:.3f}" for k, v in over.items())
        pack, region = res["ratios"]["overhead instruct-core ms/step"], res["ratios"]["overhead region-instruct ms/step"]
        print(f"  (f) the guider alone, model call stubbed, ms/step: {parts}")
        print(f"      pack - core {pack:+.3f} ms, region - pack {region:+.3f} ms")


def print_summary(results: dict, opts: argparse.Namespace, device_name: str) -> list[dict]:
    print(
        f"\n== summary: {opts.size} models, {opts.res}x{opts.res} px (reference the same size), {opts.steps} Euler steps, {opts.dtype}, "
        f"{opts.device} ({device_name}), best of {opts.repeat} ({opts.clock} time), text_cfg {TEXT_CFG:g}, image_cfg {IMAGE_CFG:g}"
    )
    cols = (
        "A/A core/core",
        "instruct/core",
        "region/no region",
        "2-branch/3-branch",
        "instruct/core 2-branch",
        "peak instruct/core",
        "uncond/image-only call",
        "as run/3 separate calls",
        "as run/3 batched (hyp.)",
    )
    short = ("A/A", "pack/core", "region/pack", "2br/3br", "pack/core 2br", "peak p/c", "unc/img", "run/3sep", "run/3bat")
    print(f"{'family':16s} {'core s/step':>11s} " + " ".join(f"{c:>13s}" for c in short))
    for family, res in results.items():
        if res["status"] != "ok":
            print(f"{family:16s} {res['status']}: {res.get('reason', '')}")
            continue
        core = res["rows"].get("core", {}).get("s_per_step", math.nan)
        print(f"{family:16s} {core:11.4f} " + " ".join(f"{res['ratios'][c]:13.3f}" for c in cols))
    if any(r.get("overhead") for r in results.values()):
        print("\n(f) the guiders alone (model call stubbed), ms/step, and the ratio this overhead implies at the measured s/step")
        print(
            f"{'family':16s} {'core':>8s} {'pack-core':>10s} {'region-pack':>12s} {'implied pack/core':>18s} {'implied region/pack':>19s}"
        )
        for family, res in results.items():
            if res["status"] != "ok" or not res.get("overhead"):
                continue
            r, core_ms = res["ratios"], 1000 * res["overhead"].get("core", {}).get("s_per_step", math.nan)
            print(
                f"{family:16s} {core_ms:8.3f} {r['overhead instruct-core ms/step']:+10.3f} {r['overhead region-instruct ms/step']:+12.3f} "
                f"{r['implied instruct/core']:18.4f} {r['implied region/no region']:19.4f}"
            )
    verdicts = []
    for family, res in results.items():
        if res["status"] != "ok":
            continue
        for name, limit in TARGETS:
            value = res["ratios"][name]
            verdict = "PASS" if value <= limit else "FAIL"  # nan (a failed row) fails
            verdicts.append({"family": family, "target": name, "value": value, "limit": limit, "verdict": verdict})
            notes = []
            aa = res["ratios"]["A/A core/core"]
            if not math.isnan(aa):
                notes.append(f"A/A {aa:.3f}")
            implied = res["ratios"][IMPLIED[name]]
            if not math.isnan(implied):
                notes.append(f"the guider's own cost implies {implied:.3f}")
            print(f"target {family:16s} {name:18s} {value:6.3f} (<= {limit}) {verdict}" + (f"  [{'; '.join(notes)}]" if notes else ""))
    return verdicts


# ---- main ------------------------------------------------------------------------------------------


def published_params(family: str) -> int:
    import family_models

    return sum(t.numel() for t in family_models.published_state_dict(family).values())


def over_budget(family: str, opts: argparse.Namespace, elapsed: float, last: Optional[tuple[str, float, int]]) -> Optional[str]:
    """Why ``family`` is skipped under --budget-s, or None: the time spent, plus (full size) the time the family
    would take, scaled by parameter count from the last family measured (the families run smallest first)."""
    if opts.budget_s is None:
        return None
    if elapsed > opts.budget_s:
        return f"time budget: {elapsed:.0f} s of {opts.budget_s:.0f} s spent"
    if last is None or opts.size != "full" or opts.blocks:
        return None
    name, seconds, params = last
    predicted = seconds * published_params(family) / max(params, 1)
    if elapsed + predicted > opts.budget_s:
        return (
            f"time budget: {elapsed:.0f} s spent, this family would take about {predicted:.0f} s ({name}'s {seconds:.0f} s scaled "
            f"by parameter count), {opts.budget_s:.0f} s in all"
        )
    return None


def parse(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny", help="tiny test models, or the published full-size layouts")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="weights and compute (default: fp32 tiny, bf16 full)")
    ap.add_argument("--res", type=int, default=None, help="image side in pixels, the reference the same (default 64 tiny, 1024 full)")
    ap.add_argument("--steps", type=int, default=None, help="Euler steps per run, s/step = run / steps (default 6 tiny, 4 full)")
    ap.add_argument("--repeat", type=int, default=None, help="timed runs per row after one warm-up, best kept (default 10 tiny, 2 full)")
    ap.add_argument("--families", nargs="+", choices=FAMILIES, default=None, help="default: all five (full: those that fit)")
    ap.add_argument("--blocks", type=int, default=None, help="full size: keep N blocks of each kind (plumbing check, not timings)")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="skip a family once this many seconds have passed, or (full size) when it would end past them",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 on a CPU, else torch's)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default=None, help="wall time, or process CPU time (default: cpu on a CPU)")
    ap.add_argument(
        "--aa", action=argparse.BooleanOptionalAction, default=None, help="time core twice, the A/A noise floor (default: on tiny)"
    )
    ap.add_argument(
        "--overhead",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time each guider with the model call stubbed: what the guider itself costs per step (default on)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write every number here (after each family)")
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    opts = ap.parse_args(argv)
    opts.dtype = opts.dtype or ("bf16" if opts.size == "full" else "fp32")
    opts.res = opts.res or (1024 if opts.size == "full" else 64)
    opts.repeat = opts.repeat or (2 if opts.size == "full" else 10)
    opts.steps = opts.steps or (4 if opts.size == "full" else 6)
    opts.aa = opts.size == "tiny" if opts.aa is None else opts.aa
    opts.clock = opts.clock or ("cpu" if opts.device == "cpu" else "wall")
    if opts.device == "cpu" and opts.threads is None:
        opts.threads = 1
    if opts.steps < 1 or opts.repeat < 1:
        ap.error("--steps and --repeat must be at least 1")
    if opts.blocks is not None and opts.size != "full":
        ap.error("--blocks applies to --size full")
    return opts


def main() -> None:
    opts = parse()
    root, how = instruct_harness.find_comfyui()
    if root is None:
        sys.exit(f"benchmark needs ComfyUI: {how}")
    if opts.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    _clock[0] = CLOCKS[opts.clock]
    if opts.device == "cuda":
        # Set before ComfyUI's model management starts: the weights are created on the GPU, and under
        # --highvram ComfyUI keeps a model whole where it is instead of sizing a partial load from the
        # memory left after the weights (which would stream them as if it ran short of VRAM).
        from headless.runner.comfyui import put_on_path

        put_on_path(root)
        from comfy.cli_args import args

        args.highvram = True
    work = Path(tempfile.mkdtemp(prefix="family-bench-"))
    t0 = time.perf_counter()
    harness = instruct_harness.ComfyHarness(root, work / "run", work / "models", cpu=opts.device == "cpu")
    if not harness.pack_loaded:
        sys.exit("ComfyUI did not load the pack (see the log above)")
    device_name = torch.cuda.get_device_name() if opts.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"setup {time.perf_counter() - t0:.1f} s; torch {torch.__version__}, {device_name}", flush=True)

    families = list(opts.families or FAMILIES)
    order = families
    if opts.size == "full":  # the smallest first, so a time budget cuts the largest
        size_order = {"omnigen2": 0, "flux_kontext": 1, "hidream_e1": 2, "qwen_image_edit": 3, "flux2": 4}
        order = sorted(families, key=size_order.get)
    report: dict = {
        "device": opts.device,
        "device_name": device_name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "comfyui": str(root),
        "size": opts.size,
        "blocks": opts.blocks,
        "dtype": opts.dtype,
        "res": opts.res,
        "steps": opts.steps,
        "repeat": opts.repeat,
        "clock": opts.clock,
        "threads": torch.get_num_threads(),
        "text_cfg": TEXT_CFG,
        "image_cfg": IMAGE_CFG,
        "families": {},
    }

    def write() -> None:
        if opts.json:
            opts.json.parent.mkdir(parents=True, exist_ok=True)
            opts.json.write_text(json.dumps(report, indent=1, default=str))

    results: dict[str, dict] = {}
    with torch.inference_mode():  # as inside a ComfyUI graph
        last: Optional[tuple[str, float, int]] = None  # (family, seconds, parameters) of the last family measured
        for family in order:
            skip = over_budget(family, opts, time.perf_counter() - t0, last)
            if skip:
                results[family] = {"status": "skipped", "reason": skip}
            else:
                print(f"\n-- {family}", flush=True)
                try:
                    results[family] = run_family(harness, family, opts)
                except Exception as e:  # noqa: BLE001 (a family that fails must not cost the others)
                    print(f"  {family}: FAILED {type(e).__name__}: {e}", flush=True)
                    if opts.verbose:
                        traceback.print_exc()
                    results[family] = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
                release(opts.device)
                done = results[family]
                if done["status"] == "ok":
                    last = (family, done["seconds"], done["params"])
            print_family(family, results[family], opts)
            report["families"][family] = results[family]
            write()

    ordered = {f: results[f] for f in families}
    report["targets"] = print_summary(ordered, opts, device_name)
    report["seconds"] = time.perf_counter() - t0
    write()
    print(f"\ntotal {report['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
