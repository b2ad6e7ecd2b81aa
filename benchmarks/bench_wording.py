"""Everyday wording: how the prompt reader reads prompts written the way people write them.

`prompts/fresh-wording.jsonl` holds 40 prompts ("a log cabin on a snowy hillside with smoke from the
chimney"), each with the values a person would accept for the attributes it states (null: leaving the
attribute unread is fine too). An attribute the prompt does not state is right when nothing is read
for it: the spec completion fills it. The set is a test: no change to the reader is chosen by it.

Three readers on the same prompts: the network alone, the pattern reader with the network on the
words the patterns leave unexplained (what the engine uses), and the pattern reader alone.

With ``--draw K``, also the whole path: K pictures of each prompt from the shipped model at 64 px
(``--attempts``: its self-check, default the engine's), read by the evaluation judge; an attribute
the prompt states (one whose accepted values do not include null) is right when the judge reads an
accepted value.

    python bench_wording.py [--show]
    python bench_wording.py --draw 8 --attempts 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _machine import machine

from pixelchat.data.scenes import SCHEMA
from pixelchat.text.encoder import load_text_encoder
from pixelchat.text.instructions import read_attributes
from pixelchat.text.reader import Reading, load_reader, read_prompts

PROMPTS = Path(__file__).resolve().parent / "prompts" / "fresh-wording.jsonl"


def load_rows(path: Path = PROMPTS) -> list[tuple[str, dict[str, list]]]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        for name, values in row["accept"].items():
            if name not in SCHEMA or any(v is not None and v not in SCHEMA[name] for v in values):
                raise SystemExit(f"{path}:{n}: {name} = {values} is not in the schema")
        rows.append((row["prompt"], row["accept"]))
    return rows


def right(reading: dict[str, str], accept: dict[str, list]) -> dict[str, bool]:
    """Per attribute: is what was read (or nothing) acceptable?"""
    return {name: reading.get(name) in accept.get(name, [None]) for name in SCHEMA}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--show", action="store_true", help="print every prompt the engine's reading gets wrong")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--draw", type=int, default=0, help="pictures per prompt to draw and judge (0: reading only)")
    ap.add_argument("--attempts", type=int, default=None, help="the self-check's draws per picture at most")
    args = ap.parse_args()
    rows = load_rows()
    prompts = [p for p, _ in rows]
    reader, encoder = load_reader(), load_text_encoder()
    readers = {
        "network alone": lambda: read_prompts(reader, encoder, prompts, patterns=False),
        "patterns, and the network on the words they leave unexplained (the engine)": lambda: read_prompts(
            reader, encoder, prompts),
        "patterns alone": lambda: [Reading(read_attributes(p)) for p in prompts],
    }
    out = {"machine": machine(), "prompts": len(rows), "readers": {}}
    engine = None
    for name, read in readers.items():
        readings = read()
        marks = [right(r.values, accept) for r, (_, accept) in zip(readings, rows)]
        per = {k: sum(m[k] for m in marks) / len(marks) for k in SCHEMA}
        out["readers"][name] = {"per_attribute": per, "mean": sum(per.values()) / len(per),
                                "prompts_all_right": sum(all(m.values()) for m in marks) / len(marks)}
        if "engine" in name:
            engine = (readings, marks)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"machine: {out['machine']}; {len(rows)} prompts")
        print("| reader | " + " | ".join(SCHEMA) + " | mean | prompts all right |")
        print("|---|" + "---|" * (len(SCHEMA) + 2))
        for name, s in out["readers"].items():
            cells = " | ".join(f"{s['per_attribute'][k]:.3f}" for k in SCHEMA)
            print(f"| {name} | {cells} | {s['mean']:.3f} | {s['prompts_all_right']:.3f} |")
    if args.draw:
        out["drawn"] = drawn(rows, args.draw, args.attempts)
        d = out["drawn"]
        print(f"drawn ({args.draw} a prompt, attempts {args.attempts or 'default'}): stated attributes right "
              f"{d['mean']:.3f}, pictures right in all {d['pictures_all_right']:.3f}; "
              + ", ".join(f"{k} {v:.2f}" for k, v in d["per_attribute"].items()))
    if args.show:
        for (prompt, accept), r, m in zip(rows, *engine):
            wrong = {k: (r.values.get(k), accept.get(k, [None])) for k in SCHEMA if not m[k]}
            if wrong:
                print(f"{prompt!r}: " + "; ".join(f"{k} read {got}, accepted {ok}" for k, (got, ok) in wrong.items()))


def drawn(rows: list[tuple[str, dict[str, list]]], k: int, attempts: int | None) -> dict:
    """The judge's reading of ``k`` pictures a prompt against the values each prompt states."""
    import numpy as np
    import torch

    from pixelchat.engines import GenerateRequest, load_engine
    from pixelchat.evaluation.judge import load_judge, predict

    engine, judge = load_engine(), load_judge()
    hits = {name: [] for name in SCHEMA}
    whole = []
    for i, (prompt, accept) in enumerate(rows):
        pictures = engine.generate(GenerateRequest(prompt, n=k, seed=40_000_000 + k * i, size=64, attempts=attempts))
        x = torch.stack([torch.from_numpy(np.array(g.image)).permute(2, 0, 1) for g in pictures]).float() / 127.5 - 1
        stated = {name: values for name, values in accept.items() if None not in values}
        for seen in predict(judge, x):
            marks = [seen.attributes.get(name) in values for name, values in stated.items()]
            for name, mark in zip(stated, marks):
                hits[name].append(mark)
            whole.append(all(marks))
    per = {name: float(np.mean(v)) for name, v in hits.items() if v}
    return {"per_attribute": per, "mean": float(np.mean([m for v in hits.values() for m in v])),
            "pictures_all_right": float(np.mean(whole)), "pictures": len(whole)}


if __name__ == "__main__":
    main()
