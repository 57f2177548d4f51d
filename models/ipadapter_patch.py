"""The UNet side of IP-Adapter-Instruct: one attn2 replace patch per cross-attention layer.

Each patch adds ``weight · attention(q, to_k_ip(tokens), to_v_ip(tokens))`` to the layer's text
attention (or to whatever patch was already on that layer, which it wraps: other IPAdapter patches
and a second IPAdapter-Instruct stack instead of overwriting each other). The token set is chosen
per batch chunk from the branch being evaluated, read from the transformer options the guider
passes down (``instruct_ip_token_sets``); under a core guider, index 0 is the cond (full tokens) and
any other index the uncond.

Several reference images: the projected tokens of the images are concatenated (16 per image) and
every layer attends to all of them at once, as cubiq's IPAdapter does by default ("concat"). The
unconditional set stays the 16 tokens of the zero image: B identical copies of it, which is what a
per-image unconditional would be, attend exactly like one copy. A batch whose chunks carry token
sets of different lengths (cond and uncond batched together) is attended run by run, so a branch
gives the same result whether ComfyUI batches it with others or not.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Optional

import torch

import comfy.ldm.modules.attention as attention

from ..vocabulary import TOKEN_SETS_KEY, Branch
from .errors import InstructInputError

log = logging.getLogger(__name__)

CORE_TOKEN_SETS = (Branch.FULL, Branch.UNCOND)  # a core guider's conds: index 0 cond, 1 uncond

#: Raised while sampling or inside another pack's apply node, so it names its own source instead of a node.
LATER_PATCH_SOURCE = "IPAdapter-Instruct"
LATER_PATCH_ORDER = (
    "cubiq's IPAdapter (IPAdapter Plus) was applied after IPAdapter-Instruct Apply on the same "
    "layers; it can only stack in the other order. Apply the IPAdapter Plus node first and IPAdapter-Instruct Apply "
    "after it (its patch then wraps IPAdapter Plus's)."
)


class TokenSets:
    """The projected token sets of one apply (one per ``Branch``), shared by its layers."""

    def __init__(self, sets: dict[str, torch.Tensor], core_sampler_note: Optional[str] = None) -> None:
        self.sets = sets  # name → [1, T, C], T = 16 per reference image
        self.core_sampler_note = core_sampler_note  # what a core sampler leaves unused (models.scale_homes)
        self.warned = False  # one warning per apply, not one per layer

    def length(self, name: str) -> int:
        return int(self.sets[name].shape[1])

    def for_chunks(self, names: list[str], chunk: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        parts = [self.sets[n].to(device=device, dtype=dtype).expand(chunk, -1, -1) for n in names]
        return torch.cat(parts, dim=0)


class IPInstructAttention:
    """attn2 replace patch for one layer (reference key ``n``)."""

    def __init__(
        self,
        adapter: Any,
        layer: int,
        tokens: TokenSets,
        weight: float,
        sigma_start: float,
        sigma_end: float,
        mask: Optional[torch.Tensor],
        previous: Optional[Callable],
    ) -> None:
        self.adapter = adapter  # the adapter's ModelPatcher (ComfyUI loads/offloads it with the UNet)
        self.layer = layer
        self.tokens = tokens
        self.weight = float(weight)
        self.sigma_start, self.sigma_end = float(sigma_start), float(sigma_end)
        self.mask = mask
        self.previous = previous
        self._kv_cache: dict = {}

    # ComfyUI deep-copies model_options on every clone: share the (immutable) adapter state instead.
    def __deepcopy__(self, memo: dict) -> "IPInstructAttention":
        return self

    def models(self) -> list:
        extra = self.previous.models() if hasattr(self.previous, "models") else []
        return [self.adapter, *extra]

    def _active(self, extra_options: dict) -> bool:
        if self.sigma_start >= 1e8 and self.sigma_end <= 0.0:
            return True
        sigma = float(extra_options["sigmas"].reshape(-1)[0])
        return self.sigma_end <= sigma <= self.sigma_start

    def _names(self, extra_options: dict) -> list[str]:
        sets = extra_options.get(TOKEN_SETS_KEY)
        indices = extra_options.get("cond_or_uncond", [0])
        if sets is None:  # a core sampler
            if self.tokens.core_sampler_note and not self.tokens.warned:
                log.warning("%s", self.tokens.core_sampler_note)
                self.tokens.warned = True
            sets = CORE_TOKEN_SETS
        return [sets[i] if i < len(sets) else Branch.UNCOND for i in indices]

    def _runs(self, names: list[str]) -> list[tuple[int, list[str]]]:
        """Consecutive chunks whose token sets have the same length: (index of the first, their names)."""
        runs: list[tuple[int, list[str]]] = []
        for i, name in enumerate(names):
            if runs and self.tokens.length(runs[-1][1][-1]) == self.tokens.length(name):
                runs[-1][1].append(name)
            else:
                runs.append((i, [name]))
        return runs

    def _ip_kv(self, names: list[str], chunk: int, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (tuple(names), chunk, q.device, q.dtype)
        cached = self._kv_cache.get(key)
        if cached is None:
            layers = self.adapter.model.ip_layers
            to_k, to_v = layers[f"{self.layer}_to_k_ip"], layers[f"{self.layer}_to_v_ip"]
            w = to_k.weight
            tokens = self.tokens.for_chunks(names, chunk, w.device, w.dtype)
            cached = (to_k(tokens).to(q.device, q.dtype), to_v(tokens).to(q.device, q.dtype))
            if len(self._kv_cache) > 8:
                self._kv_cache.clear()
            self._kv_cache[key] = cached
        return cached

    def _mask_for(self, q: torch.Tensor, extra_options: dict) -> torch.Tensor:
        _, _, height, width = extra_options["original_shape"][:4]
        tokens = q.shape[1]
        factor = round(math.sqrt(height * width / tokens))
        h = math.ceil(height / factor)
        w = tokens // h
        mask = torch.nn.functional.interpolate(self.mask.unsqueeze(1).to(q.device, q.dtype), size=(h, w), mode="bilinear")
        mask = mask.reshape(mask.shape[0], h * w, 1)
        return mask.repeat(q.shape[0] // mask.shape[0], 1, 1) if mask.shape[0] != q.shape[0] else mask

    def add(self, callback: Any, **kwargs: Any) -> None:
        """cubiq's IPAdapter stacks onto an attn2 patch it finds at its own key by calling ``add``
        (its SDXL keys are ours too). Taking it in would change the model this patch already belongs to."""
        raise InstructInputError(LATER_PATCH_ORDER, node=LATER_PATCH_SOURCE)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        heads = extra_options["n_heads"]
        if self.previous is not None:
            out = self.previous(q, k, v, extra_options)
        else:
            out = attention.optimized_attention(
                q, k, v, heads, attn_precision=extra_options.get("attn_precision"), transformer_options=extra_options
            )
        if self.weight == 0.0 or not self._active(extra_options):
            return out
        names = self._names(extra_options)
        chunk = q.shape[0] // len(names)
        parts = []
        for first, run in self._runs(names):
            rows = q[first * chunk : (first + len(run)) * chunk]
            ip_k, ip_v = self._ip_kv(run, chunk, rows)
            parts.append(attention.optimized_attention(rows, ip_k, ip_v, heads, attn_precision=extra_options.get("attn_precision")))
        ip_out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        if self.mask is not None:
            ip_out = ip_out * self._mask_for(q, extra_options)
        return torch.add(out, ip_out, alpha=self.weight)  # one kernel for out + weight·ip_out
