"""Words outside the vocabulary: how often the nearest-value mapping is right, asks back, or errs.

A table of instructions whose key word the prompt reader does not know (checked: a row whose
words it knows is an error), each with the change a person would expect ("add a canoe" → boat yes) or none where nothing in the vocabulary fits
("add a spaceship"). Rows alternate between a tuning half, on which the confidence threshold is
chosen (most right maps, each wrong map costing three), and a held-out half that is reported.

    python bench_nearest.py
"""

from __future__ import annotations

import argparse
import json

from _machine import machine
from pixelchat.text.instructions import AskBack, InstructionError, apply_instruction
from pixelchat.text.vocabulary import NearestValue

CURRENT = {"time": "day", "celestial": "sun", "clouds": "few", "cloud_color": "white", "terrain": "hills",
           "snow": "no", "water": "lake", "trees": "none", "house": "no", "boat": "no"}
# (instruction, expected change or None when nothing should be mapped)
TABLE = [
    ("add a canoe", {"boat": "yes"}), ("add a kayak", {"boat": "yes"}),
    ("put a rowboat on the water", {"boat": "yes"}), ("add a dinghy", {"boat": "yes"}),
    ("add a raft", {"boat": "yes"}), ("add a catamaran", {"boat": "yes"}),
    ("make it dusky", {"time": "sunset"}), ("make it nightfall", {"time": "sunset"}),
    ("make it sunrise", {"time": "sunset"}), ("make it pitch black", {"time": "night"}),
    ("make it nocturnal", {"time": "night"}), ("make it lunchtime", {"time": "day"}),
    ("turn the hills into a tundra", None), ("turn the hills into a savanna", {"terrain": "plain"}),
    ("turn the hills into a steppe", {"terrain": "plain"}), ("turn the hills into a valley floor", {"terrain": "plain"}),
    ("turn the hills into cliffs", {"terrain": "mountains"}), ("turn the hills into the himalayas", {"terrain": "mountains"}),
    ("turn the hills into a sahara", {"terrain": "desert"}), ("make it arid", {"terrain": "desert"}),
    ("make the clouds magenta", {"cloud_color": "pink"}), ("make the clouds salmon", {"cloud_color": "pink"}),
    ("make the clouds ashen", {"cloud_color": "gray"}), ("make the clouds slate", {"cloud_color": "gray"}),
    ("make the clouds ivory", {"cloud_color": "white"}), ("make the clouds milky", {"cloud_color": "white"}),
    ("make it frosty", {"snow": "yes"}), ("give it a glacier", {"snow": "yes"}),
    ("make it icy", {"snow": "yes"}), ("add snowfall", {"snow": "yes"}),
    ("add a barn", {"house": "yes"}), ("add a shed", {"house": "yes"}),
    ("add a villa", {"house": "yes"}), ("add a chalet", {"house": "yes"}),
    ("add a lagoon", {"water": "sea"}), ("add a reservoir", {"water": "lake"}),
    ("add woodlands", {"trees": "forest"}), ("add a grove of oaks", {"trees": "few"}),
    ("turn it into a rainforest", {"trees": "forest"}), ("add some pines", {"trees": "few"}),
    ("add a thunderstorm", {"clouds": "many"}), ("make it foggy", {"clouds": "many"}),
    ("add moonshine", {"celestial": "moon"}), ("add a sunbeam", {"celestial": "sun"}),
    ("add a spaceship", None), ("add a dragon", None), ("add a pizza", None), ("add a robot", None),
    ("add a car", None), ("add a cat", None), ("add a guitar", None), ("add a laptop", None),
    ("make it better", None), ("make it prettier", None), ("make it more interesting", None),
    ("make it look expensive", None), ("add an umbrella", None), ("add a smartphone", None),
    ("add a giraffe", None), ("add a skateboard", None),
]


def outcome(instruction: str, expected: dict | None, resolve: NearestValue) -> str:
    try:
        revision = apply_instruction(CURRENT, instruction, resolve=resolve)
    except AskBack:
        return "asked"
    except InstructionError:
        return "unknown"
    if not any(n.startswith("I took") for n in revision.notes):
        return "unknown"
    if expected is None:
        return "wrong"
    return "right" if all(revision.attributes.get(k) == v for k, v in expected.items()) else "wrong"


def check_table() -> None:
    from pixelchat.text.instructions import apply_instruction as plain

    for instruction, _ in TABLE:
        try:
            if plain(CURRENT, instruction).changes:
                raise SystemExit(f"the prompt reader knows the words of {instruction!r}; it does not belong here")
        except InstructionError:
            pass


def score(rows, resolve) -> dict:
    counts = {"right": 0, "wrong": 0, "asked": 0, "unknown": 0}
    for instruction, expected in rows:
        counts[outcome(instruction, expected, resolve)] += 1
    counts["n"] = len(rows)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args()
    check_table()
    tune, held = TABLE[0::2], TABLE[1::2]
    resolve = NearestValue()
    grid = {}
    for t in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        resolve.threshold = t
        c = score(tune, resolve)
        grid[t] = c["right"] - 3 * c["wrong"]
    best = max(grid, key=lambda t: (grid[t], -t))  # ties: the lowest, which maps most
    resolve.threshold = best
    report = {"machine": machine(), "threshold_grid_on_tuning_half": grid, "threshold": best,
              "tuning_half": score(tune, resolve), "held_out_half": score(held, resolve),
              "default_threshold": NearestValue().threshold}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
