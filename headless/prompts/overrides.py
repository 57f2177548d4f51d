"""What a run changes in a workflow: a typed ``Overrides`` request, built once (from the command line or a
manifest row) and applied to an API prompt.

Overrides find their nodes by title (Instruction, Prompt, Negative, Input image, Reference image) or by
input name (seed, steps, text_cfg, image_cfg); a ``Setting`` sets any input the node has (a typo is an
error listing the node's inputs, never a silently ignored value). Values arrive typed: the command line
parses ``--set`` text once (JSON, else plain text), a JSON Lines row keeps its JSON types, and a CSV cell,
which is only text, is typed by the input it sets (``Setting.text``). ``model`` takes the loader's list
entry or a bare file name that matches exactly one entry.

Pure Python: node schemas come from ``schema(class_type)``, the ``/object_info`` entry of a running
server or of the in-process ComfyUI.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import InputError
from . import formats, titles

SEED_INPUTS = ("seed", "noise_seed")
SAMPLER_TYPES = ("InstructKSampler", "InstructGuider")
MODEL_LOADERS = {"InstructUNetLoader": "model_name", "CheckpointLoaderSimple": "ckpt_name", "UNETLoader": "unet_name"}
#: Text nodes that encode the instruction and the negative in one node: (instruction input, negative input).
PAIRED_TEXT = {"InstructTextEncodeQwenImageEdit": ("prompt", "negative_prompt")}

Schema = Callable[[str], dict]
#: Makes an input image loadable where the prompt runs and returns the name LoadImage takes.
PlaceImage = Callable[[Path], str]


def parse_value(text: str) -> Any:
    """``--set``'s VALUE: JSON when it is JSON (``3``, ``true``, ``"text"``, ``["4", 0]``), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@dataclass(frozen=True)
class Setting:
    """One input set by hand: ``node`` is a node id or title. ``text`` marks a value that is still text
    (a CSV cell), typed by the input's declared type when applied; ``origin`` is how the user wrote it."""

    node: str
    input: str
    value: Any
    origin: str
    text: bool = False

    @classmethod
    def parse(cls, item: str) -> "Setting":
        """``NODE.INPUT=VALUE`` from the command line (VALUE parsed once: JSON, else text)."""
        target, sep, value = item.partition("=")
        node, dot, name = target.rpartition(".")
        if not sep or not dot or not node or not name:
            raise InputError(f"--set {item!r}: use NODE.INPUT=VALUE")
        return cls(node, name, parse_value(value), f"--set {item!r}")

    @classmethod
    def of_target(cls, target: str, value: Any, origin: str, text: bool = False) -> "Setting":
        """``NODE.INPUT`` (a manifest's ``set`` key or ``set:`` column) and its value."""
        node, dot, name = target.rpartition(".")
        if not dot or not node or not name:
            raise InputError(f"{origin}: use NODE.INPUT (a node id or title, a dot, the input name)")
        return cls(node, name, value, origin, text)


@dataclass(frozen=True)
class Overrides:
    """Everything a run may change in a workflow; ``None`` leaves the workflow's value."""

    image: Optional[Path] = None
    reference: Optional[Path] = None
    instruction: Optional[str] = None
    prompt: Optional[str] = None
    negative: Optional[str] = None
    seed: Optional[int] = None
    steps: Optional[int] = None
    text_cfg: Optional[float] = None
    image_cfg: Optional[float] = None
    model: Optional[str] = None
    settings: tuple[Setting, ...] = ()

    def then(self, later: "Overrides") -> "Overrides":
        """These overrides with ``later``'s on top (a manifest row over the command line): its values win,
        its settings apply after these."""
        values = {f.name: getattr(later, f.name) for f in dataclasses.fields(self) if f.name != "settings"}
        values = {k: v for k, v in values.items() if v is not None}
        return dataclasses.replace(self, **values, settings=self.settings + later.settings)


# ---- finding nodes --------------------------------------------------------------------------------


def _by_title(api: dict, title: str) -> list[str]:
    return [k for k, n in api.items() if n.get("_meta", {}).get("title") == title]


def _set_titled(api: dict, title: str, name: str, value: Any, required: bool = True) -> None:
    ids = _by_title(api, title)
    if not ids and required:
        raise InputError(f"the workflow has no node titled '{title}' to take this option")
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


def _declared(schema: dict, name: str) -> Optional[tuple[Any, dict]]:
    for input_name, kind, opts, _optional in formats.input_specs(schema):
        if input_name == name:
            return kind, opts
    return None


def input_names(schema: dict) -> list[str]:
    return [name for name, _kind, _opts, _optional in formats.input_specs(schema)]


def combo_choices(schema: dict, name: str) -> Optional[list]:
    declared = _declared(schema, name)
    return formats.combo_options(*declared) if declared else None


# ---- values ---------------------------------------------------------------------------------------


def typed_text(text: str, kind: Any, where: str) -> Any:
    """A CSV cell's text as the value an input of type ``kind`` takes: STRING and combo inputs take the
    text as it is, INT / FLOAT / BOOLEAN parse it, any other input reads it as JSON (else text), like ``--set``."""
    if isinstance(kind, list) or kind in ("STRING", "COMBO"):
        return text
    stripped = text.strip()
    try:
        if kind == "INT":
            return int(stripped)
        if kind == "FLOAT":
            return float(stripped)
    except ValueError:
        raise InputError(f"{where}: {text!r} is not {'an integer' if kind == 'INT' else 'a number'} (the input is {kind})") from None
    if kind == "BOOLEAN":
        if stripped.lower() not in ("true", "false"):
            raise InputError(f"{where}: {text!r} is not true or false (the input is BOOLEAN)")
        return stripped.lower() == "true"
    return parse_value(text)


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
        raise InputError(f"--model {name} is ambiguous; it matches: {', '.join(matches)}. Pass one of them.")
    names = [c for c in choices if isinstance(c, str)]
    close = difflib.get_close_matches(wanted, names, n=8, cutoff=0.4)
    close += [c for c in names if c not in close and Path(c).name.lower().startswith(Path(wanted).stem.lower()[:4])][: 8 - len(close)]
    hint = f"similar: {', '.join(close)}" if close else f"the loader lists: {', '.join(names[:12])}{' …' if len(names) > 12 else ''}"
    raise InputError(f"--model {name}: no such model file in the loader's list ({hint})")


# ---- applying -------------------------------------------------------------------------------------


def _apply_setting(api: dict, setting: Setting, schema: Optional[Schema]) -> None:
    ids = [setting.node] if setting.node in api else _by_title(api, setting.node)
    if not ids:
        raise InputError(f"{setting.origin}: no node with id or title '{setting.node}'")
    for node_id in ids:
        node = api[node_id]
        node_schema = schema(node["class_type"]) if schema is not None else {}
        declared = _declared(node_schema, setting.input)
        if setting.input not in node["inputs"] and declared is None:
            listed = input_names(node_schema) or sorted(node["inputs"])
            raise InputError(
                f"{setting.origin}: node {node_id} ({node['class_type']}) has no input '{setting.input}'; its inputs: {', '.join(listed)}"
            )
        value = setting.value
        if setting.text:
            value = typed_text(value, declared[0] if declared else None, setting.origin)
        node["inputs"][setting.input] = copy.deepcopy(value)


def apply_overrides(api: dict, overrides: Overrides, place_image: PlaceImage, schema: Optional[Schema] = None) -> dict:
    """A copy of ``api`` with ``overrides`` applied. ``place_image(path)`` makes a file loadable and returns
    its name; ``schema(class_type)`` gives node schemas (checks of settings and of ``model``, the typing of
    text values; skipped without it)."""
    api = copy.deepcopy(api)
    adapters = [n for n in api.values() if n["class_type"] == "IPAdapterInstructApply"]
    paired = [n for n in api.values() if n["class_type"] in PAIRED_TEXT]
    if overrides.instruction is not None:
        for node in paired:  # titled Instruction: its instruction input is not 'text'
            node["inputs"][PAIRED_TEXT[node["class_type"]][0]] = overrides.instruction
        plain = [i for i in _by_title(api, titles.INSTRUCTION) if api[i]["class_type"] not in PAIRED_TEXT]
        if not plain and not paired:
            raise InputError(f"the workflow has no node titled '{titles.INSTRUCTION}' to take this option")
        for node_id in plain:
            api[node_id]["inputs"]["text"] = overrides.instruction
        if not _by_title(api, titles.PROMPT):
            for node in adapters:  # the adapter reads the same text as the generation
                node["inputs"]["prompt"] = overrides.instruction
    if overrides.prompt is not None:
        _set_titled(api, titles.PROMPT, "text", overrides.prompt, required=not adapters)
        for node in adapters:
            node["inputs"]["prompt"] = overrides.prompt
    if overrides.negative is not None:
        for node in paired:
            node["inputs"][PAIRED_TEXT[node["class_type"]][1]] = overrides.negative
        _set_titled(api, titles.NEGATIVE, "text", overrides.negative, required=not paired)
        for node in adapters:
            node["inputs"]["negative_prompt"] = overrides.negative
    for path, title in ((overrides.image, titles.IMAGE), (overrides.reference, titles.REFERENCE)):
        if path is not None:
            if not _by_title(api, title):
                raise InputError(f"the workflow has no node titled '{title}' to take this option")
            if not Path(path).is_file():
                raise InputError(f"image file not found: {path}")
            _set_titled(api, title, "image", place_image(Path(path)))
    if overrides.seed is not None and not _set_inputs(api, SEED_INPUTS, overrides.seed):
        raise InputError("the workflow has no seed input")
    if overrides.steps is not None and not _set_inputs(api, ("steps",), overrides.steps):
        raise InputError("the workflow has no steps input")
    if overrides.text_cfg is not None and not _set_inputs(api, ("text_cfg",), overrides.text_cfg, SAMPLER_TYPES):
        raise InputError("the workflow has no Instruct KSampler / Instruct Guider for --text-cfg")
    if overrides.image_cfg is not None and not _set_inputs(api, ("image_cfg",), overrides.image_cfg, SAMPLER_TYPES):
        raise InputError("the workflow has no Instruct KSampler / Instruct Guider for --image-cfg")
    if overrides.model is not None:
        loaders = [n for n in api.values() if n["class_type"] in MODEL_LOADERS]
        if not loaders:
            raise InputError("the workflow has no model loader for --model")
        key = MODEL_LOADERS[loaders[0]["class_type"]]
        choices = combo_choices(schema(loaders[0]["class_type"]), key) if schema is not None else None
        loaders[0]["inputs"][key] = resolve_model(overrides.model, choices)
    for setting in overrides.settings:
        _apply_setting(api, setting, schema)
    return api
