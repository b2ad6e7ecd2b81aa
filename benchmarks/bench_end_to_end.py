"""One picture end to end, as the CLI and the server make it: `pixelchat.generate` (prompt reading
cached), then the file bytes with the record, XMP, A1111 line and invisible watermark
(`pixelchat.safety.provenance.image_bytes`), p50/p95 over ``--repeats`` calls at each size.
``--prepack both`` times each call with and without prepacked weights (`pixelchat.models.prepack`) in
turns, so that the two columns see the same moments of a machine whose speed varies.

    python bench_end_to_end.py --repeats 50
    python bench_end_to_end.py --repeats 200 --prepack both
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from _machine import machine

from pixelchat.engines import GenerateRequest, load_engine
from pixelchat.models import prepack
from pixelchat.safety.provenance import image_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--format", default="png")
    ap.add_argument("--attempts", type=int, default=None,
                    help="draws per picture at most while the self-check finds something said missing (1: no check)")
    ap.add_argument("--prepack", choices=("on", "off", "both"), default="on",
                    help="prepacked weights for single pictures (both: each call with and without, in turns)")
    args = ap.parse_args()
    engine = load_engine()
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.prepack]
    out = {"machine": machine(), "format": args.format, "attempts": args.attempts, "sizes": {}}
    q = lambda xs, p: sorted(xs)[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]  # noqa: E731
    for side in engine.info.sizes:
        draw = {m: [] for m in modes}
        total = {m: [] for m in modes}
        size: list[int] = []
        for mode in modes:
            prepack.enabled = mode
            engine.generate(GenerateRequest("a lake at night", seed=0, size=side, attempts=args.attempts))
        for i in range(args.repeats):
            for mode in modes:
                prepack.enabled = mode
                t = time.perf_counter()
                [g] = engine.generate(GenerateRequest("a lake at night", seed=i, size=side, attempts=args.attempts))
                t1 = time.perf_counter()
                data = image_bytes(g.image, g.record, args.format)
                t2 = time.perf_counter()
                draw[mode].append((t1 - t) * 1000)
                total[mode].append((t2 - t) * 1000)
                size.append(len(data))
        rows = {("prepacked" if m else "plain"): {"draw_p50_ms": round(statistics.median(draw[m]), 2),
                                                   "end_to_end_p50_ms": round(statistics.median(total[m]), 2),
                                                   "end_to_end_p95_ms": round(q(total[m], 95), 2)} for m in modes}
        out["sizes"][str(side)] = {**(rows if len(rows) > 1 else next(iter(rows.values()))),
                                   "mean_bytes": round(statistics.mean(size))}
    prepack.enabled = True
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
