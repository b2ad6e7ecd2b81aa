"""Generation speed of the shipped model at its own size (64 px for the shipped one): single-image
latency (text cache cold and warm) and batched throughput, with the self-check of new pictures as
the engine does it by default and without it (``attempts=1``). Prints figures; asserts nothing."""

import argparse
import statistics
import time

import torch

from _machine import machine
from pixelchat.engines import GenerateRequest, load_engine


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    engine = load_engine(args.model)
    print(f"machine: {machine()}")
    print(f"model: {engine.info.id} ({engine.info.arch}, {engine.info.size}px)")
    side = engine.info.size
    engine.generate(GenerateRequest("warm up", n=1, seed=0, size=side))
    passes = ((None, "self-check on (default)"), (1, "self-check off")) if getattr(engine, "checks_pictures", False) \
        else ((None, "no self-check (the model has none)"),)
    for k, (attempts, label) in enumerate(passes):
        warm, cold = [], []
        for i in range(args.repeats):
            t = time.perf_counter()
            engine.generate(GenerateRequest("a starry night over a lake", n=1, seed=i, size=side, attempts=attempts))
            warm.append((time.perf_counter() - t) * 1000)
        for i in range(min(args.repeats, 100)):
            prompt = f"a house by the sea number {1000 * k + i}"  # new text every time: the encoder runs
            t = time.perf_counter()
            engine.generate(GenerateRequest(prompt, n=1, seed=i, size=side, attempts=attempts))
            cold.append((time.perf_counter() - t) * 1000)
        print(f"{label}: one {side}px image, text cache warm: p50 {statistics.median(warm):.1f} ms, "
              f"p95 {percentile(warm, 95):.1f} ms")
        print(f"{label}: one {side}px image, text cache cold: p50 {statistics.median(cold):.1f} ms, "
              f"p95 {percentile(cold, 95):.1f} ms")
        request = GenerateRequest("a beautiful mountain landscape", n=args.batch, seed=0, size=side, attempts=attempts)
        engine.generate(request)
        t, rounds = time.perf_counter(), 10
        for _ in range(rounds):
            engine.generate(request)
        rate = args.batch * rounds / (time.perf_counter() - t)
        print(f"{label}: batch {args.batch}, through pixelchat's engine (latents, PIL images, records): "
              f"{rate:.0f} images/s")
    z, text = torch.randn(args.batch, engine.model_cfg.z_dim), engine.encode_prompt("a lake", args.batch)
    with torch.inference_mode():
        engine.generator(z, text)
        t = time.perf_counter()
        for _ in range(rounds):
            engine.generator(z, text)
    print(f"batch {args.batch}, generator forward only: {args.batch * rounds / (time.perf_counter() - t):.0f} images/s")


if __name__ == "__main__":
    main()
