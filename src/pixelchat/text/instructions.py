"""Reading prompts and edit instructions over the `scenes` vocabulary.

`read_attributes(text)` says which scene attributes a prompt or caption names ("snowy peaks at
dusk with no boats" → terrain, snow, time, boat). `apply_instruction(current, instruction)` turns
an edit instruction ("make it night", "add a boat", "remove the trees", "more clouds",
"replace the lake with the sea") into the revised attributes and prompt, repairs what the schema
forbids (a boat needs water) and says so in notes; what it cannot place in the vocabulary is kept
as free text ("add a dragon") or, when nothing is understood, refused with a helpful message.
Pure string logic: no tensors, no models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pixelchat.data.captions import scene_prompt
from pixelchat.data.scenes import SCHEMA

COLOUR = r"(?:fluffy white|snow-white|pastel pink|white|pink|rosy|gray|grey|dark|stormy|pinker|rosier|grayer|whiter)"
OTHER_COLOUR = r"(?:purple|violet|red|crimson|blue|green|yellow|orange|brown|black|turquoise|teal)"
CLOUD_COLOUR_WORDS = {"fluffy white": "white", "snow-white": "white", "white": "white", "pastel pink": "pink",
                      "pink": "pink", "rosy": "pink", "gray": "gray", "grey": "gray", "dark": "gray", "stormy": "gray",
                      "pinker": "pink", "rosier": "pink", "grayer": "gray", "whiter": "white"}
FEW = r"(?:a few|some|scattered|a couple of|a single|one|a|two|three)"
MANY = r"(?:many|lots of|a lot of|heavy|rising|thick|plenty of|a sky full of|sky full of|full of|dense)"
GRAY_SKY = r"(?:gray|leaden|stormy|overcast) sk(?:y|ies)|stormy(?: weather)?|storms?|storm clouds"  # many gray clouds
NEG = r"(?:no|without|not a single|not any|not a|free of|never a|none of the)(?: a| an| any| the)?"

# (pattern, attribute, value): what a phrase names. Longer matches win over the words inside them.
PHRASES: list[tuple[str, str, str]] = [
    # time
    (r"by day|during the day|in daylight|daylight|daytime|day-time|noon|midday|morning|afternoon|day", "time", "day"),
    (r"sunset|sundown|dusk|evening|twilight|golden hour", "time", "sunset"),
    (r"nighttime|night-time|night|after dark|midnight|starry|stars|starlit|starlight|star-lit", "time", "night"),
    # sun and moon
    (rf"{NEG} (?:any )?sun or moon|neither sun nor moon|{NEG} (?:any )?sun or moon in the sky|"
     rf"{NEG} (?:sun|moon)(?:light|shine)?|sunless|moonless", "celestial", "none"),
    (r"sun|sunny|sunshine|sunlit|shining sun", "celestial", "sun"),
    (r"moon|moonlit|moonlight|full moon", "celestial", "moon"),
    # clouds and their colour
    (r"clear sky|cloudless(?: sky)?|not a cloud in the sky|not a cloud|no clouds?|without clouds?", "clouds", "none"),
    (rf"{FEW} (?:{COLOUR} )?clouds?|dotted with clouds", "clouds", "few"),
    (rf"{MANY} (?:{COLOUR} )?clouds|cloudy|overcast(?: sky)?|{GRAY_SKY}", "clouds", "many"),
    (rf"overcast(?: sky)?|{GRAY_SKY}", "cloud_color", "gray"),
    # terrain
    (r"mountains?|mountain range|mountainous|peaks?|alpine|summits?", "terrain", "mountains"),
    (r"hills?|hilly|hillside|slopes?", "terrain", "hills"),
    (r"deserts?|sand dunes|dunes?|sandy|sand|wasteland", "terrain", "desert"),
    (r"plains?|flat fields|fields?|grassland|meadows?|flat landscape|prairie|flat", "terrain", "plain"),
    # snow
    (rf"{NEG} snow|snowless", "snow", "no"),
    (r"snowy|snow-covered|snow|wintry|winter|blanketed in white", "snow", "yes"),
    # water
    (rf"{NEG} (?:water|lake or sea|sea or lake)|far from water|dry land", "water", "none"),
    (r"lakes?|ponds?", "water", "lake"),
    (r"seas?|oceans?|coast|seashore|beach|shore|seaside", "water", "sea"),
    # trees
    (rf"{NEG} trees?|treeless|not a single tree", "trees", "none"),
    (rf"{FEW} trees?|dotted with trees|trees", "trees", "few"),
    (r"(?:a |dense |pine |thick )?(?:forests?|woods|woodland|jungle)|forested|wooded", "trees", "forest"),
    # house
    (rf"{NEG} (?:houses?|buildings?|homes?|cottages?|cabins?)", "house", "no"),
    (r"houses?|cottages?|cabins?|huts?|homes?|buildings?|farmhouse", "house", "yes"),
    # boat
    (rf"{NEG} (?:boats?|vessels?|ships?|sailboats?)", "boat", "no"),
    (r"boats?|sailboats?|sailing ship|ships?|vessels?|yacht", "boat", "yes"),
]
_COMPILED = [(re.compile(rf"\b(?:{p})\b"), a, v) for p, a, v in PHRASES]
_CLOUD_COLOUR = re.compile(rf"\b({COLOUR})(?: \w+)? clouds?\b|\bclouds? (?:are |is |turn |in )?"
                           rf"(?:a bit |a little |slightly |much |a lot )?({COLOUR})\b")

# What each thing is when it is there and when it is gone (for add / remove).
PRESENT = {"celestial": None, "clouds": "few", "snow": "yes", "water": None, "trees": "few", "house": "yes", "boat": "yes"}
ABSENT = {"celestial": "none", "clouds": "none", "snow": "no", "water": "none", "trees": "none", "house": "no", "boat": "no"}
LADDERS = {"clouds": ("none", "few", "many"), "trees": ("none", "few", "forest"), "snow": ("no", "yes"),
           "time": ("day", "sunset", "night")}
NOUNS = {  # words that name a thing without saying how much of it
    "celestial": r"sun|moon|sun and moon", "clouds": r"clouds?|sky", "snow": r"snow", "water": r"water|lake|sea|ocean|pond",
    "trees": r"trees?|forest|woods", "house": r"houses?|cottage|cabin|hut|buildings?", "boat": r"boats?|ships?|sailboat",
    "terrain": r"mountains?|hills?|desert|dunes|plain|fields?|ground|land|terrain", "time": r"time of day|sky",
}

VERB_REMOVE = re.compile(r"^(?:please )?(?:remove|delete|erase|take away|take out|get rid of|drop|eliminate|lose|"
                         r"clear(?: away)?|no more|hide|cut down|chop down|cut|melt|dry up|drain|demolish|"
                         r"tear down|take\b(?=.*\b(?:away|out|off)\b))\b")
VERB_ADD = re.compile(r"^(?:please )?(?:add|put|place|include|insert|draw|paint|give it|show|bring(?: in| back)?|"
                      r"there should be|i want|let there be)\b")
VERB_SET = re.compile(r"^(?:please )?(?:make|turn|change|switch|set|replace|swap|transform|convert|go|"
                      r"let it be|it should be|back to|now)\b")
MORE = re.compile(r"\b(?:more|extra|increase|additional|cloudier|snowier)\b")
LESS = re.compile(r"\b(?:less|fewer|reduce|decrease|thin out)\b")
LADDER_WORDS = {"clouds": r"cloudy|cloudier", "snow": r"snowy|snowier", "trees": r"wooded|forested"}  # "less cloudy"
DARKER = re.compile(r"\b(?:darker|dimmer|later)\b")
BRIGHTER = re.compile(r"\b(?:brighter|lighter|earlier)\b")
# Where things are and how big: not part of a scene's description, so not something a change can ask for.
LAYOUT_VERB = re.compile(r"^(?:move|shift|drag|reposition|zoom|crop|pan|rotate|flip|mirror|tilt|resize|enlarge|"
                         r"shrink|scale|center|centre)\b")
SIZE_WORD = re.compile(r"\b(?:bigger|larger|smaller|taller|shorter|wider|narrower|closer|farther|further away)\b")
RESOLUTION = re.compile(r"\b(?:higher|more|better|full|high|bigger) (?:resolution|res|detail|quality)\b|\b(?:upscale|"
                        r"hd|4k|8k|sharper)\b")
PLACE = re.compile(r"\b(?:to|on|at|in) the (?:left|right|top|bottom|corner|centre|center|middle|foreground|"
                   r"background)(?: side)?\b")
_ONE = {"celestial": "one sun or moon", "water": "one lake or sea", "house": "one house", "boat": "one boat"}
EXAMPLES = "'make it night', 'add a boat', 'remove the trees', 'more clouds', 'make the clouds pink'"


KEEP = re.compile(r"^(?:and )?(?:keep|leave|otherwise|everything else|nothing else|the rest|(?:all )?the same|same)\b")
STOP = frozenset("""please make turn change switch set replace swap transform convert go add put place include insert
    draw paint show give bring back there should be i want let it its it's the a an some any into to with for by in on
    of and now instead look looks more picture image scene whole entire remove delete erase get rid take away out drop
    eliminate lose clear hide no too very really bit little lot can could would will you me""".split())


class InstructionError(ValueError):
    """An instruction that cannot be applied; the message says why and what would work."""


class AskBack(InstructionError):
    """A word outside the vocabulary whose nearest value is too uncertain to act on; ``guess`` is it."""

    def __init__(self, message: str, guess=None):
        super().__init__(message)
        self.guess = guess


# Words that say what kind of picture it is, not what is in it ("a beautiful painting of …").
FILLER = frozenset("""picture pictures image photo photograph painting drawing illustration sketch render view views
    scene scenery landscape place there is are was which that this beautiful pretty lovely nice at under beneath
    over near along beside across from""".split())
_NOT_CONTENT = STOP | FILLER


def unexplained_words(text: str, mentions: list[tuple[int, int, str, str]]) -> list[tuple[int, int]]:
    """Character spans of the words of ``text`` (normalised) that no mention covers and that are not
    small words or words about the picture itself: what the pattern reader leaves unexplained."""
    covered = [(s, e) for s, e, _, _ in mentions]
    out = []
    for m in re.finditer(r"[a-z0-9'-]+", text):
        if m.group().strip("'-") in _NOT_CONTENT:
            continue
        if any(s <= m.start() and m.end() <= e for s, e in covered):
            continue
        out.append((m.start(), m.end()))
    return out


def unknown_phrase(clause: str) -> str:
    """What is left of ``clause`` once verbs, small words and the nouns we know are taken out."""
    known = "|".join(NOUNS.values())
    words = [w for w in re.sub(rf"\b(?:{known})\b", " ", clause).split() if w.strip(",;.'") not in STOP]
    return " ".join(words).strip(" ,;.'")


def normalise(text: str) -> str:
    text = text.lower().replace("grey", "gray").replace("’", "'")
    return " ".join(re.sub(r"[^a-z0-9,;.' -]+", " ", text).split())


def find_mentions(text: str) -> list[tuple[int, int, str, str]]:
    """(start, end, attribute, value) for every phrase in ``text`` (normalised), overlaps resolved
    in favour of the longer phrase."""
    hits = []
    for rx, attr, value in _COMPILED:
        hits += [(m.start(), m.end(), attr, value) for m in rx.finditer(text)]
    for m in _CLOUD_COLOUR.finditer(text):
        word = m.group(1) or m.group(2)
        hits.append((m.start(), m.end(), "cloud_color", CLOUD_COLOUR_WORDS[word]))
    hits.sort(key=lambda h: (-(h[1] - h[0]), h[0]))
    kept: list[tuple[int, int, str, str]] = []
    for h in hits:
        # a longer phrase hides the shorter ones inside it, except a cloud colour (which rides with an amount)
        inside = [k for k in kept if k[0] <= h[0] and h[1] <= k[1]]
        if any(k[2] != "cloud_color" and h[2] != "cloud_color" and not _compatible(k, h) for k in inside):
            continue
        if any(k[2] == h[2] and k[3] == h[3] for k in inside):
            continue
        kept.append(h)
    return sorted(kept)


def _compatible(outer, inner) -> bool:
    """Phrases that may co-exist inside one another: "many clouds" holds an amount and a colour;
    "overcast" names both the amount and the colour."""
    return {outer[2], inner[2]} == {"clouds", "cloud_color"}


def read_attributes(text: str) -> dict[str, str]:
    """The scene attributes ``text`` names (a prompt or a caption); where it names two values of one
    attribute, the later one wins."""
    out: dict[str, str] = {}
    for _, _, attr, value in find_mentions(normalise(text)):
        out[attr] = value
    return {k: out[k] for k in SCHEMA if k in out}


@dataclass
class Revision:
    attributes: dict[str, str]  # the revised scene attributes
    changes: dict[str, tuple[str | None, str]]  # attribute → (before, after), only what differs
    notes: list[str] = field(default_factory=list)  # what was repaired or could not be done
    free_text: list[str] = field(default_factory=list)  # asked for, outside the scenes vocabulary
    prompt: str = ""  # the revised prompt
    asked: dict[str, str] = field(default_factory=dict)  # what the instruction named, before repairs

    @classmethod
    def between(cls, current: dict[str, str], revised: dict[str, str], notes=(), free_text=(),
                prompt: str | None = None, asked: dict[str, str] | None = None) -> "Revision":
        """From ``current`` to ``revised``: the changes are what differs; the prompt, unless given,
        names the revised attributes and the free text."""
        changes = {k: (current.get(k), revised[k]) for k in revised if current.get(k) != revised[k]}
        free = list(free_text)
        return cls(revised, changes, list(notes), free, scene_prompt(revised, free) if prompt is None else prompt,
                   dict(asked or {}))

    def to_dict(self) -> dict:
        return {"attributes": self.attributes, "changes": {k: list(v) for k, v in self.changes.items()},
                "notes": self.notes, "free_text": self.free_text, "prompt": self.prompt}


# Words said before a request that are not part of it: "hmm", "ok", "great" alone, and a polite lead-in
# before a clause's verb ("can you remove the trees", "could you please add a boat").
INTERJECTION = (r"(?:hmm+|h?mm|um+|uh+|ok(?:ay)?|alright|all right|well|oh|so|actually|great|nice|cool|good|perfect|"
                r"lovely|wow|yes|yeah|thanks|thank you)")
COURTESY = re.compile(rf"^(?:(?:{INTERJECTION}|(?:can|could|would|will) (?:you|we)|kindly|(?:i'd|i would) like (?:you )?to|"
                      r"i want you to|i'd love (?:you )?to|do you mind|please)[,!.]?\s+)+(?=\w)")
_ONLY_INTERJECTION = re.compile(rf"^(?:{INTERJECTION}[,!. ]*)+$")


def strip_lead(text: str) -> str:
    """``text`` (normalised) without the interjections and polite words before the request."""
    return COURTESY.sub("", text.strip())


def split_clauses(text: str) -> list[str]:
    parts = re.split(r"[,;.]| and then | then | and also | also | but | and (?=(?:make|add|remove|put|place|turn|change|"
                     r"set|switch|replace|swap|get rid|take|no|more|less|fewer|give|draw|paint|delete|drop|erase|"
                     r"clear|hide|cut|chop|melt|dry|drain|demolish|tear|build|cover|bring|show|let)\b)", text)
    clauses = [strip_lead(p.strip(" '")) for p in parts if p and p.strip(" '")]
    return [c for c in clauses if not _ONLY_INTERJECTION.match(c)]  # "hmm, make it night": "hmm" asks for nothing


def nouns_in(clause: str) -> list[str]:
    """The things ``clause`` names by a bare noun ("the boat", "the sky"), time of day left out."""
    return [a for a, rx in NOUNS.items() if re.search(rf"\b(?:{rx})\b", clause) and a != "time"]


def parse_instruction(instruction: str, current: dict[str, str], resolve=None) -> tuple[dict[str, str], list[str], list[str]]:
    """The changes ``instruction`` asks for: ({attribute: value}, free text, notes).

    resolve: maps a phrase outside the vocabulary to its nearest value (a `NearestValue`); a
    confident guess is taken (and said in the notes), an unsure one raises AskBack. Without it,
    unknown things to add become free text."""
    text = normalise(instruction)
    if not text.strip(" ,;.'"):
        raise InstructionError(f"the instruction is empty; try {EXAMPLES}")
    changes: dict[str, str] = {}
    free: list[str] = []
    notes: list[str] = []

    def want(attr: str, value: str, clause: str) -> None:
        if attr in changes and changes[attr] != value:
            raise InstructionError(f"'{instruction}' asks for both {attr}={changes[attr]} and {attr}={value}; "
                                   "say which one you mean")
        changes[attr] = value

    def nearest(clause: str, attributes, *, absent: bool = False) -> bool:
        """Map the clause's unknown phrase to the nearest value of ``attributes``; False: none."""
        phrase = unknown_phrase(clause)
        guess = resolve(phrase, attributes) if resolve and phrase else None
        if guess is None or guess.similarity < resolve.min_similarity:  # unrelated to anything we know
            return False
        value = ABSENT[guess.attribute] if absent else guess.value
        said = f"{guess.attribute.replace('_', ' ')} {value}"
        if not resolve.confident(guess) or (VERB_ADD.search(clause) and value == ABSENT.get(guess.attribute)):
            raise AskBack(f"I do not know '{phrase}' in these pictures; the nearest I know is {said}, but I am not "
                          f"sure (confidence {guess.confidence:.2f}). Say it with that word if you mean it, "
                          f"or try {EXAMPLES}", guess)
        want(guess.attribute, value, clause)
        notes.append(f"I took '{phrase}' for {said} (confidence {guess.confidence:.2f})")
        return True

    for clause in split_clauses(text):
        if KEEP.search(clause):  # "make the clouds pink, keep the rest": keeping is what edits do anyway
            continue
        if LAYOUT_VERB.search(clause) or SIZE_WORD.search(clause):
            raise InstructionError(f"where things are in these pictures and how big they are is the model's choice; "
                                   f"I can change what is there: try {EXAMPLES}")
        if RESOLUTION.search(clause):
            raise InstructionError("a picture's size is chosen when it is drawn (64, 256 or 512 pixels a side), "
                                   f"not by a change; I can change what is there: try {EXAMPLES}")
        if PLACE.search(clause):
            notes.append("where things go is the model's choice: I cannot place them")
            clause = PLACE.sub("", clause).strip()
        found = find_mentions(clause)
        if VERB_REMOVE.search(clause):
            nouns = nouns_in(clause)
            objects = sorted({h[2] for h in found} | set(nouns))
            if "terrain" in objects and not set(objects) & set(ABSENT):
                raise InstructionError(f"the ground cannot be removed; say what it should become instead "
                                       f"({', '.join(SCHEMA['terrain'])}), e.g. 'turn the mountains into a desert'")
            removable = [a for a in objects if a in ABSENT]
            if not removable and nearest(clause, list(ABSENT), absent=True):
                continue
            if not removable:
                thing = VERB_REMOVE.sub("", clause).strip()
                raise InstructionError(f"I do not know how to remove '{thing}' from this picture; I can remove the "
                                       "sun or moon, clouds, snow, water, trees, the house and the boat")
            for a in removable:
                want(a, ABSENT[a], clause)
            continue
        if MORE.search(clause) or LESS.search(clause):
            step = 1 if MORE.search(clause) else -1
            objects = [a for a in nouns_in(clause) if a in LADDERS]
            objects += [a for a, rx in LADDER_WORDS.items() if a not in objects and re.search(rf"\b(?:{rx})\b", clause)]
            single = [a for a in nouns_in(clause) if a in ABSENT and a not in LADDERS]
            if not objects and single:
                things = " or ".join(_ONE.get(a, a) for a in single)
                raise InstructionError(f"these pictures have at most {things}; I can add or remove it")
            if not objects:
                thing = re.sub(rf"{MORE.pattern}|{LESS.pattern}", "", clause).strip()
                raise InstructionError(f"I can make more or fewer clouds or trees, or more or less snow, "
                                       f"not '{thing}'")
            for a in objects:
                ladder = LADDERS[a]
                here = ladder.index(current.get(a, ladder[0])) if current.get(a) in ladder else 0
                there = min(max(here + step, 0), len(ladder) - 1)
                if there == here:
                    notes.append(f"{a.replace('_', ' ')} is already at '{ladder[here]}'")
                want(a, ladder[there], clause)
            continue
        if DARKER.search(clause) or BRIGHTER.search(clause):
            if "clouds" in nouns_in(clause):
                want("cloud_color", "gray" if DARKER.search(clause) else "white", clause)
            else:
                ladder = LADDERS["time"]
                here = ladder.index(current.get("time", "day"))
                there = min(max(here + (1 if DARKER.search(clause) else -1), 0), 2)
                if there == here:
                    notes.append(f"it is already {ladder[here]}")
                want("time", ladder[there], clause)
            continue
        target = clause
        if VERB_SET.search(clause):  # "turn the mountains into a desert": what follows into / with / to counts
            m = re.search(r"\b(?:into|with|to|for|by)\b (.*)$", clause)
            if m and find_mentions(m.group(1)):
                target = m.group(1)
            elif m and resolve and unknown_phrase(m.group(1)):  # "turn the hills into a tundra"
                nouns = nouns_in(clause[:m.start()]) or None
                if nearest(m.group(1), nouns and nouns + (["cloud_color"] if "clouds" in nouns else [])):
                    continue
        found = find_mentions(target)
        colour = re.search(rf"\b(?:{COLOUR}|{OTHER_COLOUR})\b", clause)
        if colour and not re.search(r"\bclouds?\b", clause) and not any(h[2] == "cloud_color" for h in found):
            raise InstructionError(f"only clouds can change colour in these pictures ('make the clouds "
                                   f"{CLOUD_COLOUR_WORDS.get(colour.group(0), 'pink')}'); colouring whole pictures "
                                   "is not supported by this model (a palette or a style can recolour the result)")
        added = bool(VERB_ADD.search(clause))
        if added:  # "add clouds", "add the moon": a bare noun means the thing is there
            for a in nouns_in(re.sub(r"\b(?:in|into|to|across|up in) the sky\b", "", target)):  # "put the moon in the sky"
                if not any(h[2] == a for h in found) and PRESENT.get(a):
                    want(a, PRESENT[a], clause)
        if not found:
            nouns = nouns_in(clause)
            scope = None if not nouns else nouns + (["cloud_color"] if "clouds" in nouns else [])
            if resolve and nearest(clause, None if added else scope):
                continue
            if added:
                thing = VERB_ADD.sub("", clause).strip()
                if thing and not any(h for h in find_mentions(thing)) and not nouns_in(thing):
                    free.append(f"with {thing}")
                    notes.append(f"'{thing}' is not in this model's vocabulary; it was added to the prompt as free text")
                continue
            if not added:
                raise InstructionError(f"I could not find a change in '{instruction.strip()}'. Say what to change, "
                                       f"e.g. {EXAMPLES}")
        for _, _, attr, value in found:
            want(attr, value, clause)
    if not changes and not free:
        raise InstructionError(f"I could not find a change in '{instruction.strip()}'. Say what to change, e.g. {EXAMPLES}")
    return changes, free, notes


def repair(attributes: dict[str, str], asked: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Bring ``attributes`` back within the schema's rules, changing what was not asked for, and say
    what changed. Raises InstructionError where the request itself is impossible."""
    a = dict(attributes)
    notes = []
    if asked.get("boat") == "yes" and asked.get("water") == "none":
        raise InstructionError("a boat needs water; a picture cannot have a boat and no water")
    if a.get("boat") == "yes" and a.get("water") == "none":
        if "water" in asked:
            a["boat"] = "no"
            notes.append("the boat went with the water")
        else:
            a["water"] = "lake"
            notes.append("there is no boat without water; I added a lake")
    if asked.get("celestial") == "moon" and asked.get("time") in ("day", "sunset"):
        raise InstructionError("the moon is only in the sky at night in these pictures")
    if asked.get("celestial") == "sun" and asked.get("time") == "night":
        raise InstructionError("the sun is only in the sky by day or at sunset in these pictures")
    if a.get("celestial") == "moon" and a.get("time") in ("day", "sunset"):
        if "celestial" in asked:
            a["time"] = "night"
            notes.append("the moon only shows at night, so it is night now")
        else:
            a["celestial"] = "sun"
            notes.append(f"the moon set: at {a['time']} the sun is in the sky")
    if a.get("celestial") == "sun" and a.get("time") == "night":
        if "celestial" in asked:
            a["time"] = "day"
            notes.append("the sun only shows by day or at sunset, so it is day now")
        else:
            a["celestial"] = "moon"
            notes.append("the sun set: at night the moon is in the sky")
    if "cloud_color" in asked and a.get("clouds", "none") == "none":
        a["clouds"] = "few"
        notes.append(f"there were no clouds to colour; I added a few {asked['cloud_color']} ones")
    if a.get("clouds") == "none":
        a.pop("cloud_color", None)
    elif "cloud_color" not in a:
        a["cloud_color"] = "white"
    if a.get("water") == "none":
        a.pop("boat", None)
    elif "water" in a and "boat" not in a:
        a["boat"] = "no"
    return a, notes


def apply_instruction(current: dict[str, str], instruction: str, free_text: list[str] | tuple[str, ...] = (),
                      resolve=None) -> Revision:
    """Revise ``current`` (the picture's attributes, full or partial) by ``instruction``.

    >>> apply_instruction({"time": "day", "water": "none", "terrain": "hills"}, "add a boat").notes
    ['there is no boat without water; I added a lake']
    """
    unknown = set(current) - set(SCHEMA)
    if unknown:
        raise ValueError(f"unknown scene attribute(s): {', '.join(sorted(unknown))}")
    asked, free, notes = parse_instruction(instruction, current, resolve)
    for attr, value in asked.items():
        if current.get(attr) == value and not any(attr.replace("_", " ") in n for n in notes):
            notes.append(f"{attr.replace('_', ' ')} was already '{value}'")
    return apply_values(current, asked, notes, [*free_text, *free])


def apply_values(current: dict[str, str], asked: dict[str, str], notes=(), free_text=(),
                 prompt: str | None = None) -> Revision:
    """``current`` with the ``asked`` values, repaired within the schema's rules (the repairs said
    after ``notes``). Raises InstructionError where the request itself is impossible."""
    revised, repair_notes = repair({**current, **asked}, asked)
    return Revision.between(current, revised, [*notes, *repair_notes], free_text, prompt, asked)


def looks_like_instruction(text: str) -> bool:
    """An edit instruction ("make it night", "more clouds") rather than a description of the whole picture."""
    return any(VERB_REMOVE.search(c) or VERB_ADD.search(c) or VERB_SET.search(c) or MORE.search(c)
               or LESS.search(c) or DARKER.search(c) or BRIGHTER.search(c) for c in split_clauses(normalise(text)))
