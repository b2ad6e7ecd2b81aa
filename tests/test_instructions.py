"""Reading prompts and edit instructions over the scenes vocabulary."""

from __future__ import annotations

import numpy as np
import pytest

from pixelchat.data.captions import caption_scene, scene_prompt
from pixelchat.data.scenes import observable, sample_attributes
from pixelchat.edit import revise
from pixelchat.text.instructions import InstructionError, apply_instruction, looks_like_instruction, read_attributes

NOW = {"time": "day", "celestial": "sun", "clouds": "few", "cloud_color": "white", "terrain": "mountains",
       "snow": "no", "water": "lake", "trees": "few", "house": "yes", "boat": "no"}


@pytest.mark.parametrize("split", ["train", "eval"])
def test_reads_every_caption_the_dataset_writes(split):
    rng = np.random.default_rng(5)
    for _ in range(400):
        a = sample_attributes(rng)
        caption, named = caption_scene(a, rng, split)
        assert read_attributes(caption) == {k: a[k] for k in named}, caption


@pytest.mark.parametrize("prompt, expected", [
    ("a lake with no sun", {"celestial": "none", "water": "lake"}),  # a negated sun is no sun
    ("hills without the moon", {"celestial": "none", "terrain": "hills"}),
    ("a moonless night", {"time": "night", "celestial": "none"}),
    ("a windswept plain under gray skies", {"clouds": "many", "cloud_color": "gray", "terrain": "plain"}),
    ("a stormy sea", {"clouds": "many", "cloud_color": "gray", "water": "sea"}),
    ("a storm over the hills", {"clouds": "many", "cloud_color": "gray", "terrain": "hills"}),
    ("a starlit desert", {"time": "night", "terrain": "desert"}),
    ("a thunderstorm", {}),  # a word of bench_nearest's out-of-vocabulary rows stays unknown
])
def test_reads_everyday_sky_words(prompt, expected):
    assert read_attributes(prompt) == expected


def test_scene_prompt_reads_back():
    rng = np.random.default_rng(6)
    for _ in range(200):
        a = observable(sample_attributes(rng))
        if a["water"] == "none":
            a.pop("boat")
        assert read_attributes(scene_prompt(a)) == a


@pytest.mark.parametrize("instruction, changes", [
    ("make it night", {"time": "night", "celestial": "moon"}),
    ("Make it nighttime please", {"time": "night", "celestial": "moon"}),
    ("turn it into a sunset", {"time": "sunset"}),
    ("make it darker", {"time": "sunset"}),
    ("add a boat", {"boat": "yes"}),
    ("put a sailboat on the lake", {"boat": "yes"}),
    ("remove the trees", {"trees": "none"}),
    ("get rid of the house", {"house": "no"}),
    ("no trees", {"trees": "none"}),
    ("more clouds", {"clouds": "many"}),
    ("fewer clouds", {"clouds": "none"}),
    ("more trees", {"trees": "forest"}),
    ("make the clouds pink", {"cloud_color": "pink"}),
    ("make the clouds grey", {"cloud_color": "gray"}),
    ("make the clouds darker", {"cloud_color": "gray"}),
    ("turn the mountains into a desert", {"terrain": "desert"}),
    ("replace the lake with the sea", {"water": "sea"}),
    ("add snow and a forest", {"snow": "yes", "trees": "forest"}),
    ("make it snowy, at sunset", {"snow": "yes", "time": "sunset"}),
    ("remove the sun", {"celestial": "none"}),
    ("with a clear sky", {"clouds": "none"}),
    ("remove the lake", {"water": "none"}),
    ("can you make the clouds a bit pinker", {"cloud_color": "pink"}),
    ("a bit more cloudy", {"clouds": "many"}),
    ("make it cloudier", {"clouds": "many"}),
    ("less cloudy", {"clouds": "none"}),
    ("make it snowier", {"snow": "yes"}),
    ("make it stormy", {"clouds": "many", "cloud_color": "gray"}),
    ("Can you remove the trees?", {"trees": "none"}),  # a polite lead-in is not part of the instruction
    ("could you please add a boat", {"boat": "yes"}),
])
def test_instructions_change_what_they_name(instruction, changes):
    r = apply_instruction(NOW, instruction)
    assert {k: after for k, (_, after) in r.changes.items() if k != "cloud_color" or "cloud_color" in changes} == changes
    assert read_attributes(r.prompt) == {k: v for k, v in r.attributes.items()}
    assert looks_like_instruction(instruction) or instruction.startswith(("no ", "with "))


def test_repairs_are_explained():
    dry = {**NOW, "water": "none"}
    dry.pop("boat")
    r = apply_instruction(dry, "add a boat")
    assert r.attributes["water"] == "lake" and r.attributes["boat"] == "yes"
    assert "no boat without water" in r.notes[0]
    r = apply_instruction(NOW, "add the moon")
    assert r.attributes["time"] == "night" and "night" in r.notes[0]
    clear = {**NOW, "clouds": "none"}
    clear.pop("cloud_color")
    r = apply_instruction(clear, "make the clouds pink")
    assert r.attributes["clouds"] == "few" and r.attributes["cloud_color"] == "pink" and r.notes


def test_unknown_things_become_free_text():
    r = apply_instruction(NOW, "add a dragon")
    assert r.free_text == ["with a dragon"] and r.changes == {}
    assert r.prompt.endswith("with a dragon") and "free text" in r.notes[0]


def test_no_change_is_said():
    r = apply_instruction(NOW, "back to daytime")
    assert r.changes == {} and "already" in r.notes[0]


@pytest.mark.parametrize("instruction, message", [
    ("", "empty"),
    ("   ", "empty"),
    ("make it better", "could not find a change"),
    ("hello there", "could not find a change"),
    ("remove the mountains", "cannot be removed"),
    ("make the trees pink", "only clouds can change colour"),
    ("add a boat and remove the boat", "asks for both"),
    ("more houses of cards", "at most one house"), ("more dragons", "more or fewer"),
    ("remove the dragon", "do not know how to remove"),
    ("remove the ground", "the ground cannot be removed"),
    ("make the mountains purple", "only clouds can change colour"),
    ("make it green", "only clouds can change colour"),
    ("make it night and make it day", "asks for both"),
    ("add a boat and remove all the water", "a boat needs water"),
    ("add the moon and make it daytime", "the moon is only in the sky at night"),
])
def test_rejects_with_a_helpful_message(instruction, message):
    with pytest.raises(InstructionError, match=message):
        apply_instruction(NOW, instruction)


@pytest.mark.parametrize("instruction, message", [
    ("make the boat bigger", "how big they are is the model's choice"),
    ("move the sun to the left", "where things are"),
    ("zoom in", "where things are"),
    ("make it higher resolution", "chosen when it is drawn"),
    ("add two more boats", "at most one boat"),
])
def test_layout_and_size_are_not_changes(instruction, message):
    with pytest.raises(InstructionError, match=message):
        apply_instruction(NOW, instruction)


def test_a_place_is_noted_and_the_change_made():
    r = apply_instruction({**NOW, "boat": "no"}, "add a boat on the left")
    assert r.changes == {"boat": ("no", "yes")} and any("cannot place" in n for n in r.notes)
    r = apply_instruction({**NOW, "clouds": "none"}, "put the moon in the sky")
    assert r.changes["celestial"] == ("sun", "moon") and "clouds" not in r.changes
    assert not any("clouds" in n for n in r.notes)


def test_impossible_requests_are_refused():
    with pytest.raises(InstructionError, match="boat needs water"):
        apply_instruction(NOW, "add a boat and remove the water")
    with pytest.raises(InstructionError, match="moon"):
        apply_instruction(NOW, "add the moon, make it daytime")


def test_a_prompt_replaces_what_it_names():
    r = revise(NOW, "a desert at night")
    assert r.prompt == "a desert at night"
    assert r.attributes["terrain"] == "desert" and r.attributes["time"] == "night"
    assert r.attributes["celestial"] == "moon"  # repaired: no sun at night
    assert r.attributes["house"] == "yes"  # not named: kept
