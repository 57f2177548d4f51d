"""Lay a workflow graph out from its topology, and choose the view it opens with.

Pure Python, no ComfyUI. Nodes go in layers (a node sits one column right of its furthest input and
is pulled right towards its consumers), ordered in each column by where their links come from, then
pushed down wherever a link would pass behind them. Every link therefore runs left to right and in
front of nothing; the frontend draws links as horizontal-tangent splines, which this follows.
"""

from __future__ import annotations

from dataclasses import dataclass

#: litegraph geometry (LiteGraph.NODE_TITLE_HEIGHT, NODE_SLOT_HEIGHT) the frontend draws with.
TITLE_H, SLOT_H = 30, 20
COLUMN_GAP, ROW_GAP, TOP = 90, 50, 0
#: The window the workflows are laid out for, and the part of it the frontend's bars cover
#: (1.35: menu bar + workflow tabs on top, the sidebar's icon strip on the left).
WINDOW_W, WINDOW_H = 1920, 1080
BARS_TOP, BARS_LEFT, MARGIN = 100, 60, 30
MAX_SCALE = 1.0
#: Below about 0.57 the frontend draws nodes without text (its low-quality zoom); the first view
#: never goes under this, and shows the graph's top-left (Note first) when the whole does not fit.
READABLE_SCALE = 0.65


@dataclass
class Box:
    """A node as laid out: its body at (x, y) of size (w, h); the title bar sits above y."""

    id: int
    w: int
    h: int
    x: float = 0.0
    y: float = 0.0
    layer: int = 0

    def covers(self, px: float, py: float, margin: float = 8.0) -> bool:
        return self.x - margin <= px <= self.x + self.w + margin and self.y - TITLE_H - margin <= py <= self.y + self.h + margin


@dataclass(frozen=True)
class Edge:
    src: int
    src_slot: int
    dst: int
    dst_slot: int


def layers(ids: list[int], edges: list[Edge]) -> dict[int, int]:
    """Longest path from the sources, then each node moved right to just before its nearest consumer."""
    preds = {i: [e.src for e in edges if e.dst == i] for i in ids}
    succs = {i: [e.dst for e in edges if e.src == i] for i in ids}
    layer: dict[int, int] = {}

    def depth(i: int) -> int:
        if i not in layer:
            layer[i] = 1 + max((depth(p) for p in preds[i]), default=-1)
        return layer[i]

    for i in ids:
        depth(i)
    for i in sorted(ids, key=lambda n: -layer[n]):  # consumers first
        if succs[i]:
            layer[i] = max(layer[i], min(layer[s] for s in succs[i]) - 1)
    return layer


def _order(ids: list[int], edges: list[Edge], layer: dict[int, int]) -> list[list[int]]:
    """Columns, each ordered by the mean position of the links arriving (or, for sources, leaving)."""
    count = max(layer.values()) + 1
    cols = [[i for i in ids if layer[i] == c] for c in range(count)]
    rank = {i: (pos, 0.0) for col in cols for pos, i in enumerate(col)}

    def key(i: int, incoming: bool) -> float:
        ends = [rank[e.src][0] + e.src_slot / 10 for e in edges if e.dst == i] if incoming else []
        if not ends:
            ends = [rank[e.dst][0] + e.dst_slot / 10 for e in edges if e.src == i]
        return sum(ends) / len(ends) if ends else rank[i][0]

    for _sweep in range(4):
        for c in range(1, count):
            cols[c].sort(key=lambda i: key(i, True))
            rank.update({i: (pos, 0.0) for pos, i in enumerate(cols[c])})
        for c in range(count - 2, -1, -1):
            sources = [i for i in cols[c] if not any(e.dst == i for e in edges)]
            if len(sources) == len(cols[c]):
                cols[c].sort(key=lambda i: key(i, False))
                rank.update({i: (pos, 0.0) for pos, i in enumerate(cols[c])})
    return cols


def spline(x0: float, y0: float, x3: float, y3: float, samples: int = 48) -> list[tuple[float, float]]:
    """The frontend's link spline: horizontal tangents, control points a quarter of the length out."""
    d = ((x3 - x0) ** 2 + (y3 - y0) ** 2) ** 0.5 * 0.25
    x1, x2 = x0 + d, x3 - d
    pts = []
    for k in range(samples + 1):
        t = k / samples
        u = 1 - t
        x = u**3 * x0 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t**3 * x3
        pts.append((x, (u**3 + 3 * u * u * t) * y0 + (3 * u * t * t + t**3) * y3))
    return pts


@dataclass
class Layout:
    """Node boxes, and for each link that crosses columns the reroute points it runs through."""

    boxes: dict[int, Box]
    routes: dict[Edge, list[tuple[float, float]]]

    def path(self, e: Edge) -> list[tuple[float, float]]:
        a, b = self.boxes[e.src], self.boxes[e.dst]
        start = (a.x + a.w, a.y + (e.src_slot + 0.7) * SLOT_H)
        points = [start, *self.routes.get(e, []), (b.x, b.y + (e.dst_slot + 0.7) * SLOT_H)]
        out: list[tuple[float, float]] = []
        for (x0, y0), (x3, y3) in zip(points, points[1:]):
            out += spline(x0, y0, x3, y3)
        return out

    def blocked(self, edges: list[Edge]) -> list[tuple[Edge, int]]:
        """(link, node) for every link that passes behind a node."""
        found = []
        for e in edges:
            pts = self.path(e)
            for box in self.boxes.values():
                if box.id not in (e.src, e.dst) and any(box.covers(px, py) for px, py in pts):
                    found.append((e, box.id))
        return found


LANE = 36  # the room a link crossing a column takes in it


def layout(sizes: dict[int, tuple[int, int]], edges: list[Edge]) -> Layout:
    """Columns from the topology; a link that crosses columns runs through a lane left free in each.

    Nodes and lanes are stacked per column in the order of where their links come from, each as high
    as its first input allows (so chains run straight), never overlapping what is above it.
    """
    ids = list(sizes)
    layer = layers(ids, edges)
    boxes = {i: Box(i, *sizes[i], layer=layer[i]) for i in ids}
    hops: list[Edge] = []  # links between neighbouring columns, through the lanes
    lanes: dict[Edge, list[int]] = {}
    for e in edges:
        chain = [e.src]
        for c in range(layer[e.src] + 1, layer[e.dst]):
            lane = -(len(boxes) + 1)  # a lane: negative id, zero-height box
            boxes[lane] = Box(lane, 0, 0, layer=c)
            layer[lane] = c
            chain.append(lane)
        chain.append(e.dst)
        lanes[e] = chain[1:-1]
        for k, (a, b) in enumerate(zip(chain, chain[1:])):
            hops.append(Edge(a, e.src_slot if k == 0 else 0, b, e.dst_slot if b == e.dst else 0))
    cols = _order(list(boxes), hops, layer)
    width = [max((boxes[i].w for i in col), default=0) or 340 for col in cols]
    for box in boxes.values():
        if box.id < 0:
            box.w = width[box.layer]

    def port(i: int, slot: int) -> float:
        return boxes[i].y if i < 0 else boxes[i].y + (slot + 0.7) * SLOT_H

    for col in cols:
        end = -1e9
        for i in col:
            into = sorted((h for h in hops if h.dst == i), key=lambda h: h.dst_slot)
            want = TOP
            if into:
                want = port(into[0].src, into[0].src_slot) - (0 if i < 0 else (into[0].dst_slot + 0.7) * SLOT_H)
            if i < 0:
                boxes[i].y = max(want, end + LANE / 2)
                end = boxes[i].y + LANE / 2
            else:
                boxes[i].y = max(want, end + TITLE_H + ROW_GAP, TOP)
                end = boxes[i].y + boxes[i].h
    place_columns(cols, boxes, hops)
    routes = {}
    for e, chain in lanes.items():
        routes[e] = [p for lane in chain for p in ((boxes[lane].x, boxes[lane].y), (boxes[lane].x + boxes[lane].w, boxes[lane].y))]
    result = Layout({i: b for i, b in boxes.items() if i >= 0}, {e: r for e, r in routes.items() if r})
    problems = result.blocked(edges)
    if problems:
        raise RuntimeError(f"layout: links pass behind nodes: {problems}")
    return result


def place_columns(cols: list[list[int]], boxes: dict[int, Box], hops: list[Edge]) -> None:
    """x of each column: a gap wide enough that no link's spline bulges past its ends.

    The frontend's spline has its control points a quarter of the link's length out from each end;
    they stay between the ends (so the curve does too) while the rise is under about 3.8 times the
    run. Steeper links get a wider gap.
    """
    x = 0.0
    for c, col in enumerate(cols):
        for i in col:
            boxes[i].x = x
        gap = COLUMN_GAP
        for h in hops:
            if boxes[h.src].layer == c:
                gap = max(gap, abs(boxes[h.dst].y - boxes[h.src].y) / 3.5 + 2 * SLOT_H)
        x += max(boxes[i].w for i in col) + gap


def view(rects: list[tuple[float, float, float, float]]) -> dict:
    """``extra.ds`` (scale, offset) that shows all of ``rects`` (x, y, w, h incl. titles) in the window."""
    left = min(r[0] for r in rects)
    top = min(r[1] for r in rects)
    right = max(r[0] + r[2] for r in rects)
    bottom = max(r[1] + r[3] for r in rects)
    room_w = WINDOW_W - BARS_LEFT - 2 * MARGIN
    room_h = WINDOW_H - BARS_TOP - 2 * MARGIN
    scale = max(READABLE_SCALE, min(MAX_SCALE, room_w / (right - left), room_h / (bottom - top)))
    scale = int(scale * 100) / 100
    # screen = (canvas + offset) * scale; centred horizontally when it fits, else from the left
    used_w = (right - left) * scale
    screen_x = BARS_LEFT + MARGIN + max(0.0, (room_w - used_w) / 2)
    screen_y = BARS_TOP + MARGIN
    return {"scale": scale, "offset": [round(screen_x / scale - left, 1), round(screen_y / scale - top, 1)]}
