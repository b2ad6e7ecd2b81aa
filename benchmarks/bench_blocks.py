"""The shipped generator's blocks as computed (upsampling folded into transposed convolutions) against
the same blocks written out (nearest upsampling, then 3×3 convolutions; the form int8 quantizes):
how far their pictures are apart, and what each costs for one picture and for a batch, in eager
PyTorch, the two forms timed in turns in one process. Prints one JSON object; asserts nothing.

    python bench_blocks.py --pictures 512 --rounds 6
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
from pixelchat.models.textgan import written_out_upsampling


def pixels(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pictures", type=int, default=512, help="pictures compared")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of timing, the two forms in turns")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    engine = load_engine()
    g = engine.generator
    seeds = list(range(args.pictures))
    z = engine.prepare_latents(seeds, None)
    spec = engine.spec_tensor([complete_spec({}, engine.schema, s) for s in seeds])

    def written(zz, ss):
        with written_out_upsampling():
            return g(zz, ss)

    forms = {"folded (as computed)": lambda zz, ss: g(zz, ss), "written out": written}
    out = {"machine": machine(), "model": engine.info.id, "pictures": args.pictures}
    with torch.inference_mode():
        a, b = g(z, spec), written(z, spec)
        d = (pixels(a) - pixels(b)).abs()
        out["largest_float_difference"] = float((a - b).abs().max())
        out["largest_8bit_difference"] = int(d.max())
        out["share_of_8bit_values_differing"] = float((d > 0).float().mean())
        for label, n, calls in (("one picture", 1, 100), (f"batch {args.batch}", args.batch, 8)):
            zz, ss = z[:n], spec[:n]
            medians: dict[str, list[float]] = {k: [] for k in forms}
            for f in forms.values():
                for _ in range(3):
                    f(zz, ss)
            for _ in range(args.rounds):
                for name, f in forms.items():
                    times = []
                    for _ in range(calls):
                        t = time.perf_counter()
                        f(zz, ss)
                        times.append(time.perf_counter() - t)
                    medians[name].append(1000 * statistics.median(times))
            out[label] = {name: {"ms_median_of_rounds": round(statistics.median(v), 3),
                                 "ms_range": [round(min(v), 3), round(max(v), 3)],
                                 "pictures_per_s": round(1000 * n / statistics.median(v), 1)}
                          for name, v in medians.items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
