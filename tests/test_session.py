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
    # a tiny model's pictures are nothing like scenes: the reply says what its reading is worth
    assert asked.kind == "describe" and s.current == 2
    assert asked.reply.startswith(("I see", "this picture does not look like the scenes the describer knows"))
    refused = s.turn("make it better")
    assert refused.kind == "ask" and "could not find a change" in refused.reply and s.current == 2
    assert s.turn("another one").kind == "vary" and s.current == 3
    assert s.turn("draw a desert").kind == "generate" and s.node.prompt == "a desert"


def test_a_polite_request_is_an_edit_and_a_question_stays_a_question(tiny_model):
    s = Session(model=tiny_model, seed=5)
    s.turn("hills with a forest by a lake")
    asked = s.turn("Could you please remove the trees?")
    assert asked.kind == "edit" and asked.node.attributes["trees"] == "none"
    assert s.turn("can you see a boat?").kind == "describe"


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
    assert ("but I see" in turn.reply) == (seen.get(attribute) != value), (turn.reply, seen)
    assert (f"→ {value}" in turn.reply) == (seen.get(attribute) == value), (turn.reply, seen)
    with pytest.raises(ValueError, match="checks"):
        Session(checks=9)


def test_styles_and_palettes_are_turns_that_undo(tiny_model):
    from pixelchat.vision.style import palette_report

    s = Session(model=tiny_model, seed=3)
    first = s.turn("a desert by day")
    raw = np.asarray(first.images[0])
    noir = s.turn("make it noir")
    assert noir.kind == "style" and noir.node.style == "noir" and noir.node.parent == 1
    shown = np.asarray(noir.images[0]).astype(int)
    assert (shown[..., 0] == shown[..., 1]).all() and not np.array_equal(shown, raw)
    assert np.array_equal(np.asarray(noir.node.image), raw)  # the model's own picture is kept underneath
    assert noir.images[0].info["pixelchat"]["style"] == "noir"
    edited = s.turn("add a house")  # later pictures keep the look
    assert edited.kind == "edit" and edited.node.style == "noir"
    pal = s.turn("palette #204060, #e0c080 #ffffff")
    assert pal.kind == "palette" and pal.node.palette == ["#204060", "#e0c080", "#ffffff"]
    assert palette_report(pal.images[0], pal.node.palette)["coverage"] == 1.0 and "now 100%" in pal.reply
    bad = s.turn("palette #12345z")
    assert bad.kind == "ask" and "#12345z" in bad.reply and s.current == pal.node.id
    assert s.turn("make it night").kind == "edit"  # a time of day, not a style
    assert s.turn("no style").node.style == "none"
    assert s.turn("undo").node.style == "noir"
    back = Session.from_json(s.to_json())
    assert np.array_equal(np.asarray(back.node.output), np.asarray(s.node.output))
    with pytest.raises(ValueError, match="known styles|unknown style"):
        Session(style="no-such-style")


def test_references_to_earlier_turns_and_asking_back(tiny_model):
    s = Session(model=tiny_model, seed=6)
    s.turn("hills by a lake with a boat")
    assert s.node.attributes["boat"] == "yes"
    s.turn("remove the boat")
    assert s.node.attributes["boat"] == "no"
    s.turn("make it night")
    back = s.turn("bring back the boat")
    assert back.kind == "edit" and back.node.attributes["boat"] == "yes" and "earlier" in back.reply
    assert back.node.attributes["time"] == "night"  # only what was named comes back
    asked = s.turn("add a spaceship")
    assert asked.kind == "ask" and "not sure" in asked.reply and s.current == back.node.id
    canoe = s.turn("remove the boat, then add a canoe")
    assert canoe.kind == "ask" and "asks for both" in canoe.reply  # two wishes for one thing are asked back
    mapped = s.turn("make it frosty")
    assert mapped.kind == "edit" and mapped.node.attributes["snow"] == "yes" and "I took 'frosty'" in mapped.reply
    plain = Session(model=tiny_model, seed=6, nearest=False)
    plain.turn("hills by a lake")
    assert plain.turn("make it frosty").kind == "ask"


def test_chat_lists_styles_and_takes_a_palette(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from pixelchat.cli import app

    script = tmp_path / "turns.txt"
    script.write_text("/styles\nhills at night\n/style sepia\n/palette #000000 #ffffff\n")
    r = CliRunner().invoke(app, ["chat", "--script", str(script), "--json", "--model", str(tiny_model), "--seed", "1",
                                 "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert any(line.startswith("noir") for line in lines) and any(line.startswith("pixel") for line in lines)
    turns = [json.loads(line) for line in lines if line.startswith("{")]
    assert [t["kind"] for t in turns] == ["generate", "style", "palette"]
    assert turns[2]["style"] == "sepia" and turns[2]["palette"] == ["#000000", "#ffffff"]
    from PIL import Image

    from pixelchat.imagefiles import read_record

    last = Image.open(turns[2]["file"])
    assert set(map(tuple, np.asarray(last.convert("RGB")).reshape(-1, 3).tolist())) <= {(0, 0, 0), (255, 255, 255)}
    assert read_record(turns[2]["file"])["style"] == "sepia"
    r = CliRunner().invoke(app, ["chat", "--script", str(script), "--model", str(tiny_model), "--style", "nope",
                                 "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "nope" in r.output
    r = CliRunner().invoke(app, ["chat", "--script", str(script), "--model", str(tiny_model),
                                 "--llm-url", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "o3")])
    assert r.exit_code == 2 and "--llm-model" in r.output


def test_a_conversation_can_start_from_the_users_picture(tiny_model, tmp_path):
    from pixelchat.data.scenes import render_scene, sample_attributes

    path = tmp_path / "mine.png"
    render_scene(sample_attributes(np.random.default_rng(3), {"water": "lake"}), 64, 3).resize((48, 40)).save(path)
    s = Session(model=tiny_model, seed=1)
    opened = s.open(path)
    assert opened.kind == "open" and opened.reply.startswith("I see") and opened.node.message == "open mine.png"
    assert opened.images[0].size == (48, 40) and opened.node.record == {}
    edited = s.turn("add a boat")
    assert edited.kind == "edit" and edited.node.record["edit"]["source"]["how"] == "inversion"
    assert Session.from_json(s.to_json()).nodes[1].image.size == (48, 40)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(Exception, match="(?i)image|picture"):
        s.open(broken)
    assert sorted(s.nodes) == [1, 2]  # nothing added by the failed open


def test_a_negative_prompt_keeps_things_out_until_allowed(tiny_model):
    s = Session(model=tiny_model, seed=4, checks=0)
    assert s.turn("avoid boats").kind == "negative" and s.negative == ["boat"]
    first = s.turn("a lake among hills")
    assert first.kind == "generate" and first.node.negative == ["boat"] and first.node.attributes["boat"] == "no"
    assert "with no boats" in first.prompt
    refused = s.turn("add a boat")
    assert refused.kind == "ask" and "negative prompt" in refused.reply and s.current == first.node.id
    assert s.turn("draw a lake with a boat").kind == "ask"
    s.turn("add a house")
    kept_out = s.turn("never show a house")  # there is one now: it is taken out, as an edit
    assert kept_out.kind == "edit" and kept_out.node.attributes["house"] == "no"
    assert kept_out.node.negative == ["boat", "house"] and kept_out.reply.startswith("kept out from now on: house")
    allowed = s.turn("allow boats")
    assert allowed.kind == "negative" and allowed.node.negative == ["house"]
    assert s.turn("add a boat").kind == "edit"
    assert s.turn("avoid dragons").kind == "ask"
    assert Session.from_json(s.to_json()).node.negative == ["house"]


def test_chat_json_undo_reports_the_picture_now_current(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from pixelchat.cli import app

    script = tmp_path / "turns.txt"
    script.write_text("hills at sunset\nadd a house\n/undo\n")
    session = tmp_path / "chat.json"
    args = ["--json", "--model", str(tiny_model), "--seed", "4", "--session", str(session)]
    r = CliRunner().invoke(app, ["chat", "--script", str(script), "--out", str(tmp_path / "out"), *args])
    assert r.exit_code == 0, r.output
    turns = [json.loads(line) for line in r.stdout.splitlines()]
    assert turns[2]["kind"] == "undo" and turns[2]["node"] == 1 and turns[2]["file"] == turns[0]["file"]
    # a session continued from its file: the picture now current is written where this chat writes
    script.write_text("/goto 2\n/undo\n")
    r = CliRunner().invoke(app, ["chat", "--script", str(script), "--out", str(tmp_path / "again"), *args])
    assert r.exit_code == 0, r.output
    goto, undo = [json.loads(line) for line in r.stdout.splitlines()]
    assert goto["file"].endswith("again/turn-2.png") and undo["file"].endswith("again/turn-1.png")
    from pixelchat.imagefiles import read_record

    assert read_record(undo["file"])["prompt"] == Session.load(session).nodes[1].record["prompt"]


def _claims(reply: str) -> dict[str, str]:
    """What a reply says is in the picture: "terrain plain → hills" (an edit) and "here it is (time night, …)"."""
    import re

    from pixelchat.data.scenes import SCHEMA

    names = "|".join(a.replace("_", " ") for a in SCHEMA)
    claims = {m.group(1).replace(" ", "_"): m.group(2) for m in re.finditer(rf"\b({names})(?: \w+)? → (\w+)", reply)}
    here = re.match(r"here it is \(([^)]*)\)", reply)
    for part in (here.group(1).split(", ") if here else []):
        name, value = part.rsplit(" ", 1)
        claims[name.replace(" ", "_")] = value
    return claims


def test_a_reply_claims_only_what_the_describer_sees(tiny_model):
    from pixelchat import describe

    s = Session(model=tiny_model, seed=2, checks=2)
    claimed = 0
    for message in ("hills by a lake at sunset", "add a boat", "make it night", "add a house and a forest",
                    "remove the boat", "make it day", "draw snowy mountains by the sea at night", "add a boat"):
        turn = s.turn(message)
        if turn.kind not in ("generate", "edit"):
            continue
        seen = describe(turn.node.image, model=tiny_model).attributes
        claims = _claims(turn.reply)
        claimed += len(claims)
        assert all(seen.get(k) == v for k, v in claims.items()), (message, turn.reply, seen)
        for k, (asked, saw) in turn.node.unmet.items():  # what is not seen is said as asked and seen
            assert seen.get(k, "none") == saw and f"{k.replace('_', ' ')} {asked}" in turn.reply
        # the prompt shown with the picture and the reply agree: what the reply says drifted is still asked
        assert "also changed" not in turn.reply
        for k, (asked, _) in turn.node.unmet.items():
            assert turn.node.attributes.get(k) == asked
    assert claimed  # the tiny model draws some of it, so some claims were checked


def test_try_again_redraws_a_turn_that_missed(tiny_model):
    s = Session(model=tiny_model, seed=2, checks=1)
    missed = next((t for t in (s.turn(m) for m in ("hills by a lake at sunset", "add a boat", "add a house", "add snow",
                                                   "make it night", "add a forest")) if t.node.unmet), None)
    assert missed is not None, "the tiny model missed nothing in six turns"
    again = s.turn("try again")
    assert again.kind == missed.kind and again.node.parent == missed.node.parent and again.node.attempt == 1
    assert again.node.id != missed.node.id and again.node.message == missed.node.message
    if again.node.unmet:
        assert s.turn("try again").node.attempt == 2
    s.goto(1)
    s.node.unmet = {}
    assert s.turn("try again").kind == "vary"  # nothing missed: a variation, as before


@pytest.mark.parametrize("model", ["tiny", "shipped"])
def test_a_prompt_with_nothing_the_model_draws_draws_nothing_unless_asked(model, tiny_model, tmp_path):
    path = tiny_model if model == "tiny" else None
    s = Session(model=path, seed=1)
    for prompt in ("a cat on a sofa", "a portrait of a woman", "a bowl of fruit on a table"):
        refused = s.turn(prompt)
        assert refused.kind == "ask" and refused.node is None and not s.nodes, refused.reply
        assert refused.reply.startswith("this model draws landscapes: ") and "mountains" in refused.reply
        assert "draw it anyway" in refused.reply
    assert refused.declined and refused.to_dict()["declined"] is True
    s = Session.from_json(s.to_json())  # what was declined survives saving (the server saves between turns)
    drawn = s.turn("draw it anyway")
    assert drawn.kind == "generate" and drawn.node.message == "a bowl of fruit on a table" and len(s.nodes) == 1
    assert s.turn("draw it anyway").kind == "ask"  # nothing is waiting any more
    assert not drawn.declined
    for prompt in ("draw a beautiful landscape", "draw a canyon", "draw a picture", "draw hills at night",
                   "draw a cozy cabin in the woods"):
        assert s.turn(prompt).kind == "generate", prompt
    assert Session(model=path, seed=1, draw_anyway=True).turn("a cat on a sofa").kind == "generate"
    script = tmp_path / "turns.txt"
    script.write_text("a cat on a sofa\n")
    from typer.testing import CliRunner

    from pixelchat.cli import app

    args = ["chat", "--script", str(script), "--json", "--out", str(tmp_path / "out"),
            *(["--model", str(path)] if path else [])]
    turns = [json.loads(line) for line in CliRunner().invoke(app, args).stdout.splitlines()]
    assert [t["kind"] for t in turns] == ["ask"] and turns[0]["file"] is None
    turns = [json.loads(line) for line in CliRunner().invoke(app, [*args, "--draw-anyway"]).stdout.splitlines()]
    assert [t["kind"] for t in turns] == ["generate"]


def test_everyday_turns_are_routed_as_a_person_means_them(tiny_model):
    s = Session(model=tiny_model, seed=5)
    assert s.turn("what do you see?").reply.startswith("there is no picture yet")
    s.turn("hills by a lake at sunset")
    assert s.turn("hmm, add a boat").kind == "edit" and s.node.attributes["boat"] == "yes"
    assert s.turn("show me another one").kind == "vary" and s.current == 3
    thanks = s.turn("thanks, looks great!")
    assert thanks.kind == "ask" and thanks.reply.startswith("glad") and s.current == 3 and len(s.nodes) == 3
    assert s.turn("go back to the first picture").kind == "goto" and s.current == 1
    missing = s.turn("go to turn 99")
    assert missing.kind == "ask" and "no turn 99" in missing.reply and s.current == 1
    assert s.turn("ok, go to turn 2").kind == "goto" and s.current == 2
    start = s.turn("start over")
    assert start.kind == "ask" and s.current is None and len(s.nodes) == 3  # the history stays
    assert s.turn("go back to the first picture").kind == "goto" and s.current == 1
    s.turn("start over")
    assert s.turn("a cat on a sofa").declined
    assert s.turn("no thanks").reply.startswith("nothing drawn") and not s.turn("yes").node  # nothing waits any more
    assert s.turn("a cat on a sofa").declined
    drawn = s.turn("yes")  # yes to "say 'draw it anyway'"
    assert drawn.kind == "generate" and drawn.node.parent is None and len(s.nodes) == 4


def test_a_prompt_that_contradicts_itself_is_answered_not_raised():
    s = Session(seed=1)  # the shipped spec model refuses the sun at night
    t = s.turn("a sunny night over the hills")
    assert t.kind == "ask" and "the sun is only in the sky by day or at sunset" in t.reply and not s.nodes


def test_a_reply_says_when_the_prompt_asks_for_more_than_one_of_a_single_thing():
    s = Session(seed=2)  # the shipped spec model
    assert s.turn("three houses by a lake").reply.endswith("these pictures have at most one house")
    assert "at most one" not in Session(seed=2).turn("a house by a lake").reply

