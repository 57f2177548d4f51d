"""An edit-family workflow through the headless runner and the batch, with the usual overrides: the shipped
Qwen-Image-Edit 2511 workflow (its loaders swapped for the tiny family models by ``family_workflows``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import family_workflows
from headless import cli
from instruct_harness import PACK_DIR
from instruct_pictures import write_picture

SHIPPED = PACK_DIR / "workflows" / "api" / "instruct_edit_qwen_image_edit_2511.json"


@pytest.fixture(scope="module")
def workflow(comfy, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("family") / "qwen.json"
    path.write_text(json.dumps(family_workflows.substitute_family(json.loads(SHIPPED.read_text()))))
    return path


def test_the_runner_edits_with_the_overrides_and_returns_the_input_size(comfy, workflow, tmp_path):
    picture = tmp_path / "photo.png"
    write_picture(picture, 3, (45, 61))  # sides that are not multiples of the 16-pixel grid
    out = tmp_path / "edited.png"
    args = [str(workflow), "--image", str(picture), "--instruction", "add snow", "--negative", "blurry", "--seed", "5"]
    assert cli.main([*args, "--image-cfg", "1.5", "--steps", "2", "--quiet", "--output", str(out)]) == 0
    assert Image.open(out).size == (61, 45)  # the pad is cut off: back on the input's grid
    again = tmp_path / "again.png"
    assert cli.main([*args, "--image-cfg", "1.0", "--steps", "2", "--quiet", "--output", str(again)]) == 0
    assert again.read_bytes() != out.read_bytes()  # image_cfg reached the sampler


@pytest.mark.slow
def test_the_batch_runs_the_family_workflow_row_by_row_as_single_runs(comfy, workflow, tmp_path):
    (tmp_path / "img").mkdir()
    rows = []
    for n in range(2):
        write_picture(tmp_path / "img" / f"p{n}.png", n, (40, 56))
        rows.append({"image": f"img/p{n}.png", "instruction": ("make it night", "add fog")[n], "seed": 7 + n})
    manifest = tmp_path / "edits.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert cli.main([str(workflow), "--batch", str(manifest), "--output-dir", str(out), "--steps", "2", "--quiet"]) == 0
    for number, row in enumerate(rows, 1):
        single = tmp_path / f"single{number}.png"
        args = [str(workflow), "--image", str(tmp_path / row["image"]), "--instruction", row["instruction"], "--seed", str(row["seed"])]
        assert cli.main([*args, "--steps", "2", "--quiet", "--output", str(single)]) == 0
        batch_image = next(out.glob(f"{number:05d}_*.png"))
        assert Image.open(batch_image).tobytes() == Image.open(single).tobytes()
