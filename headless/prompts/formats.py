"""ComfyUI workflow formats: UI (litegraph, schema 0.4) ↔ API ("prompt"), driven by node schemas.

Pure Python (no ComfyUI import): the schemas come as ``/object_info`` entries, from a running
server or from an in-process ComfyUI. Used by the workflow tests, the workflow generator and the
headless runner.
"""

from __future__ import annotations

from typing import Any, Iterable

#: Frontend-only node types that never reach the API format.
UI_ONLY_TYPES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MODE_NEVER, MODE_BYPASS = 2, 4


def input_specs(info: dict) -> list[tuple[str, Any, dict, bool]]:
    """(name, type, options, optional) for every input, required first, in declaration order."""
    out = []
    for section, optional in (("required", False), ("optional", True)):
        for name, spec in info.get("input", {}).get(section, {}).items():
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            out.append((name, kind, opts, optional))
    return out


def is_widget(kind: Any) -> bool:
    return isinstance(kind, list) or kind in WIDGET_TYPES


def combo_options(kind: Any, opts: dict) -> list | None:
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        return opts.get("options", [])
    return None


def widget_names(info: dict) -> list[tuple[str, bool]]:
    """Widget inputs in widgets_values order, each with whether an extra value follows it
    (seed-style INTs carry 'fixed/randomize…', image-upload combos an 'image' upload widget)."""
    names = []
    for name, kind, opts, _ in input_specs(info):
        if not is_widget(kind):
            continue
        extra = bool(opts.get("control_after_generate")) or bool(opts.get("image_upload"))
        names.append((name, extra))
    return names


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """Convert a UI workflow to API format, as the frontend's "Export (API)" does for plain graphs."""
    links = {link[0]: link for link in ui.get("links", [])}
    api: dict = {}
    for node in ui["nodes"]:
        if node["type"] in UI_ONLY_TYPES or node.get("mode", 0) in (MODE_NEVER, MODE_BYPASS):
            continue
        info = object_info[node["type"]]
        inputs: dict = {}
        values = list(node.get("widgets_values", []))
        linked = {i["name"]: i.get("link") for i in node.get("inputs", []) if i.get("link") is not None}
        pos = 0
        for name, extra in widget_names(info):
            if pos < len(values):
                inputs[name] = values[pos]
            pos += 2 if extra else 1
        for name, link_id in linked.items():
            origin = links[link_id]
            inputs[name] = [str(origin[1]), origin[2]]
        entry = {"class_type": node["type"], "inputs": inputs}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        api[str(node["id"])] = entry
    return api


def check_ui_against_schemas(ui: dict, object_info: dict, model_inputs: Iterable[str] = ()) -> list[str]:
    """Problems of a UI workflow against live schemas: unknown types, widget values out of range or
    not in their combo list (except model-file combos named in ``model_inputs``), mistyped links."""
    problems: list[str] = []
    model_inputs = set(model_inputs)
    by_id = {n["id"]: n for n in ui["nodes"]}
    for node in ui["nodes"]:
        kind_name = node["type"]
        if kind_name in UI_ONLY_TYPES:
            continue
        if kind_name not in object_info:
            problems.append(f"node {node['id']}: unknown node type {kind_name}")
            continue
        info = object_info[kind_name]
        linked = {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}
        api_inputs = ui_to_api({"nodes": [node], "links": ui.get("links", [])}, object_info)[str(node["id"])]["inputs"]
        for name, kind, opts, optional in input_specs(info):
            if name in linked:
                continue
            if not is_widget(kind):
                if not optional:
                    problems.append(f"node {node['id']} ({kind_name}): required input {name} is not connected")
                continue
            if name not in api_inputs:
                if not optional:
                    problems.append(f"node {node['id']} ({kind_name}): no value for widget {name}")
                continue
            value = api_inputs[name]
            options = combo_options(kind, opts)
            if options is not None:
                if name not in model_inputs and value not in options:
                    problems.append(f"node {node['id']} ({kind_name}).{name}: {value!r} not in {options[:6]}…")
            elif kind in ("INT", "FLOAT"):
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    problems.append(f"node {node['id']} ({kind_name}).{name}: {value!r} is not a number")
                elif ("min" in opts and value < opts["min"]) or ("max" in opts and value > opts["max"]):
                    problems.append(f"node {node['id']} ({kind_name}).{name}: {value} outside [{opts.get('min')}, {opts.get('max')}]")
            elif kind == "BOOLEAN" and not isinstance(value, bool):
                problems.append(f"node {node['id']} ({kind_name}).{name}: {value!r} is not a boolean")
            elif kind == "STRING" and not isinstance(value, str):
                problems.append(f"node {node['id']} ({kind_name}).{name}: {value!r} is not a string")
    for link_id, origin, oslot, target, tslot, link_type in ui.get("links", []):
        src, dst = by_id.get(origin), by_id.get(target)
        if src is None or dst is None:
            problems.append(f"link {link_id}: missing endpoint")
            continue
        out_type = object_info[src["type"]]["output"][oslot] if src["type"] in object_info else None
        dst_input = dst["inputs"][tslot] if tslot < len(dst.get("inputs", [])) else None
        in_type = None
        if dst_input is not None and dst["type"] in object_info:
            spec = {n: k for n, k, _o, _p in input_specs(object_info[dst["type"]])}.get(dst_input["name"])
            in_type = spec if isinstance(spec, str) else "COMBO"
        if dst_input is None or dst_input.get("link") != link_id:
            problems.append(f"link {link_id}: target slot {tslot} of node {target} does not point back to it")
        elif not (link_type == out_type == in_type or (in_type == "*" or out_type == "*")):
            problems.append(
                f"link {link_id}: {src['type']}[{oslot}] {out_type} → {dst['type']}.{dst_input['name']} {in_type} (link says {link_type})"
            )
    return problems


def is_ui(workflow: dict) -> bool:
    """UI (litegraph) files have a ``nodes`` list; API files are a dict of node id → node."""
    return isinstance(workflow.get("nodes"), list)
