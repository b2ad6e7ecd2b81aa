"""Open-vocabulary conversations on a tiny random text-to-image pipeline: each message revises the
prompt (the language model's rewrite, else the built-in rewriter's), the picture is edited by the
best edit on offer (an instruction-edit pipeline, inpainting under a mask, image-to-image from the
picture's seed), and an image-text model (a tiny random CLIP built from a config) checks the
result against the revised prompt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers")

from test_diffusers_engine import engine_for, pipelines, pixels  # noqa: E402,F401  (the tiny pipeline folders)
from test_llm import no_proxy, server  # noqa: E402,F401  (an OpenAI-compatible test server; no proxy for it)

from pixelchat.conversation import Session  # noqa: E402
from pixelchat.conversation.llm import LLMRewriter  # noqa: E402
from pixelchat.training.checkpoint import CheckpointError  # noqa: E402

WORDS = ["a", "cat", "hat", "dog", "fox", "on", "the", "red", "couch", "with", "wearing", "watercolor", "sitting"]
CAT = "a cat sitting on a red couch"


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """CLIPModel with a few channels and a 32 px vision tower, with its processor (a byte-pair
    vocabulary of our words and single letters): a folder as save_pretrained writes it."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    root = tmp_path_factory.mktemp("similarity")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [w + "</w>" for w in WORDS] + [c + e for c in "abcdefghijklmnopqrstuvwxyz," for e in ("", "</w>")]:
        vocab.setdefault(token, len(vocab))
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=32)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8)
    folder = root / "tiny-clip"
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture
def sd(pipelines, tiny_describer):  # noqa: F811
    return engine_for(pipelines["t2i"], tiny_describer)


@pytest.fixture
def pix2pix(pipelines, tiny_describer):  # noqa: F811
    return engine_for(pipelines["instruct"], tiny_describer)


@pytest.fixture
def edits(sd, monkeypatch):
    """Every call of the pipeline engine's edit: its prompt, seed, mask and negative prompt."""
    seen = []
    real = type(sd).edit

    def spy(self, image, prompt, **kwargs):
        seen.append({"prompt": prompt, "seed": kwargs.get("seed"), "mask": kwargs.get("mask") is not None,
                     "negative_prompt": kwargs.get("negative_prompt"), "pipeline": self.info.arch})
        return real(self, image, prompt, **kwargs)

    monkeypatch.setattr(type(sd), "edit", spy)
    return seen


def cat_session(sd, **options) -> Session:
    options = {"seed": 1, "checks": 0, **options}
    s = Session(model=sd, **options)
    first = s.turn(f"draw {CAT}")
    assert first.kind == "generate" and first.prompt == CAT, first.reply
    return s


# (message, revised prompt, negative prompt, what changed): the built-in rewriter in a conversation
CHANGES = [
    ("add a hat", f"{CAT}, a hat", "", ["added a hat"]),
    ("make the cat wear a hat", "a cat wearing a hat sitting on a red couch", "", ["made the cat wear a hat"]),
    ("remove the couch", "a cat sitting", "couch", ["removed couch"]),
    ("replace the cat with a fox", "a fox sitting on a red couch", "cat", ["replaced cat with fox"]),
    ("make it snowy", f"{CAT}, snowy", "", ["made it snowy"]),
    ("in the style of a watercolor", f"{CAT}, in the style of watercolor", "",
     ["style: in the style of watercolor"]),
    ("add a hat and remove the couch", "a cat sitting, a hat", "couch", ["added a hat", "removed couch"]),
]


@pytest.mark.parametrize("message, prompt, negative, changes", CHANGES, ids=[row[0] for row in CHANGES])
def test_each_message_revises_the_prompt_and_the_picture(sd, edits, message, prompt, negative, changes):
    s = cat_session(sd)
    before = s.node
    turn = s.turn(message)
    assert turn.kind == "edit", turn.reply
    assert (turn.prompt, turn.node.negative_prompt, turn.node.changes) == (prompt, negative, changes)
    said = turn.to_dict()
    assert (said["prompt"], said["negative_prompt"], said["changes"]) == (prompt, negative, changes)
    assert f"Revised prompt: {prompt}" in turn.reply and "(image-to-image)" in turn.reply
    # the picture is redrawn under the revised prompt, from the picture's own seed
    assert edits == [{"prompt": prompt, "seed": before.record["seed"], "mask": False,
                      "negative_prompt": negative or None, "pipeline": "StableDiffusionPipeline"}]
    record = turn.node.record
    assert (record["prompt"], record["edit"]["mode"], record["edit"]["instruction"]) == (prompt, "img2img", message)
    assert not np.array_equal(pixels(turn.node.image), pixels(before.image))


# (message, what the reply says): nothing is drawn and the conversation stays where it was
NOT_DONE = [
    ("sing me a song", "I did not understand 'sing me a song'"),
    ("replace the dog with a fox", "the prompt does not say dog"),
    ("add a cat", "the prompt already has cat"),
]


@pytest.mark.parametrize("message, reply", NOT_DONE, ids=[row[0] for row in NOT_DONE])
def test_what_the_rewriter_cannot_read_is_asked_back(sd, edits, message, reply):
    s = cat_session(sd)
    turn = s.turn(message)
    assert turn.kind == "ask" and reply in turn.reply
    assert s.current == 1 and len(s.nodes) == 1 and edits == []


def test_a_scripted_conversation_reports_the_revised_prompt_at_each_turn(sd, tmp_path):
    s = Session(model=sd, seed=3, checks=0)
    turns = [s.turn(m) for m in ("avoid blurry", f"draw {CAT}", "add a hat", "avoid dog")]
    assert [t.kind for t in turns] == ["negative", "generate", "edit", "negative"]
    assert [t.to_dict()["prompt"] for t in turns[1:]] == [CAT, f"{CAT}, a hat", f"{CAT}, a hat"]
    assert [t.to_dict()["negative_prompt"] for t in turns[1:]] == ["blurry", "blurry", "blurry, dog"]
    assert turns[1].node.record["negative_prompt"] == "blurry"  # the negative prompt reached the pipeline
    assert "not checked" in turns[2].reply
    removed = s.turn("avoid couch")  # the prompt says it: taken out of the picture, as an edit
    assert removed.kind == "edit" and removed.prompt == "a cat sitting, a hat"
    assert removed.node.negative_prompt == "blurry, dog, couch"
    undone = s.turn("undo")
    assert undone.kind == "undo" and undone.prompt == f"{CAT}, a hat"
    assert s.turn("what do you see?").reply.startswith("I see ")
    again = Session.load(s.save(tmp_path / "chat.json"))
    assert again.node.negative_prompt == "blurry, dog" and again.node.changes == []
    assert again.nodes[2].changes == ["added a hat"] and again.negative_prompt == "blurry"
    assert again.turn("allow dog").node.negative_prompt == "blurry"


def test_a_mask_inpaints_and_keeps_the_rest(sd, edits):
    s = cat_session(sd)
    before = s.node.image
    mask = Image.new("L", before.size, 0)
    mask.paste(255, (0, 0, before.width, before.height // 2))  # the top half may change
    turn = s.turn("add a hat", mask=mask)
    assert turn.kind == "edit" and "(inpainted)" in turn.reply and edits[-1]["mask"]
    assert turn.node.record["edit"]["mode"] == "inpaint"
    change = np.abs(pixels(turn.node.image) - pixels(before))
    assert change[before.height // 2:].max() == 0 and change[:before.height // 2].mean() > 0
    with pytest.raises(ValueError, match="the mask is"):
        s.turn("add a dog", mask=Image.new("L", (8, 8), 255))  # not the picture's size
    with pytest.raises(ValueError, match="there is none yet"):
        Session(model=sd).turn(f"draw {CAT}", mask=mask)
    assert len(s.nodes) == 2 and len(edits) == 1  # nothing more was drawn


def test_an_instruction_edit_pipeline_edits_when_one_is_loaded(sd, pix2pix, pipelines):  # noqa: F811
    s = cat_session(sd, editor=pipelines["instruct"])
    turn = s.turn("make the cat wear a hat")
    assert turn.kind == "edit" and "(an instruction edit)" in turn.reply
    record = turn.node.record
    assert record["pipeline"] == "StableDiffusionInstructPix2PixPipeline" and record["edit"]["mode"] == "instruct"
    assert record["prompt"] == "make the cat wear a hat"  # the pipeline read the words as said
    assert turn.prompt == "a cat wearing a hat sitting on a red couch"  # and the conversation's prompt is revised
    assert Session.from_json(s.to_json()).editor == str(pipelines["instruct"])
    with pytest.raises(ValueError, match="not an instruction-edit pipeline"):
        cat_session(sd, editor=pipelines["t2i"]).turn("add a hat")


def test_the_language_model_rewrites_and_the_built_in_rewriter_takes_over(sd, server):  # noqa: F811
    s = cat_session(sd, llm=LLMRewriter(server.base, "tiny-llm", timeout=0.5))
    server.script.content = json.dumps({"prompt": "a cat on a red couch at golden hour", "negative_prompt": "night",
                                        "changes": ["golden hour light"], "reply": "warmer light now"})
    turn = s.turn("give it a cosy evening feeling")  # beyond the built-in rewriter
    assert turn.kind == "edit" and turn.prompt == "a cat on a red couch at golden hour"
    assert turn.node.negative_prompt == "night" and turn.node.changes == ["golden hour light"]
    assert turn.reply.startswith("warmer light now")
    system, user = server.script.requests[-1]["body"]["messages"]
    assert json.dumps(CAT) in system["content"] and user["content"] == "give it a cosy evening feeling"
    server.script.content = "a lovely picture"  # not the form asked for: the built-in rewriter reads it
    turn = s.turn("add a hat")
    assert turn.prompt == "a cat on a red couch at golden hour, a hat" and "did not help" in turn.reply
    server.script.content = json.dumps({"understood": False, "reply": "I cannot sing"})
    turn = s.turn("sing me a song")
    assert turn.kind == "ask" and "I did not understand" in turn.reply and "changed nothing" in turn.reply


# --- the self-check ----------------------------------------------------------------------------


def test_the_score_is_the_cosine_of_the_clip_embeddings(tiny_clip):
    import torch
    from transformers import CLIPModel, CLIPProcessor

    from pixelchat.vision.similarity import load_similarity

    scorer = load_similarity(tiny_clip)
    picture = Image.new("RGB", (40, 32), (200, 40, 30))
    texts = ["a cat wearing a hat", "a dog"]
    model, processor = CLIPModel.from_pretrained(tiny_clip), CLIPProcessor.from_pretrained(tiny_clip)
    with torch.inference_mode():
        out = model(**processor(text=texts, images=picture, return_tensors="pt", padding=True))
    expected = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds)
    assert scorer.scores(picture, texts) == pytest.approx(expected.tolist(), abs=1e-4)
    assert scorer.family == "clip" and scorer.min_score == 0.22
    assert load_similarity(tiny_clip, min_score=0.5).min_score == 0.5
    with pytest.raises(ValueError, match="between -1 and 1"):
        load_similarity(tiny_clip, min_score=2)


def test_a_change_that_scores_high_is_drawn_once(sd, edits, tiny_clip):
    s = cat_session(sd, checks=3, similarity=tiny_clip, min_score=-1.0)
    assert s.node.score is not None and "checked: it matches the prompt" in s.node.reply
    turn = s.turn("add a hat")
    assert len(edits) == 1 and turn.node.unmet == {} and "checked" in turn.reply
    assert turn.to_dict()["score"] == turn.node.score and -1 <= turn.node.score <= 1


def test_a_change_that_stays_low_is_redrawn_with_new_seeds_and_said(sd, edits, tiny_clip):
    s = cat_session(sd, checks=3, similarity=tiny_clip, min_score=0.99)
    seed = s.node.record["seed"]
    turn = s.turn("add a hat and remove the couch")
    assert [e["seed"] for e in edits] == [seed, seed + 1, seed + 2]  # the picture's seed first, then new ones
    # the clauses the change wrote (the one the couch left is rewritten too) did not take
    assert {k: how for k, (how, _) in turn.node.unmet.items()} == {"a cat sitting": "shown", "a hat": "shown"}
    assert "did not take (similarity below 0.99): a cat sitting (" in turn.reply and "try again" in turn.reply
    again = s.turn("try again")  # from the same picture, with seeds not tried yet
    assert again.kind == "edit" and again.node.parent == 1
    assert [e["seed"] for e in edits[3:]] == [seed + 8, seed + 9, seed + 10]
    # a thing sent to the negative prompt that still scores high is said to be still there
    s = cat_session(sd, checks=1, similarity=tiny_clip, min_score=-1.0)
    turn = s.turn("remove the couch")
    assert turn.node.unmet == {"couch": ["gone", turn.node.unmet["couch"][1]]}
    assert "still shows (similarity -1.00 or more): couch" in turn.reply


def test_try_again_redraws_a_thing_kept_out(sd, edits, tiny_clip):
    s = cat_session(sd, checks=1, similarity=tiny_clip, min_score=0.99)
    seed = s.node.record["seed"]
    kept_out = s.turn("avoid couch")
    assert kept_out.kind == "edit" and kept_out.node.unmet and kept_out.node.negative_prompt == "couch"
    again = s.turn("try again")
    assert again.kind == "edit" and again.node.parent == 1 and again.prompt == "a cat sitting"
    assert [e["seed"] for e in edits] == [seed, seed + 8]


def test_a_model_that_is_not_an_image_text_model_is_refused(sd, tiny_clip, tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel

    from pixelchat.vision.similarity import load_similarity

    text_only = tmp_path / "text-only"
    CLIPTextModel(CLIPTextConfig(vocab_size=40, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(text_only)
    with pytest.raises(CheckpointError, match="not an image-text similarity model"):
        load_similarity(text_only)
    s = Session(model=sd, seed=1, similarity=text_only)
    with pytest.raises(CheckpointError, match="not an image-text similarity model"):
        s.turn(f"draw {CAT}")
    assert s.nodes == {}  # nothing was drawn
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_clip, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle weights"):
        load_similarity(pickled)
    with pytest.raises(CheckpointError, match="is not a hub id"):
        load_similarity(tmp_path / "nowhere")


def test_the_built_in_model_keeps_its_own_path(tiny_model):
    s = Session(model=tiny_model, seed=2, checks=0)
    assert not s.open_vocabulary
    turn = s.turn("a lake at sunset")
    assert turn.kind == "generate" and turn.node.attributes and turn.node.negative_prompt == ""


def test_cli_chat_in_free_words_with_a_similarity_model(sd, pipelines, tiny_clip, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from pixelchat.cli import app

    script = tmp_path / "turns.txt"
    script.write_text(f"draw {CAT}\nadd a hat\nsing me a song\n")
    r = CliRunner().invoke(app, ["chat", "--script", str(script), "--json", "--model", str(pipelines["t2i"]),
                                 "--seed", "2", "--checks", "2", "--similarity", str(tiny_clip),
                                 "--out", str(tmp_path / "out"), "--session", str(tmp_path / "chat.json")])
    assert r.exit_code == 0, r.output
    turns = [json.loads(line) for line in r.stdout.splitlines()]
    assert [t["kind"] for t in turns] == ["generate", "edit", "ask"]
    assert turns[1]["prompt"] == f"{CAT}, a hat" and turns[1]["changes"] == ["added a hat"]
    assert all(isinstance(t["score"], float) for t in turns[:2]) and turns[1]["file"].endswith("turn-2.png")
    assert "I did not understand 'sing me a song'" in turns[2]["reply"]
    assert Session.load(tmp_path / "chat.json").similarity == str(tiny_clip)
    bad = CliRunner().invoke(app, ["chat", "--script", str(script), "--model", str(pipelines["t2i"]),
                                   "--similarity", str(pipelines["t2i"]), "--out", str(tmp_path / "o2")])
    assert bad.exit_code == 2 and "not a transformers model folder" in bad.output


def test_a_picture_of_the_users_is_opened_and_edited_in_free_words(sd, edits):
    s = Session(model=sd, seed=6, checks=0)
    opened = s.open(Image.new("RGB", (40, 32), (90, 140, 200)))
    assert opened.kind == "open" and opened.prompt  # the describer's prompt starts the conversation
    turn = s.turn("add a hat")
    assert turn.kind == "edit" and turn.prompt == f"{opened.prompt}, a hat" and turn.node.changes == ["added a hat"]
    assert edits[-1]["seed"] == 6  # a picture with no record of its own: the session's seed


@pytest.mark.parametrize("answer, error", [
    ({"prompt": "", "changes": ["x"]}, "an empty prompt"),
    ({"prompt": 3}, "\"prompt\" that is not a string"),
    ({"prompt": "a cat", "changes": "added"}, "\"changes\" that are not a list"),
    ({"prompt": "a cat", "negative_prompt": "x" * 1001}, "\"negative_prompt\" that is not a string of at most 1000"),
    ({"prompt": "a cat", "reply": ["hi"]}, "\"reply\" that is not a string"),
])
def test_a_language_model_answer_outside_the_form_is_an_error(server, answer, error):  # noqa: F811
    from pixelchat.conversation.llm import LLMError

    server.script.content = json.dumps(answer)
    with pytest.raises(LLMError, match=error):
        LLMRewriter(server.base, "tiny-llm", timeout=2).rewrite_prompt(CAT, "", "add a hat")


def test_a_language_model_answer_becomes_a_rewrite(server):  # noqa: F811
    rewriter = LLMRewriter(server.base, "tiny-llm", timeout=2)
    server.script.content = "sure: " + json.dumps({"prompt": f" {CAT},  a hat ", "negative_prompt": "blur ,, dog"})
    r = rewriter.rewrite_prompt(CAT, "", "add a hat")
    assert (r.prompt, r.negative_prompt, r.understood) == (f"{CAT}, a hat", "blur, dog", True)
    assert r.changes == [f"revised prompt: {CAT}, a hat"]  # none said: the revised prompt is what changed
    server.script.content = json.dumps({"prompt": CAT, "changes": ["nothing"]})
    assert rewriter.rewrite_prompt(CAT, "", "keep it").changes == []  # the same prompt changes nothing
