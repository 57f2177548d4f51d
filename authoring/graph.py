"""A workflow graph described once, written in both formats: API (inputs by name, ``_meta.title``)
and UI (widgets in schema order, typed links, a laid-out canvas, a Note, the models it needs).

Both writers read the live node schemas (``/object_info`` entries), so a graph names only what it
sets; every other widget is written with its schema default, as the frontend saves it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headless.prompts import formats as wf

from . import layout as wl
from . import models as wm

PACK_ID = "comfyui-instruct"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def pack_version(pyproject: Path = PYPROJECT) -> str:
    """The pack's version, read from pyproject.toml (its one source; the registry publishes that file)."""
    match = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
    if match is None:
        raise ValueError(f'{pyproject}: no version = "..." line in [project]')
    return match.group(1)


@dataclass
class Ref:
    node: "Node"
    slot: int


@dataclass
class Node:
    id: int
    type: str
    inputs: dict
    title: str | None = None
    column: int = 0
    row: int = 0

    def out(self, slot: int = 0) -> Ref:
        return Ref(self, slot)


@dataclass
class Graph:
    name: str
    title: str
    note: str
    nodes: list[Node] = field(default_factory=list)

    def add(self, type_: str, title: str | None = None, column: int = 0, row: int = 0, **inputs: Any) -> Node:
        node = Node(len(self.nodes) + 1, type_, inputs, title, column, row)
        self.nodes.append(node)
        return node


def _full_inputs(node: Node, info: dict) -> dict:
    """Every widget value explicit (schema default when the description leaves it out)."""
    values = {}
    for name, kind, opts, optional in wf.input_specs(info):
        if name in node.inputs:
            values[name] = node.inputs[name]
        elif wf.is_widget(kind):  # optional widgets too: the frontend saves every widget's value
            options = wf.combo_options(kind, opts)
            values[name] = opts.get("default", options[0] if options else None)
    return values


def to_api(graph: Graph, object_info: dict) -> dict:
    api = {}
    for node in graph.nodes:
        inputs = {}
        for name, value in _full_inputs(node, object_info[node.type]).items():
            inputs[name] = [str(value.node.id), value.slot] if isinstance(value, Ref) else value
        entry: dict = {"class_type": node.type, "inputs": inputs}
        if node.title:
            entry["_meta"] = {"title": node.title}
        api[str(node.id)] = entry
    return api


def to_ui(graph: Graph, object_info: dict, pack_nodes: set[str]) -> dict:
    """The UI-format workflow; ``pack_nodes`` (this pack's node ids) get the registry id and version."""
    links, ui_nodes = [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    socket_lists = {}
    for node in graph.nodes:
        info = object_info[node.type]
        sockets = [(name, kind) for name, kind, _o, _opt in wf.input_specs(info) if not wf.is_widget(kind)]
        sockets += [
            (name, "COMBO" if isinstance(kind, list) else kind)
            for name, kind, _o, _opt in wf.input_specs(info)
            if wf.is_widget(kind) and isinstance(node.inputs.get(name), Ref)
        ]
        socket_lists[node.id] = sockets
    for node in graph.nodes:
        for slot, (name, kind) in enumerate(socket_lists[node.id]):
            value = node.inputs.get(name)
            if isinstance(value, Ref):
                link_id = len(links) + 1
                out_type = object_info[value.node.type]["output"][value.slot]
                links.append([link_id, value.node.id, value.slot, node.id, slot, out_type])
                out_links.setdefault((value.node.id, value.slot), []).append(link_id)
    link_of = {(link[3], link[4]): link[0] for link in links}
    placed = layout(graph, object_info, socket_lists, links)
    boxes = placed.boxes
    manifest = wm.load()
    used: list = []
    for order, node in enumerate(graph.nodes):
        info = object_info[node.type]
        values = []
        full = _full_inputs(node, info)
        for name, extra in wf.widget_names(info):
            if isinstance(full.get(name), Ref):
                continue
            if name not in full:
                break
            values.append(full[name])
            if extra:
                values.append("fixed" if name in ("seed", "noise_seed") else "image")
        outputs = []
        names = info.get("output_name") or info["output"]
        for slot, kind in enumerate(info["output"]):
            outputs.append({"name": names[slot], "type": kind, "links": out_links.get((node.id, slot), []), "slot_index": slot})
        properties: dict = {"Node name for S&R": node.type}
        if node.type in pack_nodes:
            properties.update(cnr_id=PACK_ID, ver=pack_version())
        entries = [entry for entry in (manifest.match(v) for v in values) if entry]
        used += [entry for entry in entries if entry not in used]
        exact = [entry for entry in entries if entry.name in values]  # the frontend compares name == widget value
        if exact:
            properties["models"] = [wm.frontend_entry(entry) for entry in exact]
        box = boxes[node.id]
        entry = {
            "id": node.id,
            "type": node.type,
            "pos": [round(box.x), round(box.y)],
            "size": [box.w, box.h],
            "flags": {},
            "order": order,
            "mode": 0,
            "inputs": [{"name": n, "type": k, "link": link_of.get((node.id, slot))} for slot, (n, k) in enumerate(socket_lists[node.id])],
            "outputs": outputs,
            "properties": properties,
            "widgets_values": values,
        }
        if node.title:
            entry["title"] = node.title
        ui_nodes.append(entry)
    note_id = len(graph.nodes) + 1
    text = graph.note + ("\n" + wm.note_lines(used) if used else "")
    note_w, note_h = note_size(text, boxes)
    top = min(b.y for b in boxes.values()) - wl.TITLE_H
    note_pos = [0, round(top - note_h - 60)]
    ui_nodes.append(
        {
            "id": note_id,
            "type": "Note",
            "pos": note_pos,
            "size": [note_w, note_h],
            "flags": {},
            "order": len(ui_nodes),
            "mode": 0,
            "inputs": [],
            "outputs": [],
            "properties": {},
            "widgets_values": [text],
            "title": graph.title,
            "color": "#432",
            "bgcolor": "#653",
        }
    )
    reroutes, extensions = reroute_chains(placed, links)
    rects = [(b.x, b.y - wl.TITLE_H, b.w, b.h + wl.TITLE_H) for b in boxes.values()]
    rects.append((note_pos[0], note_pos[1] - wl.TITLE_H, note_w, note_h + wl.TITLE_H))
    return {
        "last_node_id": note_id,
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": wl.view(rects), "info": {"pack": PACK_ID}, "reroutes": reroutes, "linkExtensions": extensions},
        "models": [wm.frontend_entry(entry) for entry in used],
        "version": 0.4,
    }


def reroute_chains(placed: wl.Layout, links: list) -> tuple[list[dict], list[dict]]:
    """Native reroutes (schema 0.4 ``extra.reroutes`` + ``linkExtensions``) for the links that cross columns."""
    reroutes, extensions = [], []
    for link_id, src, src_slot, dst, dst_slot, _type in links:
        parent = None
        for x, y in placed.routes.get(wl.Edge(src, src_slot, dst, dst_slot), []):
            reroute = {"id": len(reroutes) + 1, "pos": [round(x), round(y)], "linkIds": [link_id]}
            if parent is not None:
                reroute["parentId"] = parent
            reroutes.append(reroute)
            parent = reroute["id"]
        if parent is not None:
            extensions.append({"id": link_id, "parentId": parent})
    return reroutes, extensions


def note_size(text: str, boxes: dict) -> tuple[int, int]:
    """As wide as the graph (at most 1100), tall enough for the text at the frontend's Note font."""
    import textwrap

    width = int(min(1100, max(640, max(b.x + b.w for b in boxes.values()))))
    chars = int((width - 30) / 6.2)  # its monospace text: about 5.5 px a character, 12 px a line
    lines = sum(len(textwrap.wrap(par, chars)) or 1 for par in text.split("\n"))
    return width, 40 + 14 * lines


def node_size(info: dict, sockets: int) -> list[int]:
    """Roughly the size the frontend gives the node: a row per socket, a row per widget, text boxes taller."""
    widgets = [(kind, opts) for _n, kind, opts, _o in wf.input_specs(info) if wf.is_widget(kind)]
    rows = max(sockets, len(info["output"]))
    height = 40 + 22 * rows + sum(80 if kind == "STRING" and opts.get("multiline") else 26 for kind, opts in widgets)
    if any(opts.get("image_upload") for _kind, opts in widgets):
        height += 260  # the frontend shows the picked image under the widgets
    return [340, height]


def layout(graph: Graph, object_info: dict, socket_lists: dict, links: list) -> wl.Layout:
    """Positions from the graph's topology (see layout.py)."""
    sizes = {node.id: tuple(node_size(object_info[node.type], len(socket_lists[node.id]))) for node in graph.nodes}
    edges = [wl.Edge(src, src_slot, dst, dst_slot) for _id, src, src_slot, dst, dst_slot, _t in links]
    return wl.layout(sizes, edges)
