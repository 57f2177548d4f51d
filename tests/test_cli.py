"""The one command line: subcommands sharing options declared once, the README's forms without a subcommand,
the refusals of options that cannot go together, typed errors mapped to exit codes in one place, and the
``models`` subcommand against a real in-process ComfyUI (and the local HTTP file server)."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from instruct_harness import PACK_DIR
from instruct_servers import file_server

from headless import cli, errors
from headless.cli import exit_codes as codes
from headless.cli.parser import build_parser, overrides_from, parse, with_subcommand
from headless.prompts.overrides import Setting

WORKFLOW = str(PACK_DIR / "workflows" / "api" / "instruct_edit_sd15.json")
LORA_WORKFLOW = PACK_DIR / "workflows" / "api" / "instruct_edit_lora.json"
TINY = "checkpoints/tiny-ip2p-sd15.safetensors"


def test_the_readme_forms_without_a_subcommand_are_run_and_batch():
    assert with_subcommand([WORKFLOW, "--image", "a.png", "--output", "o.png"])[0] == "run"
    assert with_subcommand([WORKFLOW, "--batch", "m.jsonl", "--output-dir", "d"])[0] == "batch"
    assert with_subcommand([WORKFLOW, "--batch=m.jsonl", "--output-dir", "d"])[0] == "batch"
    assert with_subcommand(["models", WORKFLOW]) == ["models", WORKFLOW]
    opts = parse([WORKFLOW, "--batch", "m.jsonl", "--output-dir", "d", "--seed", "4"])
    assert (opts.command, opts.manifest, opts.output_dir, opts.seed) == ("batch", "m.jsonl", "d", 4)


def test_every_shared_option_is_declared_once_and_means_the_same_in_run_and_batch():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    shared = {"--timeout", "--server", "--download-missing", "--models-manifest", "--model", "--set", "--instruction", "--steps"}
    for name in ("run", "batch"):
        actions = {s: a for a in subparsers[name]._actions for s in a.option_strings}
        assert shared <= set(actions), name
        assert actions["--server"].__class__.__name__ == "_AppendAction" and actions["--timeout"].default is None
    run = parse([WORKFLOW, "--output", "o.png", "--timeout", "5", "--download-missing", "--models-manifest", "m.json"])
    batch = parse([WORKFLOW, "--batch", "m.jsonl", "--output-dir", "d", "--timeout", "5", "--download-missing"])
    assert (run.timeout, run.download_missing) == (batch.timeout, batch.download_missing) == (5.0, True)
    assert parse(["models", WORKFLOW, "--download-missing", "--model", TINY]).model == TINY


@pytest.mark.parametrize(
    "argv, message",
    [
        ([WORKFLOW, "--output", "o.png", "--server", "http://a:1", "--server", "http://b:2"], "run takes one --server"),
        ([WORKFLOW, "--output", "o.png", "--server", "http://a:1", "--download-missing"], "download on the server's machine"),
        ([WORKFLOW, "--batch", "m.jsonl", "--output-dir", "d", "--ray", "--server", "http://a:1"], "--ray and --server exclude"),
        ([WORKFLOW, "--batch", "m.jsonl", "--output-dir", "d", "--workers", "0"], "--workers must be at least 1"),
        ([WORKFLOW, "--output", "o.png", "--timeout", "0"], "--timeout must be a positive number"),
    ],
)
def test_options_that_cannot_go_together_are_refused_with_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == codes.EXIT_INPUT and message in capsys.readouterr().err


def test_set_is_parsed_once_at_the_edge_into_typed_overrides():
    opts = parse([WORKFLOW, "--output", "o.png", "--set", "Save.filename_prefix=123", "--set", 'Save.filename_prefix="123"', "--seed", "7"])
    overrides = overrides_from(opts)
    assert overrides.settings[0] == Setting("Save", "filename_prefix", 123, "--set 'Save.filename_prefix=123'")
    assert overrides.settings[1].value == "123" and overrides.seed == 7
    batch = overrides_from(parse([WORKFLOW, "--batch", "m.jsonl", "--output-dir", "d", "--seed", "7"]))
    assert batch.seed is None  # a batch's --seed is the base of the rows' seeds, not a seed to set
    with pytest.raises(errors.InputError, match="use NODE.INPUT=VALUE"):
        overrides_from(parse([WORKFLOW, "--output", "o.png", "--set", "seed"]))


def test_each_error_type_has_its_exit_code():
    assert codes.exit_code(errors.InputError("x")) == 2
    assert codes.exit_code(errors.ExecutionError("x")) == codes.exit_code(errors.RunTimeout("x")) == 3
    assert codes.exit_code(errors.UnreachableError("x")) == 4
    assert codes.exit_code(errors.RunInterrupted("x")) == 130


def test_only_the_command_line_knows_exit_codes():
    """Below the command line, errors are types: no EXIT_ constant, no ``code`` on an error."""
    for path in (PACK_DIR / "headless").rglob("*.py"):
        if path.parent.name != "cli":
            assert "EXIT_" not in path.read_text(), path


# ---- models ----------------------------------------------------------------------------------------------------


def test_models_lists_where_each_file_is(comfy, tiny, capsys):
    assert cli.main(["models", WORKFLOW, "--model", TINY, "--quiet"]) == codes.EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("ok       checkpoints/tiny-ip2p-sd15.safetensors  (") and str(tiny["checkpoint"]) in out


def test_models_reports_a_missing_file_as_a_run_does_and_fetches_it_when_asked(comfy, tiny, tmp_path, capsys):
    name = f"fresh-lora-{uuid.uuid4().hex[:8]}.safetensors"
    data = (comfy.models_dir / "loras" / "tiny-lora-sd15.safetensors").read_bytes()
    lora_node = next(k for k, node in json.loads(LORA_WORKFLOW.read_text()).items() if node["class_type"] == "LoraLoader")
    try:
        with file_server() as server:
            server.files[f"/{name}"] = data
            entry = {"directory": "loras", "url": server.url(f"/{name}"), "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            manifest = tmp_path / "models.json"
            manifest.write_text(json.dumps({"models": {name: entry}}))
            argv = [str(LORA_WORKFLOW), "--model", TINY, "--set", f"{lora_node}.lora_name={name}", "--models-manifest", str(manifest)]
            assert cli.main(["models", *argv, "--quiet"]) == codes.EXIT_INPUT
            err = capsys.readouterr().err
            assert err.startswith(f"error: missing model file '{name}' (node {lora_node} (LoraLoader.lora_name))")
            assert server.url(f"/{name}") in err
            assert cli.main(["models", *argv, "--quiet", "--download-missing"]) == codes.EXIT_OK
            out = capsys.readouterr().out
            assert f"fetched  {comfy.models_dir / 'loras' / name}" in out and "ok       checkpoints/tiny-ip2p-sd15.safetensors" in out
            assert (comfy.models_dir / "loras" / name).read_bytes() == data and len(server.requests) == 1
    finally:
        Path(comfy.models_dir / "loras" / name).unlink(missing_ok=True)
