"""A crude check that the prompt reaches the pixels, until the attribute judge exists: for pairs
of prompts that differ in one visible attribute, the same seeds are drawn with each prompt and a
colour statistic is compared. Prints figures; asserts nothing."""

import argparse

import numpy as np

from _machine import machine
from pixelchat.engines import GenerateRequest, load_engine

PAIRS = [  # (statistic, prompt where it should be high, prompt where it should be low)
    ("brightness", "a plain by day", "a plain at night"),
    ("brightness", "hills at noon with a bright sun", "hills on a starry night with the moon"),
    ("blue share of lower half", "a landscape by the sea", "a desert with no water"),
    ("red minus blue, sky", "a plain at sunset", "a plain by day"),
]


def statistic(name: str, images: np.ndarray) -> float:
    x = images.astype(np.float32)  # (N, H, W, 3)
    h = x.shape[1]
    if name == "brightness":
        return float(x.mean())
    if name == "blue share of lower half":
        low = x[:, h // 2:]
        return float(((low[..., 2] > low[..., 0] + 30) & (low[..., 2] > low[..., 1])).mean())
    if name == "red minus blue, sky":
        sky = x[:, : h // 3]
        return float((sky[..., 0] - sky[..., 2]).mean())
    raise ValueError(name)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--n", type=int, default=64, help="seeds per prompt")
    args = parser.parse_args()
    engine = load_engine(args.model)
    print(f"machine: {machine()}")
    print(f"model: {engine.info.id} ({engine.info.path})")
    for name, high, low in PAIRS:
        a = np.stack([np.asarray(r.image) for r in engine.generate(GenerateRequest(high, n=args.n, seed=0))])
        b = np.stack([np.asarray(r.image) for r in engine.generate(GenerateRequest(low, n=args.n, seed=0))])
        sa, sb = statistic(name, a), statistic(name, b)
        wins = np.mean([statistic(name, x[None]) > statistic(name, y[None]) for x, y in zip(a, b)])
        print(f"{name:26s} {high!r}: {sa:7.2f}  vs  {low!r}: {sb:7.2f}   same seed, higher in {wins:.0%} of pairs")


if __name__ == "__main__":
    main()
