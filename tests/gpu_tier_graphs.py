"""The graphs of the GPU tier, built one way and run twice: on a CUDA ComfyUI in fp16/bf16
(tests/gpu_tier_cases.py) and on a CPU ComfyUI in fp32 (tests/gpu_tier_reference.py, the reference).

Models: the full-size random SD1.5 instruct checkpoint and IP-Adapter-Instruct file (full size, so a
partial ``--lowvram`` load has something to split), the tiny checkpoints for Instruct Merge.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import torch

import instruct_tiny_models as factory
from instruct_harness import PromptFailed, RunResult, StubServer

#: The GPU tier writes the full-size instruct checkpoint as a file (2 GB, on the GPU machine only): what it
#: tests is core's loading and offloading of it under --lowvram / --novram.
FULL_INSTRUCT = "checkpoints/gpu-tier-ip2p-sd15-random.safetensors"
ADAPTER = Path(factory.FULL_FILES["adapter_bin"]).name
TINY_INSTRUCT = "checkpoints/tiny-ip2p-sd15.safetensors"
IMAGE = "gpu-tier.png"
RES, STEPS, SEED = 64, 3, 11
PROMPTS = ("turn it into a watercolor", "make it winter")
NEGATIVE = "blurry"
STRENGTH = 0.7


def prepare(harness) -> None:
    """Write the model files the graphs need (once, into the test cache) and the input picture."""
    models = Path(harness.models_dir)
    factory.build_all(models, only=("checkpoint", "ckpt_base", "ckpt_custom"))  # what merge_graph loads
    paths = {k: models / v for k, v in factory.FULL_FILES.items()}
    if not (models / FULL_INSTRUCT).exists():
        factory._save(factory.full_checkpoint_state_dict(in_channels=8), models / FULL_INSTRUCT)
    if not paths["adapter_bin"].exists():
        image_proj, ip_layers = factory.ip_instruct_groups(harness.pack("models.ipadapter_instruct"))
        factory._save({"image_proj": image_proj, "ip_adapter": ip_layers}, paths["adapter_bin"])
    harness.input_image(IMAGE, RES, RES, seed=7)


class Session:
    """One PromptExecutor kept across prompts, as ComfyUI's server keeps it: unchanged nodes stay
    cached, so a second prompt reuses the same loaded (and possibly offloaded) models."""

    def __init__(self, harness) -> None:
        self.harness = harness
        self.server = StubServer()
        ex = harness.execution
        self.executor = ex.PromptExecutor(self.server, cache_type=ex.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0})

    def run(self, prompt: dict) -> RunResult:
        ok, error, outputs, node_errors = self.harness.validate(prompt)
        if not ok:
            raise PromptFailed(f"validation failed: {error} {node_errors}")
        self.executor.execute(prompt, str(uuid.uuid4()), {"client_id": self.server.client_id}, outputs)
        if not self.executor.success:
            errors = [data for event, data in self.executor.status_messages if event == "execution_error"]
            raise PromptFailed(f"execution failed: {errors[0] if errors else self.executor.status_messages}")
        return RunResult(self.executor, "", self.server.events)


def _loader(g, name: str, weight_dtype: str):
    return g.node(
        "InstructUNetLoader",
        id="load",
        model_name=name,
        weights="auto",
        prediction="auto",
        weight_dtype=weight_dtype,
    )


def _conditioning(g, loader, text: str):
    pos = g.node("CLIPTextEncode", id="pos", clip=loader.out(1), text=text)
    neg = g.node("CLIPTextEncode", id="neg", clip=loader.out(1), text=NEGATIVE)
    img = g.node("LoadImage", id="img", image=IMAGE)
    return g.node(
        "InstructImageConditioning",
        id="icond",
        positive=pos.out(0),
        negative=neg.out(0),
        vae=loader.out(2),
        image=img.out(0),
        size_mode="crop",
        latent_output="empty",
    )


def _sampler(g, node_id: str, model, icond):
    probe = g.node("InstructTestDeviceProbe", id=f"probe_{node_id}", model=model)
    ks = g.node(
        "InstructKSampler",
        id=node_id,
        model=probe.out(0),
        seed=SEED,
        steps=STEPS,
        text_cfg=7.5,
        image_cfg=1.5,
        sampler_name="euler",
        scheduler="normal",
        positive=icond.out(0),
        negative=icond.out(1),
        latent_image=icond.out(2),
        denoise=1.0,
    )
    g.node("SaveLatent", id=f"save_{node_id}", samples=ks.out(0), filename_prefix=f"gpu_{node_id}")
    return ks


def edit_graph(harness, weight_dtype: str, text: str = PROMPTS[0]) -> dict:
    """Loader → conditioner → Instruct KSampler → VAE decode, on the full-size instruct model."""
    g = harness.graph()
    loader = _loader(g, FULL_INSTRUCT, weight_dtype)
    icond = _conditioning(g, loader, text)
    ks = _sampler(g, "ks", loader.out(0), icond)
    g.node("SaveImage", id="save", images=g.node("VAEDecode", id="dec", samples=ks.out(0), vae=loader.out(2)).out(0), filename_prefix="gpu")
    return g.finalize()


def ipadapter_graph(harness, weight_dtype: str, text: str) -> dict:
    """IPAdapter-Instruct on the instruct model, simple (node ``simple``) and 4-branch (``four``)."""
    g = harness.graph()
    loader = _loader(g, FULL_INSTRUCT, weight_dtype)
    icond = _conditioning(g, loader, text)
    ipl = g.node("IPAdapterInstructLoader", id="ipl", ipadapter_file=ADAPTER)
    cv = g.node("InstructTestTinyClipVision", id="cv")
    img = g.node("LoadImage", id="ipimg", image=IMAGE)
    for node_id, guidance in (("simple", "simple"), ("four", "four_branch")):
        ipa = g.node(
            "IPAdapterInstructApply",
            id=f"ipa_{node_id}",
            model=loader.out(0),
            ipadapter=ipl.out(0),
            clip_vision=cv.out(0),
            clip=loader.out(1),
            image=img.out(0),
            task="composition",
            instruction="",
            prompt=text,
            negative_prompt=NEGATIVE,
            weight=0.8,
            start_at=0.0,
            end_at=1.0,
            guidance=guidance,
            instruct_cfg=6.0,
            image_cfg=1.5,
            auto_scale=True,
        )
        _sampler(g, node_id, ipa.out(0), icond)
    return g.finalize()


def merge_graph(harness, weight_dtype: str, text: str) -> dict:
    """Instruct Merge of the tiny instruct model with a fine-tune's delta, then sampled."""
    g = harness.graph()
    loader = _loader(g, TINY_INSTRUCT, weight_dtype)
    custom = g.node("CheckpointLoaderSimple", id="custom", ckpt_name="tiny-sd15-custom.safetensors")
    base = g.node("CheckpointLoaderSimple", id="base", ckpt_name="tiny-sd15-base.safetensors")
    merged = g.node("InstructMerge", id="merge", instruct=loader.out(0), custom=custom.out(0), base=base.out(0), strength=STRENGTH)
    icond = _conditioning(g, loader, text)
    _sampler(g, "ks", merged.out(0), icond)
    return g.finalize()


def latent(result: RunResult, node_id: str) -> torch.Tensor:
    return result.output(node_id)["samples"]


def reference_outputs(harness, weight_dtype: str = "fp32") -> dict[str, torch.Tensor]:
    """Every output the tier compares, by name (what the CPU fp32 reference saves)."""
    out = {}
    out["edit"] = latent(Session(harness).run(edit_graph(harness, weight_dtype)), "ks")
    for i, text in enumerate(PROMPTS):
        r = Session(harness).run(ipadapter_graph(harness, weight_dtype, text))
        out[f"ip_simple_{i}"], out[f"ip_four_{i}"] = latent(r, "simple"), latent(r, "four")
        out[f"merge_{i}"] = latent(Session(harness).run(merge_graph(harness, weight_dtype, text)), "ks")
    return {k: v.detach().float().cpu() for k, v in out.items()}


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """‖value − reference‖ / ‖reference‖ in fp32 (one number per output, logged by the tier)."""
    value, reference = value.float().cpu(), reference.float().cpu()
    return float((value - reference).norm() / reference.norm().clamp_min(1e-12))
