"""A batch's rows in this process, end to end through the command line: the values a row sets reach the
prompt with their types (what the saved PNG embeds is the prompt that ran), and a missing model file stops
the batch before any row with a single run's message, or is fetched first with --download-missing."""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from pathlib import Path

import pytest

from instruct_harness import PACK_DIR
from instruct_pictures import embedded_prompt, write_picture
from instruct_servers import file_server

from headless import cli
from headless.cli import exit_codes as codes

WORKFLOW = PACK_DIR / "workflows" / "api" / "instruct_edit_sd15.json"
LORA_WORKFLOW = PACK_DIR / "workflows" / "api" / "instruct_edit_lora.json"
TINY = "checkpoints/tiny-ip2p-sd15.safetensors"
#: What each row sets, and what the prompt that ran must hold: text that looks like a number, null or a
#: boolean stays text; a number stays a number; a list (here: a link) stays a list.
TYPED = {
    "Save.filename_prefix": ("123", ("8", "filename_prefix")),
    "Instruction.text": ("null", ("2", "text")),
    "Negative.text": ("true", ("3", "text")),
    "6.denoise": (0.75, ("6", "denoise")),
    "6.positive": (["5", 0], ("6", "positive")),
}


def results(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def ran_prompts(out: Path) -> list[dict]:
    return [embedded_prompt(p.read_bytes()) for p in sorted(out.glob("*.png"))]


def test_a_jsonl_row_sets_values_with_their_json_types(comfy, tiny, tmp_path, capsys):
    write_picture(tmp_path / "a.png", 1)
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "set": {target: value for target, (value, _) in TYPED.items()}}) + "\n")
    out = tmp_path / "out"
    code = cli.main([str(WORKFLOW), "--batch", str(manifest), "--output-dir", str(out), "--model", TINY, "--steps", "1", "--quiet"])
    assert code == codes.EXIT_OK, capsys.readouterr().err
    (prompt,) = ran_prompts(out)
    for target, (value, (node, name)) in TYPED.items():
        assert prompt[node]["inputs"][name] == value and type(prompt[node]["inputs"][name]) is type(value), target


def test_a_csv_cell_is_typed_by_the_input_it_sets(comfy, tiny, tmp_path, capsys):
    """A cell is text: a STRING input takes it as it is ("123", "null", "true" stay text), a FLOAT input parses
    it, an input of another kind (a link) reads it as JSON."""
    write_picture(tmp_path / "a.png", 2)
    manifest = tmp_path / "rows.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", *(f"set:{target}" for target in TYPED)])
        writer.writerow(["a.png", *(value if isinstance(value, str) else json.dumps(value) for value, _ in TYPED.values())])
    out = tmp_path / "out"
    code = cli.main([str(WORKFLOW), "--batch", str(manifest), "--output-dir", str(out), "--model", TINY, "--steps", "1", "--quiet"])
    assert code == codes.EXIT_OK, capsys.readouterr().err
    (prompt,) = ran_prompts(out)
    for target, (value, (node, name)) in TYPED.items():
        assert prompt[node]["inputs"][name] == value and type(prompt[node]["inputs"][name]) is type(value), target


def test_a_csv_cell_that_its_input_cannot_take_is_refused_before_any_row(comfy, tiny, tmp_path, capsys):
    write_picture(tmp_path / "a.png", 3)
    manifest = tmp_path / "rows.csv"
    manifest.write_text("image,set:6.steps\na.png,many\n")
    out = tmp_path / "out"
    code = cli.main([str(WORKFLOW), "--batch", str(manifest), "--output-dir", str(out), "--model", TINY])
    err = capsys.readouterr().err
    assert code == codes.EXIT_INPUT and "row 1: column set:6.steps: 'many' is not an integer (the input is INT)" in err, err
    assert not out.exists()


@pytest.fixture
def fresh_lora(comfy, tiny):
    """A LoRA file name ComfyUI does not have (it goes into the tests' loras folder when fetched), its bytes,
    and a model manifest that publishes it on a local HTTP server."""
    name = f"fresh-lora-{uuid.uuid4().hex[:8]}.safetensors"
    data = (comfy.models_dir / "loras" / "tiny-lora-sd15.safetensors").read_bytes()
    with file_server() as server:
        server.files[f"/{name}"] = data
        yield name, data, server
    (comfy.models_dir / "loras" / name).unlink(missing_ok=True)


def test_a_batch_with_a_missing_model_stops_before_any_row_and_fetches_it_when_asked(comfy, fresh_lora, tmp_path, capsys):
    name, data, server = fresh_lora
    entry = {"directory": "loras", "url": server.url(f"/{name}"), "page": "https://host.invalid/lora", "gated": False}
    entry.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    models = tmp_path / "models.json"
    models.write_text(json.dumps({"models": {name: entry}}))
    for n in range(2):
        write_picture(tmp_path / f"{n}.png", n)
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text("".join(json.dumps({"image": f"{n}.png"}) + "\n" for n in range(2)))
    lora_node = next(k for k, node in json.loads(LORA_WORKFLOW.read_text()).items() if node["class_type"] == "LoraLoader")
    common = [str(LORA_WORKFLOW), "--model", TINY, "--set", f"{lora_node}.lora_name={name}", "--steps", "1"]
    common += ["--models-manifest", str(models), "--quiet"]
    out = tmp_path / "out"

    single = cli.main([*common, "--image", str(tmp_path / "0.png"), "--output", str(tmp_path / "single.png")])
    single_err = capsys.readouterr().err
    assert single == codes.EXIT_INPUT and f"missing model file '{name}'" in single_err, single_err

    code = cli.main([*common, "--batch", str(manifest), "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code == codes.EXIT_INPUT, err
    assert err == single_err  # the same message: the file, the folder, where to get it
    assert f"not in ComfyUI's 'loras' folder ({comfy.models_dir / 'loras'}" in err and f"Get it from {server.url(f'/{name}')}" in err
    assert results(out) == [] and not list(out.glob("*.png")) and server.requests == []  # no row ran, nothing was fetched

    code = cli.main([*common, "--batch", str(manifest), "--output-dir", str(out), "--download-missing"])
    assert code == codes.EXIT_OK, capsys.readouterr().err
    assert (comfy.models_dir / "loras" / name).read_bytes() == data and len(server.requests) == 1
    assert [r["status"] for r in results(out)] == ["ok", "ok"] and len(list(out.glob("*.png"))) == 2
    assert {p[lora_node]["inputs"]["lora_name"] for p in ran_prompts(out)} == {name}
