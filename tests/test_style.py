"""Style presets and palettes on real `scenes` renders: shipped file, each preset, palette constraint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pixelchat.data.scenes import render_scene, sample_attributes
from pixelchat.vision.style import (
    Style,
    apply_palette,
    apply_style,
    get_style,
    load_styles,
    palette_hex,
    palette_report,
    parse_palette,
)

PALETTE = "#264653, #2a9d8f #e9c46a #f4a261 #e76f51"


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    """A 64 px day scene: sky gradient, terrain, sun — plenty of colours to change."""
    attrs = sample_attributes(np.random.default_rng(1), {"time": "day"})
    return render_scene(attrs, 64, seed=1)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_shipped_styles_load_with_unique_names():
    styles = load_styles()
    assert len(styles) >= 8
    names = [s.name for s in styles.values()]
    assert len(set(names)) == len(names) and list(styles) == names
    assert {"none", "vivid", "noir", "sepia", "pixel"} <= set(styles)
    assert all(isinstance(s, Style) and s.description for s in styles.values())


@pytest.mark.parametrize("name", [n for n in load_styles() if n != "none"])
def test_each_preset_visibly_changes_the_picture(picture, name):
    out = apply_style(picture, get_style(name))
    assert out.size == picture.size and out.mode == "RGB"
    assert np.abs(pixels(out) - pixels(picture)).mean() > 2.0  # mean change of 2+ levels per channel


def test_identity_leaves_the_picture_unchanged(picture):
    for style in (get_style("none"), get_style("NONE", styles={}), Style("plain", "", {})):
        out = apply_style(picture, style)
        assert out is not picture
        assert np.array_equal(pixels(out), pixels(picture))


def test_noir_is_grey(picture):
    out = pixels(apply_style(picture, get_style("Noir")))
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_posterize_keeps_few_levels(picture):
    out = pixels(apply_style(picture, get_style("retro")))
    assert set(np.unique(out)) <= set(range(0, 256, 32))  # 3 bits: multiples of 32


def test_unknown_style_lists_known_names():
    with pytest.raises(ValueError, match="unknown style 'glitter'.*noir.*vivid"):
        get_style("glitter")


@pytest.mark.parametrize("preset, message", [
    ({"name": "bad", "operations": {"blur": 2}}, "'bad'.*unknown operation 'blur'"),
    ({"name": "bad", "operations": {"saturation": -1}}, "'bad'.*'saturation'"),
    ({"name": "bad", "operations": {"posterize": 2.5}}, "'bad'.*'posterize'"),
    ({"name": "bad", "operations": {"tint": [1, 1]}}, "'bad'.*'tint'"),
    ({"name": "bad", "operations": {"grayscale": True}}, "'bad'.*'grayscale'"),
    ({"name": "Bad Name", "operations": {}}, "name must be"),
    ({"name": "bad", "colour": "red"}, "unknown key"),
])
def test_malformed_styles_file_is_rejected(tmp_path, preset, message):
    path = tmp_path / "styles.json"
    path.write_text(json.dumps({"format": "pixelchat-styles", "styles": [preset]}))
    with pytest.raises(ValueError, match=message):
        load_styles(path)


def test_styles_file_format_and_duplicates(tmp_path):
    path = tmp_path / "styles.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        load_styles(path)
    path.write_text(json.dumps({"styles": []}))
    with pytest.raises(ValueError, match="not a styles file"):
        load_styles(path)
    twice = {"name": "a", "operations": {}}
    path.write_text(json.dumps({"format": "pixelchat-styles", "styles": [twice, twice]}))
    with pytest.raises(ValueError, match="duplicate"):
        load_styles(path)


def test_operator_styles_file(tmp_path, picture):
    path = tmp_path / "house.json"
    path.write_text(json.dumps({"format": "pixelchat-styles", "styles": [
        {"name": "alien", "description": "green sky", "operations": {"hue": 120, "vignette": 0.5}}]}))
    styles = load_styles(path)
    assert list(styles) == ["alien"]
    assert apply_style(picture, get_style("Alien", styles)).size == picture.size


def test_parse_palette_forms():
    want = [(255, 136, 0), (0, 0, 0), (18, 52, 86)]
    assert parse_palette("#ff8800, #000 123456") == want
    assert parse_palette(["FF8800", "000", "#123456"]) == want
    assert parse_palette([(255, 136, 0), "#000", "123456", "#f80"]) == want  # repeats dropped
    assert palette_hex("#F80 abc") == ["#ff8800", "#aabbcc"]


@pytest.mark.parametrize("colours, message", [
    ("#ff8800 #ggg", "'#ggg'"),
    (["#ff8800", "#12345"], "'#12345'"),
    ([(256, 0, 0)], r"\(256, 0, 0\)"),
    ("", "1 to 16"),
    (["#000"] * 17, "1 to 16"),
])
def test_parse_palette_errors(colours, message):
    with pytest.raises(ValueError, match=message):
        parse_palette(colours)


def test_apply_palette_full_strength_uses_only_palette_colours(picture):
    out = apply_palette(picture, PALETTE)
    assert out.size == picture.size and out.mode == "RGB"
    used = {tuple(c) for c in pixels(out).reshape(-1, 3)}
    assert used <= set(parse_palette(PALETTE))
    report = palette_report(out, PALETTE)
    assert report["coverage"] == 1.0 and report["mean_delta_e"] < 1e-3
    assert sum(report["used"].values()) == pytest.approx(1.0)


def test_apply_palette_strength(picture):
    assert np.array_equal(pixels(apply_palette(picture, PALETTE, strength=0.0)), pixels(picture))
    half = pixels(apply_palette(picture, PALETTE, strength=0.5))
    full = pixels(apply_palette(picture, PALETTE))
    assert np.abs(half - (pixels(picture) + full) / 2).max() <= 1  # a midpoint, up to rounding
    for bad in (-0.1, 1.5, "1"):
        with pytest.raises(ValueError, match="strength"):
            apply_palette(picture, PALETTE, strength=bad)


def test_palette_report_shows_the_constraint_working(picture):
    before = palette_report(picture, PALETTE)
    after = palette_report(apply_palette(picture, PALETTE, strength=0.7), PALETTE)
    assert set(before["used"]) == set(palette_hex(PALETTE))
    assert before["coverage"] < 0.5 < after["coverage"]
    assert after["mean_delta_e"] < before["mean_delta_e"]
