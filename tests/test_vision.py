"""describe, edit and vary on tiny real models: checkpoints, inversion, masks, records."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pixelchat.data.scenes import SCHEMA, render_scene, sample_attributes
from pixelchat.engines import GenerateRequest, UnsupportedOperation
from pixelchat.imagefiles import ImageFileError, mask_array, save_png
from pixelchat.text.instructions import read_attributes
from pixelchat.training.checkpoint import CheckpointError
from pixelchat.vision.describer import describe_images, image_to_tensor, load_describer, tokenize
from pixelchat.vision.editing import candidate_latents, change_mask
from pixelchat.vision.inversion import invert, load_inverter



def drawn(engine, prompt="hills by a lake at night", seed=1):
    g = engine.generate(GenerateRequest(prompt, n=1, seed=seed))[0]
    g.image.info["pixelchat"] = g.record
    return g


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def test_describer_checkpoint_reads_back(tiny_describer):
    model = load_describer(tiny_describer)
    render = render_scene(sample_attributes(np.random.default_rng(0)), 64, 0)
    d = describe_images(model, image_to_tensor(render))[0]
    assert set(d.attributes) <= set(SCHEMA) and set(d.confidence) == set(d.attributes)
    assert all(d.attributes[k] in SCHEMA[k] for k in d.attributes)
    assert all(0 < c <= 1 for c in d.confidence.values())
    assert not (d.attributes["time"] == "night" and d.attributes["celestial"] == "sun")
    assert read_attributes(d.prompt) == d.attributes  # the prompt names exactly what was read
    assert all(w in model.cfg.vocab for w in tokenize(d.caption))
    assert json.loads(json.dumps(d.to_dict()))["prompt"] == d.prompt


def test_a_caption_that_names_one_thing_twice_gives_way_to_the_heads_sentence(tiny_describer, monkeypatch):
    model = load_describer(tiny_describer)
    render = image_to_tensor(render_scene(sample_attributes(np.random.default_rng(0)), 64, 0))
    heads = describe_images(model, render)[0]
    clouds = {"none": "with a clear sky", "few": "with a few clouds", "many": "with many clouds"}[
        heads.attributes["clouds"]]
    for written, kept in ((f"a view {clouds}", True), (f"a view {clouds}, {clouds}", False)):
        monkeypatch.setattr(type(model), "caption", lambda self, memory, no_repeat=4, text=written: [text])
        d = describe_images(model, render)[0]
        assert (d.caption == written) is kept and (d.caption == heads.prompt) is not kept, d.caption


def test_describer_refuses_other_and_broken_checkpoints(tiny_model, tiny_describer, tmp_path):
    with pytest.raises(CheckpointError, match="not a describer"):
        load_describer(tiny_model)
    broken = tmp_path / "broken"
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 100)
    (tmp_path / "broken.json").write_text(tiny_describer.with_suffix(".json").read_text())
    with pytest.raises(CheckpointError):
        load_describer(broken)


def test_inversion_lowers_the_reconstruction_error(tiny_engine, tiny_inverter):
    G = tiny_engine.generator
    z = torch.randn((2, G.cfg.z_dim), generator=torch.Generator().manual_seed(3))
    text = tiny_engine.encode_prompt("a desert at sunset", 2)
    with torch.no_grad():
        target = G(z, text)
    inv = invert(G, target, text, inverter=load_inverter(tiny_inverter), steps=30, lr=0.05)
    assert all(end > start + 0.5 for start, end in zip(inv.start_psnr, inv.psnr)), inv.to_dict()
    inv = invert(G, target, text, inverter=None, steps=30, restarts=4)  # no inverter: random restarts
    assert all(end > start for start, end in zip(inv.start_psnr, inv.psnr))


def test_inverter_for_another_generator_is_refused(tiny_model, tiny_describer, tmp_path):
    from pixelchat.engines import GANEngine
    from pixelchat.training.checkpoint import module_tensors, save_checkpoint
    from pixelchat.vision.inversion import Inverter, InverterConfig

    inv = Inverter(InverterConfig(size=32, generator_sha256="0" * 64, width=4))
    save_checkpoint(tmp_path / "inv", module_tensors("inverter", inv), {"kind": "inverter", "inverter": inv.cfg.to_dict()})
    engine = GANEngine(tiny_model, describer=tiny_describer, inverter=tmp_path / "inv")
    with pytest.raises(CheckpointError, match="another generator"):
        engine.inverter


def test_candidates_start_at_the_latent_and_keep_its_scale():
    z0 = torch.randn(100, generator=torch.Generator().manual_seed(0))
    zs = candidate_latents(z0, 0.5, 16, torch.Generator().manual_seed(1))
    assert torch.equal(zs[0], z0)
    assert (zs - z0).norm(dim=1)[1:].gt(0).all()
    assert zs.norm(dim=1).sub(10).abs().max() < 4  # |z| stays near sqrt(100)
    with pytest.raises(ValueError, match="strength"):
        candidate_latents(z0, 1.5, 4, torch.Generator())


def test_change_mask_marks_only_what_changed():
    a = torch.zeros(1, 3, 16, 16)
    b = a.clone()
    b[..., 4:8, 4:8] = 1.0
    m = change_mask(b, a)
    assert m[0, 0, 5, 5] > 0.9 and m[0, 0, 14, 14] < 0.01


def test_mask_files_are_checked():
    assert mask_array(Image.new("L", (8, 8), 255), (8, 8)).min() == 1.0
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    m = mask_array(rgba, (8, 8))
    assert m[0, 0] == 1.0 and m[4, 4] == 0.0  # transparent changes, opaque stays
    with pytest.raises(ImageFileError, match="same size"):
        mask_array(Image.new("L", (8, 9)), (8, 8))
    with pytest.raises(ImageFileError, match="greyscale"):
        mask_array(Image.new("RGB", (8, 8)), (8, 8))
    with pytest.raises(ImageFileError, match="greyscale"):
        mask_array(Image.new("CMYK", (8, 8)), (8, 8))


def test_edit_from_the_record_at_strength_zero_redraws_the_same_picture(tiny_engine):
    g = drawn(tiny_engine)
    out = tiny_engine.edit(g.image, g.prompt, strength=0.0, candidates=4, seed=0, refine_steps=0)[0]
    assert np.array_equal(pixels(out.image), pixels(g.image))
    assert out.record["edit"]["source"]["how"] == "record"


def test_edit_keeps_the_picture_outside_the_mask(tiny_engine):
    g = drawn(tiny_engine)
    mask = np.zeros((32, 32), np.float32)
    mask[:, :16] = 1.0  # the left half may change
    prompt = "a desert at sunset with a house"
    out = tiny_engine.edit(g.image, prompt, mask=mask, candidates=1, seed=0, refine_steps=0)[0]
    free = tiny_engine.edit(g.image, prompt, candidates=1, seed=0, refine_steps=0)[0]  # the same redraw, unmasked
    before, after, redrawn = pixels(g.image), pixels(out.image), pixels(free.image)
    assert np.abs(redrawn - before).max() > 0
    assert np.abs(after[:, 20:] - before[:, 20:]).max() <= 1  # right of the feathered edge: kept
    assert np.abs(after[:, :12] - redrawn[:, :12]).max() <= 1  # left of it: the redraw
    assert out.record["edit"]["mask"] is True and out.record["prompt"] == "a desert at sunset with a house"


def test_edit_of_a_picture_from_elsewhere_inverts_it(tiny_engine):
    render = render_scene(sample_attributes(np.random.default_rng(1)), 32, 1)
    out = tiny_engine.edit(render, "hills at night", n=2, seed=0, candidates=4)
    assert len(out) == 2
    src = out[0].record["edit"]["source"]
    assert src["how"] == "inversion" and "psnr" in src and src["prompt"]


def test_edit_options_are_checked(tiny_engine):
    g = drawn(tiny_engine)
    with pytest.raises(UnsupportedOperation, match="unknown edit option"):
        tiny_engine.edit(g.image, "hills", colour="red")
    with pytest.raises(ValueError, match="strength"):
        tiny_engine.edit(g.image, "hills", strength=2.0)
    with pytest.raises(ValueError, match="prompt is empty"):
        tiny_engine.edit(g.image, "  ")


def test_vary_keeps_the_prompt_and_moves_the_latent(tiny_engine):
    g = drawn(tiny_engine)
    out = tiny_engine.vary(g.image, n=3, strength=0.5, seed=2)
    assert len(out) == 3 and all(r.prompt == g.prompt for r in out)
    latents = {r.record["latent"] for r in out}
    assert len(latents) == 3 and g.record["latent"] not in latents
    with pytest.raises(ValueError, match="strength"):
        tiny_engine.vary(g.image, strength=0.0)


def test_edit_record_allows_editing_again(tiny_engine, tmp_path):
    g = drawn(tiny_engine)
    first = tiny_engine.edit(g.image, "hills by a lake at night with a boat", seed=0, candidates=4, mix="off")[0]
    path = save_png(first.image, tmp_path / "e.png", first.record)
    from pixelchat.imagefiles import load_image

    again = tiny_engine.edit(load_image(path), "hills by a lake at night with a boat", strength=0.0, seed=0,
                             candidates=2, refine_steps=0)[0]
    assert again.record["edit"]["source"]["how"] == "record"
    assert np.array_equal(pixels(again.image), pixels(first.image))


def test_guided_refinement_raises_the_describers_agreement(tiny_engine):
    from pixelchat.vision.describer import attribute_probabilities
    from pixelchat.vision.editing import agreement, guided_refine

    G, describer = tiny_engine.generator, tiny_engine.describer
    z = torch.randn((3, G.cfg.z_dim), generator=torch.Generator().manual_seed(4))
    text = tiny_engine.encode_prompt("hills", 3)
    target = {"time": "night", "house": "yes", "trees": "forest"}
    schema = describer.cfg.schema

    def score(latents):
        with torch.no_grad():
            return agreement(attribute_probabilities(describer, G(latents, text)), target, schema)

    moved = guided_refine(G, describer, z, text, target, steps=20, lr=0.1)
    assert (score(moved) > score(z)).all()
    assert torch.equal(guided_refine(G, describer, z, text, target, steps=0), z)


def test_the_shipped_describer_says_when_a_picture_is_unlike_its_scenes(tmp_path):
    from pixelchat import Session
    from pixelchat.describe import describe

    rng = np.random.default_rng(3)
    scene = render_scene(sample_attributes(rng), 64, 90_000_001)
    noise = Image.fromarray((rng.random((96, 96, 3)) * 255).astype(np.uint8))
    seen, odd = describe(scene), describe(noise)
    assert seen.familiar is True and 0 < seen.novelty <= 1
    assert odd.familiar is False and odd.novelty > 1 and odd.to_dict()["familiar"] is False
    assert odd.attributes  # the heads still read something, and the reply says what it is worth
    noise.save(tmp_path / "noise.png")
    reply = Session(seed=1).open(tmp_path / "noise.png").reply
    assert reply.startswith("this picture does not look like the scenes the describer knows")
    from typer.testing import CliRunner

    from pixelchat.cli import app

    out = CliRunner().invoke(app, ["describe", str(tmp_path / "noise.png")]).stdout
    assert out.startswith("note: this picture does not look like")


def test_familiarity_statistics_fit_save_load_and_are_checked(tiny_describer, tmp_path):
    from pixelchat.data.scenes import render_labelled
    from pixelchat.vision.describer import Familiarity, fit_familiarity

    model = load_describer(tiny_describer)
    assert model.familiarity is None  # none beside it: descriptions say nothing of familiarity
    render = image_to_tensor(render_scene(sample_attributes(np.random.default_rng(0)), 64, 0))
    assert describe_images(model, render)[0].familiar is None and "familiar" not in describe_images(model, render)[0].to_dict()
    images, _ = render_labelled(120, 5_000, 32, progress=False)
    stats = fit_familiarity(model, images[:80], images[80:], quantile=0.9)
    with torch.inference_mode():
        share = float((stats.novelty(model.encode(images[80:])) <= 1).double().mean())
    assert share == pytest.approx(0.9, abs=0.03)  # the threshold sits at the asked quantile of the calibration set
    path = stats.save(tmp_path / "f", {"note": "test"})
    again = Familiarity.load(path)
    assert torch.allclose(again.mean, stats.mean) and again.threshold == stats.threshold
    path.with_suffix(".json").write_text(path.with_suffix(".json").read_text().replace("describer-familiarity", "judge"))
    with pytest.raises(CheckpointError, match="not a describer's familiarity"):
        Familiarity.load(path)
