"""The runner's command-line overrides, applied to an API prompt.

Overrides find their nodes by title (Instruction, Prompt, Negative, Input image, Reference image,
Save) or by input name (seed, steps, text_cfg, image_cfg); ``--set NODE.INPUT=VALUE`` sets
anything, but only inputs the node has (a typo is an error listing the node's inputs, not a
silently ignored value). ``--model`` takes the loader's list entry or a bare file name that
matches exactly one entry. Pure Python: the node schemas come from ``schema(class_type)``, the
``/object_info`` entry of a running server or of the in-process ComfyUI.
"""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path
from typing import Any, Callable, Optional

from . import formats as wf
from . import titles
from .checks import EXIT_INPUT, RunError

SEED_INPUTS = ("seed", "noise_seed")
SAMPLER_TYPES = ("InstructKSampler", "InstructGuider")
MODEL_LOADERS = {"InstructUNetLoader": "model_name", "CheckpointLoaderSimple": "ckpt_name"}

Schema = Callable[[str], dict]


def _by_title(api: dict, title: str) -> list[str]:
    return [k for k, n in api.items() if n.get("_meta", {}).get("title") == title]


def _set_titled(api: dict, title: str, name: str, value: Any, required: bool = True) -> None:
    ids = _by_title(api, title)
    if not ids and required:
        raise RunError(f"the workflow has no node titled '{title}' to take this option", EXIT_INPUT)
    for node_id in ids:
        api[node_id]["inputs"][name] = value


def _set_inputs(api: dict, names: tuple[str, ...], value: Any, types: Optional[tuple[str, ...]] = None) -> int:
    count = 0
    for node in api.values():
        if types is not None and node["class_type"] not in types:
            continue
        for name in names:
            if name in node["inputs"] and not isinstance(node["inputs"][name], list):
                node["inputs"][name] = value
                count += 1
    return count


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def input_names(schema: dict) -> list[str]:
    return [name for name, _kind, _opts, _optional in wf.input_specs(schema)]


def combo_choices(schema: dict, name: str) -> Optional[list]:
    for input_name, kind, opts, _optional in wf.input_specs(schema):
        if input_name == name:
            return wf.combo_options(kind, opts)
    return None


def resolve_model(name: str, choices: Optional[list]) -> str:
    """The loader's entry for ``name``: itself when listed, else the one entry with that file name
    (``photo-edit.safetensors`` → ``checkpoints/photo-edit.safetensors``); ambiguous or unknown
    names are errors that list the candidates."""
    if not choices or name in choices:
        return name
    wanted = name.replace("\\", "/").strip("/")
    matches = [c for c in choices if isinstance(c, str) and (c.replace("\\", "/") == wanted or c.replace("\\", "/").endswith("/" + wanted))]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise RunError(f"--model {name} is ambiguous; it matches: {', '.join(matches)}. Pass one of them.", EXIT_INPUT)
    names = [c for c in choices if isinstance(c, str)]
    close = difflib.get_close_matches(wanted, names, n=8, cutoff=0.4)
    close += [c for c in names if c not in close and Path(c).name.lower().startswith(Path(wanted).stem.lower()[:4])][: 8 - len(close)]
    hint = f"similar: {', '.join(close)}" if close else f"the loader lists: {', '.join(names[:12])}{' …' if len(names) > 12 else ''}"
    raise RunError(f"--model {name}: no such model file in the loader's list ({hint})", EXIT_INPUT)


def add_override_arguments(ap: argparse.ArgumentParser, every_row: bool = False) -> None:
    """The overrides a single run and a batch share (a batch applies them to every row; a row's own
    value wins), so both command lines offer the same names and meanings."""
    rows = " (rows without their own)" if every_row else ""
    ap.add_argument("--reference", help=f"reference image for IPAdapter-Instruct (node titled '{titles.REFERENCE}'){rows}")
    ap.add_argument("--instruction", help=f"the edit instruction (node titled '{titles.INSTRUCTION}'){rows}")
    ap.add_argument("--prompt", help=f"the prompt (node titled '{titles.PROMPT}'; also IPAdapter-Instruct's prompt){rows}")
    ap.add_argument("--negative", help=f"the negative prompt (node titled '{titles.NEGATIVE}'){rows}")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--text-cfg", type=float)
    ap.add_argument("--image-cfg", type=float)
    ap.add_argument("--model", help="model as the loader lists it (checkpoints/my-ip2p.safetensors) or its bare file name when unique")
    ap.add_argument("--set", action="append", metavar="NODE.INPUT=VALUE", help="set any input of a node (repeatable)")
    ap.add_argument("--extra-model-paths", help="extra_model_paths.yaml for in-process (and Ray) runs")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--verbose", action="store_true", help="show ComfyUI's start-up log and import warnings")


def apply_overrides(api: dict, opts: argparse.Namespace, place_image: Callable[[str], str], schema: Optional[Schema] = None) -> dict:
    """Apply the command-line overrides to a copy of ``api``; ``place_image(path)`` makes a file
    loadable and returns its name; ``schema(class_type)`` gives node schemas (``--set`` and
    ``--model`` checks; skipped without it)."""
    api = json.loads(json.dumps(api))
    adapters = [n for n in api.values() if n["class_type"] == "IPAdapterInstructApply"]
    if opts.instruction is not None:
        _set_titled(api, titles.INSTRUCTION, "text", opts.instruction)
        if not _by_title(api, titles.PROMPT):
            for node in adapters:  # the adapter reads the same text as the generation
                node["inputs"]["prompt"] = opts.instruction
    if opts.prompt is not None:
        _set_titled(api, titles.PROMPT, "text", opts.prompt, required=not adapters)
        for node in adapters:
            node["inputs"]["prompt"] = opts.prompt
    if opts.negative is not None:
        _set_titled(api, titles.NEGATIVE, "text", opts.negative)
        for node in adapters:
            node["inputs"]["negative_prompt"] = opts.negative
    for flag, title in ((opts.image, titles.IMAGE), (opts.reference, titles.REFERENCE)):
        if flag is not None:
            if not _by_title(api, title):
                raise RunError(f"the workflow has no node titled '{title}' to take this option", EXIT_INPUT)
            if not Path(flag).is_file():
                raise RunError(f"image file not found: {flag}", EXIT_INPUT)
            _set_titled(api, title, "image", place_image(flag))
    if opts.seed is not None and not _set_inputs(api, SEED_INPUTS, opts.seed):
        raise RunError("the workflow has no seed input", EXIT_INPUT)
    if opts.steps is not None and not _set_inputs(api, ("steps",), opts.steps):
        raise RunError("the workflow has no steps input", EXIT_INPUT)
    if opts.text_cfg is not None and not _set_inputs(api, ("text_cfg",), opts.text_cfg, SAMPLER_TYPES):
        raise RunError("the workflow has no Instruct KSampler / Instruct Guider for --text-cfg", EXIT_INPUT)
    if opts.image_cfg is not None and not _set_inputs(api, ("image_cfg",), opts.image_cfg, SAMPLER_TYPES):
        raise RunError("the workflow has no Instruct KSampler / Instruct Guider for --image-cfg", EXIT_INPUT)
    if opts.model is not None:
        loaders = [n for n in api.values() if n["class_type"] in MODEL_LOADERS]
        if not loaders:
            raise RunError("the workflow has no model loader for --model", EXIT_INPUT)
        key = MODEL_LOADERS[loaders[0]["class_type"]]
        choices = combo_choices(schema(loaders[0]["class_type"]), key) if schema is not None else None
        loaders[0]["inputs"][key] = resolve_model(opts.model, choices)
    for item in opts.set or []:
        target, sep, value = item.partition("=")
        node_ref, dot, name = target.rpartition(".")
        if not sep or not dot or not name:
            raise RunError(f"--set {item!r}: use NODE.INPUT=VALUE", EXIT_INPUT)
        ids = [node_ref] if node_ref in api else _by_title(api, node_ref)
        if not ids:
            raise RunError(f"--set {item!r}: no node with id or title '{node_ref}'", EXIT_INPUT)
        for node_id in ids:
            node = api[node_id]
            known = set(node["inputs"])
            declared = input_names(schema(node["class_type"])) if schema is not None else []
            if name not in known and name not in declared:
                listed = declared or sorted(known)
                raise RunError(
                    f"--set {item!r}: node {node_id} ({node['class_type']}) has no input '{name}'; its inputs: {', '.join(listed)}",
                    EXIT_INPUT,
                )
            node["inputs"][name] = _parse_value(value)
    return api


def to_api(workflow: Any, schema: Schema, where: str) -> dict:
    """An API prompt from a workflow file's content (API as is, UI converted with the schemas)."""
    if not (isinstance(workflow, dict) and wf.is_ui(workflow)):
        return workflow
    nodes = workflow["nodes"]
    if not all(isinstance(n, dict) and isinstance(n.get("type"), str) for n in nodes):
        raise RunError("the UI workflow has a node that is not an object with a 'type'", EXIT_INPUT)
    types = sorted({n["type"] for n in nodes} - wf.UI_ONLY_TYPES)
    schemas = {t: schema(t) for t in types}
    missing = [t for t in types if not schemas[t]]
    if missing:
        raise RunError(f"{where} lacks node types: {', '.join(missing)}. Install the pack that provides them.", EXIT_INPUT)
    try:
        return wf.ui_to_api(workflow, schemas)
    except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
        raise RunError(f"the UI workflow is malformed ({type(exc).__name__}: {exc}); re-export it from ComfyUI", EXIT_INPUT) from exc
