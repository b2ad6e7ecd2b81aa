"""What a spec GAN training step costs at several widths (how the shipped widths were chosen).

Per width: parameters, the time of one generator forward, one generator forward + backward and one
discriminator forward + backward at batch 32, a training step's estimate (one G forward for D's
step, one G forward + backward, three D forward + backward passes), pictures/s, and one picture's
generator forward at inference. Prints figures; asserts nothing.

    python bench_spec_cost.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from _machine import machine
from pixelchat.data.scenes import SCHEMA
from pixelchat.models import ModelConfig, build_discriminator, build_generator

WIDTHS = [(32, 32, 256), (24, 24, 192), (24, 16, 128), (32, 16, 128)]


def timed(f, n: int = 3) -> float:
    f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    print("| ngf / ndf / max channels | G parameters | ms per step | pictures/s | one picture, G forward |")
    print("|---|---|---|---|---|")
    schema = {k: list(v) for k, v in SCHEMA.items()}
    for ngf, ndf, mc in WIDTHS:
        cfg = ModelConfig(arch="specgan", ngf=ngf, ndf=ndf, max_channels=mc, schema=schema)
        G = build_generator(cfg).to(memory_format=torch.channels_last)
        D = build_discriminator(cfg).to(memory_format=torch.channels_last)
        z, s = torch.randn(args.batch, cfg.z_dim), torch.zeros(args.batch, len(schema), dtype=torch.long)
        x = torch.randn(args.batch, 3, cfg.size, cfg.size).contiguous(memory_format=torch.channels_last)
        gf = timed(lambda: G(z, s))
        gfb = timed(lambda: G(z, s).mean().backward())
        dfb = timed(lambda: D(x, s).mean().backward())
        step = gf + gfb + 3 * dfb
        G.eval()
        with torch.inference_mode():
            one = timed(lambda: G(z[:1], s[:1]), 20)
        params = sum(p.numel() for p in G.parameters()) / 1e6
        print(f"| {ngf} / {ndf} / {mc} | {params:.2f} M | {step:,.0f} | {args.batch * 1000 / step:.1f} | {one:.1f} ms |")


if __name__ == "__main__":
    main()
