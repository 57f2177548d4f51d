"""A batch's rows as prompts any backend can run: each row's overrides (over the command line's) applied
to the workflow, with its input images still tokens until the worker that runs the row places them
(``add_image``) and fills in its own names (``fill_tokens``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..prompts.overrides import Overrides, Schema, apply_overrides
from .manifest import ManifestError, Row

TOKEN_PREFIX = "@instruct-batch-input/"  # stands for an input image until a worker has placed it


@dataclass
class Job:
    """A row ready for any backend: its API prompt and the input files the prompt names."""

    row: Row
    prompt: dict
    files: dict[str, Path]  # token standing in the prompt for an input image -> the file on this machine


def build_jobs(api: dict, rows: list[Row], base: Overrides, schema: Schema, source: str = "manifest") -> list[Job]:
    """Every row's API prompt (the command line's ``base`` overrides, the row's on top); every row the
    workflow refuses is listed in one ``ManifestError``."""
    jobs, problems = [], []
    for row in rows:
        files: dict[str, Path] = {}

        def place(path: Path, files: dict[str, Path] = files, number: int = row.number) -> str:  # placed later, by the worker
            token = f"{TOKEN_PREFIX}{number}/{len(files)}"
            files[token] = Path(path)
            return token

        try:
            prompt = apply_overrides(api, base.then(row.overrides()), place, schema)
        except InputError as exc:
            problems.append(f"row {row.number}: {exc}")
            continue
        jobs.append(Job(row=row, prompt=prompt, files=files))
    if problems:
        raise ManifestError(source, problems)
    return jobs


def fill_tokens(prompt: dict, names: dict[str, str]) -> dict:
    """The prompt with each input-image token replaced by the worker's name for that image."""
    out = copy.deepcopy(prompt)
    for node in out.values():
        for key, value in node.get("inputs", {}).items():
            if isinstance(value, str) and value in names:
                node["inputs"][key] = names[value]
    return out
