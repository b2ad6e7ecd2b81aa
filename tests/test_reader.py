"""The prompt reader (the text path): a tiny one trained a few steps, and the shipped one."""

from __future__ import annotations

import json

import pytest

from pixelchat.data.scenes import SCHEMA
from pixelchat.text.encoder import load_text_encoder
from pixelchat.text.reader import (
    caption_set, drop_conflicts, load_reader, read_prompt, read_prompts, reader_scores, reading_labels, train_reader,
)

SCENES = {k: list(v) for k, v in SCHEMA.items()}


@pytest.fixture(scope="module")
def tiny_reader(tmp_path_factory):
    out = tmp_path_factory.mktemp("reader") / "reader"
    return train_reader(out, n_train=400, n_test=40, minutes=5, steps=250, batch_size=32, lr=3e-3, token_drop=0.1,
                        progress=False)


def test_labels_mark_what_a_caption_leaves_out():
    labels = reading_labels([{"boat": "no"}, {}], SCENES)
    b = list(SCENES).index("boat")
    assert labels[0, b] == SCENES["boat"].index("no")
    assert labels[1, b] == len(SCENES["boat"])  # "not said"


def test_a_tiny_reader_learns_to_read_its_captions(tiny_reader):
    reader = load_reader(tiny_reader)
    encoder = load_text_encoder()
    captions, named = caption_set(400, 0, "train")  # what it trained on: it must have learned something
    scores = reader_scores(read_prompts(reader, encoder, captions[:120], patterns=False), named[:120], SCENES)
    assert scores["mean"] > 0.8
    meta = json.loads(tiny_reader.with_suffix(".json").read_text())
    assert meta["test"]["split"] == "eval" and set(meta["test"]) >= {"network", "with_patterns"}
    assert meta["training"]["token_drop"] == 0.1


def test_token_dropout_out_of_range_is_refused(tmp_path):
    with pytest.raises(ValueError, match="token_drop"):
        train_reader(tmp_path / "r", n_train=10, steps=1, token_drop=0.95, progress=False)
    assert not list(tmp_path.iterdir())


def test_the_reader_refuses_a_checkpoint_of_another_kind(tmp_path):
    from pixelchat.training.checkpoint import CheckpointError
    from pixelchat.vision.describer import DEFAULT_DESCRIBER

    with pytest.raises(CheckpointError, match="prompt-reader"):
        load_reader(DEFAULT_DESCRIBER)


@pytest.mark.parametrize("prompt, expected", [
    ("snowy peaks at dusk with no boats", {"terrain": "mountains", "snow": "yes", "time": "sunset", "boat": "no"}),
    ("a cottage beside a pond under a full moon", {"house": "yes", "water": "lake", "celestial": "moon"}),
    ("a treeless desert by day with a clear sky", {"trees": "none", "terrain": "desert", "time": "day", "clouds": "none"}),
])
def test_the_shipped_reader_reads_what_a_prompt_says(prompt, expected):
    reading = read_prompt(load_reader(), load_text_encoder(), prompt)
    assert {k: reading.values.get(k) for k in expected} == expected
    assert set(reading.values) == set(expected)  # nothing more is read into it
    assert all(0.0 <= c <= 1.0 for c in reading.confidence.values())


class CountingEncoder:
    """The shipped encoder, counting the prompts it encodes."""

    def __init__(self):
        self.inner, self.encoded = load_text_encoder(), []

    def encode(self, prompts, *a, **k):
        self.encoded += list(prompts)
        return self.inner.encode(prompts, *a, **k)

    def offsets(self, prompts):
        return self.inner.offsets(prompts)

    def embed(self, prompts, *a, **k):
        return self.inner.embed(prompts, *a, **k)

    @property
    def name(self):
        return self.inner.name


def test_a_prompt_the_patterns_explain_costs_no_encoder_pass():
    encoder = CountingEncoder()
    reading = read_prompt(load_reader(), encoder, "A beautiful picture of snowy hills at night with a lake")
    assert reading.values == {"time": "night", "terrain": "hills", "snow": "yes", "water": "lake"}
    assert set(reading.by.values()) == {"pattern"} and encoder.encoded == []


def test_the_network_reads_only_what_the_patterns_leave_unexplained():
    encoder = CountingEncoder()
    reading = read_prompt(load_reader(), encoder, "a cottage with a canoe")  # "canoe": no pattern knows it
    assert reading.values.get("boat") == "yes" and reading.by["boat"] == "network"
    assert reading.values["house"] == "yes" and reading.by["house"] == "pattern"
    assert len(encoder.encoded) == 1
    # the network alone reads a value for attributes its attention found in the known words too;
    # next to the patterns, only readings drawn from the unexplained word stay
    alone = read_prompt(load_reader(), encoder, "a cottage with a canoe", patterns=False)
    assert set(reading.values) - {"house", "boat"} <= set(alone.values) - {"house", "boat"}


@pytest.mark.parametrize("values, by, kept", [
    ({"boat": "yes", "water": "none"}, {"boat": "network", "water": "pattern"}, {"water": "none"}),
    ({"celestial": "moon", "time": "day"}, {"celestial": "pattern", "time": "network"}, {"celestial": "moon"}),
    ({"clouds": "none", "cloud_color": "gray"}, {"clouds": "network", "cloud_color": "network"}, {"cloud_color": "gray"}),
    ({"celestial": "sun", "time": "night"}, {"celestial": "pattern", "time": "pattern"},  # the prompt's own: it stays
     {"celestial": "sun", "time": "night"}),
])
def test_a_network_reading_that_contradicts_another_is_dropped(values, by, kept):
    confidence = {k: 1.0 if b == "pattern" else 0.6 for k, b in by.items()}
    if "clouds" in by:
        confidence["clouds"] = 0.5  # the less sure of two network readings goes
    values, by = dict(values), dict(by)
    drop_conflicts(values, confidence, by)
    assert values == kept and set(by) == set(kept) and set(confidence) == set(kept)


def test_words_unlike_any_training_phrasing_are_not_read_by_the_network(monkeypatch):
    import pixelchat.text.reader as reader_module

    reader, encoder = load_reader(), load_text_encoder()
    assert read_prompt(reader, encoder, "add a guitar").values == {}  # nothing the scenes know
    monkeypatch.setattr(reader_module, "KNOWN_WORDS", 0.0)  # without the gate the network reads a lake into it
    assert read_prompt(reader, encoder, "add a guitar").values == {"water": "lake"}
    monkeypatch.undo()
    assert read_prompt(reader, encoder, "a cottage with a canoe").values.get("boat") == "yes"  # like "a boat"


def test_token_offsets_point_into_the_prompt():
    encoder = load_text_encoder()
    [offsets] = encoder.offsets(["snowy hills"])
    words = {"snowy hills"[s:e] for s, e in offsets if e > s}
    assert "hills" in words and offsets[0] == (0, 0)  # [CLS] covers nothing
