"""The built-in networks under each installed runtime, side by side, on this machine.

For every runtime (eager, compile, onnx, openvino; those not installed are listed as such) and
every size the default model draws: one picture end to end through the engine (prompt reading
cached, generator, upsampler, 8-bit picture; the self-check of new pictures off, so that the networks
are what is compared) p50/p95 over ``--repeats`` calls, and with the file as the CLI and server write it
(`pixelchat.safety.provenance.image_bytes`: PNG, record, watermark), batched pictures per second (``--batch`` per call), the network GFLOP per picture (torch's
counter) and the achieved GFLOP/s with its share of the machine's fp32 peak (``--peak``, GFLOP/s;
default: cores × 2 FMA units × 8 fp32 lanes × 2 × the clock in ``--ghz``). Start-up: engine
construction plus the first picture, with the export cache cold and warm. Exactness: the largest
8-bit difference from eager's pictures for the same seeds.

    python bench_runtime.py --json > runtime.json
    python bench_runtime.py --runtimes eager,onnx --sizes 64,256 --table
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import torch

from _machine import machine

from pixelchat.engines import GenerateRequest
from pixelchat.engines.runtime import RUNTIMES, RuntimeUnavailable, check_available
from pixelchat.safety.provenance import image_bytes


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def network_gflop(engine, size: int) -> float:
    """Per picture, counted on the plain layers: the counter does not see the prepacked kernels that one
    picture runs (`pixelchat.models.prepack`), which do the same work."""
    from torch.utils.flop_counter import FlopCounterMode

    from pixelchat.models import prepack

    z = engine.prepare_latents([0], None)
    cond = engine.encode_prompt("a lake", 1)
    enabled, prepack.enabled = prepack.enabled, False
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            x = engine.generator(z, cond)
            if size != engine.info.size:
                engine.upsampler.upscale(x, size // engine.info.size)
    finally:
        prepack.enabled = enabled
    return counter.get_total_flops() / 1e9


def build(runtime: str):
    from pixelchat.engines import DEFAULT_MODEL
    from pixelchat.engines.spec import SpecEngine

    return SpecEngine(DEFAULT_MODEL, runtime=runtime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runtimes", default=",".join(RUNTIMES))
    ap.add_argument("--sizes", default=None, help="comma-separated sides (default: every size the model draws)")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=4.0, help="how long each batched measurement runs")
    ap.add_argument("--ghz", type=float, default=3.0)
    ap.add_argument("--peak", type=float, default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--table", action="store_true", help="print a Markdown table too")
    args = ap.parse_args()
    cores = torch.get_num_threads()
    peak = args.peak or cores * 2 * 8 * 2 * args.ghz
    out = {"machine": machine(), "threads": cores, "peak_gflops": round(peak, 1), "runtimes": {}}
    reference = {}
    cache = tempfile.mkdtemp(prefix="pixelchat-bench-")
    os.environ["PIXELCHAT_CACHE"] = cache
    try:
        for runtime in args.runtimes.split(","):
            try:
                check_available(runtime)
            except RuntimeUnavailable as e:
                out["runtimes"][runtime] = {"unavailable": str(e)}
                continue
            start = {}
            for cache_state in ("cold", "warm"):
                t = time.perf_counter()
                engine = build(runtime)
                sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(engine.info.sizes)
                for side in sizes:
                    engine.generate(GenerateRequest("a lake at night", seed=0, size=side, attempts=1))
                start[cache_state] = round(time.perf_counter() - t, 2)
            row = {"startup_s": start, "sizes": {}}
            for side in sizes:
                flop = network_gflop(engine, side)
                ms, png_ms = [], []
                for i in range(args.repeats):
                    t = time.perf_counter()
                    [g] = engine.generate(GenerateRequest("a lake at night", seed=i, size=side, attempts=1))
                    ms.append((time.perf_counter() - t) * 1000)
                    image_bytes(g.image, g.record, "png")
                    png_ms.append((time.perf_counter() - t) * 1000)
                request = GenerateRequest("a lake at night", n=args.batch, seed=0, size=side, attempts=1)
                engine.generate(request)
                t, calls = time.perf_counter(), 0
                while time.perf_counter() - t < args.seconds:
                    engine.generate(request)
                    calls += 1
                per_s = calls * args.batch / (time.perf_counter() - t)
                pics = [np.asarray(g.image, np.int16) for g in
                        engine.generate(GenerateRequest("a boat on a lake", n=8, seed=5, size=side, attempts=1))]
                if runtime == "eager":
                    reference[side] = pics
                diff = max(int(np.abs(a - b).max()) for a, b in zip(pics, reference[side])) if side in reference else None
                row["sizes"][str(side)] = {
                    "p50_ms": round(statistics.median(ms), 2), "p95_ms": round(percentile(ms, 95), 2),
                    "png_p50_ms": round(statistics.median(png_ms), 2),
                    "batched_per_s": round(per_s, 1), "gflop_per_picture": round(flop, 3),
                    "gflops": round(per_s * flop, 1), "share_of_peak": round(per_s * flop / peak, 3),
                    "max_diff_vs_eager": diff}
            out["runtimes"][runtime] = row
            del engine
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps(out, indent=2))
    if args.table:
        print(table(out))


def table(out: dict) -> str:
    lines = [f"machine: {out['machine']}; fp32 peak {out['peak_gflops']} GFLOP/s", "",
             "| runtime | size | p50 ms | p95 ms | p50 with the file ms | pictures/s (batched) | GFLOP/s | share of peak | start-up s (cold / warm) | max diff vs eager |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in out["runtimes"].items():
        if "unavailable" in row:
            lines.append(f"| {name} | – | not installed ({row['unavailable']}) |||||||")
            continue
        for side, r in row["sizes"].items():
            lines.append(f"| {name} | {side} | {r['p50_ms']} | {r['p95_ms']} | {r['png_p50_ms']} | {r['batched_per_s']} | "
                         f"{r['gflops']} | {r['share_of_peak']:.0%} | {row['startup_s']['cold']} / {row['startup_s']['warm']} | "
                         f"{r['max_diff_vs_eager']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
