"""The model files of an API prompt: which its loaders name, which are missing, and fetching them.

The runner calls :func:`ensure_models` once, after extra_model_paths are applied and before the
prompt runs. A missing file is reported with the folder it must go in and where to get it (from
the pack's one model manifest, ``model_manifest.json``); with ``--download-missing`` it is fetched
into that ComfyUI model folder: resumably (HTTP Range on ``<name>.part``), renamed only once
complete, and checked against the manifest's size and SHA-256 where it has them.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TextIO

DEFAULT_MANIFEST = Path(__file__).resolve().parents[2] / "model_manifest.json"  # the one manifest the workflows declare their models from
PART_SUFFIX = ".part"
CHUNK = 1 << 20
ATTEMPTS = 3  # connection drops resumed within one run

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


class ModelFilesError(Exception):
    """A model file is missing or could not be fetched; the message says which, where it goes and the fix."""


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


@dataclass(frozen=True)
class Source:
    """A manifest entry: where a file is published and what it must be."""

    url: Optional[str]
    page: Optional[str]
    sha256: Optional[str]
    size: Optional[int]
    gated: bool
    note: str


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


def is_present(f: ModelFile, folder_paths: Any) -> bool:
    if f.folder in FOLDER_KINDS:
        return any(os.path.isdir(os.path.join(d, f.name)) for d in search_dirs(folder_paths, f.folder))
    if f.folder not in folder_paths.folder_names_and_paths:
        return False
    return folder_paths.get_full_path(f.folder, f.name) is not None


def missing_files(api: dict, folder_paths: Any) -> list[ModelFile]:
    return [f for f in referenced_files(api) if not is_present(f, folder_paths)]


# ---- where to get them ---------------------------------------------------------------------------


def load_manifest(path: Optional[os.PathLike | str] = None) -> dict[str, Source]:
    """``{file name: Source}`` from the manifest; {} when the file does not exist."""
    path = Path(path) if path else DEFAULT_MANIFEST
    if not path.is_file():
        return {}
    try:
        models = json.loads(path.read_text())["models"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFilesError(f"cannot read the model manifest {path}: {exc}") from exc
    return {
        name: Source(
            url=e.get("url"),
            page=e.get("page"),
            sha256=(e.get("sha256") or None) and str(e["sha256"]).lower(),
            size=e.get("size"),
            gated=bool(e.get("gated")),
            note=e.get("note") or "",
        )
        for name, e in models.items()
    }


def source_of(f: ModelFile, manifest: dict[str, Source]) -> Optional[Source]:
    return manifest.get(f.name) or manifest.get(Path(f.name).name)


def target_path(f: ModelFile, folder_paths: Any) -> Optional[Path]:
    """Where a fetched file goes: the folder's first (default) directory, as ComfyUI's own downloads do."""
    dirs = search_dirs(folder_paths, f.folder)
    return Path(dirs[0]) / f.name if dirs else None


def _size_text(size: Optional[int]) -> str:
    return f", {size / 1e9:.2f} GB" if size else ""


def missing_message(f: ModelFile, source: Optional[Source], folder_paths: Any, can_download: bool = True) -> str:
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
            f" ({source.url or 'see the page'}{_size_text(source.size)}) by hand and {save_as}."
            " --download-missing cannot fetch gated files."
        )
    how = f"Get it from {source.url}{_size_text(source.size)}" + (f" (page: {source.page})" if source.page else "")
    rerun = " or rerun with --download-missing" if can_download and source.url else ""
    return f"{head}\n  {how} and {save_as},{rerun}." if rerun else f"{head}\n  {how} and {save_as}."


# ---- fetching ------------------------------------------------------------------------------------


class DownloadProgress:
    """A one-line progress bar on stderr: name, bar, MB done / total."""

    def __init__(self, name: str, stream: Optional[TextIO] = None) -> None:
        self.name = name
        self.stream = stream or sys.stderr

    def __call__(self, done: int, total: Optional[int]) -> None:
        if total:
            filled = int(30 * done / total)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {done / 1e6:.1f}/{total / 1e6:.1f} MB"
        else:
            bar = f"{done / 1e6:.1f} MB"
        self.stream.write(f"\rdownloading {self.name} {bar}")
        self.stream.flush()

    def end(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_once(url: str, part: Path, progress: DownloadProgress) -> Optional[int]:
    """One request, appending to ``part`` from its current size; returns the full size when known.

    Raises OSError / http.client errors when the connection drops (the part keeps what arrived).
    """
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "ComfyUI-Instruct model_files"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part is already whole (checked by the caller)
            return have
        raise
    with response:
        length = response.headers.get("Content-Length")
        if have and response.status == 206:
            start = response.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
            if start != str(have):
                raise OSError(f"the server resumed at byte {start}, not {have}")
            mode = "ab"
        else:  # 200: the server sends the whole file (no Range support): start again
            have, mode = 0, "wb"
        total = have + int(length) if length is not None else None
        done = have
        with open(part, mode) as out:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                out.write(block)
                done += len(block)
                progress(done, total)
        if total is not None and done < total:
            raise http.client.IncompleteRead(b"", total - done)
        return total if total is not None else done


def download(url: str, target: Path, source: Optional[Source] = None, stream: Optional[TextIO] = None) -> Path:
    """Fetch ``url`` into ``target`` through ``target.part`` (resumed if present), then verify and rename.

    A size or SHA-256 that differs from the manifest deletes the partial file and raises; a dropped
    connection is resumed up to ATTEMPTS times, then the part is kept for the next run.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + PART_SUFFIX)
    expected = source.size if source else None
    if expected is not None and part.exists() and part.stat().st_size > expected:
        part.unlink()  # longer than the published file: cannot be a prefix of it
    progress = DownloadProgress(target.name, stream)
    error: Optional[BaseException] = None
    try:
        for _ in range(ATTEMPTS):
            try:
                _fetch_once(url, part, progress)
                error = None
                break
            except (OSError, http.client.HTTPException) as exc:
                if isinstance(exc, urllib.error.HTTPError) and exc.code not in (408, 429, 500, 502, 503, 504):
                    raise ModelFilesError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
                error = exc
    finally:
        progress.end()
    if error is not None:
        have = part.stat().st_size if part.exists() else 0
        raise ModelFilesError(
            f"the download of {url} stopped after {have} bytes ({type(error).__name__}: {error}); "
            f"rerun with --download-missing to resume it (the partial file is {part})."
        ) from error
    _verify(part, url, source)
    os.replace(part, target)
    return target


def _verify(part: Path, url: str, source: Optional[Source]) -> None:
    if source is None:
        return
    size = part.stat().st_size
    problem = None
    if source.size is not None and size != source.size:
        problem = f"it is {size} bytes, the published file {source.size}"
    elif source.sha256 and (digest := _sha256(part)) != source.sha256:
        problem = f"its SHA-256 is {digest}, the published one {source.sha256}"
    if problem:
        part.unlink()
        raise ModelFilesError(
            f"the download of {url} is not the published file: {problem}. The partial file was deleted; try again, "
            f"or download it by hand{' from ' + source.page if source.page else ''}."
        )


# ---- the runner's one call -----------------------------------------------------------------------


def ensure_models(
    api: dict,
    folder_paths: Any,
    download_missing: bool = False,
    manifest_path: Optional[os.PathLike | str] = None,
    stream: Optional[TextIO] = None,
) -> list[Path]:
    """Check every model file of ``api``; fetch the missing ones when asked. Returns the files fetched.

    Raises ModelFilesError listing every file that is still missing, with where to get it.
    """
    missing = missing_files(api, folder_paths)
    if not missing:
        return []
    manifest = load_manifest(manifest_path)
    fetched, problems = [], []
    for f in missing:
        source = source_of(f, manifest)
        target = target_path(f, folder_paths)
        fetchable = source is not None and source.url and not source.gated and f.folder not in FOLDER_KINDS and target
        if not (download_missing and fetchable):
            problems.append(missing_message(f, source, folder_paths, can_download=bool(fetchable)))
            continue
        try:
            fetched.append(download(source.url, target, source, stream))
        except ModelFilesError as exc:
            problems.append(f"{f.where}: {exc}")
    if problems:
        raise ModelFilesError("\n".join(problems))
    return fetched


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The runner's options for model files."""
    ap.add_argument(
        "--download-missing",
        action="store_true",
        help="fetch missing model files (from the pack's model manifest) into the right ComfyUI model folder",
    )
    ap.add_argument("--models-manifest", metavar="PATH", help=f"model manifest to read sources from (default: {DEFAULT_MANIFEST})")
