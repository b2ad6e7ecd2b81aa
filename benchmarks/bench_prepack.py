"""The shipped networks with prepacked weights (`pixelchat.models.prepack`) against the plain eager layers,
per batch size, timed in turns in one process: the generator (64 px) and the self-check's reader; and
the size of one picture's packed weights of both networks. Per network and batch: the median over rounds of each form's median call, its
range, and the largest difference between the two forms' outputs. Batches above
`prepack.SMALL_BATCH` are timed with packing forced on, to show where it stops paying. Prints one JSON
object; asserts nothing.

    python bench_prepack.py --rounds 6 --batches 1 2 4 8 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from _machine import machine
from pixelchat.data.spec import complete_spec
from pixelchat.engines import load_engine
from pixelchat.models import prepack
from pixelchat.vision.describer import attribute_probabilities


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6, help="rounds of timing, the two forms in turns")
    ap.add_argument("--calls", type=int, default=60, help="calls per form and round (fewer for larger batches)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    args = ap.parse_args()
    engine = load_engine()
    seeds = list(range(max(args.batches)))
    z = engine.prepare_latents(seeds, None)
    spec = engine.spec_tensor([complete_spec({}, engine.schema, s) for s in seeds])
    with torch.inference_mode():
        pictures = engine.generator(z, spec)
    checker = engine.checker
    networks = {
        "generator": lambda n: engine.generator(z[:n], spec[:n]),
        "checker": lambda n: torch.cat(list(attribute_probabilities(checker, pictures[:n]).values()), dim=1),
    }
    usable = prepack.usable
    forced = lambda x: prepack.inference() and x.device.type == "cpu" and x.dtype == torch.float32  # noqa: E731
    out: dict = {"machine": machine(), "model": engine.info.id, "small_batch": prepack.SMALL_BATCH}
    try:
        with torch.inference_mode():
            for run in networks.values():
                run(1)
            out["one_picture_packs_mib"] = round(prepack.packed_bytes() / 2**20, 1)
            for name, run in networks.items():
                out[name] = {}
                for n in args.batches:
                    forms = ("plain", "prepacked")
                    outputs = {}
                    for form in forms:
                        prepack.usable = forced if form == "prepacked" else (lambda x: False)
                        outputs[form] = run(n)
                        for _ in range(2):
                            run(n)
                    medians: dict[str, list[float]] = {k: [] for k in forms}
                    calls = max(5, args.calls // n)
                    for _ in range(args.rounds):
                        for form in forms:
                            prepack.usable = forced if form == "prepacked" else (lambda x: False)
                            times = []
                            for _ in range(calls):
                                t = time.perf_counter()
                                run(n)
                                times.append(time.perf_counter() - t)
                            medians[form].append(1000 * statistics.median(times))
                    out[name][f"batch {n}"] = {
                        **{form: {"ms_median_of_rounds": round(statistics.median(v), 3),
                                  "ms_range": [round(min(v), 3), round(max(v), 3)]} for form, v in medians.items()},
                        "largest_difference": float((outputs["plain"] - outputs["prepacked"]).abs().max())}
    finally:
        prepack.usable = usable
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
