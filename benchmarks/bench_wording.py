"""Everyday wording: how the prompt reader reads prompts written the way people write them.

`prompts/fresh-wording.jsonl` holds 40 prompts ("a log cabin on a snowy hillside with smoke from the
chimney"), each with the values a person would accept for the attributes it states (null: leaving the
attribute unread is fine too). An attribute the prompt does not state is right when nothing is read
for it: the spec completion fills it. The set is a test: no change to the reader is chosen by it.

Three readers on the same prompts: the network alone, the pattern reader with the network on the
words the patterns leave unexplained (what the engine uses), and the pattern reader alone.

    python bench_wording.py [--show]
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
    if args.show:
        for (prompt, accept), r, m in zip(rows, *engine):
            wrong = {k: (r.values.get(k), accept.get(k, [None])) for k in SCHEMA if not m[k]}
            if wrong:
                print(f"{prompt!r}: " + "; ".join(f"{k} read {got}, accepted {ok}" for k, (got, ok) in wrong.items()))


if __name__ == "__main__":
    main()
