"""One picture end to end, as the CLI and the server make it: `pixelchat.generate` (prompt reading
cached), then the file bytes with the record, XMP, A1111 line and invisible watermark
(`pixelchat.safety.provenance.image_bytes`), p50/p95 over ``--repeats`` calls at each size.

    python bench_end_to_end.py --repeats 50
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from _machine import machine

from pixelchat.engines import GenerateRequest, load_engine
from pixelchat.safety.provenance import image_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--format", default="png")
    ap.add_argument("--attempts", type=int, default=None,
                    help="draws per picture at most while the self-check finds something said missing (1: no check)")
    args = ap.parse_args()
    engine = load_engine()
    out = {"machine": machine(), "format": args.format, "attempts": args.attempts, "sizes": {}}
    for side in engine.info.sizes:
        engine.generate(GenerateRequest("a lake at night", seed=0, size=side, attempts=args.attempts))
        draw, total, size = [], [], []
        for i in range(args.repeats):
            t = time.perf_counter()
            [g] = engine.generate(GenerateRequest("a lake at night", seed=i, size=side, attempts=args.attempts))
            t1 = time.perf_counter()
            data = image_bytes(g.image, g.record, args.format)
            t2 = time.perf_counter()
            draw.append((t1 - t) * 1000)
            total.append((t2 - t) * 1000)
            size.append(len(data))
        q = lambda xs, p: sorted(xs)[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]  # noqa: E731
        out["sizes"][str(side)] = {"draw_p50_ms": round(statistics.median(draw), 2),
                                   "end_to_end_p50_ms": round(statistics.median(total), 2),
                                   "end_to_end_p95_ms": round(q(total, 95), 2),
                                   "mean_bytes": round(statistics.mean(size))}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
