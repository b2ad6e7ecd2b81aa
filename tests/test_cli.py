"""The CLI in-process: outputs, JSON, metadata, and one clear line + exit 2 for every bad input."""

import json
import os

import pytest
from PIL import Image
from typer.testing import CliRunner

from pixelchat.cli import app
from pixelchat.imagefiles import read_record

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_generate_writes_pngs_with_their_record(tiny_model, tmp_path):
    out = tmp_path / "out"
    result = run("generate", "a house by the sea at noon", "--n", 2, "--seed", 11, "--out", out, "--model", tiny_model)
    assert result.exit_code == 0, result.output
    paths = result.stdout.split()
    assert len(paths) == 2 and all(os.path.isfile(p) for p in paths)
    image = Image.open(paths[0])
    record = read_record(image)
    assert record["prompt"] == "a house by the sea at noon" and record["seed"] == 11
    assert record["model"]["id"] == "model" and len(record["model"]["sha256"]) == 64
    assert record["latent"] and record["pixelchat_version"] and record["created"]
    parameters = image.text["parameters"]
    assert parameters.startswith("a house by the sea at noon\n") and "Seed: 11" in parameters


def test_generate_json(tiny_model, tmp_path):
    result = run("generate", "a lake", "--n", 3, "--seed", 2, "--out", tmp_path, "--model", tiny_model, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["seeds"] == [2, 3, 4] and len(payload["files"]) == 3
    assert payload["model"]["sha256"] and payload["model"]["id"]


def test_same_seed_same_pixels_through_the_cli(tiny_model, tmp_path):
    a = run("generate", "dunes", "--seed", 9, "--out", tmp_path / "a", "--model", tiny_model).stdout.strip()
    b = run("generate", "dunes", "--seed", 9, "--out", tmp_path / "b", "--model", tiny_model).stdout.strip()
    assert Image.open(a).tobytes() == Image.open(b).tobytes()


def test_existing_files_are_kept(tiny_model, tmp_path):
    first = run("generate", "dunes", "--seed", 9, "--out", tmp_path, "--model", tiny_model).stdout.strip()
    second = run("generate", "dunes", "--seed", 9, "--out", tmp_path, "--model", tiny_model).stdout.strip()
    assert first != second and os.path.isfile(first) and os.path.isfile(second)


def _corrupt_copy(tiny_model, tmp_path):
    import shutil

    path = tmp_path / "corrupt.safetensors"
    shutil.copy(tiny_model, path)
    shutil.copy(tiny_model.with_suffix(".json"), path.with_suffix(".json"))
    path.write_bytes(path.read_bytes()[:100])
    return path


def _mismatched_copy(tiny_model, tmp_path):
    import shutil

    path = tmp_path / "mismatched.safetensors"
    shutil.copy(tiny_model, path)
    config = json.loads(tiny_model.with_suffix(".json").read_text())
    config["text_encoder"]["sha256"] = "f" * 64
    path.with_suffix(".json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("case", ["empty", "blank", "long", "n0", "n65", "size", "missing", "corrupt", "mismatched",
                                  "truncation"])
def test_bad_input_is_one_clear_line(case, tiny_model, tmp_path):
    prompt, extra = "a lake", []
    if case == "empty":
        prompt = ""
    elif case == "blank":
        prompt = "   "
    elif case == "long":
        prompt = "a lake " * 300
    elif case == "n0":
        extra = ["--n", 0]
    elif case == "n65":
        extra = ["--n", 65]
    elif case == "size":
        extra = ["--size", 128]
    elif case == "truncation":
        extra = ["--truncation", -1]
    model = {"missing": tmp_path / "nope.safetensors", "corrupt": _corrupt_copy(tiny_model, tmp_path),
             "mismatched": _mismatched_copy(tiny_model, tmp_path)}.get(case, tiny_model)
    out = tmp_path / "out"
    result = run("generate", prompt, "--out", out, "--model", model, *extra)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    assert not list(out.glob("*.png"))


def test_unwritable_output_dir(tiny_model, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run("generate", "a lake", "--out", blocker / "sub", "--model", tiny_model)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_data_export_cli(tmp_path):
    out = tmp_path / "scenes"
    result = run("data", "export", "scenes", "--n", 5, "--size", 64, "--out", out)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and {"file_name", "text", "attributes"} <= set(rows[0])
    assert Image.open(out / rows[0]["file_name"]).size == (64, 64)
    again = run("data", "export", "scenes", "--n", 5, "--out", out)
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert run("data", "export", "pictures", "--out", tmp_path / "x").exit_code == 2
    assert run("data", "export", "scenes", "--size", 100, "--out", tmp_path / "y").exit_code == 2


def test_exported_folder_reads_back_with_attributes(tmp_path):
    from pixelchat.data.readers import read_image_folder

    run("data", "export", "scenes", "--n", 4, "--size", 32, "--out", tmp_path)
    data = read_image_folder(tmp_path, 32)
    assert len(data) == 4 and data.attributes and set(data.attributes[0]) >= {"time", "terrain", "boat"}


def test_train_cli_dry_run_and_bad_options(tmp_path, scenes_folder):
    ok = run("train", "--data", scenes_folder, "--size", 32, "--steps", 2, "--out", tmp_path / "r", "--dry-run",
             "--ngf", 4, "--ndf", 4)
    assert ok.exit_code == 0, ok.output
    assert not (tmp_path / "r").exists()
    for args in (["--arch", "vae", "--steps", 1], ["--size", 48, "--steps", 1], [], ["--steps", 0],
                 ["--data", tmp_path / "missing", "--steps", 1]):
        bad = run("train", "--out", tmp_path / "r2", *args)
        assert bad.exit_code == 2, (args, bad.output)
        assert bad.stderr.startswith("error: "), (args, bad.stderr)


def test_flags_show_as_flags_in_every_commands_help():
    import click
    from typer.main import get_command

    def commands(group, path=()):
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                yield from commands(cmd, (*path, name))
            else:
                yield (*path, name)

    root = get_command(app)
    checked = 0
    for path in commands(root):
        result = run(*path, "--help")
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output, (path, result.output)
        checked += "--json" in result.output
    assert checked >= 8  # generate, describe, edit, vary, chat, evaluate, judge, verify, keys, users


def test_json_alone_turns_it_on_and_takes_no_value(tiny_model, tmp_path):
    assert json.loads(run("generate", "a lake", "--out", tmp_path, "--model", tiny_model, "--json").stdout)["files"]
    result = run("generate", "a lake", "--out", tmp_path, "--model", tiny_model, "--json", "true")
    assert result.exit_code == 2 and "unexpected extra argument" in result.output.lower()


def test_contact_sheet_is_readable_and_has_no_wide_gap():
    import numpy as np

    from pixelchat.demo import contact_sheet

    rows = [(f"prompt number {i} with some words", [Image.new("RGB", (64, 64), (160 + 20 * j, 200, 230)) for j in range(4)])
            for i in range(3)]
    sheet = np.asarray(contact_sheet(rows).convert("L"))
    ink = sheet < 128  # dark pixels: the labels' letters (the pictures here are light)
    ink_rows = np.flatnonzero(ink.any(axis=1))
    first_label = ink_rows[ink_rows < ink_rows[0] + 40]
    assert first_label.max() - first_label.min() >= 14  # a line of letters at least 15 px tall
    blank = (sheet == 255).all(axis=0)  # columns with nothing in them
    widest, run_ = 0, 0
    for b in blank:
        run_ = run_ + 1 if b else 0
        widest = max(widest, run_)
    assert widest <= 16  # no white column band between the labels and the pictures


def test_long_commands_show_which_step_runs(tiny_model, tmp_path, monkeypatch):
    """On a terminal, generate, edit and vary draw a progress bar on stderr naming each step."""
    import io

    from rich.console import Console

    import pixelchat.cli as cli

    shown = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=shown, force_terminal=True, width=160))
    first = run("generate", "hills by a lake", "--seed", 1, "--out", tmp_path, "--model", tiny_model)
    assert first.exit_code == 0, first.output
    picture = first.stdout.split()[0]
    for args, steps in ((("edit", picture, "add a boat"), ("loading the model", "editing: reading the picture",
                                                           "checking the pictures", "writing the files")),
                        (("vary", picture, "--n", 2), ("loading the model", "drawing 2 variations", "writing the files"))):
        shown.truncate(0)
        result = run(*args, "--out", tmp_path, "--model", tiny_model, "--seed", 3)
        assert result.exit_code == 0, result.output
        for step in steps:
            assert step in shown.getvalue(), (step, shown.getvalue()[-500:])
    monkeypatch.setattr(cli, "err", Console(file=io.StringIO(), force_terminal=False))
    quiet = run("vary", picture, "--n", 1, "--out", tmp_path, "--model", tiny_model)
    assert quiet.exit_code == 0 and "loading the model" not in quiet.output  # not on a pipe


def test_the_cli_starts_without_the_heavy_libraries():
    """`import pixelchat.cli` (every command's start) pays for torch, transformers, the server and the
    training stack only in the commands that use them; pixelchat.generate & co. stay the functions."""
    import subprocess
    import sys

    code = ("import sys, pixelchat.cli; heavy = ('torch', 'transformers', 'fastapi', 'sqlalchemy', 'kornia', "
            "'numpy', 'uvicorn'); print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    import pixelchat
    import pixelchat.describe  # noqa: F401  importing the module of the same name keeps the function
    import pixelchat.edit  # noqa: F401

    assert callable(pixelchat.describe) and callable(pixelchat.edit) and callable(pixelchat.generate)
    assert pixelchat.vary.__module__ == "pixelchat.edit" and pixelchat.Session.__name__ == "Session"


_GC_PROBE = """
import gc, sys, time
from pixelchat import cli

cli.STARTUP_SECONDS = {startup}
seen = {{}}

@cli.app.command("probe")
def probe():
    seen["at start"] = gc.isenabled()
    time.sleep({sleep})
    seen["later"] = gc.isenabled()

sys.argv = ["pixelchat", "probe"]
try:
    cli.main()
except SystemExit:
    pass
print(seen["at start"], seen["later"], gc.isenabled(), gc.get_freeze_count() > 0)
"""


@pytest.mark.parametrize("startup, sleep, expected", [
    (30.0, 0.0, "False False True True"),  # a short command runs with the collector off; it is back after
    (0.5, 1.5, "False True True True"),  # a long one gets it back after STARTUP_SECONDS
])
def test_the_garbage_collector_is_off_only_while_a_command_starts(startup, sleep, expected):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _GC_PROBE.format(startup=startup, sleep=sleep)],
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == expected.split()
