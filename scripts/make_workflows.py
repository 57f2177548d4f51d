"""Write the shipped workflows (UI format + thumbnail, and the API-format twin) from one description.

    python scripts/make_workflows.py          # needs ComfyUI (COMFYUI_PATH or ~/ComfyUI) for the node schemas

Each graph is described once below; the UI file (widgets in schema order, typed links, a Note that
explains the settings) and the API file (inputs by name, ``_meta.title`` roles for the headless
runner) are both written from that description and the live node schemas. The tests convert every
UI file back to API format independently and require it to equal its twin.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workflow_format as wf  # noqa: E402
import workflow_layout as wl  # noqa: E402
import workflow_models as wm  # noqa: E402

WORKFLOWS_DIR = HERE.parent / "workflows"
PACK_ID, PACK_VERSION = "comfyui-instruct", "0.1.0"

#: The titles the headless runner looks for (``run_workflow.py --instruction`` etc.).
ROLE_INSTRUCTION, ROLE_PROMPT, ROLE_NEGATIVE = "Instruction", "Prompt", "Negative"
ROLE_IMAGE, ROLE_REFERENCE, ROLE_SAVE = "Input image", "Reference image", "Save"


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


def to_ui(graph: Graph, object_info: dict) -> dict:
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
    manifest = wm.load_manifest()
    used: list[str] = []
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
        if node.type in PACK_NODES:
            properties.update(cnr_id=PACK_ID, ver=PACK_VERSION)
        keys = [key for key in (wm.match(v, manifest) for v in values) if key]
        used += [key for key in keys if key not in used]
        exact = [key for key in keys if key in values]  # the frontend compares name == widget value
        if exact:
            properties["models"] = [wm.frontend_entry(key, manifest) for key in exact]
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
    text = graph.note + ("\n" + wm.note_lines(used, manifest) if used else "")
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
        "models": [wm.frontend_entry(key, manifest) for key in used],
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
    """Positions from the graph's topology (see workflow_layout)."""
    sizes = {node.id: tuple(node_size(object_info[node.type], len(socket_lists[node.id]))) for node in graph.nodes}
    edges = [wl.Edge(src, src_slot, dst, dst_slot) for _id, src, src_slot, dst, dst_slot, _t in links]
    return wl.layout(sizes, edges)


PACK_NODES = {
    "InstructUNetLoader",
    "InstructImageConditioning",
    "InstructKSampler",
    "InstructGuider",
    "IPAdapterInstructLoader",
    "IPAdapterInstructApply",
    "InstructKSamplerEditMask",
    "InstructRegionComposite",
    "InstructMerge",
}

# ---- the graphs ---------------------------------------------------------------------------------

EDIT_NOTE = (
    "Instruction editing. Load an 8-channel instruct model (InstructPix2Pix, MagicBrush, ...), write the edit "
    "as an instruction ('make it winter'), pick the image, Queue.\n"
    "text_cfg: how strongly the edit follows the instruction (7.5). image_cfg: how closely the result keeps to "
    "the input (1.5; 1.0-2.0). Edit too weak: raise text_cfg or lower image_cfg. Too much changes: raise image_cfg."
)


def edit_inputs(g: Graph, ckpt: str, patch=None, control=None):
    """Loader → (optional model/CLIP patch) → instruction + negative → (optional ControlNet) → conditioner."""
    loader = g.add("InstructUNetLoader", column=0, row=0, model_name=ckpt)
    model, clip = patch(loader) if patch else (loader.out(0), loader.out(1))
    pos = g.add("CLIPTextEncode", ROLE_INSTRUCTION, 1, 0, clip=clip, text="make it a snowy winter day")
    neg = g.add("CLIPTextEncode", ROLE_NEGATIVE, 1, 1, clip=clip, text="")
    img = g.add("LoadImage", ROLE_IMAGE, 0, 2, image="example.png")
    p, n = pos.out(0), neg.out(0)
    if control:
        p, n = control(p, n, img)
    cond = g.add("InstructImageConditioning", column=2, row=0, positive=p, negative=n, vae=loader.out(2), image=img.out(0))
    return loader, model, cond, img


def finish(g: Graph, latent_ref, vae_ref, column: int) -> None:
    dec = g.add("VAEDecode", column=column, row=0, samples=latent_ref, vae=vae_ref)
    g.add("SaveImage", ROLE_SAVE, column + 1, 0, images=dec.out(0), filename_prefix=f"instruct/{g.name}")


def instruct_ksampler(
    g: Graph,
    column: int,
    model,
    positive,
    negative,
    latent,
    seed: int = 1371,
    steps: int = 20,
    text_cfg: float = 7.5,
    image_cfg: float = 1.5,
    sampler: str = "euler_ancestral",
    scheduler: str = "normal",
) -> Node:
    return g.add(
        "InstructKSampler",
        column=column,
        row=0,
        model=model,
        seed=seed,
        steps=steps,
        text_cfg=text_cfg,
        image_cfg=image_cfg,
        sampler_name=sampler,
        scheduler=scheduler,
        positive=positive,
        negative=negative,
        latent_image=latent,
        denoise=1.0,
    )


def edit_sampler(g: Graph, loader: Node, model, cond: Node, **settings) -> None:
    ks = instruct_ksampler(g, 3, model, cond.out(0), cond.out(1), cond.out(2), **settings)
    finish(g, ks.out(0), loader.out(2), 4)


def ip_adapter(g: Graph, model, clip, prompt: str, negative: str, weight: float) -> Node:
    """Adapter loader + CLIP vision + reference image → IPAdapter-Instruct Apply (style task)."""
    ipl = g.add("IPAdapterInstructLoader", column=0, row=1, ipadapter_file="ip-adapter-instruct-sd15.bin")
    cv = g.add("CLIPVisionLoader", column=0, row=2, clip_name="CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors")
    ref = g.add("LoadImage", ROLE_REFERENCE, 0, 3, image="example.png")
    return g.add(
        "IPAdapterInstructApply",
        column=1,
        row=0,
        model=model,
        ipadapter=ipl.out(0),
        clip_vision=cv.out(0),
        clip=clip,
        image=ref.out(0),
        task="style",
        instruction="",
        prompt=prompt,
        negative_prompt=negative,
        weight=weight,
        start_at=0.0,
        end_at=1.0,
        guidance="auto (as the reference)",
        instruct_cfg=6.0,
        image_cfg=1.0,
        auto_scale=True,
    )


IP2P = "checkpoints/instruct-pix2pix-00-22000.safetensors"


def instruct_edit_sd15() -> Graph:
    g = Graph("instruct_edit_sd15", "Instruct edit (SD1.5)", EDIT_NOTE + "\nSD1.5 models: text_cfg 7.5, image_cfg 1.5, 20-30 steps.")
    loader, model, cond, _ = edit_inputs(g, IP2P)
    edit_sampler(g, loader, model, cond)
    return g


def instruct_edit_sdxl() -> Graph:
    g = Graph(
        "instruct_edit_cosxl",
        "Instruct edit (SDXL / CosXL Edit)",
        EDIT_NOTE + "\nSDXL-class edit models: CosXL Edit (its EDM v-prediction and scaled image latent are detected "
        "from the file) or sdxl-instructpix2pix-768. text_cfg about 5, image_cfg 1.5, dpmpp_2m karras 20 steps. "
        "Work near 1024x1024 (CosXL) or 768x768.",
    )
    loader, model, cond, _ = edit_inputs(g, "checkpoints/cosxl_edit.safetensors")
    edit_sampler(g, loader, model, cond, text_cfg=5.0, sampler="dpmpp_2m", scheduler="karras")
    return g


def instruct_edit_controlnet() -> Graph:
    g = Graph(
        "instruct_edit_controlnet",
        "Instruct edit + ControlNet",
        EDIT_NOTE + "\nA ControlNet (here an SD1.5 tile ControlNet fed the input image) keeps the structure. It is "
        "applied to positive and negative, and the sampler gives it to all three branches (the unconditional one "
        "included). Lower its strength if the edit cannot happen.",
    )

    def control(p, n, img):
        cn = g.add("ControlNetLoader", column=1, row=3, control_net_name="control_v11f1e_sd15_tile.pth")
        cna = g.add(
            "ControlNetApplyAdvanced",
            column=2,
            row=2,
            positive=p,
            negative=n,
            control_net=cn.out(0),
            image=img.out(0),
            strength=0.6,
            start_percent=0.0,
            end_percent=1.0,
        )
        return cna.out(0), cna.out(1)

    loader, model, cond, _ = edit_inputs(g, IP2P, control=control)
    edit_sampler(g, loader, model, cond)
    return g


def instruct_edit_lora() -> Graph:
    g = Graph(
        "instruct_edit_lora",
        "Instruct edit + LoRA",
        EDIT_NOTE + "\nAn SD1.5 LoRA (style or subject) on the instruct model steers the look of the edit; "
        "strength 0.5-1.0. Text encoder strength changes how the instruction is read.",
    )

    def lora(loader):
        node = g.add(
            "LoraLoader",
            column=1,
            row=3,
            model=loader.out(0),
            clip=loader.out(1),
            lora_name="sd15_style_lora.safetensors",
            strength_model=0.8,
            strength_clip=0.8,
        )
        return node.out(0), node.out(1)

    loader, model, cond, _ = edit_inputs(g, IP2P, patch=lora)
    edit_sampler(g, loader, model, cond)
    return g


def instruct_edit_guider() -> Graph:
    g = Graph(
        "instruct_edit_guider",
        "Instruct edit with Instruct Guider + SamplerCustomAdvanced",
        EDIT_NOTE + "\nThe same guidance as a GUIDER, for custom sampling graphs (any sampler, scheduler or sigma "
        "manipulation). guidance_rescale 0.7 tames over-exposure at high text_cfg.",
    )
    loader, model, cond, _ = edit_inputs(g, IP2P)
    guider = g.add(
        "InstructGuider",
        column=3,
        row=0,
        model=model,
        positive=cond.out(0),
        negative=cond.out(1),
        text_cfg=7.5,
        image_cfg=1.5,
        guidance_rescale=0.0,
    )
    noise = g.add("RandomNoise", column=3, row=1, noise_seed=1371)
    sampler = g.add("KSamplerSelect", column=3, row=2, sampler_name="euler_ancestral")
    sigmas = g.add("BasicScheduler", column=3, row=3, model=model, scheduler="normal", steps=20, denoise=1.0)
    sca = g.add(
        "SamplerCustomAdvanced",
        column=4,
        row=1,
        noise=noise.out(0),
        guider=guider.out(0),
        sampler=sampler.out(0),
        sigmas=sigmas.out(0),
        latent_image=cond.out(2),
    )
    dec = g.add("VAEDecode", column=5, row=0, samples=sca.out(0), vae=loader.out(2))
    g.add("SaveImage", ROLE_SAVE, 6, 0, images=dec.out(0), filename_prefix=f"instruct/{g.name}")
    return g


IP_NOTE = (
    "IPAdapter-Instruct: one adapter, the instruction says what to take from the reference image. task: everything, "
    "style, composition, object or face (or custom text). weight 0.6-0.8. Copy your prompt into the node's prompt "
    "field: the adapter's tokens depend on it. style/everything/face sample with plain CFG; composition/object use "
    "the 4-branch guidance of Instruct KSampler (instruct_cfg, image_cfg on the apply node)."
)


def ipadapter_sd15() -> Graph:
    g = Graph("ipadapter_instruct_sd15", "IPAdapter-Instruct (SD1.5): pick the task", IP_NOTE)
    ckpt = g.add("CheckpointLoaderSimple", column=0, row=0, ckpt_name="v1-5-pruned-emaonly.safetensors")
    prompt = "a cat sitting in a sunny garden, best quality"
    negative = "monochrome, lowres, bad anatomy, worst quality, low quality"
    ipa = ip_adapter(g, ckpt.out(0), ckpt.out(1), prompt, negative, weight=0.8)
    pos = g.add("CLIPTextEncode", ROLE_PROMPT, 1, 2, clip=ckpt.out(1), text=prompt)
    neg = g.add("CLIPTextEncode", ROLE_NEGATIVE, 1, 3, clip=ckpt.out(1), text=negative)
    empty = g.add("EmptyLatentImage", column=2, row=2, width=512, height=512, batch_size=1)
    ks = instruct_ksampler(
        g,
        2,
        ipa.out(0),
        pos.out(0),
        neg.out(0),
        empty.out(0),
        seed=52222246,
        steps=30,
        text_cfg=6.0,
        image_cfg=1.0,
        sampler="dpmpp_2m",
        scheduler="karras",
    )
    finish(g, ks.out(0), ckpt.out(2), 3)
    return g


def instruct_edit_ip_style() -> Graph:
    g = Graph(
        "instruct_edit_ip_style",
        "Instruct edit steered by an IPAdapter-Instruct style reference",
        EDIT_NOTE + "\nIPAdapter-Instruct on the instruct model takes the style of a second picture: the edit's full "
        "branch sees the adapter's positive tokens, the image-only and unconditional branches its negative ones. "
        "weight 0.5-0.7 so the instruction still leads.",
    )
    loader = g.add("InstructUNetLoader", column=0, row=0, model_name=IP2P)
    instruction = "turn it into a painting"
    ipa = ip_adapter(g, loader.out(0), loader.out(1), instruction, "", weight=0.6)
    img = g.add("LoadImage", ROLE_IMAGE, 0, 4, image="example.png")
    pos = g.add("CLIPTextEncode", ROLE_INSTRUCTION, 1, 2, clip=loader.out(1), text=instruction)
    neg = g.add("CLIPTextEncode", ROLE_NEGATIVE, 1, 3, clip=loader.out(1), text="")
    cond = g.add(
        "InstructImageConditioning", column=2, row=2, positive=pos.out(0), negative=neg.out(0), vae=loader.out(2), image=img.out(0)
    )
    ks = instruct_ksampler(g, 2, ipa.out(0), cond.out(0), cond.out(1), cond.out(2))
    finish(g, ks.out(0), loader.out(2), 3)
    return g


def region_finish(g: Graph, latent_ref, vae_ref, original_ref, mask_ref, column: int) -> None:
    """Decode, paste back into the original inside the mask (exact pixels outside), save."""
    dec = g.add("VAEDecode", column=column, row=0, samples=latent_ref, vae=vae_ref)
    comp = g.add("InstructRegionComposite", column=column, row=1, edited=dec.out(0), original=original_ref, mask=mask_ref, feather=16)
    g.add("SaveImage", ROLE_SAVE, column + 1, 0, images=comp.out(0), filename_prefix=f"instruct/{g.name}")


def instruct_edit_mask() -> Graph:
    g = Graph(
        "instruct_edit_mask",
        "Instruct edit that stays where it belongs: automatic edit mask",
        EDIT_NOTE + "\nInstruct KSampler + Edit Mask finds where the instruction changes the image during the first "
        "mask_steps (0.4) from the two branches it evaluates anyway (no extra cost), then keeps everything outside that "
        "mask on the input image. mask_threshold lower = bigger mask; mask_blur = rounder mask. The composite puts "
        "the original pixels back outside the mask; the preview shows the mask (reuse it as region_mask).",
    )
    loader, model, cond, img = edit_inputs(g, IP2P)
    ks = g.add(
        "InstructKSamplerEditMask",
        column=3,
        row=0,
        model=model,
        seed=1371,
        steps=20,
        text_cfg=7.5,
        image_cfg=1.5,
        sampler_name="euler_ancestral",
        scheduler="normal",
        positive=cond.out(0),
        negative=cond.out(1),
        latent_image=cond.out(2),
        denoise=1.0,
    )
    preview = g.add("MaskToImage", column=4, row=2, mask=ks.out(1))
    g.add("PreviewImage", "Edit mask", 5, 2, images=preview.out(0))
    region_finish(g, ks.out(0), loader.out(2), img.out(0), ks.out(1), 4)
    return g


def instruct_edit_region() -> Graph:
    g = Graph(
        "instruct_edit_region",
        "Instruct edit inside a painted region",
        EDIT_NOTE + "\nRight-click the Input image > Open in MaskEditor and paint where the edit may happen. Outside the "
        "painted region every step sees the input image's noised latent, so it is reconstructed, not regenerated "
        "(region_feather: soft edge inside the region, in pixels); the composite then restores the original pixels "
        "outside exactly. An unpainted image edits nothing.",
    )
    loader, model, cond, img = edit_inputs(g, IP2P)
    ks = instruct_ksampler(g, 3, model, cond.out(0), cond.out(1), cond.out(2))
    ks.inputs.update(region_mask=img.out(1), region_feather=16)
    region_finish(g, ks.out(0), loader.out(2), img.out(0), img.out(1), 4)
    return g


def instruct_merge() -> Graph:
    g = Graph(
        "instruct_merge",
        "Instruct Merge: edit with your own SD1.5 fine-tune",
        EDIT_NOTE + "\nInstruct Merge adds (your fine-tune - its base) to the instruct model, the first convolution "
        "included, so edits take the fine-tune's look. custom = your SD1.5 fine-tune, base = SD1.5 v1-5. strength "
        "0.5-1.0 (lower keeps more editing ability). To keep the merged model, add core 'Checkpoint Save' after the merge.",
    )

    def merge(loader):
        custom = g.add("CheckpointLoaderSimple", "Fine-tune", 0, 1, ckpt_name="my_sd15_finetune.safetensors")
        base = g.add("CheckpointLoaderSimple", "Base", 0, 1, ckpt_name="v1-5-pruned-emaonly.safetensors")
        merged = g.add("InstructMerge", column=1, row=2, instruct=loader.out(0), custom=custom.out(0), base=base.out(0), strength=1.0)
        return merged.out(0), loader.out(1)

    loader, model, cond, _ = edit_inputs(g, IP2P, patch=merge)
    edit_sampler(g, loader, model, cond)
    return g


GRAPHS = [
    instruct_edit_sd15,
    instruct_edit_sdxl,
    instruct_edit_controlnet,
    instruct_edit_lora,
    instruct_edit_guider,
    ipadapter_sd15,
    instruct_edit_ip_style,
    instruct_edit_mask,
    instruct_edit_region,
    instruct_merge,
]


def thumbnail(graph: Graph, path: Path) -> None:
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
        colour = (86, 120, 200) if node.type in PACK_NODES else (70, 74, 88)
        draw.rounded_rectangle([x, y, x + 226, y + 46], radius=8, fill=colour)
        draw.text((x + 10, y + 14), node.title or node.type, fill=(255, 255, 255), font=font(14))
    img.save(path, "JPEG", quality=88)


def main() -> None:
    from comfy_inprocess import InProcessComfy, find_comfyui

    root, how = find_comfyui()
    if root is None:
        sys.exit(f"make_workflows needs ComfyUI: {how}")
    comfy = InProcessComfy(root, Path(tempfile.mkdtemp(prefix="wf-")))
    object_info = comfy.all_object_info()
    (WORKFLOWS_DIR / "api").mkdir(parents=True, exist_ok=True)
    for make in GRAPHS:
        graph = make()
        (WORKFLOWS_DIR / f"{graph.name}.json").write_text(json.dumps(to_ui(graph, object_info), indent=1) + "\n")
        (WORKFLOWS_DIR / "api" / f"{graph.name}.json").write_text(json.dumps(to_api(graph, object_info), indent=1) + "\n")
        thumbnail(graph, WORKFLOWS_DIR / f"{graph.name}.jpg")
        print(f"wrote {graph.name}")


if __name__ == "__main__":
    main()
