"""The template browser's thumbnail of a workflow: its title and the chain of node names."""

from __future__ import annotations

from pathlib import Path

from .graph import Graph


def thumbnail(graph: Graph, path: Path, pack_nodes: set[str]) -> None:
    """A 512x320 card: the title and the chain of node names (the template browser shows it)."""
    from PIL import Image, ImageDraw, ImageFont

    def font(size: int):
        try:
            return ImageFont.truetype("DejaVuSans.ttf", size)
        except OSError:
            return ImageFont.load_default()

    img = Image.new("RGB", (512, 320), (28, 30, 38))
    draw = ImageDraw.Draw(img)
    import textwrap

    lines = textwrap.wrap(graph.title, width=44)[:2]
    for i, line in enumerate(lines):
        draw.text((20, 12 + 24 * i), line, fill=(240, 240, 240), font=font(19 if len(lines) == 1 else 17))
    shown = [n for n in graph.nodes if n.type not in ("CLIPTextEncode", "VAEDecode", "SaveImage")]
    for i, node in enumerate(shown[:8]):
        x, y = 20 + (i % 2) * 246, 70 + (i // 2) * 60
        colour = (86, 120, 200) if node.type in pack_nodes else (70, 74, 88)
        draw.rounded_rectangle([x, y, x + 226, y + 46], radius=8, fill=colour)
        draw.text((x + 10, y + 14), node.title or node.type, fill=(255, 255, 255), font=font(14))
    img.save(path, "JPEG", quality=88)
