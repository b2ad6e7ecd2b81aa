"""The built-in open-vocabulary rewriter: a message about the current picture ("add a hat", "remove
the dog", "replace the cat with a fox", "make it snowy", "in the style of a watercolour") turns the
current prompt into a revised prompt and negative prompt, and says what changed, like ChatGPT's
revised prompt. No language model: a few sentence patterns over free words, so any noun works. A
message it cannot read is said to be not understood, never guessed at.

A prompt is a list of comma-separated clauses; a style is the one clause that names a style (a
new style replaces it). The negative prompt is a list of things the picture should not show: what
is removed or replaced goes there, and what is added comes off it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

COMMANDS = r"add|put|include|give|remove|delete|erase|drop|take|get rid|replace|swap|change|turn|make|render|draw"
POLITE = re.compile(r"^(?:(?:please|pls|ok|okay|now|and|also|then|can you|could you|would you|i want you to|"
                    r"let'?s|i'?d like you to)\s+)+|\s+(?:please|thanks|thank you)$")
# a sentence break always ends a change; "and", "then", a comma only before another command
SPLIT = re.compile(rf"\s*[;.!]\s+|\s*(?:,?\s+and then|,?\s+then|,?\s+and|,?\s+also|,)\s+(?=(?:{COMMANDS})\b)")
ARTICLE = re.compile(r"^(?:a|an|the|some|any|more|my|its|that|this)\s+")
PICTURE = r"(?:it|the (?:picture|image|scene|photo|drawing|painting|whole thing)|everything)"

ADD = re.compile(rf"^(?:add|put|include|draw|place|insert|give it|there should be)\s+(?P<what>.+?)"
                 rf"(?:\s+(?:to|in|into|on)\s+{PICTURE})?$")
REMOVE = re.compile(r"^(?:remove|delete|erase|drop|take out|take away|get rid of|no more|lose|hide)\s+(?P<what>.+?)"
                    r"(?:\s+from\s+(?:it|the (?:picture|image|scene|photo)))?$|^(?:without|no)\s+(?P<bare>.+)$")
REPLACE = re.compile(r"^(?:replace|swap)\s+(?P<old>.+?)\s+(?:with|for|by)\s+(?P<new>.+)$"
                     r"|^(?:change|turn)\s+(?P<old2>(?!it\b).+?)\s+(?:into|to)\s+(?P<new2>.+)$"
                     r"|^(?P<new3>.+?)\s+instead of\s+(?P<old3>.+)$")
STYLE = re.compile(rf"^(?:(?:make|render|draw|redo|paint|do)\s+{PICTURE}\s+)?(?:in\s+)?(?:the\s+)?style of\s+(?P<of>.+)$"
                   rf"|^(?:(?:make|render|draw|redo|paint|do)\s+{PICTURE}\s+)?(?:in|as)\s+(?:an?\s+)?(?P<as>.+?)(?:\s+style)?$"
                   rf"|^(?P<named>.+?)\s+style$")
MAKE_IT = re.compile(rf"^(?:make|turn|render)\s+{PICTURE}\s+(?:look\s+)?(?P<how>more|less)?\s*(?P<what>.+)$")
MAKE_THING = re.compile(r"^make\s+(?P<thing>(?:the|a|an)\s+.+?)\s+(?P<rest>(?:wear|hold|have|carry|eat|look|sit|stand|"
                        r"fly|run|smile|read|play)\b.*|\w+)$")
ING = {"wear": "wearing", "hold": "holding", "have": "with", "carry": "carrying", "eat": "eating", "look": "looking",
       "sit": "sitting", "stand": "standing", "fly": "flying", "run": "running", "smile": "smiling",
       "read": "reading", "play": "playing"}
# words that name a style or medium: "make it a watercolour" restyles, "make it snowy" describes
STYLE_WORDS = re.compile(
    r"\b(?:watercolou?r|oil painting|acrylic|gouache|pastel|pencil|charcoal|ink|sketch|drawing|painting|anime|manga|"
    r"cartoon|comic|pixel art|photo(?:graph|realistic)?|3d render|render|low[- ]poly|isometric|line art|vector|"
    r"ukiyo-e|woodcut|engraving|impressionis[mt]|expressionis[mt]|cubis[mt]|surrealis[mt]|art nouveau|art deco|"
    r"pop art|baroque|renaissance|cyberpunk|steampunk|vaporwave|synthwave|noir|claymation|stained glass|mosaic|"
    r"origami|studio ghibli|ghibli|disney|pixar|van gogh|monet|picasso|rembrandt|hokusai|style)\b")


@dataclass
class Rewrite:
    """The text path's answer to one message: the revised prompt and negative prompt, what changed
    (one phrase per change), and whether the message was understood (``reply`` says why not)."""

    prompt: str
    negative_prompt: str
    changes: list[str] = field(default_factory=list)
    understood: bool = True
    reply: str = ""

    def to_dict(self) -> dict:
        return {"revised_prompt": self.prompt, "negative_prompt": self.negative_prompt, "changes": self.changes,
                "understood": self.understood, "reply": self.reply}


def rewrite(prompt: str, message: str, negative_prompt: str = "") -> Rewrite:
    """``message`` applied to ``prompt`` (and ``negative_prompt``). Several changes in one message
    ("add a hat and remove the dog") apply in order; if any part is not understood, nothing changes
    and the reply says which part."""
    clauses, negative = split_list(prompt), split_list(negative_prompt)
    changes = []
    text = " ".join(message.strip().split())
    for part in SPLIT.split(text.rstrip(".!").strip()):
        part = POLITE.sub("", part.strip().rstrip(".!?,")).strip()
        said = apply_change(clauses, negative, part)
        if said is None:
            return Rewrite(prompt, negative_prompt, [], False, not_understood(part))
        if said.startswith("!"):  # understood, but it cannot be done to this prompt
            return Rewrite(prompt, negative_prompt, [], True, said[1:])
        changes.append(said)
    if not clauses:
        return Rewrite(prompt, negative_prompt, [], True, "that would leave nothing to draw; say what to draw instead")
    revised, negative_text = ", ".join(clauses), ", ".join(negative)
    return Rewrite(revised, negative_text, changes, True, "; ".join(changes) + f". Revised prompt: {revised}")


def not_understood(part: str) -> str:
    return (f"I did not understand {part!r} as a change to the picture; say 'add …', 'remove …', "
            "'replace … with …', 'make it …' or 'in the style of …', or describe a new picture")


def split_list(text: str) -> list[str]:
    return [c.strip() for c in (text or "").split(",") if c.strip()]


def core(thing: str) -> str:
    """A thing without its article: "the red dog" → "red dog"."""
    return ARTICLE.sub("", thing.strip().lower()).strip()


def apply_change(clauses: list[str], negative: list[str], part: str) -> str | None:
    """Apply one change in place; the phrase saying what changed, "!reason" when it cannot be done,
    or None when ``part`` is not a change this rewriter reads."""
    low = part.lower()
    if m := REPLACE.match(low):
        old = m.group("old") or m.group("old2") or m.group("old3")
        new = m.group("new") or m.group("new2") or m.group("new3")
        return replace_thing(clauses, negative, old, new)
    if m := REMOVE.match(low):
        return remove_thing(clauses, negative, m.group("what") or m.group("bare"))
    if m := ADD.match(low):
        return add_thing(clauses, negative, m.group("what"))
    if m := STYLE.match(low):
        name = m.group("of") or m.group("as") or m.group("named")
        if m.group("of") or m.group("named") or STYLE_WORDS.search(name):
            return set_style(clauses, name, of=bool(m.group("of")))
    if m := MAKE_IT.match(low):
        what = core(m.group("what"))
        if STYLE_WORDS.search(what) and not m.group("how"):
            return set_style(clauses, what)
        if m.group("how") == "less":
            return remove_thing(clauses, negative, what, quality=True)
        return add_thing(clauses, negative, f"more {what}" if m.group("how") else what, quality=True)
    if m := MAKE_THING.match(low):
        return change_thing(clauses, m.group("thing"), m.group("rest"))
    return None


def find(clauses: list[str], thing: str, *, adjectives: bool = False) -> tuple[int, re.Match] | None:
    """Where ``thing`` (with any article before it, and with ``adjectives`` up to two words between
    the article and it: "a red couch") is said in the prompt: the clause and the match."""
    words = core(thing)
    if not words:
        return None
    between = r"(?:[\w-]+\s+){0,2}?" if adjectives else ""
    pattern = re.compile(rf"(?:\b(?:a|an|the|some)\s+{between})?\b{re.escape(words)}(?:e?s)?\b", re.I)
    for i, clause in enumerate(clauses):
        if m := pattern.search(clause):
            return i, m
    return None


def add_thing(clauses: list[str], negative: list[str], thing: str, *, quality: bool = False) -> str:
    thing = thing.strip()
    if find(clauses, thing) is not None:
        return f"!the prompt already has {core(thing)}: {', '.join(clauses)}"
    unlisted(negative, thing)
    clauses.append(thing)
    return f"made it {thing}" if quality else f"added {thing}"


def remove_thing(clauses: list[str], negative: list[str], thing: str, *, quality: bool = False) -> str:
    """Take ``thing`` out of the prompt (with its adjectives and the words that tie it to the rest)
    and into the negative prompt. A thing the prompt never said still goes into the negative prompt:
    the picture may show it. "the cat and the dog" are two things."""
    if not quality and len(things := [t for t in re.split(r",\s*|\s+and\s+", thing) if t.strip()]) > 1:
        return "; ".join(remove_thing(clauses, negative, t) for t in things)
    where, name = find(clauses, thing, adjectives=True), core(thing)
    if where is not None:
        i, m = where
        clause = clauses[i]
        before, after = clause[:m.start()], clause[m.end():]
        before = re.sub(r"\s*\b(?:with|and|wearing|holding|carrying|under|beside|next to|near|on|in|at|by|of|"
                        r"over|behind|inside)\s*$", "", before)
        if not before.strip():
            after = re.sub(r"^\s*(?:with|and)\b", "", after)
        clauses[i] = " ".join(f"{before} {after}".split()).strip(" ,")
        if not clauses[i]:
            del clauses[i]
    if name not in (core(n) for n in negative):
        negative.append(name)
    if quality:
        return f"made it less {name}"
    return f"removed {name}" if where is not None else f"kept {name} out (it was not in the prompt)"


def replace_thing(clauses: list[str], negative: list[str], old: str, new: str) -> str:
    where = find(clauses, old)
    if where is None:
        return f"!the prompt does not say {core(old)}, so there is nothing to replace: {', '.join(clauses)}"
    i, m = where
    article = re.match(r"(a|an|the|some)\s+", m.group(0), re.I)
    new_words = core(new)
    lead = (("an" if new_words[:1] in "aeiou" else "a") if article and article.group(1).lower() in ("a", "an")
            else article.group(1) if article else "")
    said = f"{lead} {new_words}".strip()
    clauses[i] = clauses[i][:m.start()] + said + clauses[i][m.end():]
    unlisted(negative, new)
    if core(old) not in (core(n) for n in negative):
        negative.append(core(old))
    return f"replaced {core(old)} with {new_words}"


def change_thing(clauses: list[str], thing: str, rest: str) -> str | None:
    """"make the cat black" → "a black cat"; "make the cat wear a hat" → "a cat wearing a hat"."""
    where = find(clauses, thing)
    if where is None:
        return f"!the prompt does not say {core(thing)}: {', '.join(clauses)}"
    i, m = where
    verb, _, tail = rest.partition(" ")
    name = core(thing)
    found = m.group(0)
    at = found.lower().rfind(name.split()[0])
    if verb in ING:
        phrase = f"{found} {ING[verb]} {tail}".strip()
    elif not tail:  # one word: an adjective before the noun
        phrase = found[:at] + f"{verb} " + found[at:]
    else:
        return None
    if found[:at].strip().lower() in ("a", "an"):  # the article follows the new first word
        phrase = ("an " if phrase[at:][:1].lower() in "aeiou" else "a ") + phrase[at:]
    clauses[i] = clauses[i][:m.start()] + phrase + clauses[i][m.end():]
    return f"made the {name} {rest}"


def set_style(clauses: list[str], name: str, *, of: bool = False) -> str:
    """One style clause: the new one replaces any before it."""
    name = core(name)
    clause = f"in the style of {name}" if of else (name if STYLE_WORDS.search(name) else f"{name} style")
    old = [c for c in clauses if c.lower().startswith("in the style of ") or c.lower().endswith(" style")
           or (STYLE_WORDS.fullmatch(c.lower()) is not None)]
    for c in old:
        clauses.remove(c)
    clauses.append(clause)
    return f"style: {clause}" + (f" (instead of {old[0]})" if old else "")


def unlisted(negative: list[str], thing: str) -> None:
    """``thing`` off the negative prompt, as it is now asked for."""
    name = core(thing)
    negative[:] = [n for n in negative if core(n) != name]
