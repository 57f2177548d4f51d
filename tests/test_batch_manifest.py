"""The batch manifest and results log without ComfyUI: parsing, whole-manifest refusal, seeds,
output names, rows as typed overrides and prompts, resume bookkeeping, the progress bar."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest


from headless.batch import jobs as bj
from headless.batch import manifest as bm
from headless.batch import results as br
from headless.cli.progress import BatchBar
from headless.prompts.overrides import Overrides, Setting


def images(tmp_path: Path, *names: str) -> None:
    for name in names:
        (tmp_path / name).write_bytes(b"\x89PNG fake " + name.encode())


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_rows_are_typed_and_named(tmp_path):
    images(tmp_path, "a.png", "b.jpg", "ref.png")
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"image": "a.png", "instruction": "make it night", "seed": 5, "steps": "3", "text_cfg": 6.5, "set": {"6.denoise": 0.9}},
            "# a comment line is not a row",
            "",
            {"image": "b.jpg", "reference": "ref.png", "image_cfg": "1.25", "output": "custom.png"},
        ],
    )
    first, second = bm.load_manifest(manifest, base_seed=7)
    assert (first.number, first.image, first.seed, first.steps, first.text_cfg) == (1, tmp_path / "a.png", 5, 3, 6.5)
    assert first.output == "00001_a.png" and first.instruction == "make it night"
    assert first.settings == (Setting("6", "denoise", 0.9, "set '6.denoise'"),)
    assert (second.number, second.output, second.reference, second.image_cfg) == (2, "custom.png", tmp_path / "ref.png", 1.25)
    assert second.seed == bm.derive_seed(7, 2)


def test_csv_rows_with_set_columns(tmp_path):
    images(tmp_path, "a.png", "b.png")
    (tmp_path / "m.csv").write_text(
        'image,instruction,seed,set:6.sampler_name,set:Save.filename_prefix\na.png,"add snow, lots",3,euler,x\nb.png,,,,\n'
    )
    first, second = bm.load_manifest(tmp_path / "m.csv")
    assert first.instruction == "add snow, lots" and first.seed == 3
    assert [(x.node, x.input, x.value, x.text) for x in first.settings] == [
        ("6", "sampler_name", "euler", True),  # text, typed by the input it sets when the row becomes a prompt
        ("Save", "filename_prefix", "x", True),
    ]
    assert second.instruction is None and second.settings == () and second.seed == bm.derive_seed(0, 2)


def test_derived_seeds_are_reproducible_and_distinct():
    seeds = [bm.derive_seed(1, n) for n in range(1, 200)]
    assert seeds == [bm.derive_seed(1, n) for n in range(1, 200)]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < bm.SEED_LIMIT for s in seeds)
    assert bm.derive_seed(2, 1) != bm.derive_seed(1, 1)


def test_every_bad_row_is_listed(tmp_path):
    images(tmp_path, "a.png")
    manifest = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"image": "a.png"},  # fine
            {"instruction": "no image"},
            {"image": "missing.png"},
            {"image": "a.png", "seed": -1, "steps": 0, "text_cfg": "NaN", "image_cfg": "high"},
            {"image": "a.png", "colour": "red", "set": {"nodot": 1}},
            {"image": "a.png", "output": "../escape.png"},
            {"image": "a.png", "output": "picture.jpg"},
            "{not json",
            ["a", "list"],
            {"image": "a.png", "output": "00001_a.png"},  # the first row's default name
        ],
    )
    with pytest.raises(bm.ManifestError) as info:
        bm.load_manifest(manifest)
    text = "\n".join(info.value.problems)
    for expected in (
        "row 2: 'image' is required",
        "row 3: image file not found",
        "row 4: seed must be at least 0",
        "row 4: steps must be at least 1",
        "row 4: text_cfg must be a finite number",
        "row 4: image_cfg must be a number",
        "row 5: unknown column(s) colour",
        "row 5: set 'nodot': use NODE.INPUT",
        "row 6: output '../escape.png' must be a plain file name",
        "row 7: output 'picture.jpg' must end in .png",
        "row 8: not valid JSON",
        "row 9: a row must be an object",
        "row 10: output '00001_a.png' is also row 1's",
    ):
        assert expected in text, f"{expected!r} missing from:\n{text}"
    assert not [p for p in info.value.problems if p.startswith("row 1:")]
    assert "nothing was run" in str(info.value)


def test_empty_and_unreadable_manifests(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n# only a comment\n")
    with pytest.raises(bm.ManifestError, match="no rows"):
        bm.load_manifest(tmp_path / "empty.jsonl")
    with pytest.raises(bm.ManifestError, match="cannot read"):
        bm.load_manifest(tmp_path / "absent.jsonl")


def test_a_row_overrides_the_command_line_and_adds_its_settings(tmp_path):
    images(tmp_path, "a.png")
    (row,) = bm.load_manifest(write_jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "steps": 4, "set": {"6.cfg": 2, "Save.x": "y"}}]))
    base = Overrides(instruction="everyone", seed=9, steps=20, settings=(Setting.parse("6.denoise=1.0"),))
    merged = base.then(row.overrides())
    assert (merged.image, merged.instruction, merged.steps, merged.seed) == (tmp_path / "a.png", "everyone", 4, row.seed)
    assert [(x.node, x.input, x.value) for x in merged.settings] == [("6", "denoise", 1.0), ("6", "cfg", 2), ("Save", "x", "y")]
    assert base.steps == 20 and len(base.settings) == 1  # the command line's overrides are not changed


LOAD_IMAGE = {
    "4": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "Input image"}},
    "6": {"class_type": "InstructKSampler", "inputs": {"seed": 0}},
}


def test_jobs_hold_tokens_until_a_worker_places_the_images(tmp_path):
    images(tmp_path, "a.png", "b.png")
    rows = bm.load_manifest(write_jsonl(tmp_path / "m.jsonl", [{"image": "a.png"}, {"image": "b.png", "instruction": "refuse me"}]))
    with pytest.raises(bm.ManifestError, match="row 2: the workflow has no node titled 'Instruction'"):
        bj.build_jobs(LOAD_IMAGE, rows, Overrides(), schema=lambda kind: {})
    (job,) = bj.build_jobs(LOAD_IMAGE, rows[:1], Overrides(), schema=lambda kind: {})
    token = job.prompt["4"]["inputs"]["image"]
    assert token.startswith(bj.TOKEN_PREFIX) and job.files == {token: tmp_path / "a.png"}
    filled = bj.fill_tokens(job.prompt, {token: "instruct-runner/abc.png"})
    assert filled["4"]["inputs"]["image"] == "instruct-runner/abc.png" and job.prompt["4"]["inputs"]["image"] == token


def test_resume_skips_only_rows_recorded_ok_with_their_file(tmp_path):
    images(tmp_path, "a.png")
    rows = bm.load_manifest(write_jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "output": f"{n}.png"} for n in range(1, 6)]))
    out = tmp_path / "out"
    log = br.ResultsLog(out)
    log.open()
    outcome = br.Outcome(row=0, images=[], seconds=1.0, worker="w")
    for row in rows[:4]:
        log.append(br.record_for(row, outcome, [row.output]))
    log.append(br.record_for(rows[0], br.Outcome(0, [], 1.0, "w", error="boom"), []))  # row 1 failed on a later try
    log.close()
    for row in rows[1:4]:
        (out / row.output).write_bytes(b"png")
    (out / rows[2].output).unlink()  # recorded ok, file gone: run again
    with open(log.path, "a") as f:
        f.write('{"row": 5, "output": "5.png", "st')  # a line cut short by a kill
    rows[3].seed += 1  # a different seed than recorded: run again
    assert log.finished_ok(rows) == {2}
    log.open()  # the torn line is closed off, so the next record stands on its own line
    log.append(br.record_for(rows[4], outcome, [rows[4].output]))
    log.close()
    assert [r["row"] for r in log.records()][-1] == 5


def test_the_progress_bar_shows_rows_rate_time_left_failures_and_the_node(capsys):
    bar = BatchBar()
    bar.started(total=10, skipped=2, backend="in-process")
    bar.node(3, 20, "6", "InstructKSampler")
    bar.row_done(True)
    bar.row_done(False)
    bar.close()
    err = capsys.readouterr().err
    assert err.startswith("8 row(s) to run on in-process, 2 already done\n")
    last = err.rsplit("\r", 1)[-1]
    assert re.match(r"rows:  40%\|[^|]*\| 4/10 \[\d\d:\d\d<[\d:?]+, [^,]*(row/s|s/row), 1 failed\] *\n$", last), last
    assert "InstructKSampler 3/20" in err  # the node sampling, while a row runs
