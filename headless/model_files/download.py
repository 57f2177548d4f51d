"""Fetching one published model file: resumable across runs, verified, renamed only when whole.

The file grows as ``<name>.part``, continued with an HTTP Range request after a dropped connection or in
a later run (huggingface_hub no longer resumes across processes); it is checked against the manifest's
size and SHA-256 where it has them and only then renamed into place. A gated file (a licence to accept
first) is fetched with the Hugging Face token in ``HF_TOKEN``; the token is sent to Hugging Face only,
and never along a redirect (the file itself comes from a signed CDN address).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from .errors import ModelFilesError
from .manifest import ModelEntry

PART_SUFFIX = ".part"
CHUNK = 1 << 20
ATTEMPTS = 3  # connection drops resumed within one run
RETRIED_STATUS = (408, 429, 500, 502, 503, 504)
TOKEN_ENV = "HF_TOKEN"
#: Hosts a Hugging Face token may be sent to.
TOKEN_HOSTS = frozenset({"huggingface.co", "hf.co"})


def hf_token() -> Optional[str]:
    """The Hugging Face token of the environment, if one is set."""
    return os.environ.get(TOKEN_ENV) or None


def takes_token(url: str) -> bool:
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in TOKEN_HOSTS)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_once(url: str, part: Path, token: Optional[str], bar: Optional[tqdm]) -> None:
    """One request, appending to ``part`` from its current size.

    Raises OSError / http.client errors when the connection drops (the part keeps what arrived)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "ComfyUI-Instruct model_files"})
    if token:
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part is already whole (checked by the caller)
            return
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
        if bar is not None:
            bar.reset(total=total)
            bar.update(have)
        done = have
        with open(part, mode) as out:
            while block := response.read(CHUNK):
                out.write(block)
                done += len(block)
                if bar is not None:
                    bar.update(len(block))
        if total is not None and done < total:
            raise http.client.IncompleteRead(b"", total - done)


def _refused(url: str, exc: urllib.error.HTTPError, entry: Optional[ModelEntry], token: Optional[str]) -> ModelFilesError:
    if exc.code in (401, 403) and entry is not None and entry.gated:
        page = entry.page or url
        if token:
            return ModelFilesError(
                f"Hugging Face refused the token in {TOKEN_ENV} for {url} (HTTP {exc.code}): accept the licence on {page} "
                "with the account of that token (or use a token with read access), then rerun."
            )
        return ModelFilesError(f"{url} needs a Hugging Face login (HTTP {exc.code}): accept the licence on {page}, set {TOKEN_ENV}, rerun.")
    return ModelFilesError(f"cannot download {url}: HTTP {exc.code} {exc.reason}")


def download(url: str, target: Path, entry: Optional[ModelEntry] = None, *, token: Optional[str] = None, progress: bool = True) -> Path:
    """Fetch ``url`` into ``target`` through ``target.part`` (resumed if present), then verify and rename.

    A size or SHA-256 that differs from the manifest deletes the partial file and raises; a dropped
    connection is resumed up to ATTEMPTS times, then the part is kept for the next run. ``token`` is
    sent only to Hugging Face (see the module doc)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + PART_SUFFIX)
    expected = entry.size if entry else None
    if expected is not None and part.exists() and part.stat().st_size > expected:
        part.unlink()  # longer than the published file: cannot be a prefix of it
    token = token if token and takes_token(url) else None
    bar = tqdm(desc=f"downloading {target.name}", total=expected, unit="B", unit_scale=True, unit_divisor=1024) if progress else None
    error: Optional[BaseException] = None
    try:
        for _ in range(ATTEMPTS):
            try:
                _fetch_once(url, part, token, bar)
                error = None
                break
            except (OSError, http.client.HTTPException) as exc:
                if isinstance(exc, urllib.error.HTTPError) and exc.code not in RETRIED_STATUS:
                    raise _refused(url, exc, entry, token) from exc
                error = exc
    finally:
        if bar is not None:
            bar.close()
    if error is not None:
        have = part.stat().st_size if part.exists() else 0
        raise ModelFilesError(
            f"the download of {url} stopped after {have} bytes ({type(error).__name__}: {error}); "
            f"rerun with --download-missing to resume it (the partial file is {part})."
        ) from error
    _verify(part, url, entry)
    os.replace(part, target)
    return target


def _verify(part: Path, url: str, entry: Optional[ModelEntry]) -> None:
    if entry is None:
        return
    size = part.stat().st_size
    problem = None
    if entry.size is not None and size != entry.size:
        problem = f"it is {size} bytes, the published file {entry.size}"
    elif entry.sha256 and (digest := _sha256(part)) != entry.sha256:
        problem = f"its SHA-256 is {digest}, the published one {entry.sha256}"
    if problem:
        part.unlink()
        raise ModelFilesError(
            f"the download of {url} is not the published file: {problem}. The partial file was deleted; try again, "
            f"or download it by hand{' from ' + entry.page if entry.page else ''}."
        )
