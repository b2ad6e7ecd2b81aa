"""End to end on tiny real models: render → export → train → save → load → generate."""

import json

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAIN
from pixelchat import generate
from pixelchat.engines import GANEngine
from pixelchat.train import train
from pixelchat.training.checkpoint import CheckpointError, load_checkpoint


def test_run_folder_holds_everything(tiny_run):
    for name in ("model.safetensors", "model.json", "checkpoint.safetensors", "checkpoint.json",
                 "training_options.json", "stats.jsonl"):
        assert (tiny_run / name).is_file(), name
    assert list((tiny_run / "samples").glob("step-*.png"))
    stats = [json.loads(line) for line in (tiny_run / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [1, 2, 3]
    assert stats[0]["loss_gp"] > 0  # the lazy gradient penalty ran on the first step and is logged
    config = json.loads((tiny_run / "model.json").read_text())
    assert config["model"]["ngf"] == 4 and config["step"] == 3
    assert config["text_encoder"]["name"] == "all-MiniLM-L6-v2" and len(config["text_encoder"]["sha256"]) == 64
    ckpt = load_checkpoint(tiny_run / "model.safetensors")
    assert all(t.dtype == torch.float16 for t in ckpt.tensors.values() if t.is_floating_point())


def test_generate_is_reproducible(tiny_model):
    a = generate("a snowy mountain range at night", n=2, seed=5, model=tiny_model)
    b = generate("a snowy mountain range at night", n=2, seed=5, model=tiny_model)
    assert [im.size for im in a] == [(32, 32)] * 2
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(a[1]))  # seed + i differ
    c = generate("a snowy mountain range at night", n=1, seed=6, model=tiny_model)
    assert np.array_equal(np.asarray(a[1]), np.asarray(c[0]))  # image i is seed + i on its own too
    record = a[0].info["pixelchat"]
    assert record["seed"] == 5 and record["model"]["sha256"] == load_checkpoint(tiny_model).sha256


def test_a_batch_of_requests_draws_what_each_would_alone(tiny_model):
    from pixelchat.engines import GenerateRequest, load_engine

    engine = load_engine(tiny_model)
    requests = [GenerateRequest("a lake at night", n=2, seed=3), GenerateRequest("a desert with a house", seed=9)]
    batched = engine.generate_batch(requests)
    assert [len(b) for b in batched] == [2, 1]
    for request, got in zip(requests, batched):
        alone = engine.generate(request)
        assert [g.seed for g in got] == [a.seed for a in alone]
        assert all(np.abs(np.asarray(g.image, dtype=int) - np.asarray(a.image, dtype=int)).max() <= 1
                   for g, a in zip(got, alone))
        assert got[0].record["prompt"] == request.prompt
    with pytest.raises(ValueError, match="empty"):
        engine.generate_batch([requests[0], GenerateRequest(" ")])


def test_resume_continues_the_run(tiny_run, tmp_path, scenes_folder):
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(tiny_run, run)
    train(str(scenes_folder), size=32, out=run, steps=5, resume=run, model_options=TINY_MODEL, train_options=TINY_TRAIN)
    config = json.loads((run / "checkpoint.json").read_text())
    assert config["step"] == 5
    steps = [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


def test_existing_run_is_not_overwritten(tiny_run, scenes_folder):
    before = (tiny_run / "checkpoint.safetensors").read_bytes()
    with pytest.raises(ValueError, match="already holds a training run"):
        train(str(scenes_folder), size=32, out=tiny_run, steps=1, model_options=TINY_MODEL, train_options=TINY_TRAIN)
    assert (tiny_run / "checkpoint.safetensors").read_bytes() == before


def test_dry_run_writes_nothing(tmp_path, scenes_folder):
    out = tmp_path / "dry"
    assert train(str(scenes_folder), size=32, out=out, steps=10, dry_run=True, model_options=TINY_MODEL) is None
    assert not out.exists()


def test_dcgan_baseline_trains_with_the_same_loop(tmp_path, scenes_folder):
    out = tmp_path / "dcgan"
    final = train(str(scenes_folder), arch="dcgan", size=32, out=out, steps=2,
                  model_options={"ngf": 4, "ndf": 4}, train_options=TINY_TRAIN)
    config = json.loads((out / "model.json").read_text())
    assert config["model"]["arch"] == "dcgan" and config["training"]["loss"] == "bce"
    assert config["training"]["lr_g"] == 2e-4 and config["training"]["beta1"] == 0.5
    assert len(generate("a lake", n=2, seed=0, model=final)) == 2


def test_training_on_scenes_and_digits_sources(tmp_path):
    final = train("digits", arch="dcgan", size=16, out=tmp_path / "digits", steps=1,
                  model_options={"ngf": 4, "ndf": 4, "conditional": False},
                  train_options={**TINY_TRAIN, "limit": 16})
    assert generate("a handwritten digit seven", n=1, seed=0, model=final)[0].size == (16, 16)
    final = train("scenes", size=32, out=tmp_path / "scenes", steps=1, model_options=TINY_MODEL,
                  train_options={**TINY_TRAIN, "scenes": 8, "captions_per_image": 2})
    assert final.exists()


def test_mismatched_or_corrupt_checkpoints_are_refused(tiny_run, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_run, bad)
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[-10:] = b"\x00" * 10
    (bad / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad / "model.safetensors")

    (bad / "checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(bad / "checkpoint.safetensors")

    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    config = json.loads((other / "model.json").read_text())
    config["text_encoder"]["sha256"] = "0" * 64
    (other / "model.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="text encoder"):
        GANEngine(other / "model.safetensors")

    config["text_encoder"]["sha256"] = json.loads((tiny_run / "model.json").read_text())["text_encoder"]["sha256"]
    config["model"]["ngf"] = 8
    (other / "model.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not fit|shape"):
        GANEngine(other / "model.safetensors")


def test_attribute_heads_train_on_scenes_and_stay_out_of_the_generator(tmp_path):
    out = tmp_path / "heads"
    final = train("scenes", size=32, out=out, steps=3, model_options=TINY_MODEL,
                  train_options={**TINY_TRAIN, "scenes": 12, "captions_per_image": 2, "clock": "cpu",
                                 "snapshot_minutes": 1e-4})
    config = json.loads((out / "model.json").read_text())
    assert set(config["model"]["attribute_heads"]) == {"time", "celestial", "clouds", "cloud_color", "terrain", "snow",
                                                       "water", "trees", "house", "boat"}
    rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert all(r["attr_d"] > 0 and r["attr_g"] >= 0 and r["cpu_time"] > 0 for r in rows)
    full = load_checkpoint(out / "checkpoint.safetensors")
    assert "D.classify.weight" in full.tensors and not any("classify" in k for k in load_checkpoint(final).tensors)
    snapshots = sorted((out / "snapshots").glob("model-*.safetensors"))
    assert snapshots and load_checkpoint(snapshots[-1]).config["step"] == 3
    assert len(generate("a lake at night", n=1, seed=0, model=snapshots[-1])) == 1
    # the seed recipe keeps its plain discriminator; a data folder without captions' attributes gets none
    with pytest.raises(ValueError, match="attribute heads"):
        train("scenes", arch="dcgan", size=32, out=tmp_path / "x", steps=1,
              model_options={"attribute_heads": {"time": ["day", "night"]}}, train_options=TINY_TRAIN)


def test_attribute_targets_follow_what_each_caption_names():
    from pixelchat.data.dataset import CaptionedImages
    from pixelchat.training.loop import attribute_targets

    attrs = [{"time": "night", "clouds": "none", "cloud_color": "pink", "water": "lake"},
             {"time": "day", "clouds": "few", "cloud_color": "gray", "water": "none"}]
    data = CaptionedImages(torch.zeros((2, 3, 16, 16), dtype=torch.uint8), [["a", "b"], ["c"]], attrs,
                           extra={"mentioned": [[["time"], ["water", "cloud_color"]], [["clouds", "cloud_color"]]]})
    heads = {"time": ["day", "sunset", "night"], "clouds": ["none", "few", "many"],
             "cloud_color": ["white", "pink", "gray"], "water": ["none", "lake", "sea"]}
    t = attribute_targets(data, heads, 2)
    assert t.labels.tolist() == [[2, 0, -1, 1], [0, 1, 2, 0]]  # no colour without clouds
    assert t.named.tolist() == [[[True, False, False, False], [False, False, False, True]],
                                [[False, True, True, False], [False, False, False, False]]]


def test_ema_decay_warms_up():
    from pixelchat.training.ema import ema_decay_at

    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(90, 0.999) == pytest.approx(0.91)
    assert ema_decay_at(100_000, 0.999) == 0.999


def test_caption_embeddings_are_cached_in_the_run_folder(tiny_run, tmp_path):
    from rich.console import Console

    from pixelchat.text.encoder import load_text_encoder
    from pixelchat.training.loop import embed_captions

    assert (tiny_run / "text-embeddings.safetensors").exists()
    encoder = load_text_encoder("all-MiniLM-L6-v2")
    captions = ["a lake at night", "snowy hills"]
    first = embed_captions(encoder, captions, tmp_path / "cache", Console(stderr=True))

    class Refuses:
        name, dim, weights_sha256 = encoder.name, encoder.dim, encoder.weights_sha256

        def encode(self, texts):
            raise AssertionError("the cache should have answered")

    assert torch.equal(embed_captions(Refuses(), captions, tmp_path / "cache", Console(stderr=True)), first)
    # other captions are embedded afresh
    again = embed_captions(encoder, captions[:1], tmp_path / "cache", Console(stderr=True))
    assert again.shape == (1, encoder.dim)


def test_separate_attribute_classifier_trains_resumes_and_is_not_shipped(tmp_path):
    out = tmp_path / "cls"
    options = {**TINY_TRAIN, "scenes": 12, "captions_per_image": 2}
    model = {**TINY_MODEL, "attribute_net": "classifier", "attribute_width": 4}
    train("scenes", size=32, out=out, steps=2, model_options=model, train_options=options)
    full = load_checkpoint(out / "checkpoint.safetensors")
    assert any(k.startswith("C.") for k in full.tensors) and "opt_c" in full.config["optimizers"]
    assert not any(k.startswith("D.classify") for k in full.tensors)
    final = train("scenes", size=32, out=out, steps=3, resume=out, model_options=model, train_options=options)
    assert load_checkpoint(final).config["step"] == 3
    assert all(k.startswith("G_ema.") for k in load_checkpoint(final).tensors)
    with pytest.raises(ValueError, match="attribute_net"):
        train("scenes", size=32, out=tmp_path / "bad", steps=1, model_options={**TINY_MODEL, "attribute_net": "judge"},
              train_options=options)


def test_resume_accepts_a_checkpoint_from_before_new_config_fields(tiny_run, tmp_path, scenes_folder):
    import shutil

    run = tmp_path / "older"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "checkpoint.json").read_text())
    for field in ("attribute_net", "attribute_width"):  # fields added later, with defaults
        config["model"].pop(field)
    (run / "checkpoint.json").write_text(json.dumps(config))
    train(str(scenes_folder), size=32, out=run, steps=4, resume=run, model_options=TINY_MODEL, train_options=TINY_TRAIN)
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 4
