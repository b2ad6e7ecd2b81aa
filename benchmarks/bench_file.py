"""What writing a picture's file costs, under several PNG settings, side by side in one process.

`pixelchat.safety.provenance.image_bytes` (the record, XMP, A1111 line and invisible watermark, then
the PNG) on ``--n`` pictures the shipped model draws at each size and on ``--n`` `scenes` renders
(flat areas and sharp edges, like graphics people upload): median milliseconds and mean bytes per
setting. Settings alternate over ``--rounds`` rounds so that a slow moment of the machine hits
them alike.

    python bench_file.py --n 20 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import zlib

import numpy as np

from _machine import machine

from pixelchat.data.scenes import render_scene, sample_attributes
from pixelchat.engines import GenerateRequest, load_engine
from pixelchat.safety import provenance, watermark

SETTINGS = {  # name → (zlib level, zlib strategy, largest side resized by matrices in the watermark)
    "zlib 6 (Pillow's default), Pillow resizes": (6, zlib.Z_DEFAULT_STRATEGY, 0),
    "zlib 3, Pillow resizes": (3, zlib.Z_DEFAULT_STRATEGY, 0),
    "zlib 1, matrix resizes": (1, zlib.Z_DEFAULT_STRATEGY, watermark.MATRIX_SIDE),
    "zlib 1 + run-length, matrix resizes (used)": (1, zlib.Z_RLE, watermark.MATRIX_SIDE),
    "zlib 1 + Huffman only, matrix resizes": (1, zlib.Z_HUFFMAN_ONLY, watermark.MATRIX_SIDE),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    engine = load_engine()
    sets = {}
    for side in engine.info.sizes:
        sets[f"generated {side} px"] = [(g.image, g.record) for g in
                                        (engine.generate(GenerateRequest("a lake at night", seed=i, size=side))[0]
                                         for i in range(args.n))]
    record = sets[f"generated {engine.info.sizes[-1]} px"][0][1]
    sets["renders 256 px"] = [(render_scene(sample_attributes(np.random.default_rng([i, 0])), 256, i), record)
                              for i in range(args.n)]
    kept = (provenance.PNG_COMPRESS_LEVEL, provenance.PNG_STRATEGY, watermark.MATRIX_SIDE)
    times = {(s, k): [] for s in sets for k in SETTINGS}
    sizes = {}
    try:
        for _ in range(args.rounds):
            for name, (level, strategy, side) in SETTINGS.items():
                provenance.PNG_COMPRESS_LEVEL, provenance.PNG_STRATEGY, watermark.MATRIX_SIDE = level, strategy, side
                for s, pictures in sets.items():
                    total = 0
                    for image, rec in pictures:
                        t = time.perf_counter()
                        total += len(provenance.image_bytes(image, rec))
                        times[s, name].append((time.perf_counter() - t) * 1000)
                    sizes[s, name] = total // len(pictures)
    finally:
        provenance.PNG_COMPRESS_LEVEL, provenance.PNG_STRATEGY, watermark.MATRIX_SIDE = kept
    out = {"machine": machine(), "n": args.n, "rounds": args.rounds,
           "rows": [{"pictures": s, "setting": k, "p50_ms": round(statistics.median(times[s, k]), 2),
                     "mean_bytes": sizes[s, k]} for s in sets for k in SETTINGS]}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"machine: {out['machine']}; {args.n} pictures a set, {args.rounds} rounds")
    print("| pictures | setting | file p50 ms | mean bytes |\n|---|---|---|---|")
    for r in out["rows"]:
        print(f"| {r['pictures']} | {r['setting']} | {r['p50_ms']} | {r['mean_bytes']:,} |")


if __name__ == "__main__":
    main()
