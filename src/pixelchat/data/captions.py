"""Captions for `scenes`: several templates, synonyms, varying word order, attributes left out.

A share of the phrasings is held out of training (``split="heldout"`` prefers them,
``split="train"`` never uses them) so that understanding of unseen wording can be measured.
Each phrasing list below is ``(train phrasings, held-out phrasings)``; docs/scenes.md lists them.
"""

from __future__ import annotations

import numpy as np

# train: training phrasings only; heldout: mostly held-out ones; eval: held-out ones only; all: any.
# fit / tune: the training phrasings split again for choosing a recipe without the eval ones: tune is
# the last training phrasing of each list that has several, fit the others.
SPLITS = ("train", "heldout", "eval", "all", "fit", "tune")

# Subject noun phrases per terrain; "{snow}" takes a snow adjective or nothing.
TERRAIN = {
    "mountains": (["{snow}mountains", "a {snow}mountain range", "{snow}peaks", "a {snow}mountain landscape",
                   "tall {snow}mountains"], ["{snow}alpine summits"]),
    "hills": (["{snow}hills", "rolling {snow}hills", "a {snow}hilly landscape", "a {snow}hillside"],
              ["gentle {snow}slopes"]),
    "desert": (["a {snow}desert", "{snow}sand dunes", "a {snow}desert landscape", "{snow}dunes"],
               ["a {snow}sandy wasteland"]),
    "plain": (["a {snow}plain", "{snow}flat fields", "a {snow}grassland", "a {snow}meadow", "a flat {snow}landscape"],
              ["a {snow}prairie"]),
}
GENERIC_SUBJECT = (["a landscape", "a scene", "a view", "a place"], ["some scenery"])
SNOW_ADJ = (["snowy ", "snow-covered ", "snowy "], ["wintry "])
SNOW = {
    "yes": (["with snow", "covered in snow", "under snow"], ["blanketed in white snow"]),
    "no": (["without snow", "with no snow"], ["free of snow"]),
}
TIME = {
    "day": (["by day", "during the day", "in daylight", "at noon", "in the daytime", "on a bright day"],
            ["at midday"]),
    "sunset": (["at sunset", "at dusk", "in the evening", "at twilight"], ["at sundown"]),
    "night": (["at night", "at nighttime", "after dark", "on a starry night"], ["at midnight"]),
}
CELESTIAL = {
    "sun": (["with the sun", "under a bright sun", "with the sun in the sky", "with a shining sun"],
            ["beneath a blazing sun"]),
    "moon": (["with the moon", "under a full moon", "with a bright moon", "with the moon in the sky"],
             ["beneath a glowing moon"]),
    "none": (["with no sun or moon", "with no sun or moon in the sky"], ["without any sun or moon"]),
}
CLOUDS = {
    "none": (["with a clear sky", "with no clouds", "under a cloudless sky"], ["with not a cloud in the sky"]),
    "few": (["with a few {c}clouds", "with some {c}clouds", "with scattered {c}clouds", "with a {c}cloud"],
            ["with a couple of {c}clouds"]),
    "many": (["with many {c}clouds", "with lots of {c}clouds", "under a sky full of {c}clouds",
              "with rising {c}clouds"], ["with heavy {c}clouds"]),
}
CLOUD_COLOR = {
    "white": (["white ", "fluffy white "], ["snow-white "]),
    "pink": (["pink ", "rosy "], ["pastel pink "]),
    "gray": (["gray ", "grey ", "dark "], ["stormy "]),
}
OVERCAST = (["under an overcast sky", "with an overcast sky"], ["under a leaden sky"])  # many gray clouds
WATER = {
    "none": (["with no water", "far from water"], ["with no lake or sea"]),
    "lake": (["by a lake", "with a lake", "beside a pond", "with a pond", "over a lake"], ["near a still lake"]),
    "sea": (["by the sea", "by the ocean", "on the coast", "over the sea", "with the sea"], ["along the seashore"]),
}
TREES = {
    "none": (["with no trees", "without trees"], ["with not a single tree"]),
    "few": (["with a few trees", "with some trees", "with a tree", "with scattered trees"], ["dotted with trees"]),
    "forest": (["with a forest", "with woods", "with woodland", "with a pine forest"], ["with dense woods"]),
}
HOUSE = {
    "yes": (["with a house", "with a cottage", "with a cabin", "with a little house"], ["with a small hut"]),
    "no": (["with no house", "with no buildings"], ["with no homes"]),
}
BOAT = {
    "yes": (["with a boat", "with a sailboat", "with a small boat"], ["with a sailing ship"]),
    "no": (["with no boats", "without a boat"], ["with no vessels"]),
}
TEMPLATES = (["{subject} {rest}", "a picture of {subject} {rest}", "{time}, {subject} {rest}",
              "a landscape of {subject} {rest}", "{subject}, {rest}", "a beautiful view of {subject} {rest}"],
             ["a painting of {subject} {rest}", "{time} there is {subject} {rest}"])

# Every phrasing table, for documentation and tests: name → {value: (train, held out)}.
PHRASINGS = {
    "terrain": TERRAIN, "subject": {"any": GENERIC_SUBJECT}, "snow_adjective": {"yes": SNOW_ADJ}, "snow": SNOW,
    "time": TIME, "celestial": CELESTIAL, "clouds": CLOUDS, "cloud_color": CLOUD_COLOR, "overcast": {"many gray": OVERCAST},
    "water": WATER, "trees": TREES, "house": HOUSE, "boat": BOAT, "template": {"any": TEMPLATES},
}

# How often each attribute is named (the rest is left out). None values are named less often.
MENTION_P = {"time": 0.6, "celestial": 0.35, "clouds": 0.55, "terrain": 0.8, "snow": 0.35, "water": 0.6,
             "trees": 0.55, "house": 0.5, "boat": 0.6}
NEGATIVE_P = 0.35  # chance to name an absent thing ("with no trees") when it is drawn to be named


def split_phrasings(phrasings: tuple[list[str], list[str]], split: str) -> list[str]:
    """The phrasings ``split`` draws from; "heldout" mixes at random (see `_pick`): here all of them."""
    train, heldout = phrasings
    if split == "train":
        return train
    if split == "eval":
        return heldout
    if split in ("fit", "tune"):
        distinct = list(dict.fromkeys(train))
        return distinct if len(distinct) < 2 else (distinct[:-1] if split == "fit" else distinct[-1:])
    return train + heldout


def phrasing_statements(split: str = "train") -> list[tuple[str, dict[str, str]]]:
    """Every phrasing ``split`` ("train" or "fit") uses, lower case, words only, with what it states: a
    terrain phrasing with and without each snow adjective, a cloud phrasing with and without each
    colour, and the templates' words and the generic subjects, which state nothing."""
    import re

    if split not in ("train", "fit"):
        raise ValueError(f"split must be train or fit, got {split!r}")
    pool = split_phrasings
    out = []
    adjectives = pool(SNOW_ADJ, split)
    for terrain, phrasings in TERRAIN.items():
        for p in pool(phrasings, split):
            out.append((p.replace("{snow}", ""), {"terrain": terrain}))
            out += [(p.replace("{snow}", a), {"terrain": terrain, "snow": "yes"}) for a in adjectives]
    for name, table in (("snow", SNOW), ("time", TIME), ("celestial", CELESTIAL), ("water", WATER),
                        ("trees", TREES), ("house", HOUSE), ("boat", BOAT)):
        for value, phrasings in table.items():
            out += [(p, {name: value}) for p in pool(phrasings, split)]
    for value, phrasings in CLOUDS.items():
        for p in pool(phrasings, split):
            out.append((p.replace("{c}", ""), {"clouds": value}))
            if value != "none":
                out += [(p.replace("{c}", c), {"clouds": value, "cloud_color": colour})
                        for colour, colours in CLOUD_COLOR.items() for c in pool(colours, split)]
    out += [(p, {"clouds": "many", "cloud_color": "gray"}) for p in pool(OVERCAST, split)]
    out += [(p, {}) for p in pool(GENERIC_SUBJECT, split)]
    for template in pool(TEMPLATES, split):
        out += [(part.strip(" ,"), {}) for part in re.split(r"\{\w+\}", template) if part.strip(" ,")]
    unique = {" ".join(re.findall(r"[a-z0-9']+(?:-[a-z0-9']+)*", p.lower())): said for p, said in out}
    return list(unique.items())


def _pick(rng: np.random.Generator, phrasings: tuple[list[str], list[str]], split: str) -> str:
    if split == "heldout":
        train, heldout = phrasings
        pool = heldout if rng.random() < 0.7 else train + heldout
    else:
        pool = split_phrasings(phrasings, split)
    return pool[rng.integers(len(pool))]


def caption_scene(attributes: dict[str, str], rng: np.random.Generator, split: str = "train",
                  names: list[str] | None = None) -> tuple[str, list[str]]:
    """One caption for ``attributes``; returns it with the names of the attributes it states.
    ``names`` chooses which attributes to state (otherwise they are drawn at random)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    a = attributes
    forced = names is not None
    if forced:
        named = _check_names(a, names)
    else:
        named = []
        for name, p in MENTION_P.items():
            absent = a[name] in ("none", "no")
            if name == "boat" and a["water"] == "none":
                continue  # "with no boats" on dry land says nothing
            if rng.random() < (p * NEGATIVE_P if absent else p):
                named.append(name)
        if not named:
            named.append("terrain")

    snow_adj = ""
    if "snow" in named and a["snow"] == "yes" and "terrain" in named and rng.random() < 0.6:
        snow_adj = _pick(rng, SNOW_ADJ, split)
    subject = (_pick(rng, TERRAIN[a["terrain"]], split) if "terrain" in named else _pick(rng, GENERIC_SUBJECT, split))
    subject = subject.replace("{snow}", snow_adj)

    parts = []
    if "snow" in named and not snow_adj:
        parts.append(_pick(rng, SNOW[a["snow"]], split))
    if "celestial" in named:
        parts.append(_pick(rng, CELESTIAL[a["celestial"]], split))
    if "clouds" in named:
        colour_ok = "cloud_color" in names if forced else True
        if colour_ok and a["clouds"] == "many" and a["cloud_color"] == "gray" and rng.random() < 0.3:
            parts.append(_pick(rng, OVERCAST, split))
            named.append("cloud_color")
        else:
            colour = ""
            if a["clouds"] != "none" and (colour_ok if forced else rng.random() < 0.65):
                colour = _pick(rng, CLOUD_COLOR[a["cloud_color"]], split)
                named.append("cloud_color")
            parts.append(_pick(rng, CLOUDS[a["clouds"]], split).replace("{c}", colour))
    for name, table in (("water", WATER), ("trees", TREES), ("house", HOUSE), ("boat", BOAT)):
        if name in named:
            parts.append(_pick(rng, table[a[name]], split))
    rng.shuffle(parts)

    time = _pick(rng, TIME[a["time"]], split) if "time" in named else ""
    template = _pick(rng, TEMPLATES, split)
    if "{time}" in template and not time:
        template = "{subject} {rest}"
    elif time and "{time}" not in template:
        parts.insert(int(rng.integers(len(parts) + 1)), time)
    if len(parts) > 2 and rng.random() < 0.5:
        rest = ", ".join(parts[:-1]) + " and " + parts[-1]
    else:
        rest = " ".join(parts)
    caption = template.format(subject=subject, rest=rest, time=time)
    caption = " ".join(caption.replace(" ,", ",").split()).strip(" ,")
    order = list(attributes)
    return caption, sorted(set(named), key=order.index)


def _check_names(a: dict[str, str], names: list[str]) -> list[str]:
    unknown = set(names) - set(MENTION_P) - {"cloud_color"}
    if unknown:
        raise ValueError(f"unknown attribute(s) to name: {', '.join(sorted(unknown))}")
    if not names:
        raise ValueError("name at least one attribute")
    if "cloud_color" in names and ("clouds" not in names or a["clouds"] == "none"):
        raise ValueError("a cloud colour is named only together with clouds that are there")
    if "boat" in names and a["water"] == "none":
        raise ValueError("a boat is named only where there is water")
    return [n for n in names if n != "cloud_color"]


def scene_prompt(attributes: dict[str, str], free_text: list[str] | tuple[str, ...] = ()) -> str:
    """One canonical prompt naming every attribute in ``attributes`` (a full or partial set), in the
    first training phrasing of each: the prompt a description hands back to regenerate a picture."""
    a = dict(attributes)
    first = lambda table, value: table[value][0][0]  # noqa: E731
    snowy = a.get("snow") == "yes" and "terrain" in a
    if "terrain" in a:
        subject = first(TERRAIN, a["terrain"]).replace("{snow}", SNOW_ADJ[0][0] if snowy else "")
    else:
        subject = GENERIC_SUBJECT[0][0]
    parts = []
    if "time" in a:
        parts.append(first(TIME, a["time"]))
    if "snow" in a and not snowy:
        parts.append(first(SNOW, a["snow"]))
    if "celestial" in a:
        parts.append(first(CELESTIAL, a["celestial"]))
    if "clouds" in a:
        colour = first(CLOUD_COLOR, a["cloud_color"]) if a["clouds"] != "none" and "cloud_color" in a else ""
        parts.append(first(CLOUDS, a["clouds"]).replace("{c}", colour))
    for name, table in (("water", WATER), ("trees", TREES), ("house", HOUSE), ("boat", BOAT)):
        if name in a and not (name == "boat" and a.get("water") == "none"):
            parts.append(first(table, a[name]))
    parts += [t.strip() for t in free_text if t.strip()]
    if len(parts) > 1:
        return f"{subject} {', '.join(parts[:-1])} and {parts[-1]}"
    return " ".join([subject, *parts])


def ordered_caption(attributes: dict[str, str], rng: np.random.Generator, split: str = "train") -> str:
    """A caption naming every attribute in ``attributes`` in one fixed order (subject, time, snow,
    sun or moon, clouds, water, trees, house, boat), each in a phrasing drawn from ``split``: what a
    captioner is taught to write, so that its greedy decoding names everything once."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    a = attributes
    snow_adj = _pick(rng, SNOW_ADJ, split) if a.get("snow") == "yes" and "terrain" in a and rng.random() < 0.5 else ""
    subject = _pick(rng, TERRAIN[a["terrain"]], split) if "terrain" in a else _pick(rng, GENERIC_SUBJECT, split)
    subject = subject.replace("{snow}", snow_adj)
    parts = []
    if "time" in a:
        parts.append(_pick(rng, TIME[a["time"]], split))
    if "snow" in a and not snow_adj:
        parts.append(_pick(rng, SNOW[a["snow"]], split))
    if "celestial" in a:
        parts.append(_pick(rng, CELESTIAL[a["celestial"]], split))
    if "clouds" in a:
        colour = _pick(rng, CLOUD_COLOR[a["cloud_color"]], split) if a["clouds"] != "none" and "cloud_color" in a else ""
        parts.append(_pick(rng, CLOUDS[a["clouds"]], split).replace("{c}", colour))
    for name, table in (("water", WATER), ("trees", TREES), ("house", HOUSE), ("boat", BOAT)):
        if name in a and not (name == "boat" and a.get("water") == "none"):
            parts.append(_pick(rng, table[a[name]], split))
    lead = ["", "a picture of ", "a landscape of ", "a view of "][int(rng.integers(4))]
    if len(parts) > 1:
        return f"{lead}{subject} {', '.join(parts[:-1])} and {parts[-1]}"
    return " ".join([lead + subject, *parts])
