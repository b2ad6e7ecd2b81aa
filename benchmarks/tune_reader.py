"""Choosing the prompt reader's recipe without the held-out phrasings: each recipe trains on the
"fit" captions (the training phrasings less the last of each list) and is scored on "tune" captions
(only those last phrasings: wording it never saw, and never the eval split's). The captions are
encoded once and shared by every recipe.

    python tune_reader.py --recipes base-331,base-1500,drop20-1500
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from _machine import machine

from pixelchat.text.encoder import load_text_encoder
from pixelchat.text.reader import train_reader

RECIPES = {
    "base-331": {"steps": 331},  # the shipped reader's recipe
    "base-1500": {"steps": 1500},
    "drop20-1500": {"steps": 1500, "token_drop": 0.2},
}


class SharedEncoding:
    """The encoder, with each batch of prompts encoded once across recipes."""

    def __init__(self, encoder):
        self.encoder, self.cache = encoder, {}
        self.name, self.dim, self.weights_sha256 = encoder.name, encoder.dim, encoder.weights_sha256

    def encode(self, prompts, *a, **k):
        key = tuple(prompts)
        if key not in self.cache:
            self.cache[key] = self.encoder.encode(prompts, *a, **k)
        return self.cache[key]

    def offsets(self, prompts):
        return self.encoder.offsets(prompts)

    def embed(self, prompts, *a, **k):
        return self.encoder.embed(prompts, *a, **k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--captions", type=int, default=16000)
    ap.add_argument("--n-tune", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    encoder = SharedEncoding(load_text_encoder())
    print(f"machine: {machine()}")
    print("| recipe | " + " | ".join(["time", "celestial", "clouds", "cloud_color", "terrain", "snow", "water", "trees",
                                      "house", "boat"]) + " | mean | seconds |")
    print("|---|" + "---|" * 12)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.recipes.split(","):
            if name not in RECIPES:
                raise SystemExit(f"unknown recipe {name!r}: choose from {', '.join(RECIPES)}")
            t = time.time()
            path = train_reader(f"{tmp}/{name}", n_train=args.captions, n_test=args.n_tune, minutes=600, split="fit",
                                test_split="tune", encoder=encoder, progress=False, **RECIPES[name])
            s = json.loads(path.with_suffix(".json").read_text())["test"]["network"]
            cells = " | ".join(f"{v:.3f}" for v in s["per_attribute"].values())
            print(f"| {name} | {cells} | {s['mean']:.3f} | {time.time() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
