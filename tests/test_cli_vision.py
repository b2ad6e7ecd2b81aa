"""`pixelchat describe | edit | vary` in-process, on pictures of every kind a user hands over."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pixelchat.cli import app
from pixelchat.data.scenes import render_scene, sample_attributes
from pixelchat.imagefiles import read_record

runner = CliRunner()


def render(size=64, seed=3):
    return render_scene(sample_attributes(np.random.default_rng([seed, 0])), size, seed)


@pytest.fixture()
def pictures(tmp_path):
    """The same render as RGBA PNG, greyscale PNG, EXIF-rotated JPEG and a non-square WebP."""
    base = render(128)
    out = {}
    rgba = base.convert("RGBA")
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    out["rgba"] = tmp_path / "rgba.png"
    rgba.save(out["rgba"])
    out["grey"] = tmp_path / "grey.png"
    base.convert("L").save(out["grey"])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: the file stores it sideways
    out["exif"] = tmp_path / "exif.jpg"
    base.transpose(Image.Transpose.ROTATE_90).save(out["exif"], exif=exif, quality=92)
    wide = Image.new("RGB", (192, 128), (255, 255, 255))
    wide.paste(base, (32, 0))
    out["webp"] = tmp_path / "wide.webp"
    wide.save(out["webp"], quality=90)
    return out


@pytest.mark.parametrize("kind", ["rgba", "grey", "exif", "webp"])
def test_describe_accepts_any_reasonable_picture(kind, pictures):
    r = runner.invoke(app, ["describe", str(pictures[kind]), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["caption"] and d["prompt"] and set(d["confidence"]) == set(d["attributes"])


def test_describe_reads_a_render_right(tmp_path):
    """The shipped describer on a clean render: the attributes it is most sure of are right."""
    a = sample_attributes(np.random.default_rng([11, 0]))
    path = tmp_path / "r.png"
    render_scene(a, 64, 11).save(path)
    r = runner.invoke(app, ["describe", str(path), "--json"])
    d = json.loads(r.stdout)
    assert d["attributes"]["terrain"] == a["terrain"] and d["attributes"]["time"] == a["time"]
    r = runner.invoke(app, ["describe", str(path)])
    assert r.exit_code == 0 and "prompt: " in r.stdout and "attributes: " in r.stdout


@pytest.mark.parametrize("content, message", [(b"not an image", "not a readable image"), (None, "no image file")])
def test_describe_bad_files_are_one_clear_line(tmp_path, content, message):
    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    r = runner.invoke(app, ["describe", str(path)])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_edit_generated_picture_end_to_end(tiny_model, tmp_path):
    gen = runner.invoke(app, ["generate", "hills by a lake", "--seed", "4", "--model", str(tiny_model),
                              "--out", str(tmp_path / "g"), "--json"])
    src = json.loads(gen.stdout)["files"][0]
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 32, 16))  # the sky may change
    mask.save(tmp_path / "mask.png")
    r = runner.invoke(app, ["edit", src, "make the clouds pink", "--mask", str(tmp_path / "mask.png"), "--seed", "1",
                            "--model", str(tiny_model), "--out", str(tmp_path / "e"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert "pink" in out["revised_prompt"] and out["source"]["how"] == "record"
    record = read_record(out["files"][0])
    assert record["prompt"] == out["revised_prompt"] and record["edit"]["mask"] is True
    assert record["edit"]["instruction"] == "make the clouds pink"
    before = np.asarray(Image.open(src), dtype=np.int16)
    after = np.asarray(Image.open(out["files"][0]), dtype=np.int16)
    assert np.abs(after[20:] - before[20:]).max() <= 1  # below the mask's feathered edge: kept


def test_edit_refusals_write_nothing(tiny_model, tmp_path):
    path = tmp_path / "p.png"
    render(32).save(path)
    Image.new("L", (16, 16)).save(tmp_path / "small.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "rgb.png")
    out = tmp_path / "out"
    for args, message in [
        (["make it better"], "could not find a change"),
        (["add a boat", "--mask", str(tmp_path / "small.png")], "must match the picture"),
        (["add a boat", "--mask", str(tmp_path / "rgb.png")], "greyscale"),
        (["add a boat", "--strength", "3"], "strength"),
        (["remove the mountains"], "cannot be removed"),
    ]:
        r = runner.invoke(app, ["edit", str(path), *args, "--model", str(tiny_model), "--out", str(out)])
        assert r.exit_code == 2 and message in r.output, (args, r.output)
    assert not out.exists() or not any(out.iterdir())


def test_edit_a_render_by_inversion_and_vary(tiny_model, tmp_path):
    path = tmp_path / "render.png"
    day = sample_attributes(np.random.default_rng(2), fixed={"time": "day", "celestial": "sun"})
    render_scene(day, 64, 2).save(path)  # the shipped describer reads it as day
    r = runner.invoke(app, ["edit", str(path), "make it night", "--model", str(tiny_model), "--out", str(tmp_path),
                            "--json", "--seed", "0"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["source"]["how"] == "inversion" and out["changes"]["time"][1] == "night"
    r = runner.invoke(app, ["vary", out["files"][0], "--n", "2", "--model", str(tiny_model), "--out", str(tmp_path / "v")])
    assert r.exit_code == 0, r.output
    files = r.stdout.split()
    assert len(files) == 2 and all(read_record(f)["vary"]["source"]["how"] == "record" for f in files)
