"""The image path alone: does a spec-conditioned generator draw the spec it is given?

Scored by the evaluation judge (`weights/judge-scenes`), on specs drawn from the renderer's prior
with seeds the training data never used:

- draw: all ten attributes of ``--n`` random full specs, per attribute (only what a picture can
  show: a cloud colour needs clouds, a boat needs water) and every attribute at once;
- edit: for each picture, one attribute changed to another value the schema allows (what it
  forces repaired, as an edit does), z kept; how often the judge sees the change, how often each
  other attribute it read before stays, and how often all of them stay.

    python bench_spec.py --model runs/spec64/model.safetensors --n 2000
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from _machine import machine

from pixelchat.data.scenes import observable, validate_attributes
from pixelchat.data.spec import complete_spec
from pixelchat.engines import load_engine
from pixelchat.engines.spec import repair_spec
from pixelchat.evaluation.judge import load_judge, predict

FIRST_SEED = 10_000_000  # far past any training render's seed


def visible(values: dict[str, str]) -> dict[str, str]:
    shown = observable(values)
    if shown.get("water") == "none":
        shown.pop("boat", None)
    return shown


def draw(engine, specs, zs, batch: int = 128) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for i in range(0, len(specs), batch):
            out.append(engine.generator(zs[i:i + batch], engine.spec_tensor(specs[i:i + batch])))
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None, help="a spec-conditioned checkpoint (default: the shipped model)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    engine, judge = load_engine(args.model), load_judge()
    if not hasattr(engine, "spec_tensor"):
        raise SystemExit("bench_spec measures spec-conditioned models (arch specgan)")
    schema = engine.schema
    rng = np.random.default_rng(args.seed)
    specs = [complete_spec({}, schema, FIRST_SEED + args.seed * 1_000_000 + i) for i in range(args.n)]
    zs = torch.stack([engine.prepare_latents([FIRST_SEED + i], None)[0] for i in range(args.n)])
    seen = [p.attributes for p in predict(judge, draw(engine, specs, zs))]
    per = {k: [] for k in schema}
    for spec, got in zip(specs, seen):
        for k, v in visible(spec.values).items():
            per[k].append(got.get(k) == v)
    exact = np.mean([all(got.get(k) == v for k, v in visible(s.values).items()) for s, got in zip(specs, seen)])

    # edits: one attribute to another allowed value, z kept
    edited, asked = [], []
    for spec in specs:
        for _ in range(20):
            name = list(schema)[rng.integers(len(schema))]
            value = [v for v in schema[name] if v != spec.values[name]][rng.integers(len(schema[name]) - 1)]
            new = repair_spec(spec.with_values({name: value}), {name: value}, schema)
            try:
                validate_attributes(new.values)
            except ValueError:
                continue
            if name in visible(new.values):
                break
        edited.append(new)
        asked.append(name)
    after = [p.attributes for p in predict(judge, draw(engine, edited, zs))]
    shows, kept, all_kept = [], {k: [] for k in schema}, []
    for spec, new, name, before, got in zip(specs, edited, asked, seen, after):
        shows.append(got.get(name) == new.values[name])
        changed = {k for k in schema if new.values[k] != spec.values[k]}
        stay = [k for k in visible(new.values) if k not in changed and before.get(k) == spec.values[k]]
        for k in stay:
            kept[k].append(got.get(k) == before[k])
        all_kept.append(all(got.get(k) == before[k] for k in stay))

    out = {"machine": machine(), "model": engine.info.id, "model_sha256": engine.info.sha256[:12], "n": args.n,
           "draw": {"per_attribute": {k: round(float(np.mean(v)), 4) for k, v in per.items() if v},
                    "mean": round(float(np.mean([np.mean(v) for v in per.values() if v])), 4),
                    "all_attributes": round(float(exact), 4)},
           "edit": {"change_shows": round(float(np.mean(shows)), 4),
                    "others_kept": round(float(np.mean([x for v in kept.values() for x in v])), 4),
                    "all_others_kept": round(float(np.mean(all_kept)), 4),
                    "kept_per_attribute": {k: round(float(np.mean(v)), 4) for k, v in kept.items() if v}}}
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
