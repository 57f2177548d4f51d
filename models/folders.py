"""Model folders: where instruct UNets and IPAdapter-Instruct weights are found.

Instruct UNets live in core folders (``checkpoints``, ``diffusion_models``, ``diffusers``); the
adapter weights in ``ipadapter``, the folder the IPAdapter packs use, registered here only when
absent and without discarding paths that ``extra_model_paths.yaml`` already added.
"""

from __future__ import annotations

import os

import folder_paths

from .errors import InstructModelError

IPADAPTER_FOLDER = "ipadapter"
IPADAPTER_EXTENSIONS = {".bin", ".safetensors", ".pt", ".pth", ".ckpt", ".sft"}

#: Folders the instruct loader lists, in the order they appear in its combo.
FILE_SOURCES = ("checkpoints", "diffusion_models")
FOLDER_SOURCE = "diffusers"
DIFFUSERS_WEIGHT_NAMES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
)


def register_ipadapter_folder() -> None:
    """Make sure ``ipadapter`` exists with explicit extensions, keeping any configured paths.

    ``add_model_folder_path`` on an unknown key would create it with an empty extension set, which
    ComfyUI reads as "list every file"; so the extensions are always set explicitly.
    """
    registry = folder_paths.folder_names_and_paths
    if IPADAPTER_FOLDER in registry:
        paths, extensions = registry[IPADAPTER_FOLDER]
        merged = set(extensions) | IPADAPTER_EXTENSIONS
        registry[IPADAPTER_FOLDER] = (paths, merged)
    else:
        registry[IPADAPTER_FOLDER] = ([os.path.join(folder_paths.models_dir, IPADAPTER_FOLDER)], set(IPADAPTER_EXTENSIONS))


def _is_diffusers_unet_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and any(
        os.path.isfile(os.path.join(path, name)) for name in DIFFUSERS_WEIGHT_NAMES
    )


def _diffusers_dirs() -> list[str]:
    """Pipeline folders (``model_index.json``) and stand-alone UNet folders under ``diffusers``."""
    found: list[str] = []
    for root_dir in folder_paths.get_folder_paths(FOLDER_SOURCE):
        if not os.path.isdir(root_dir):
            continue
        for current, subdirs, files in os.walk(root_dir, followlinks=True):
            if "model_index.json" in files or _is_diffusers_unet_dir(current):
                found.append(os.path.relpath(current, root_dir).replace(os.sep, "/"))
                subdirs[:] = []  # a pipeline's own unet/, vae/ … are not listed separately
    return sorted(set(found))


def list_instruct_sources() -> list[str]:
    """Combo entries ``<folder>/<name>`` for every candidate instruct model."""
    entries = [f"{folder}/{name}" for folder in FILE_SOURCES for name in folder_paths.get_filename_list(folder)]
    entries += [f"{FOLDER_SOURCE}/{name}" for name in _diffusers_dirs()]
    return entries


def resolve_source(entry: str) -> str:
    """Absolute path of a combo entry; a clear error when the file or folder is gone."""
    folder, _, name = entry.partition("/")
    path = None
    if folder in FILE_SOURCES and name:
        path = folder_paths.get_full_path(folder, name)
    elif folder == FOLDER_SOURCE and name:
        for root_dir in folder_paths.get_folder_paths(FOLDER_SOURCE):
            candidate = os.path.join(root_dir, name)
            if os.path.isdir(candidate):
                path = candidate
                break
    if path is None:
        raise InstructModelError(
            f"Model '{entry}' was not found. Put the file in models/checkpoints or models/diffusion_models "
            "(or the folder in models/diffusers), then refresh the page and pick it again."
        )
    return path
