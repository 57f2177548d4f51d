"""IP-Adapter-Instruct: the projection model and the per-layer IP key/value projections.

Written from the published architecture (``ipadapter_instruct.md``): ``ResamplerInstructBigger``
is the IP-Adapter-Plus resampler with, per depth, a *prompt* and an *instruction* attention + FF
sub-block, applied image → prompt → instruction; its 16 output tokens are attended by every UNet
cross-attention layer through that layer's own ``to_k_ip`` / ``to_v_ip``.

Pure torch, and strict: every expected key must be in the file and nothing else (the reference
loads with ``strict=False``, which would hide a missing tensor behind random initialisation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from .errors import InstructModelError

DIM_HEAD = 64


class FeedForward(nn.Sequential):
    """LayerNorm → Linear (no bias) → exact GELU → Linear (no bias); indices 0..3 as in the files."""

    def __init__(self, dim: int, mult: int) -> None:
        inner = dim * mult
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(), nn.Linear(inner, dim, bias=False))


class PerceiverAttention(nn.Module):
    """Latents attend to (context ‖ latents); no residual inside (the caller adds it)."""

    def __init__(self, dim: int, heads: int, dim_head: int = DIM_HEAD) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.dim_head).transpose(1, 2)

    def forward(self, context: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        context = self.norm1(context)
        latents = self.norm2(latents)
        q = self._split(self.to_q(latents))
        k, v = (self._split(t) for t in self.to_kv(torch.cat([context, latents], dim=-2)).chunk(2, dim=-1))
        scale = self.dim_head**-0.25  # 1/√d split over q and k, as trained (fp16-safe)
        weights = (q * scale) @ (k * scale).transpose(-2, -1)
        weights = torch.softmax(weights.float(), dim=-1).to(weights.dtype)
        out = (weights @ v).transpose(1, 2).reshape(latents.shape[0], latents.shape[1], -1)
        return self.to_out(out)


@dataclass(frozen=True)
class ResamplerConfig:
    dim: int
    depth: int
    num_queries: int
    image_dim: int
    text_dim: int
    output_dim: int
    ff_mult: int
    ff_mult_secondary: int

    @property
    def heads(self) -> int:
        return self.dim // DIM_HEAD


def _block(dim: int, heads: int, mult: int) -> nn.ModuleList:
    return nn.ModuleList([PerceiverAttention(dim, heads), FeedForward(dim, mult)])


class ResamplerInstruct(nn.Module):
    """The released ``ResamplerInstructBigger`` (SD1.5 and SDXL adapters)."""

    def __init__(self, cfg: ResamplerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.latents = nn.Parameter(torch.zeros(1, cfg.num_queries, cfg.dim))
        self.proj_in = nn.Linear(cfg.image_dim, cfg.dim)
        self.proj_new_input = nn.Linear(cfg.text_dim, cfg.dim)  # instruction
        self.proj_prompt_input = nn.Linear(cfg.text_dim, cfg.dim)  # prompt
        self.proj_out = nn.Linear(cfg.dim, cfg.output_dim)
        self.norm_out = nn.LayerNorm(cfg.output_dim)
        self.layers = nn.ModuleList(_block(cfg.dim, cfg.heads, cfg.ff_mult) for _ in range(cfg.depth))
        self.prompt_layers = nn.ModuleList(_block(cfg.dim, cfg.heads, cfg.ff_mult_secondary) for _ in range(cfg.depth))
        self.new_input_layers = nn.ModuleList(_block(cfg.dim, cfg.heads, cfg.ff_mult_secondary) for _ in range(cfg.depth))

    def forward(self, image: torch.Tensor, instruction: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """image [B,257,E_img] penultimate CLIP-vision states; instruction, prompt [B,77,E_txt]."""
        image = self.proj_in(image)
        instruction = self.proj_new_input(instruction)
        prompt = self.proj_prompt_input(prompt)
        latents = self.latents.repeat(image.shape[0], 1, 1)
        for (attn, ff), (p_attn, p_ff), (i_attn, i_ff) in zip(self.layers, self.prompt_layers, self.new_input_layers):
            latents = attn(image, latents) + latents
            latents = ff(latents) + latents
            latents = p_attn(prompt, latents) + latents
            latents = p_ff(latents) + latents
            latents = i_attn(instruction, latents) + latents
            latents = i_ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


@dataclass(frozen=True)
class AdapterSpec:
    """What a file is for: base family, cross-attention width and the IP layer widths by key, as the file
    has them (the apply checks each against the model's layer)."""

    base: str  # "SD1.5" | "SDXL"
    resampler: ResamplerConfig
    layer_dims: dict  # n → hidden size of that UNet cross-attention layer


#: hidden size of each cross-attention layer of the published bases, in the reference's key order (down → up → mid).
SD15_LAYERS = [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320, 1280]
SDXL_LAYERS = [640] * 4 + [1280] * 20 + [1280] * 30 + [640] * 6 + [1280] * 10
BASES = {768: ("SD1.5", SD15_LAYERS), 2048: ("SDXL", SDXL_LAYERS)}

#: ComfyUI attention blocks holding cross-attention, in the reference's key order: (block, id, transformers).
SD15_BLOCKS = [
    ("input", 1, 1),
    ("input", 2, 1),
    ("input", 4, 1),
    ("input", 5, 1),
    ("input", 7, 1),
    ("input", 8, 1),
    ("output", 3, 1),
    ("output", 4, 1),
    ("output", 5, 1),
    ("output", 6, 1),
    ("output", 7, 1),
    ("output", 8, 1),
    ("output", 9, 1),
    ("output", 10, 1),
    ("output", 11, 1),
    ("middle", 0, 1),
]
SDXL_BLOCKS = [
    ("input", 4, 2),
    ("input", 5, 2),
    ("input", 7, 10),
    ("input", 8, 10),
    ("output", 0, 10),
    ("output", 1, 10),
    ("output", 2, 10),
    ("output", 3, 2),
    ("output", 4, 2),
    ("output", 5, 2),
    ("middle", 0, 10),
]


def layer_keys(base: str) -> dict[int, tuple[str, int, int]]:
    """Reference key number n (odd) → ComfyUI attention key (block, id, transformer index).

    The reference numbers ``unet.attn_processors`` of diffusers, whose order is down blocks → up
    blocks → mid block; the middle block is ComfyUI's ("middle", 0) (not 1, a known slip elsewhere).
    """
    blocks = SD15_BLOCKS if base == "SD1.5" else SDXL_BLOCKS
    keys, n = {}, 1
    for block, number, transformers in blocks:
        for t in range(transformers):
            keys[n] = (block, number, t)
            n += 2
    return keys


def _count(keys, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def detect(image_proj: Mapping[str, torch.Tensor], ip_layers: Mapping[str, torch.Tensor], source: str) -> AdapterSpec:
    """Recognise an IP-Adapter-Instruct file by its shapes; name the fix for every other adapter kind."""
    if not ip_layers:
        raise InstructModelError(f"'{source}' has no 'ip_adapter' weights; it is not an IP-Adapter file.")
    if any("lora" in k for k in ip_layers) or "perceiver_resampler.proj_in.weight" in image_proj or "proj.0.weight" in image_proj:
        raise InstructModelError(
            f"'{source}' is an IP-Adapter FaceID model, not IP-Adapter-Instruct: load it with the IPAdapter Plus pack "
            "(cubiq/ComfyUI_IPAdapter_plus). For faces with this pack, use ip-adapter-instruct with the 'face' task."
        )
    if "proj_out_big.weight" in image_proj:
        raise InstructModelError(f"'{source}' is the SD3 IP-Adapter-Instruct model; only the SD1.5 and SDXL adapters are supported.")
    if "latents" not in image_proj:
        raise InstructModelError(
            f"'{source}' is a plain IP-Adapter (no resampler), not IP-Adapter-Instruct: load it with the IPAdapter Plus "
            "pack, or use ip-adapter-instruct-sd15.bin / ip-adapter-instruct-sdxl.bin with this node."
        )
    if "proj_new_input.weight" not in image_proj:
        raise InstructModelError(
            f"'{source}' is an IP-Adapter Plus model (resampler without instruction input), not IP-Adapter-Instruct: "
            "load it with the IPAdapter Plus pack, or use ip-adapter-instruct-sd15.bin / -sdxl.bin here."
        )
    latents = image_proj["latents"]
    dim = int(latents.shape[2])
    output_dim = int(image_proj["proj_out.weight"].shape[0])
    if output_dim not in BASES:
        raise InstructModelError(f"'{source}' projects to {output_dim}-d tokens; expected 768 (SD1.5) or 2048 (SDXL).")
    base, widths = BASES[output_dim]
    cfg = ResamplerConfig(
        dim=dim,
        depth=_count(image_proj, r"layers\.(\d+)\."),
        num_queries=int(latents.shape[1]),
        image_dim=int(image_proj["proj_in.weight"].shape[1]),
        text_dim=int(image_proj["proj_new_input.weight"].shape[1]),
        output_dim=output_dim,
        ff_mult=int(image_proj["layers.0.1.1.weight"].shape[0]) // dim,
        ff_mult_secondary=int(image_proj["prompt_layers.0.1.1.weight"].shape[0]) // dim,
    )
    return AdapterSpec(base, cfg, _layer_widths(ip_layers, widths))


def _layer_widths(ip_layers: Mapping[str, torch.Tensor], published: list[int]) -> dict[int, int]:
    """Each layer's width as the file has it (``n.to_k_ip`` is [width, C]): the base's layers, by key.

    A layer the file lacks keeps the published width, so the strict check names it as missing. The widths
    are checked against the model's layers when the adapter is applied, not against one UNet here: a UNet
    with SD1.5's topology but other widths (a narrow test UNet) takes its own adapter."""
    widths = {}
    for i, width in enumerate(published):
        weight = ip_layers.get(f"{2 * i + 1}.to_k_ip.weight")
        widths[2 * i + 1] = int(weight.shape[0]) if weight is not None and weight.ndim == 2 else width
    return widths


def expected_shapes(spec: AdapterSpec) -> tuple[dict, dict]:
    """(image_proj, ip_adapter) key → shape, from the architecture (built on the meta device)."""
    with torch.device("meta"):
        proj = ResamplerInstruct(spec.resampler)
    proj_shapes = {k: tuple(v.shape) for k, v in proj.state_dict().items()}
    ctx = spec.resampler.output_dim
    ip_shapes = {}
    for n, width in spec.layer_dims.items():
        ip_shapes[f"{n}.to_k_ip.weight"] = (width, ctx)
        ip_shapes[f"{n}.to_v_ip.weight"] = (width, ctx)
    return proj_shapes, ip_shapes


def check_strict(found: Mapping[str, torch.Tensor], expected: Mapping[str, tuple], group: str, source: str) -> None:
    missing = sorted(set(expected) - set(found))
    unknown = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(found) & set(expected) if tuple(found[k].shape) != expected[k])
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
    if unknown:
        problems.append(f"unknown {len(unknown)} (e.g. {', '.join(unknown[:3])})")
    if wrong:
        problems.append(f"wrong shape {len(wrong)} (e.g. {wrong[0]}: {tuple(found[wrong[0]].shape)} vs {expected[wrong[0]]})")
    if problems:
        raise InstructModelError(
            f"'{source}' does not match the IP-Adapter-Instruct layout in '{group}': {'; '.join(problems)}. "
            "The file is damaged or a different adapter: download ip-adapter-instruct-sd15.bin / -sdxl.bin again."
        )


class IPAdapterInstruct(nn.Module):
    """The projection model plus one (to_k_ip, to_v_ip) pair per UNet cross-attention layer."""

    def __init__(self, spec: AdapterSpec) -> None:
        super().__init__()
        self.spec = spec
        self.image_proj = ResamplerInstruct(spec.resampler)
        ctx = spec.resampler.output_dim
        self.ip_layers = nn.ModuleDict()
        for n, width in spec.layer_dims.items():
            self.ip_layers[f"{n}_to_k_ip"] = nn.Linear(ctx, width, bias=False)
            self.ip_layers[f"{n}_to_v_ip"] = nn.Linear(ctx, width, bias=False)

    def load_groups(self, image_proj: Mapping[str, torch.Tensor], ip_layers: Mapping[str, torch.Tensor]) -> None:
        """The file's tensors become the parameters (``assign``): the module is built on the meta device, so its
        weights are never initialised only to be overwritten."""
        self.image_proj.load_state_dict(image_proj, strict=True, assign=True)
        renamed = {k.replace(".weight", "").replace(".", "_") + ".weight": v for k, v in ip_layers.items()}
        self.ip_layers.load_state_dict(renamed, strict=True, assign=True)


def split_groups(sd: Mapping, source: str) -> tuple[dict, dict]:
    """The two groups from a ``.bin`` (nested dicts) or a ``.safetensors`` (flat prefixes)."""
    if "image_proj" in sd and isinstance(sd["image_proj"], Mapping):
        return dict(sd["image_proj"]), dict(sd.get("ip_adapter", {}))
    image_proj = {k[len("image_proj.") :]: v for k, v in sd.items() if k.startswith("image_proj.")}
    ip_layers = {k[len("ip_adapter.") :]: v for k, v in sd.items() if k.startswith("ip_adapter.")}
    if not image_proj and not ip_layers:
        raise InstructModelError(f"'{source}' has neither 'image_proj' nor 'ip_adapter' weights; it is not an IP-Adapter file.")
    return image_proj, ip_layers


def build_adapter(sd: Mapping, source: str) -> IPAdapterInstruct:
    image_proj, ip_layers = split_groups(sd, source)
    spec = detect(image_proj, ip_layers, source)
    proj_shapes, ip_shapes = expected_shapes(spec)
    check_strict(image_proj, proj_shapes, "image_proj", source)
    check_strict(ip_layers, ip_shapes, "ip_adapter", source)
    with torch.device("meta"):
        adapter = IPAdapterInstruct(spec)
    adapter.load_groups(image_proj, ip_layers)
    return adapter.eval()


# ---- instructions and guidance mode (the reference's rules) -------------------------------------

#: Task presets → the instruction strings of the reference README.
TASKS = {
    "everything": "use everything from the image",
    "style": "use the style",
    "composition": "use the composition",
    "object": "use the object",
    "face": "use the face",
}
CUSTOM_TASK = "custom"  # the instruction is written in the node's 'instruction' text
#: Queries containing any of these use plain 2-pass CFG in the reference; all others the 4-branch CFG.
SIMPLE_MODE_WORDS = ("style", "colour", "everything", "color", "face", "facial")
#: The reference's 4th branch encodes this literal instruction.
EVERYTHING_INSTRUCTION = "everything"


def query_for(task: str, instruction: str) -> str:
    if task in TASKS:
        return TASKS[task]
    if task != CUSTOM_TASK:
        raise InstructModelError(f"unknown task '{task}'; choose one of {', '.join([*TASKS, CUSTOM_TASK])}")
    if not instruction.strip():
        raise InstructModelError("task is 'custom' but 'instruction' is empty: write how to use the image, e.g. 'use the pose'.")
    return instruction


def reference_wants_four_branch(query: str) -> bool:
    """The reference's rule (case-sensitive substring test on the query, as written there)."""
    return not any(word in query for word in SIMPLE_MODE_WORDS)


def reference_auto_scale(query: str, weight: float, base: str) -> float:
    """The reference's ``auto_scale`` rule, one option for both bases.

    SD1.5: the weight is lowered by 0.2 for composition / pose queries; SDXL: a composition query
    sets the weight to 0.7 (the SDXL reference's rule, off by default there).
    """
    if base == "SD1.5" and ("composition" in query or "pose" in query):
        return weight - 0.2
    if base == "SDXL" and "composition" in query:
        return 0.7
    return weight
