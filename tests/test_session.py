"""Sessions: turn routing, the history tree, JSON round trips, on a tiny real model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pixelchat import Session


def test_a_scripted_conversation(tiny_model):
    s = Session(model=tiny_model, seed=5)
    first = s.turn("hills by a lake at sunset")
    assert first.kind == "generate" and first.node.id == 1 and first.images[0].size == (32, 32)
    assert first.node.attributes == {"time": "sunset", "terrain": "hills", "water": "lake"}
    second = s.turn("add a boat and make it night")
    assert second.kind == "edit" and second.node.parent == 1
    assert second.node.attributes["boat"] == "yes" and second.node.attributes["time"] == "night"
    assert "boat" in second.reply and "night" in second.prompt
    assert second.node.record["edit"]["source"]["how"] == "record"  # edited from the picture's own latent
    asked = s.turn("what do you see?")
    assert asked.kind == "describe" and asked.reply.startswith("I see") and s.current == 2
    refused = s.turn("make it better")
    assert refused.kind == "ask" and "could not find a change" in refused.reply and s.current == 2
    assert s.turn("another one").kind == "vary" and s.current == 3
    assert s.turn("draw a desert").kind == "generate" and s.node.prompt == "a desert"


def test_undo_goto_and_branches(tiny_model):
    s = Session(model=tiny_model, seed=1)
    s.turn("a plain by day")
    s.turn("add a house")
    assert s.turn("undo").node.id == 1
    s.turn("add snow")  # branches from turn 1
    assert [n.id for n in s.children(1)] == [2, 3]
    assert [n.id for n in s.path()] == [1, 3]
    s.goto(2)
    s.turn("remove the house")
    assert [n.id for n in s.path()] == [1, 2, 4]
    with pytest.raises(ValueError, match="no turn 9"):
        s.goto(9)
    s.current = 1
    assert s.undo().reply.startswith("back to the start") and s.node is None
    assert s.undo().reply == "there is nothing to undo yet"


def test_sessions_round_trip_through_json(tiny_model, tmp_path):
    s = Session(model=tiny_model, seed=2)
    s.turn("hills at night")
    s.turn("add a forest")
    s.turn("undo")
    path = s.save(tmp_path / "chat.json")
    back = Session.load(path)
    assert back.to_dict() == s.to_dict()
    assert back.current == 1 and sorted(back.nodes) == [1, 2]
    a, b = np.asarray(back.nodes[2].image), np.asarray(s.nodes[2].image)
    assert np.array_equal(a, b)
    assert back.turn("add a house").node.parent == 1  # the loaded session goes on from where it was


@pytest.mark.parametrize("text, message", [
    ("{", "not a pixelchat session"),
    ('{"format": "other"}', "not a pixelchat session"),
    ('{"format": "pixelchat-session", "format_version": 99}', "version 99"),
    ('{"format": "pixelchat-session", "format_version": 1, "nodes": [{"id": 1}]}', "malformed"),
    ('{"format": "pixelchat-session", "format_version": 1, "current": 3, "nodes": []}', "current turn"),
])
def test_malformed_sessions_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        Session.from_json(text)


def test_orphan_nodes_are_refused(tiny_model):
    s = Session(model=tiny_model, seed=0)
    s.turn("a desert")
    d = s.to_dict()
    d["nodes"][0]["parent"] = 42
    with pytest.raises(ValueError, match="parent"):
        Session.from_json(json.dumps(d))


def test_chat_script_prints_one_json_object_per_turn(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from pixelchat.cli import app

    script = tmp_path / "turns.txt"
    script.write_text("hills at sunset\n# a comment\nadd a house\n/undo\nmake it night\n")
    session = tmp_path / "chat.json"
    r = CliRunner().invoke(app, ["chat", "--script", str(script), "--json", "--model", str(tiny_model), "--seed", "4",
                                 "--out", str(tmp_path / "out"), "--session", str(session)])
    assert r.exit_code == 0, r.output
    turns = [json.loads(line) for line in r.stdout.splitlines()]
    assert [t["kind"] for t in turns] == ["generate", "edit", "undo", "edit"]
    assert turns[3]["attributes"]["time"] == "night" and turns[1]["file"].endswith("turn-2.png")
    back = Session.load(session)
    assert sorted(back.nodes) == [1, 2, 3] and back.nodes[3].parent == 1 and back.current == 3
    bad = tmp_path / "bad.txt"
    bad.write_text("hills\n/goto x\n")
    r = CliRunner().invoke(app, ["chat", "--script", str(bad), "--model", str(tiny_model), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "usage: /goto N" in r.output


@pytest.mark.parametrize("instruction, attribute, value", [("add a house", "house", "yes"), ("add a forest", "trees", "forest")])
def test_self_check_reply_says_what_the_picture_shows(tiny_model, instruction, attribute, value):
    from pixelchat import describe

    s = Session(model=tiny_model, seed=7, checks=3)
    s.turn("hills by day")
    turn = s.turn(instruction)
    seen = describe(turn.node.image, model=tiny_model).attributes
    assert ("not matched yet" in turn.reply) == (seen.get(attribute) != value), (turn.reply, seen)
    with pytest.raises(ValueError, match="checks"):
        Session(checks=9)
