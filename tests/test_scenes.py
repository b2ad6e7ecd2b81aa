import re

import numpy as np
import pytest

from pixelchat.data import SCHEMA, render_scene, scene_sample
from pixelchat.data.captions import PHRASINGS, caption_scene
from pixelchat.data.scenes import sample_attributes, validate_attributes


def test_same_seed_same_sample_and_pixels():
    a, b = scene_sample(7, 64), scene_sample(7, 64)
    assert a.caption == b.caption and a.attributes == b.attributes
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    c = scene_sample(8, 64)
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))


@pytest.mark.parametrize("size", [64, 128])
def test_resolution_is_a_parameter(size):
    s = scene_sample(3, size)
    assert s.image.size == (size, size) and s.image.mode == "RGB"


def test_attributes_follow_the_schema_and_its_constraints():
    rng = np.random.default_rng(0)
    seen = {k: set() for k in SCHEMA}
    for _ in range(600):
        a = sample_attributes(rng)
        assert set(a) == set(SCHEMA)
        for k, v in a.items():
            seen[k].add(v)
        if a["celestial"] == "sun":
            assert a["time"] in ("day", "sunset")
        if a["celestial"] == "moon":
            assert a["time"] == "night"
        if a["boat"] == "yes":
            assert a["water"] != "none"
    assert seen == {k: set(v) for k, v in SCHEMA.items()}  # every value occurs


def test_invalid_attributes_are_refused():
    good = scene_sample(0).attributes
    with pytest.raises(ValueError, match="moon"):
        validate_attributes({**good, "time": "day", "celestial": "moon"})
    with pytest.raises(ValueError, match="boat"):
        validate_attributes({**good, "water": "none", "boat": "yes"})
    with pytest.raises(ValueError, match="terrain"):
        validate_attributes({**good, "terrain": "volcano"})
    with pytest.raises(ValueError, match="unknown"):
        render_scene({**good, "dragons": "yes"})


def test_attributes_change_the_picture():
    base = {"time": "day", "celestial": "none", "clouds": "none", "cloud_color": "white", "terrain": "plain",
            "snow": "no", "water": "none", "trees": "none", "house": "no", "boat": "no"}
    ref = np.asarray(render_scene(base, 64, seed=1)).astype(int)
    for name, value in [("time", "night"), ("clouds", "many"), ("terrain", "mountains"), ("snow", "yes"),
                        ("water", "sea"), ("trees", "forest"), ("house", "yes"), ("celestial", "sun")]:
        other = np.asarray(render_scene({**base, name: value}, 64, seed=1)).astype(int)
        assert np.abs(other - ref).mean() > 0.5, name


def _heldout_phrases():
    """The distinctive part of each held-out phrasing: its longest literal fragment between placeholders."""
    cores = set()
    for table in PHRASINGS.values():
        for _, heldout in table.values():
            for phrase in heldout:
                parts = re.split(r"\{\w+\}", phrase)
                cores.add(max((p.strip() for p in parts), key=len))
    return {c for c in cores if c}


def test_heldout_phrasings_never_appear_in_training_captions():
    heldout = _heldout_phrases()
    train = [scene_sample(i).caption for i in range(800)]
    for c in train:
        assert not any(h in c for h in heldout), c
    rng = np.random.default_rng(1)
    evaluation = [caption_scene(scene_sample(i).attributes, rng, split="heldout")[0] for i in range(300)]
    share = np.mean([any(h in c for h in heldout) for c in evaluation])
    assert share > 0.5


def test_captions_name_what_they_say_they_name():
    words = {"lake": ("lake", "pond"), "sea": ("sea", "ocean", "coast")}
    for i in range(300):
        s = scene_sample(i)
        assert s.mentioned, s.caption
        if "water" in s.mentioned and s.attributes["water"] in words:
            assert any(w in s.caption for w in words[s.attributes["water"]]), s.caption
        if "time" in s.mentioned and s.attributes["time"] == "night":
            assert any(w in s.caption for w in ("night", "dark", "midnight")), s.caption
    assert len({scene_sample(i).caption for i in range(200)}) > 190  # varied


def test_fit_and_tune_split_the_training_phrasings_apart():
    from pixelchat.data.captions import TERRAIN

    rng = np.random.default_rng(2)
    fit = [caption_scene(scene_sample(i).attributes, rng, split="fit", names=["terrain"])[0] for i in range(200)]
    tune = [caption_scene(scene_sample(i).attributes, rng, split="tune", names=["terrain"])[0] for i in range(200)]
    last = {v: train[-1].replace("{snow}", "") for v, (train, _) in TERRAIN.items()}  # the tune phrasing of each value
    assert not any(p in c for c in fit for v, p in last.items() if v != "desert")  # "dunes" is inside "sand dunes"
    assert all(any(p in c for p in last.values()) for c in tune)
    heldout = _heldout_phrases()
    assert not any(h in c for c in fit + tune for h in heldout)
