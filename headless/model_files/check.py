"""The model files of API prompts: which their loaders name, which are missing, and getting them.

A run calls :func:`ensure_models` once, after extra_model_paths are applied and before the prompt runs (a
batch: once for all its rows, before any row). A missing file is reported with the folder it must go in
and where to get it (from the model manifest); with ``download_missing`` it is fetched into that ComfyUI
model folder (``download``). A gated file is fetched only with a Hugging Face token (``HF_TOKEN``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from . import download as fetch
from .errors import ModelFilesError
from .manifest import ModelEntry, ModelManifest

#: class_type → {input: ComfyUI model folder}; None: the value carries its folder as a prefix ("checkpoints/…").
LOADER_INPUTS: dict[str, dict[str, Optional[str]]] = {
    "CheckpointLoaderSimple": {"ckpt_name": "checkpoints"},
    "CheckpointLoader": {"ckpt_name": "checkpoints", "config_name": "configs"},
    "ImageOnlyCheckpointLoader": {"ckpt_name": "checkpoints"},
    "unCLIPCheckpointLoader": {"ckpt_name": "checkpoints"},
    "UNETLoader": {"unet_name": "diffusion_models"},
    "VAELoader": {"vae_name": "vae"},
    "LoraLoader": {"lora_name": "loras"},
    "LoraLoaderModelOnly": {"lora_name": "loras"},
    "ControlNetLoader": {"control_net_name": "controlnet"},
    "DiffControlNetLoader": {"control_net_name": "controlnet"},
    "CLIPVisionLoader": {"clip_name": "clip_vision"},
    "CLIPLoader": {"clip_name": "text_encoders"},
    "DualCLIPLoader": {"clip_name1": "text_encoders", "clip_name2": "text_encoders"},
    "TripleCLIPLoader": {"clip_name1": "text_encoders", "clip_name2": "text_encoders", "clip_name3": "text_encoders"},
    "QuadrupleCLIPLoader": {f"clip_name{i}": "text_encoders" for i in range(1, 5)},
    "UpscaleModelLoader": {"model_name": "upscale_models"},
    "StyleModelLoader": {"style_model_name": "style_models"},
    "GLIGENLoader": {"gligen_name": "gligen"},
    "HypernetworkLoader": {"hypernetwork_name": "hypernetworks"},
    # this pack
    "InstructUNetLoader": {"model_name": None},
    "IPAdapterInstructLoader": {"ipadapter_file": "ipadapter"},
}
#: VAELoader entries that core assembles from vae_approx files (or needs none for).
BUILT_IN_VAES = frozenset({"taesd", "taesdxl", "taesd3", "taef1", "pixel_space"})
#: Instruct UNet Loader's diffusers entries are folders, not files.
FOLDER_KINDS = frozenset({"diffusers"})


@dataclass(frozen=True)
class ModelFile:
    """One model file (or diffusers folder) a loader input of the prompt names."""

    node_id: str
    class_type: str
    input: str
    folder: str  # ComfyUI model folder kind: checkpoints, loras, …
    name: str  # path relative to that folder, as ComfyUI lists it

    @property
    def where(self) -> str:
        return f"node {self.node_id} ({self.class_type}.{self.input})"


# ---- which files ---------------------------------------------------------------------------------


def referenced_files(api: dict) -> list[ModelFile]:
    """Every model file named by a constant loader input of the prompt, in node order, once each."""
    seen: set[tuple[str, str]] = set()
    files = []
    for node_id, node in api.items():
        inputs = LOADER_INPUTS.get(node.get("class_type", ""), {})
        for name, folder in inputs.items():
            value = node.get("inputs", {}).get(name)
            if not isinstance(value, str) or not value:
                continue  # a link, or unset
            if node["class_type"] == "VAELoader" and value in BUILT_IN_VAES:
                continue
            if folder is None:
                folder, _, value = value.partition("/")
                if not value:
                    continue
            if (folder, value) not in seen:
                seen.add((folder, value))
                files.append(ModelFile(str(node_id), node["class_type"], name, folder, value))
    return files


def search_dirs(folder_paths: Any, folder: str) -> list[str]:
    """The directories ComfyUI searches for ``folder`` (extra_model_paths included); [] if unknown."""
    if folder not in folder_paths.folder_names_and_paths:
        return []
    return list(folder_paths.get_folder_paths(folder))


def locate(f: ModelFile, folder_paths: Any) -> Optional[Path]:
    """Where ComfyUI finds the file (or diffusers folder), or None."""
    if f.folder in FOLDER_KINDS:
        found = [Path(d) / f.name for d in search_dirs(folder_paths, f.folder) if os.path.isdir(os.path.join(d, f.name))]
        return found[0] if found else None
    if f.folder not in folder_paths.folder_names_and_paths:
        return None
    path = folder_paths.get_full_path(f.folder, f.name)
    return Path(path) if path else None


# ---- where to get them ---------------------------------------------------------------------------


def target_path(f: ModelFile, folder_paths: Any) -> Optional[Path]:
    """Where a fetched file goes: the folder's first (default) directory, as ComfyUI's own downloads do."""
    dirs = search_dirs(folder_paths, f.folder)
    return Path(dirs[0]) / f.name if dirs else None


def _size_text(size: Optional[int]) -> str:
    return f", {size / 1e9:.2f} GB" if size else ""


def missing_message(f: ModelFile, source: Optional[ModelEntry], folder_paths: Any, can_download: bool = True) -> str:
    """What is missing, where it must go and how to get it."""
    dirs = search_dirs(folder_paths, f.folder)
    kind = "folder" if f.folder in FOLDER_KINDS else "file"
    head = f"missing model {kind} '{f.name}' ({f.where}): not in ComfyUI's '{f.folder}' folder"
    head += f" ({', '.join(dirs)})." if dirs else " (ComfyUI does not know this folder; is the node's pack installed?)."
    target = target_path(f, folder_paths)
    save_as = f"save it as {target}" if target else f"put it in models/{f.folder}"
    if source is None or not (source.url or source.page):
        return f"{head}\n  It is not in the pack's model manifest: get it yourself and {save_as}, or pick another with --model / --set."
    if source.gated:
        return (
            f"{head}\n  It is gated: log in on {source.page or source.url}, accept the licence, download it"
            f" ({source.url or 'see the page'}{_size_text(source.size)}) by hand and {save_as}; or set {fetch.TOKEN_ENV} to a"
            " Hugging Face token of the account that accepted it and rerun with --download-missing."
        )
    how = f"Get it from {source.url}{_size_text(source.size)}" + (f" (page: {source.page})" if source.page else "")
    rerun = " or rerun with --download-missing" if can_download and source.url else ""
    return f"{head}\n  {how} and {save_as},{rerun}." if rerun else f"{head}\n  {how} and {save_as}."


# ---- getting them ----------------------------------------------------------------------------------


def _fetchable(f: ModelFile, source: Optional[ModelEntry], target: Optional[Path], token: Optional[str]) -> bool:
    if source is None or not source.url or f.folder in FOLDER_KINDS or target is None:
        return False
    return not source.gated or bool(token and fetch.takes_token(source.url))


def present(prompts: Iterable[dict], folder_paths: Any) -> list[tuple[ModelFile, Optional[Path]]]:
    """Every model file the prompts name, once each, with where ComfyUI finds it (None: missing)."""
    seen: set[tuple[str, str]] = set()
    found = []
    for api in prompts:
        for f in referenced_files(api):
            if (f.folder, f.name) in seen:
                continue
            seen.add((f.folder, f.name))
            found.append((f, locate(f, folder_paths)))
    return found


def ensure_models(
    prompts: Iterable[dict],
    folder_paths: Any,
    download_missing: bool = False,
    manifest: Optional[ModelManifest] = None,
    progress: bool = True,
) -> list[Path]:
    """Check every model file the prompts name; fetch the missing ones when asked. Returns the files fetched.

    Raises ModelFilesError listing every file that is still missing, with where to get it."""
    missing = [f for f, where in present(prompts, folder_paths) if where is None]
    if not missing:
        return []
    manifest = manifest if manifest is not None else ModelManifest.load()
    token = fetch.hf_token()
    fetched, problems = [], []
    for f in missing:
        source = manifest.source_of(f.name)
        target = target_path(f, folder_paths)
        fetchable = _fetchable(f, source, target, token)
        if not (download_missing and fetchable):
            problems.append(missing_message(f, source, folder_paths, can_download=fetchable))
            continue
        try:
            fetched.append(fetch.download(source.url, target, source, token=token if source.gated else None, progress=progress))
        except ModelFilesError as exc:
            problems.append(f"{f.where}: {exc}")
    if problems:
        raise ModelFilesError("\n".join(problems))
    return fetched
