"""How the image to edit is brought onto the model's grid, and exactly back (pure torch).

Three steps, each with an inverse the composite applies:

1. **Frame**: the part of the image that is kept (the whole image, or Flux Kontext's centre crop to the
   aspect ratio of its nearest preferred size).
2. **Scale**: the framed part resized to the resolution the family prefers (or kept as it is).
3. **Fit**: the sides made multiples of the model's *cell* (VAE factor x patch size: 8 px for the
   SD/SDXL UNets, 16 px for the patch-2 transformers) by a centre crop, a pad at the right and bottom
   edges, or a resize.

With ``keep`` and ``crop``/``pad`` no pixel is resampled, so input and output line up pixel for pixel.
ComfyUI's resize helper is passed in (``Resize``), so every rule here is tested without ComfyUI.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .errors import InstructInputError

#: ``resize(nchw, width, height)``: the interpolation (ComfyUI's ``common_upscale``).
Resize = Callable[[torch.Tensor, int, int], torch.Tensor]

#: Pixel count of the ``1mp`` resolution (Qwen-Image-Edit's own ~1 MP scaling).
MEGAPIXEL = 1024 * 1024

#: Flux Kontext's preferred (width, height) sizes (those of core's FluxKontextImageScale).
KONTEXT_SIZES: tuple[tuple[int, int], ...] = (
    (672, 1568),
    (688, 1504),
    (720, 1456),
    (752, 1392),
    (800, 1328),
    (832, 1248),
    (880, 1184),
    (944, 1104),
    (1024, 1024),
    (1104, 944),
    (1184, 880),
    (1248, 832),
    (1328, 800),
    (1392, 752),
    (1456, 720),
    (1504, 688),
    (1568, 672),
)


class SizeMode(str, enum.Enum):
    """How sides that are not multiples of the cell are fitted (the combo tokens of ``size_mode``)."""

    CROP = "crop"  # centre-crop the remainder (core's rule); the composite restores the border
    PAD = "pad"  # extend the right and bottom edges; the inverse cuts the extension off
    RESIZE = "resize"  # resize to the nearest multiple; the inverse resizes back


class Resolution(str, enum.Enum):
    """The resolution the image is edited at (the combo tokens of ``resolution``)."""

    KEEP = "keep"  # the image's own pixel grid
    MEGAPIXEL = "1mp"  # scaled to about 1 megapixel, aspect ratio kept
    KONTEXT = "kontext"  # Flux Kontext's preferred size nearest in aspect ratio (centre crop + scale)


Box = tuple[int, int, int, int]  # top, left, height, width


@dataclass(frozen=True)
class Fit:
    """One image size's way onto the model's grid: ``frame`` (in source pixels) → ``scaled`` → ``size``."""

    source: tuple[int, int]  # (H, W) of the input image
    frame: Box  # the kept part of the source
    scaled: tuple[int, int]  # the size the frame is resized to (the frame's own size when nothing is scaled)
    size: tuple[int, int]  # the edited size: multiples of the cell
    mode: SizeMode
    cell: int

    @property
    def is_exact(self) -> bool:
        """True when no pixel is resampled on the way (the edit is on the input's own grid)."""
        return self.scaled == self.frame[2:] and (self.mode is not SizeMode.RESIZE or self.scaled == self.size)

    def describe(self) -> str:
        h, w = self.source
        out = f"{w}x{h}"
        top, left, fh, fw = self.frame
        if (fh, fw) != (h, w):
            out += f" → centre {fw}x{fh}"
        if self.scaled != (fh, fw):
            out += f" → scaled to {self.scaled[1]}x{self.scaled[0]}"
        if self.size != self.scaled:
            out += f" → {self.mode.value} to {self.size[1]}x{self.size[0]}"
        return out

    # ---- forward -------------------------------------------------------------------------------

    def apply(self, image: torch.Tensor, resize: Resize) -> torch.Tensor:
        """IMAGE [B,H,W,C] of the source size → [B,h,w,C] of the edited size (values untouched unless resampled)."""
        return self._forward(image.movedim(-1, 1), resize).movedim(1, -1)

    def apply_mask(self, mask: torch.Tensor, resize: Resize) -> torch.Tensor:
        """MASK [B,H,W] of the source size → [B,h,w]; padding is outside the mask (0)."""
        return self._forward(mask[:, None], resize, pad_value=0.0)[:, 0]

    def _forward(self, nchw: torch.Tensor, resize: Resize, clamp: bool = True, pad_value: Optional[float] = None) -> torch.Tensor:
        top, left, fh, fw = self.frame
        out = nchw[..., top : top + fh, left : left + fw]
        resampled = self.scaled != (fh, fw)
        if resampled:
            out = resize(out, self.scaled[1], self.scaled[0])
        sh, sw = self.scaled
        h, w = self.size
        if (sh, sw) != (h, w):
            if self.mode is SizeMode.CROP:
                ct, cl = (sh - h) // 2, (sw - w) // 2
                out = out[..., ct : ct + h, cl : cl + w]
            elif self.mode is SizeMode.PAD:
                pad = (0, w - sw, 0, h - sh)
                out = F.pad(out, pad, value=pad_value) if pad_value is not None else F.pad(out, pad, mode="replicate")
            else:
                out, resampled = resize(out, w, h), True
        return out.clamp(0.0, 1.0) if clamp and resampled else out

    # ---- inverse ----------------------------------------------------------------------------------

    def restore(self, edited: torch.Tensor, resize: Resize) -> tuple[torch.Tensor, torch.Tensor]:
        """An edited IMAGE [B,h,w,C] back on the source grid: (canvas [B,H,W,C], covered [H,W] bool).

        ``covered`` is where the canvas holds the edit; elsewhere (a cropped-away border) nothing was
        edited and the caller keeps the original."""
        canvas, covered = self._inverse(edited.movedim(-1, 1), resize)
        return canvas.movedim(1, -1).clamp(0.0, 1.0), covered

    def restore_mask(self, mask: torch.Tensor, resize: Resize) -> torch.Tensor:
        """A MASK [B,h,w] of the edited size on the source grid; 0 where nothing was edited."""
        canvas, covered = self._inverse(mask[:, None], resize)
        return canvas[:, 0].clamp(0.0, 1.0) * covered

    def _inverse(self, nchw: torch.Tensor, resize: Resize) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = self.size
        sh, sw = self.scaled
        top, left, fh, fw = self.frame
        # 1. the fit: back to the scaled size; a crop leaves a border the edit does not cover
        cover = (0, 0, sh, sw)
        if (sh, sw) == (h, w):
            scaled = nchw
        elif self.mode is SizeMode.CROP:
            ct, cl = (sh - h) // 2, (sw - w) // 2
            scaled = F.pad(nchw, (cl, sw - w - cl, ct, sh - h - ct), mode="replicate")
            cover = (ct, cl, h, w)
        elif self.mode is SizeMode.PAD:
            scaled = nchw[..., :sh, :sw]
        else:
            scaled = resize(nchw, sw, sh)
        # 2. the scale: back to the frame's size (the covered box mapped inwards, never onto a resampled border)
        framed = scaled if (sh, sw) == (fh, fw) else resize(scaled, fw, fh)
        ct, cl, ch, cw = cover
        y0, x0 = math.ceil(ct * fh / sh), math.ceil(cl * fw / sw)
        y1, x1 = math.floor((ct + ch) * fh / sh), math.floor((cl + cw) * fw / sw)
        # 3. the frame: into the source, the rest uncovered
        height, width = self.source
        canvas = nchw.new_zeros((nchw.shape[0], nchw.shape[1], height, width))
        canvas[..., top : top + fh, left : left + fw] = framed
        covered = torch.zeros((height, width), dtype=torch.bool, device=nchw.device)
        covered[top + y0 : top + y1, left + x0 : left + x1] = True
        return canvas, covered


def _cell_fit(height: int, width: int, mode: SizeMode, cell: int) -> tuple[int, int]:
    if mode is SizeMode.CROP:
        return (height // cell) * cell, (width // cell) * cell
    if mode is SizeMode.PAD:
        return math.ceil(height / cell) * cell, math.ceil(width / cell) * cell
    return max(cell, round(height / cell) * cell), max(cell, round(width / cell) * cell)


def _kontext_frame(height: int, width: int) -> tuple[Box, tuple[int, int]]:
    aspect = width / height
    _, pw, ph = min((abs(aspect - w / h), w, h) for w, h in KONTEXT_SIZES)
    if width * ph > pw * height:  # wider than the preferred size: keep the full height
        fh, fw = height, max(1, round(height * pw / ph))
    else:
        fh, fw = max(1, round(width * ph / pw)), width
    return ((height - fh) // 2, (width - fw) // 2, fh, fw), (ph, pw)


def plan(height: int, width: int, mode: SizeMode, cell: int, resolution: Resolution = Resolution.KEEP) -> Fit:
    """The fit of an image of ``height`` x ``width`` for a model whose grid cell is ``cell`` pixels."""
    mode, resolution = SizeMode(mode), Resolution(resolution)
    if resolution is Resolution.KONTEXT:
        frame, scaled = _kontext_frame(height, width)
    else:
        frame = (0, 0, height, width)
        if resolution is Resolution.MEGAPIXEL:
            s = math.sqrt(MEGAPIXEL / (height * width))
            scaled = (max(1, round(height * s)), max(1, round(width * s)))
        else:
            scaled = (height, width)
    size = _cell_fit(*scaled, mode, cell)
    if size[0] == 0 or size[1] == 0:
        raise InstructInputError(
            f"the image is {width}x{height}; with size_mode '{mode.value}' it must be at least {cell}x{cell} pixels "
            f"(this model's grid cell). Use size_mode 'pad' for smaller images."
        )
    return Fit((height, width), frame, scaled, size, mode, cell)
