"""The built-in open-vocabulary rewriter on a table of messages: add, remove, replace, make-it-X,
style, several changes at once, and what it does not understand or cannot do."""

from __future__ import annotations

import pytest

from pixelchat.conversation.rewriter import rewrite

CAT = "a cat sitting on a red couch, soft light"

# (message, revised prompt, negative prompt, what it says changed); the negative prompt starts as "blurry"
UNDERSTOOD = [
    # add
    ("add a hat", "a cat sitting on a red couch, soft light, a hat", "blurry", ["added a hat"]),
    ("please add a small dog to the picture", "a cat sitting on a red couch, soft light, a small dog", "blurry",
     ["added a small dog"]),
    ("put a lamp in it", "a cat sitting on a red couch, soft light, a lamp", "blurry", ["added a lamp"]),
    ("add some blur", "a cat sitting on a red couch, soft light, some blur", "", ["added some blur"]),
    # remove: out of the prompt, into the negative prompt
    ("remove the couch", "a cat sitting, soft light", "blurry, couch", ["removed couch"]),
    ("get rid of the soft light", "a cat sitting on a red couch", "blurry, soft light", ["removed soft light"]),
    ("without people", CAT, "blurry, people", ["kept people out (it was not in the prompt)"]),
    ("no text", CAT, "blurry, text", ["kept text out (it was not in the prompt)"]),
    # replace: the new thing where the old one was, the old one kept out
    ("replace the cat with a fox", "a fox sitting on a red couch, soft light", "blurry, cat", ["replaced cat with fox"]),
    ("swap the couch for an armchair", "a cat sitting on a red armchair, soft light", "blurry, couch",
     ["replaced couch with armchair"]),
    ("change the cat into an owl", "an owl sitting on a red couch, soft light", "blurry, cat", ["replaced cat with owl"]),
    ("a fox instead of the cat", "a fox sitting on a red couch, soft light", "blurry, cat", ["replaced cat with fox"]),
    # make it X, make the thing X
    ("make it snowy", "a cat sitting on a red couch, soft light, snowy", "blurry", ["made it snowy"]),
    ("make it more colourful", "a cat sitting on a red couch, soft light, more colourful", "blurry",
     ["made it more colourful"]),
    ("make it less soft light", "a cat sitting on a red couch", "blurry, soft light", ["made it less soft light"]),
    ("make the cat black", "a black cat sitting on a red couch, soft light", "blurry", ["made the cat black"]),
    ("make the cat wear a hat", "a cat wearing a hat sitting on a red couch, soft light", "blurry",
     ["made the cat wear a hat"]),
    # style: one at a time
    ("make it a watercolor", "a cat sitting on a red couch, soft light, watercolor", "blurry", ["style: watercolor"]),
    ("in the style of van gogh", "a cat sitting on a red couch, soft light, in the style of van gogh", "blurry",
     ["style: in the style of van gogh"]),
    ("as an oil painting", "a cat sitting on a red couch, soft light, oil painting", "blurry", ["style: oil painting"]),
    ("pixel art style", "a cat sitting on a red couch, soft light, pixel art", "blurry", ["style: pixel art"]),
    # several changes in one message, in order
    ("add a hat and remove the couch", "a cat sitting, soft light, a hat", "blurry, couch",
     ["added a hat", "removed couch"]),
    ("replace the cat with a dog, then make it snowy", "a dog sitting on a red couch, soft light, snowy",
     "blurry, cat", ["replaced cat with dog", "made it snowy"]),
]


@pytest.mark.parametrize("message, prompt, negative, changes", UNDERSTOOD, ids=[row[0] for row in UNDERSTOOD])
def test_messages_revise_the_prompt(message, prompt, negative, changes):
    start_negative = "" if message == "add some blur" else "blurry"
    r = rewrite(CAT, message, start_negative)
    assert (r.understood, r.prompt, r.negative_prompt, r.changes) == (True, prompt, negative, changes)
    assert r.reply.endswith(f"Revised prompt: {prompt}") and all(c in r.reply for c in changes)


def test_a_new_style_replaces_the_old_one():
    r = rewrite("a cat, watercolor", "in the style of van gogh")
    assert r.prompt == "a cat, in the style of van gogh" and r.changes == ["style: in the style of van gogh "
                                                                          "(instead of watercolor)"]


def test_adding_what_was_kept_out_takes_it_off_the_negative_prompt():
    r = rewrite("a cat", "add a dog", "dog, blurry")
    assert (r.prompt, r.negative_prompt) == ("a cat, a dog", "blurry")


# (message, what the reply says); the prompt is left as it was
NOT_DONE = [
    ("hmm what?", "I did not understand 'hmm what' as a change"),
    ("what is this", "I did not understand 'what is this'"),
    ("add a hat; sing me a song", "I did not understand 'sing me a song'"),
    ("replace the dog with a cat", "the prompt does not say dog, so there is nothing to replace"),
    ("add a cat", "the prompt already has cat"),
    ("make the dog black", "the prompt does not say dog"),
]


@pytest.mark.parametrize("message, reply", NOT_DONE, ids=[row[0] for row in NOT_DONE])
def test_what_it_does_not_understand_or_cannot_do_changes_nothing(message, reply):
    r = rewrite(CAT, message, "blurry")
    assert (r.prompt, r.negative_prompt, r.changes) == (CAT, "blurry", [])
    assert reply in r.reply
    assert r.understood == reply.startswith("the prompt")


def test_a_change_that_leaves_nothing_to_draw_is_refused():
    r = rewrite("a cat", "remove the cat")
    assert r.prompt == "a cat" and not r.changes and "nothing to draw" in r.reply
