"""The conversation suite: scripted dialogues through `pixelchat.Session`, scored by the judge.

Each dialogue opens with a new picture (an evaluation-split caption) and goes on for 2–7 more
turns: single changes and several changes in one message (in varied phrasing), undo, questions,
and requests that cannot be done. Each next turn is drawn from the expected attributes so far,
starting from what the judge reads in the opening picture (the same picture in every
configuration) and carried along turn by turn, schema repairs included.

Scores, per kind of turn:
- change turns: success = every attribute the message asks for holds in the new picture (judge);
  preservation = every other attribute the judge read before the turn is unchanged (what the
  schema forces along, e.g. night taking the sun away, counts as neither); understood = the
  session's revised prompt states the asked-for values (the text path alone);
- undo: the session is back at the turn before; questions: answered, picture unchanged;
  impossible requests: asked back, picture unchanged.
Run with the self-check on (3 attempts) and off, on the same dialogues.

    python bench_chat.py --dialogues 60 --seed 0 [--json out.json]

The judge is the measuring instrument only: sessions never load it.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from _machine import machine
from pixelchat import Session
from pixelchat.data.captions import caption_scene
from pixelchat.data.scenes import sample_attributes
from pixelchat.evaluation.judge import image_to_tensor, load_judge, predict
from pixelchat.text.instructions import InstructionError, repair

OPENINGS = ["draw {}", "{}", "create {}", "show me {}", "paint {}", "I want a picture of {}", "generate {}"]
# ((phrasings), {attribute: value}, applies when) — one change each; two may go in one message.
CHANGES = [
    (("make it night", "turn it into night", "make it nighttime", "it should be night"), {"time": "night"},
     lambda a: a["time"] != "night"),
    (("make it daytime", "make it day", "change it to daytime", "back to daytime"), {"time": "day"},
     lambda a: a["time"] != "day"),
    (("make it sunset", "turn it into a sunset", "change the time to dusk", "make it evening"), {"time": "sunset"},
     lambda a: a["time"] != "sunset"),
    (("add some clouds", "put a few clouds in the sky", "add a few clouds"), {"clouds": "few"},
     lambda a: a["clouds"] == "none"),
    (("remove the clouds", "clear the sky", "get rid of the clouds", "no clouds"), {"clouds": "none"},
     lambda a: a["clouds"] != "none"),
    (("make it cloudy", "add lots of clouds", "make it overcast"), {"clouds": "many"},
     lambda a: a["clouds"] != "many"),
    (("make the clouds pink", "turn the clouds pink", "pink clouds please"), {"cloud_color": "pink"},
     lambda a: a["clouds"] != "none" and a.get("cloud_color") != "pink"),
    (("make the clouds gray", "turn the clouds grey", "make the clouds darker"), {"cloud_color": "gray"},
     lambda a: a["clouds"] != "none" and a.get("cloud_color") not in ("gray",)),
    (("turn the land into a desert", "make it a desert", "change the ground to sand dunes"), {"terrain": "desert"},
     lambda a: a["terrain"] != "desert"),
    (("make it mountainous", "turn it into mountains", "replace the ground with mountains"), {"terrain": "mountains"},
     lambda a: a["terrain"] != "mountains"),
    (("change the ground to hills", "make it hilly", "turn the land into rolling hills"), {"terrain": "hills"},
     lambda a: a["terrain"] != "hills"),
    (("make it a flat plain", "turn the land into a meadow", "change the ground to grassland"), {"terrain": "plain"},
     lambda a: a["terrain"] != "plain"),
    (("add snow", "make it snowy", "cover it in snow", "make it wintry"), {"snow": "yes"},
     lambda a: a["snow"] == "no"),
    (("remove the snow", "melt the snow", "no snow"), {"snow": "no"}, lambda a: a["snow"] == "yes"),
    (("add a lake", "put a lake in it", "add a pond"), {"water": "lake"}, lambda a: a["water"] == "none"),
    (("replace the lake with the sea", "make the water a sea", "turn the lake into an ocean"), {"water": "sea"},
     lambda a: a["water"] == "lake"),
    (("remove the water", "get rid of the water", "dry up the water"), {"water": "none"},
     lambda a: a["water"] != "none"),
    (("add a forest", "make it forested", "add dense woods"), {"trees": "forest"}, lambda a: a["trees"] != "forest"),
    (("add a few trees", "put some trees in", "add a couple of trees"), {"trees": "few"},
     lambda a: a["trees"] == "none"),
    (("remove the trees", "cut down the trees", "no trees"), {"trees": "none"}, lambda a: a["trees"] != "none"),
    (("add a house", "put a cottage in it", "add a cabin", "build a house"), {"house": "yes"},
     lambda a: a["house"] == "no"),
    (("remove the house", "take away the house", "no house"), {"house": "no"}, lambda a: a["house"] == "yes"),
    (("add a boat", "put a boat on the water", "add a sailboat"), {"boat": "yes"},
     lambda a: a.get("boat", "no") == "no" and a["water"] != "none"),
    (("remove the boat", "take the boat away", "no boats"), {"boat": "no"}, lambda a: a.get("boat") == "yes"),
    (("remove the sun", "hide the sun"), {"celestial": "none"}, lambda a: a["celestial"] == "sun"),
    (("add the moon", "show the moon"), {"celestial": "moon"},
     lambda a: a["time"] == "night" and a["celestial"] == "none"),
]
JOINERS = [" and ", ", ", " and also ", "; then "]
IMPOSSIBLE = ["add a boat and remove all the water", "remove the ground", "make it better",
              "make the mountains purple", "add the moon and make it daytime", "add a spaceship"]
QUESTIONS = ["what do you see?", "describe it", "is there a boat?", "what time of day is it?"]


def judged(judge, image) -> dict:
    a = dict(predict(judge, image_to_tensor(image)[None])[0].attributes)
    if a.get("water") == "none":
        a.pop("boat", None)
    if a.get("clouds") == "none":
        a.pop("cloud_color", None)
    return a


def next_step(stack: list[dict], rng: np.random.Generator) -> dict | None:
    """The next turn given the expected attributes along the session's path (``stack``), with what
    it asks; None when the drawn change is impossible (skipped)."""
    expect = stack[-1]
    r = rng.random()
    if r < 0.1 and len(stack) > 1:
        return {"kind": "undo", "message": ["undo", "go back", "undo that"][rng.integers(3)]}
    if r < 0.18:
        return {"kind": "impossible", "message": IMPOSSIBLE[rng.integers(len(IMPOSSIBLE))]}
    if r < 0.25:
        return {"kind": "question", "message": QUESTIONS[rng.integers(len(QUESTIONS))]}
    full = {**expect, "boat": expect.get("boat", "no"), "cloud_color": expect.get("cloud_color", "white")}
    options = [c for c in CHANGES if c[2](full)]
    first = options[rng.integers(len(options))]
    picked = [first]
    if r > 0.75:  # several changes in one message: a second one on unrelated attributes
        tied = ({"water", "boat"}, {"time", "celestial"}, {"clouds", "cloud_color"})
        more = [c for c in options if not set(c[1]) & set(first[1])
                and not any(t <= set(c[1]) | set(first[1]) for t in tied)]
        if more:
            picked.append(more[rng.integers(len(more))])
    asked = {k: v for c in picked for k, v in c[1].items()}
    message = JOINERS[rng.integers(len(JOINERS))].join(c[0][rng.integers(len(c[0]))] for c in picked)
    try:
        after, _ = repair({**expect, **asked}, asked)
    except InstructionError:
        return None
    forced = {k for k in set(after) | set(expect) if k not in asked and after.get(k) != expect.get(k)}
    return {"kind": "change", "message": message, "asked": asked, "forced": sorted(forced), "expect": after}


def run_dialogue(d: int, seed: int, checks: int, judge, model) -> list[dict]:
    rng = np.random.default_rng([seed, d])
    a = sample_attributes(rng)
    caption, _ = caption_scene(a, rng, "eval")
    opening = OPENINGS[rng.integers(len(OPENINGS))].format(caption)
    session = Session(model=model, seed=seed * 10_000 + d, checks=checks)
    turn = session.turn(opening)
    rows = [{"dialogue": d, "kind": "opening", "message": opening, "reply": turn.reply}]
    stack = [judged(judge, session.node.image)]  # expected attributes along the path: the opening as drawn
    path = [session.current]
    for _ in range(int(rng.integers(2, 8))):
        step = next_step(stack, rng)
        if step is None:
            continue
        before_node, before = session.current, judged(judge, session.node.image)
        t = time.perf_counter()
        turn = session.turn(step["message"])
        row = {"dialogue": d, **{k: v for k, v in step.items() if k != "expect"}, "reply": turn.reply,
               "session_kind": turn.kind, "seconds": round(time.perf_counter() - t, 2)}
        if step["kind"] == "change":
            if turn.kind != "edit":
                row.update(success=False, refused=True)
            else:
                after = judged(judge, session.node.image)
                others = [k for k in before if k not in step["asked"] and k not in step["forced"] and k in after]
                kept = [after[k] == before[k] for k in others]
                row.update(success=all(after.get(k) == v for k, v in step["asked"].items()), refused=False,
                           preserved=all(kept), kept=sum(kept), others=len(others),
                           understood=all(session.node.attributes.get(k) == v for k, v in step["asked"].items()),
                           after=after, before=before)
                path.append(session.current)
                stack.append(step["expect"])
        elif step["kind"] == "undo":
            path.pop()
            stack.pop()
            row["success"] = session.current == path[-1]
        else:  # impossible or question: answered without a new picture
            want = "ask" if step["kind"] == "impossible" else "describe"
            row["success"] = turn.kind == want and session.current == before_node
        rows.append(row)
    return rows


def summarise(rows: list[dict]) -> dict:
    changes = [r for r in rows if r["kind"] == "change"]
    done = [r for r in changes if not r["refused"]]
    s = {"dialogues": len({r["dialogue"] for r in rows}), "turns": len(rows),
         "change_turns": len(changes), "multi_change_turns": sum(len(r["asked"]) > 1 for r in changes),
         "success": round(float(np.mean([r["success"] for r in changes])), 3),
         "preservation": round(float(np.mean([r["preserved"] for r in done])), 3),
         "attributes_kept": round(sum(r["kept"] for r in done) / max(1, sum(r["others"] for r in done)), 3),
         "understood": round(float(np.mean([r.get("understood", False) for r in changes])), 3),
         "refused_changes": sum(r["refused"] for r in changes),
         "seconds_per_change": round(float(np.mean([r["seconds"] for r in changes])), 2)}
    for kind in ("undo", "impossible", "question"):
        rs = [r for r in rows if r["kind"] == kind]
        s[f"{kind}_ok"] = f"{sum(r['success'] for r in rs)}/{len(rs)}"
    return s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dialogues", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0, help="0 is the reported suite")
    parser.add_argument("--model", default=None)
    parser.add_argument("--checks", default="3,0", help="self-check attempts to compare, comma separated")
    parser.add_argument("--json", default=None, help="write every turn's outcome here")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    judge = load_judge()
    print(f"machine: {machine()}")
    results = {}
    for checks in (int(c) for c in args.checks.split(",")):
        t0 = time.perf_counter()
        rows = []
        for d in range(args.dialogues):
            rows += run_dialogue(d, args.seed, checks, judge, args.model)
            print(f"  self-check {checks}: dialogue {d + 1}/{args.dialogues}, {time.perf_counter() - t0:.0f} s",
                  flush=True)
        summary = summarise(rows)
        summary["minutes"] = round((time.perf_counter() - t0) / 60, 1)
        print(f"self-check {checks}: " + json.dumps(summary), flush=True)
        results[checks] = {"summary": summary, "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "machine": machine(), "results": results}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
