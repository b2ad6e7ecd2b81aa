"""The built-in rewriter on a large table of phrasings, and words outside its vocabulary."""

from __future__ import annotations

import pytest

from pixelchat.text.instructions import AskBack, InstructionError, apply_instruction

NOW = {"time": "day", "celestial": "sun", "clouds": "few", "cloud_color": "white", "terrain": "hills",
       "snow": "no", "water": "lake", "trees": "few", "house": "no", "boat": "no"}
NIGHT = {**NOW, "time": "night", "celestial": "moon", "snow": "yes", "house": "yes", "boat": "yes", "clouds": "many"}

# (current, message, the changes it should make: attribute → new value)
TABLE = [
    # time of day, many ways
    (NOW, "make it night", {"time": "night", "celestial": "moon"}),
    (NOW, "turn it into night", {"time": "night", "celestial": "moon"}),
    (NOW, "make it nighttime", {"time": "night", "celestial": "moon"}),
    (NOW, "it should be night", {"time": "night", "celestial": "moon"}),
    (NOW, "switch to night-time", {"time": "night", "celestial": "moon"}),
    (NOW, "set it at midnight", {"time": "night", "celestial": "moon"}),
    (NOW, "make it sunset", {"time": "sunset"}),
    (NOW, "turn it into a sunset", {"time": "sunset"}),
    (NOW, "change the time to dusk", {"time": "sunset"}),
    (NOW, "make it evening", {"time": "sunset"}),
    (NOW, "golden hour please", {"time": "sunset"}),
    (NOW, "make it darker", {"time": "sunset"}),
    (NIGHT, "back to daytime", {"time": "day", "celestial": "sun"}),
    (NIGHT, "make it day again", {"time": "day", "celestial": "sun"}),
    (NIGHT, "make it brighter", {"time": "sunset", "celestial": "sun"}),
    (NIGHT, "change it to the afternoon", {"time": "day", "celestial": "sun"}),
    # sun and moon
    (NOW, "remove the sun", {"celestial": "none"}),
    (NOW, "hide the sun", {"celestial": "none"}),
    (NIGHT, "remove the moon", {"celestial": "none"}),
    (NOW, "add the moon", {"celestial": "moon", "time": "night"}),
    # clouds
    (NOW, "remove the clouds", {"clouds": "none"}),
    (NOW, "clear the sky", {"clouds": "none"}),
    (NOW, "get rid of the clouds", {"clouds": "none"}),
    (NOW, "no clouds", {"clouds": "none"}),
    (NOW, "make it cloudless", {"clouds": "none"}),
    (NOW, "make it cloudy", {"clouds": "many"}),
    (NOW, "add lots of clouds", {"clouds": "many"}),
    (NOW, "more clouds", {"clouds": "many"}),
    (NOW, "fewer clouds", {"clouds": "none"}),
    (NOW, "make it overcast", {"clouds": "many", "cloud_color": "gray"}),
    (NOW, "make the clouds pink", {"cloud_color": "pink"}),
    (NOW, "turn the clouds pink", {"cloud_color": "pink"}),
    (NOW, "pink clouds please", {"cloud_color": "pink"}),
    (NOW, "make the clouds rosy", {"cloud_color": "pink"}),
    (NOW, "make the clouds grey", {"cloud_color": "gray"}),
    (NOW, "make the clouds darker", {"cloud_color": "gray"}),
    (NOW, "make the clouds pink, keep the rest", {"cloud_color": "pink"}),
    ({**NOW, "clouds": "none"}, "add some clouds", {"clouds": "few"}),
    ({**NOW, "clouds": "none"}, "put a few clouds in the sky", {"clouds": "few"}),
    ({**NOW, "clouds": "none"}, "make the clouds pink", {"clouds": "few", "cloud_color": "pink"}),
    # terrain
    (NOW, "turn the land into a desert", {"terrain": "desert"}),
    (NOW, "make it a desert", {"terrain": "desert"}),
    (NOW, "change the ground to sand dunes", {"terrain": "desert"}),
    (NOW, "make it mountainous", {"terrain": "mountains"}),
    (NOW, "turn it into mountains", {"terrain": "mountains"}),
    (NOW, "replace the hills with mountains", {"terrain": "mountains"}),
    (NOW, "turn the hills into a flat plain", {"terrain": "plain"}),
    (NOW, "make it a meadow", {"terrain": "plain"}),
    (NOW, "change the ground to grassland", {"terrain": "plain"}),
    # snow
    (NOW, "add snow", {"snow": "yes"}),
    (NOW, "make it snowy", {"snow": "yes"}),
    (NOW, "cover it in snow", {"snow": "yes"}),
    (NOW, "make it wintry", {"snow": "yes"}),
    (NIGHT, "remove the snow", {"snow": "no"}),
    (NIGHT, "melt the snow", {"snow": "no"}),
    (NIGHT, "no snow", {"snow": "no"}),
    (NIGHT, "less snow", {"snow": "no"}),
    # water
    ({**NOW, "water": "none", "boat": "no"}, "add a lake", {"water": "lake"}),
    ({**NOW, "water": "none", "boat": "no"}, "put a pond in it", {"water": "lake"}),
    (NOW, "replace the lake with the sea", {"water": "sea"}),
    (NOW, "make the water a sea", {"water": "sea"}),
    (NOW, "turn the lake into an ocean", {"water": "sea"}),
    (NOW, "remove the water", {"water": "none"}),
    (NOW, "dry up the water", {"water": "none"}),
    (NIGHT, "remove the lake", {"water": "none"}),  # the boat goes with it (said in a note)
    # trees
    (NOW, "add a forest", {"trees": "forest"}),
    (NOW, "make it forested", {"trees": "forest"}),
    (NOW, "more trees", {"trees": "forest"}),
    (NOW, "fewer trees", {"trees": "none"}),
    (NOW, "remove the trees", {"trees": "none"}),
    (NOW, "cut down the trees", {"trees": "none"}),
    (NOW, "no trees", {"trees": "none"}),
    ({**NOW, "trees": "none"}, "add a few trees", {"trees": "few"}),
    ({**NOW, "trees": "none"}, "put some trees in", {"trees": "few"}),
    # house and boat
    (NOW, "add a house", {"house": "yes"}),
    (NOW, "put a cottage in it", {"house": "yes"}),
    (NOW, "add a cabin", {"house": "yes"}),
    (NOW, "build a house", {"house": "yes"}),
    (NIGHT, "remove the house", {"house": "no"}),
    (NIGHT, "tear down the house", {"house": "no"}),
    (NIGHT, "take away the house", {"house": "no"}),
    (NOW, "add a boat", {"boat": "yes"}),
    (NOW, "put a boat on the water", {"boat": "yes"}),
    (NOW, "add a sailboat", {"boat": "yes"}),
    (NIGHT, "remove the boat", {"boat": "no"}),
    (NIGHT, "take the boat away", {"boat": "no"}),
    (NIGHT, "no boats", {"boat": "no"}),
    ({**NOW, "water": "none", "boat": "no"}, "add a boat", {"boat": "yes", "water": "lake"}),
    # several changes in one message
    (NOW, "add a boat and make it night", {"boat": "yes", "time": "night", "celestial": "moon"}),
    (NOW, "make it snowy, add a house", {"snow": "yes", "house": "yes"}),
    (NOW, "remove the trees and also add a house", {"trees": "none", "house": "yes"}),
    (NOW, "turn the land into a desert; then remove the clouds", {"terrain": "desert", "clouds": "none"}),
    (NOW, "make it a desert at night without clouds",
     {"terrain": "desert", "time": "night", "celestial": "moon", "clouds": "none"}),
    (NOW, "add a forest but keep the lake", {"trees": "forest"}),
    ({**NOW, "water": "none", "boat": "no"}, "put a lake in it and cut down the trees", {"water": "lake", "trees": "none"}),
    (NIGHT, "no snow, remove the trees", {"snow": "no", "trees": "none"}),
    (NOW, "pink clouds please; then hide the sun", {"cloud_color": "pink", "celestial": "none"}),
    (NOW, "build a house and cover it in snow", {"house": "yes", "snow": "yes"}),
    # negations
    (NIGHT, "without the house", {"house": "no"}),
    (NIGHT, "I want no boats", {"boat": "no"}),
]


@pytest.mark.parametrize("current, message, changes", TABLE, ids=[row[1] for row in TABLE])
def test_phrasings_make_the_expected_changes(current, message, changes):
    revision = apply_instruction(current, message)
    got = {k: after for k, (_, after) in revision.changes.items() if after is not None}
    assert {k: v for k, v in got.items() if k not in ("boat", "cloud_color") or k in changes} == changes
    assert revision.prompt and all(revision.attributes[k] == v for k, v in changes.items())


def test_a_message_with_any_instruction_in_it_is_read_as_one():
    from pixelchat.text.instructions import looks_like_instruction

    assert looks_like_instruction("no snow, remove the trees")
    assert looks_like_instruction("pink clouds please; then hide the sun")
    assert not looks_like_instruction("snowy hills at night with a house")


def test_the_table_is_large_and_varied():
    assert len(TABLE) >= 90
    assert len({(m, tuple(c.items())) for c, m, _ in TABLE}) == len(TABLE)


@pytest.fixture(scope="module")
def nearest():
    from pixelchat.text.vocabulary import NearestValue

    return NearestValue()


@pytest.mark.parametrize("message, changes", [
    ("add a canoe", {"boat": "yes"}),
    ("add a rowboat", {"boat": "yes"}),
    ("make it frosty", {"snow": "yes"}),
    ("turn it into a rainforest", {"trees": "forest"}),
    ("make the clouds magenta", {"cloud_color": "pink"}),
])
def test_unknown_words_map_to_the_nearest_value_with_a_confidence(nearest, message, changes):
    revision = apply_instruction(NOW, message, resolve=nearest)
    assert {k: v for k, (_, v) in revision.changes.items()} == changes
    note = next(n for n in revision.notes if n.startswith("I took"))
    confidence = float(note.rsplit("confidence ", 1)[1].rstrip(")"))
    assert nearest.threshold <= confidence <= 1.0


def test_unsure_guesses_ask_back_and_unrelated_words_stay_unknown(nearest):
    with pytest.raises(AskBack, match="not sure") as asked:
        apply_instruction(NOW, "add a spaceship", resolve=nearest)
    assert asked.value.guess.confidence < nearest.threshold
    with pytest.raises(InstructionError, match="could not find a change") as plain:
        apply_instruction(NOW, "make it better", resolve=nearest)
    assert not isinstance(plain.value, AskBack)
    revision = apply_instruction(NOW, "add a dragon", resolve=nearest)  # far from everything: free text
    assert revision.free_text == ["with a dragon"] and not revision.changes
    nearest.threshold = 1.01  # nothing is that sure: the canoe is asked back too
    try:
        with pytest.raises(AskBack):
            apply_instruction(NOW, "add a canoe", resolve=nearest)
    finally:
        nearest.threshold = 0.7
