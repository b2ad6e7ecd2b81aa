"""The prompt reader alone (the text path): how often it reads each attribute right.

Three readers on the same prompts: the network alone, the pattern reader with the network reading
the words the patterns leave unexplained (what the engine uses), and the pattern reader alone.
Two prompt sets:

- captions written with held-out phrasings (split "eval": never in the reader's training data);
  an attribute is right when the reading has the caption's value, or nothing for what the caption
  leaves out. The pattern reader's vocabulary was written knowing these phrasings, so its figure
  here is an upper bound, not a test of new wording;
- bench_nearest's rows (instructions around words outside the vocabulary: "add a canoe"): right
  when the reading holds the expected change, or names nothing for rows where nothing fits.

    python bench_reader.py --n 2000
"""

from __future__ import annotations

import argparse
import json

from _machine import machine
from bench_nearest import TABLE

from pixelchat.data.scenes import SCHEMA
from pixelchat.text.encoder import load_text_encoder
from pixelchat.text.instructions import read_attributes
from pixelchat.text.reader import Reading, caption_set, load_reader, read_prompts, reader_scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000, help="held-out captions")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    reader, encoder = load_reader(), load_text_encoder()
    schema = {k: list(v) for k, v in SCHEMA.items()}
    captions, named = caption_set(args.n, args.seed, "eval")
    readers = {
        "network": lambda ps: read_prompts(reader, encoder, ps, patterns=False),
        "network + patterns": lambda ps: read_prompts(reader, encoder, ps),
        "patterns": lambda ps: [Reading(read_attributes(p)) for p in ps],
    }
    prompts = [row[0] for row in TABLE]
    out = {"machine": machine(), "held_out_captions": args.n, "rows": len(TABLE), "readers": {}}
    for name, read in readers.items():
        scores = reader_scores(read(captions), named, schema)
        readings = read(prompts)
        nearest = [(all(r.values.get(k) == v for k, v in want.items()) if want else not r.values)
                   for r, (_, want) in zip(readings, TABLE)]
        out["readers"][name] = {**scores, "nearest_rows": sum(nearest) / len(nearest)}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"machine: {out['machine']}")
    names = list(schema)
    print("| reader | " + " | ".join(names) + " | mean | exact | bench_nearest rows |")
    print("|---|" + "---|" * (len(names) + 3))
    for name, s in out["readers"].items():
        cells = " | ".join(f"{s['per_attribute'][k]:.3f}" for k in names)
        print(f"| {name} | {cells} | {s['mean']:.3f} | {s['exact']:.3f} | {s['nearest_rows']:.3f} |")


if __name__ == "__main__":
    main()
