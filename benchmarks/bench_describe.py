"""The describer on held-out renders, judge-free, and the round trip through the generator.

1. Attribute accuracy against the renders' ground truth: the attribute heads, and the written
   caption as read back by the prompt reader (an attribute the caption leaves out is wrong).
2. Round trip: draw one picture from each description's prompt and let the evaluation judge read
   it against the original render's attributes. As a control, the same with the ground-truth
   prompt (what the generator manages when the description is perfect).
3. Agreement of the describer with the judge on generated pictures (what edits re-rank on).
4. The self-check's reader (the checker, where the engine has one): its heads on the same renders,
   its agreement with the judge on the same generated pictures, and what one reading costs against
   the describer's (one picture, p50 of 200; a batch of 64, per picture).

    python bench_describe.py --n 1000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from _machine import machine
from pixelchat.data.captions import scene_prompt
from pixelchat.data.scenes import SCHEMA, labels_to_attributes, observable, render_labelled
from pixelchat.engines import GenerateRequest, load_engine
from pixelchat.evaluation.judge import load_judge, predict
from pixelchat.text.instructions import read_attributes
from pixelchat.vision.describer import attribute_probabilities, describe_images

SEED = 72_000_000  # renders neither the describer nor the judge trained or was tested on


def visible(row) -> dict:
    a = labels_to_attributes(row)
    if a.get("water") == "none":
        a.pop("boat", None)
    return a


def accuracy(pairs) -> dict:
    """pairs: (truth, reading) dicts → per-attribute accuracy over the truth's attributes, mean and exact."""
    hits = {k: [] for k in SCHEMA}
    exact = []
    for truth, said in pairs:
        ok = [said.get(k) == v for k, v in truth.items()]
        for (k, _), o in zip(truth.items(), ok):
            hits[k].append(o)
        exact.append(all(ok))
    per = {k: round(float(np.mean(v)), 4) for k, v in hits.items() if v}
    return {"mean": round(float(np.mean([o for v in hits.values() for o in v])), 4), "exact": round(float(np.mean(exact)), 4),
            "per_attribute": per}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--model", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    engine = load_engine(args.model)
    judge = load_judge()
    print(f"machine: {machine()}")
    images, labels = render_labelled(args.n, SEED, 64, progress=False)
    truths = [visible(r) for r in labels.tolist()]
    t = time.perf_counter()
    descs = describe_images(engine.describer, images)
    seconds = time.perf_counter() - t
    out = {"renders": args.n, "describe_ms_per_image_batched": round(1000 * seconds / args.n, 2),
           "heads": accuracy([(tr, d.attributes) for tr, d in zip(truths, descs)]),
           "caption": accuracy([(tr, read_attributes(d.caption)) for tr, d in zip(truths, descs)])}
    t = time.perf_counter()
    engine.describe(engine.to_pil(images[:1].float() / 127.5 - 1)[0])
    out["describe_ms_one_image"] = round(1000 * (time.perf_counter() - t), 1)

    def round_trip(prompts):
        pics = [engine.generate(GenerateRequest(p, n=1, seed=i))[0].image for i, p in enumerate(prompts)]
        x = torch.stack([torch.from_numpy(np.asarray(p)).permute(2, 0, 1) for p in pics])
        return pics, x, [p.attributes for p in predict(judge, x)]

    _, x, judged = round_trip([d.prompt for d in descs])
    out["round_trip"] = accuracy(list(zip(truths, judged)))
    _, _, judged_truth = round_trip([scene_prompt(tr) for tr in truths])
    out["round_trip_true_prompt"] = accuracy(list(zip(truths, judged_truth)))
    on_generated = describe_images(engine.describer, x, captions=False)
    # what a picture can show, as for the truths: a cloud colour only with clouds, a boat only on water
    seen = [{k: v for k, v in observable(j).items() if not (k == "boat" and j.get("water") == "none")} for j in judged]
    out["describer_vs_judge_on_generated"] = accuracy([(j, d.attributes) for j, d in zip(seen, on_generated)])
    checker = getattr(engine, "checker", None)
    readers = {"describer": engine.describer}
    if checker is not None and checker is not engine.describer:
        readers["checker"] = checker
        out["checker_heads"] = accuracy([(tr, d.attributes) for tr, d in
                                         zip(truths, describe_images(checker, images, captions=False))])
        out["checker_vs_judge_on_generated"] = accuracy(
            [(j, d.attributes) for j, d in zip(seen, describe_images(checker, x, captions=False))])
    pictures = x.float() / 127.5 - 1
    for name, reader in readers.items():
        one, batch = pictures[:1], pictures[:64]
        times = []
        for i in range(220):
            t = time.perf_counter()
            attribute_probabilities(reader, one)
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(5):
            attribute_probabilities(reader, batch)
        out[f"{name}_reading_ms"] = {"one_picture_p50": round(1000 * float(np.median(times[20:])), 2),
                                     "batch_64_per_picture": round(1000 * (time.perf_counter() - t) / (5 * len(batch)), 3)}
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
