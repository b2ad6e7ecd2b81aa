"""The upsampler (the cascade's second stage) and the one size option every interface takes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pixelchat.cli import app
from pixelchat.engines import GANEngine, GenerateRequest
from pixelchat.imagefiles import load_image, read_record, save_png
from pixelchat.models.upsampler import Upsampler, UpsamplerConfig, load_upsampler
from pixelchat.training.checkpoint import CheckpointError
from pixelchat.training.upsampler import train_upsampler

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_upsampler(tmp_path_factory, tiny_model):
    """×2 and ×4 for the tiny 32 px model, trained a few steps on renders and on the model's own pictures (the
    consistency term): real code path, meaningless quality."""
    out = tmp_path_factory.mktemp("upsampler") / "up"
    return train_upsampler(out, n_images=12, in_size=32, scales=(2, 4), features=4, body=1, steps=3, minutes=0,
                           batch_size=4, patch=16, n_test=4, generator=tiny_model, pool=4, progress=False)


@pytest.fixture(scope="module")
def sized(tiny_model, tiny_upsampler, tiny_describer, tiny_inverter):
    return GANEngine(tiny_model, describer=tiny_describer, inverter=tiny_inverter, upsampler=tiny_upsampler)


def test_a_tiny_upsampler_trains_saves_loads_and_gives_identical_pixels(tiny_upsampler):
    meta = json.loads(tiny_upsampler.with_suffix(".json").read_text())
    assert meta["kind"] == "upsampler" and meta["training"]["steps"] == 3 and meta["training"]["pool"] == 4
    assert {"x2", "x4"} <= set(meta["test"]) and "psnr_bicubic" in meta["test"]["x4"]
    a, b = load_upsampler(tiny_upsampler), load_upsampler(tiny_upsampler)
    assert a.cfg == b.cfg == UpsamplerConfig(in_size=32, scales=(2, 4), features=4, body=1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    for scale in (2, 4):
        y = a.upscale(x, scale)
        assert y.shape == (2, 3, 32 * scale, 32 * scale) and torch.equal(y, b.upscale(x, scale))
    with pytest.raises(ValueError, match="scales by 2, 4"):
        a.upscale(x, 8)


def test_an_untrained_upsampler_is_bicubic_interpolation():
    """Its bicubic part is a convolution before the pixel shuffle: torch's bicubic to float rounding, borders
    included, at every scale."""
    net = Upsampler(UpsamplerConfig(in_size=16, scales=(2, 4, 8), features=4, body=1))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    for scale in (2, 4, 8):
        bicubic = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
        assert torch.allclose(net.upscale(x, scale), bicubic.clamp(-1, 1), atol=2e-6, rtol=0)


def test_bad_upsampler_options_are_refused(tmp_path):
    with pytest.raises(ValueError, match="scales"):
        UpsamplerConfig(scales=(3,))
    with pytest.raises(ValueError, match="patch"):
        train_upsampler(tmp_path / "u", in_size=32, patch=64, steps=1, progress=False)
    assert not list(tmp_path.iterdir())


def test_the_renderer_draws_512_px_pictures_with_the_same_layout():
    from pixelchat.data.scenes import render_scene, sample_attributes

    attrs = sample_attributes(np.random.default_rng([5, 0]))
    big = render_scene(attrs, 512, seed=5)
    assert big.size == (512, 512)
    halved = np.asarray(big.resize((256, 256), Image.Resampling.BOX), dtype=np.float32)
    assert np.abs(halved - np.asarray(render_scene(attrs, 256, seed=5), dtype=np.float32)).mean() < 6
    with pytest.raises(ValueError, match="size must be one of"):
        render_scene(attrs, 300)


def test_every_size_the_engine_draws_comes_back_with_its_networks_in_the_record(sized):
    assert sized.info.sizes == (32, 64, 128) and sized.info.default_size == 32  # 256 is not among them
    for side in sized.info.sizes:
        first = sized.generate(GenerateRequest("a lake at night", n=2, seed=4, size=side))
        again = sized.generate(GenerateRequest("a lake at night", n=2, seed=4, size=side))
        assert [g.image.size for g in first] == [(side, side)] * 2
        assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(first, again))
        record = first[0].record
        assert record["size"] == [side, side]
        assert ("upsampler" in record) == (side > 32)
        if side > 32:
            assert record["upsampler"]["scale"] == side // 32 and record["upsampler"]["sha256"] == sized.info.upsampler["sha256"]
    mixed = sized.generate_batch([GenerateRequest("a lake", seed=1, size=128), GenerateRequest("a lake", seed=1, size=32)])
    assert [m[0].image.size for m in mixed] == [(128, 128), (32, 32)]
    for bad in (300, 256, 0, "64"):
        with pytest.raises(ValueError, match="32×32, 64×64, 128×128"):
            sized.generate(GenerateRequest("a lake", size=bad))


def test_an_upsampler_for_another_input_size_is_refused(tiny_model, tmp_path):
    other = train_upsampler(tmp_path / "u16", n_images=4, in_size=16, scales=(2,), features=4, body=1, steps=1,
                            minutes=0, batch_size=2, patch=8, n_test=2, progress=False)
    with pytest.raises(CheckpointError, match="takes 16 px"):
        GANEngine(tiny_model, upsampler=other)
    assert GANEngine(tiny_model, upsampler=False).info.sizes == (32,)


def test_edits_at_the_large_size_keep_every_pixel_outside_the_mask(sized, tmp_path):
    drawn = sized.generate(GenerateRequest("a lake under many clouds", seed=2, size=128))[0]
    picture = load_image(save_png(drawn.image, tmp_path / "p.png", drawn.record))
    mask = np.zeros((128, 128), np.float32)
    mask[:40] = 1  # the sky may change
    out = sized.edit(picture, "a lake under many pink clouds", mask=mask, seed=1, candidates=2, refine_steps=0)[0]
    assert out.image.size == (128, 128) and out.record["size"] == [128, 128]
    after, before = np.asarray(out.image), np.asarray(picture)
    assert np.array_equal(after[40:], before[40:])
    small = sized.edit(picture, "a lake under many pink clouds", mask=mask, seed=1, candidates=2, refine_steps=0,
                       size=64)[0]
    assert small.image.size == (64, 64) and small.record["upsampler"]["scale"] == 2
    with pytest.raises(ValueError, match="must match the picture"):
        sized.edit(picture, "a lake", mask=np.zeros((32, 32), np.float32), size=64, candidates=1, refine_steps=0)
    assert [v.image.size for v in sized.vary(picture, n=2, seed=3)] == [(128, 128)] * 2
    assert sized.vary(picture, n=1, seed=3, size=32)[0].image.size == (32, 32)


def test_a_picture_from_elsewhere_comes_back_at_the_size_asked(sized):
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    out = sized.edit(photo, "a desert at noon", seed=0, candidates=2, refine_steps=0, size=128)[0]
    assert out.image.size == (128, 128)
    assert sized.edit(photo, "a desert at noon", seed=0, candidates=2, refine_steps=0)[0].image.size == (32, 32)


def test_the_cli_draws_edits_and_varies_at_the_size_asked(tmp_path):
    """The shipped model: 256 px by default, 64 and 512 on request; a size it does not draw writes nothing."""
    out = tmp_path / "out"
    drawn = runner.invoke(app, ["generate", "a boat on a lake at sunset", "--seed", "1", "--out", str(out), "--json"])
    assert drawn.exit_code == 0, drawn.output
    first = json.loads(drawn.output)["files"][0]
    assert Image.open(first).size == (256, 256)
    assert read_record(first)["upsampler"]["scale"] == 4
    big = runner.invoke(app, ["generate", "a boat on a lake", "--seed", "1", "--size", "512", "--out", str(out)])
    assert big.exit_code == 0 and Image.open(big.output.split()[-1]).size == (512, 512)
    before = sorted(out.iterdir())
    for bad in ("300", "1024"):
        refused = runner.invoke(app, ["generate", "a boat", "--size", bad, "--out", str(out)])
        assert refused.exit_code == 2 and "64×64, 256×256, 512×512" in refused.output
    assert sorted(out.iterdir()) == before
    edited = runner.invoke(app, ["edit", first, "make it night", "--size", "64", "--out", str(out)])
    assert edited.exit_code == 0, edited.output
    assert Image.open(edited.output.split()[-1]).size == (64, 64)
    varied = runner.invoke(app, ["vary", first, "--n", "1", "--out", str(out)])
    assert varied.exit_code == 0 and Image.open(varied.output.split()[-1]).size == (256, 256)
    Image.new("L", (100, 100)).save(tmp_path / "mask.png")
    refused = runner.invoke(app, ["edit", first, "make it night", "--mask", str(tmp_path / "mask.png"), "--out", str(out)])
    assert refused.exit_code == 2 and "must match the picture" in refused.output


def test_train_upsampler_from_the_command_line(tmp_path):
    out = tmp_path / "up"
    args = ["train-upsampler", "--out", str(out), "--images", "6", "--steps", "2", "--in-size", "32", "--scales", "2",
            "--features", "4", "--body", "1", "--batch-size", "2", "--generator", "none"]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert load_upsampler(out).cfg.scales == (2,)
    refused = runner.invoke(app, [*args[:-1], "none", "--scales", "3"])
    assert refused.exit_code == 2 and "scales" in refused.output


def test_a_conversation_draws_at_its_size_and_edits_keep_the_pictures_size(sized):
    from pixelchat.conversation.session import Session

    s = Session(model=sized, size=128, checks=0, seed=1)
    first = s.turn("a lake at night")
    assert first.images[0].size == (128, 128)
    assert s.turn("add a boat").images[0].size == (128, 128)
    again = Session.from_json(s.to_json())
    assert again.size == 128
    with pytest.raises(ValueError, match="size must be"):
        Session(size=0)


def test_an_upsampler_trains_on_a_folder_of_pictures(scenes_folder, tmp_path):
    path = train_upsampler(tmp_path / "folder-up", data=scenes_folder, in_size=16, scales=(2,), features=4, body=1,
                           steps=2, minutes=0, batch_size=2, patch=8, progress=False)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["training"]["images"] == 11 and meta["test"]["n"] == 1  # the last tenth held out
    assert load_upsampler(path).upscale(torch.zeros(1, 3, 16, 16), 2).shape == (1, 3, 32, 32)
