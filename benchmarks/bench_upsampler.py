"""The upsampler: sharper than bicubic, faithful to what the 64 px picture shows, and fast.

- quality: PSNR (dB) and SSIM against the renderer's own 256 px and 512 px pictures of ``--n-renders``
  held-out scenes (seeds the training renders never used), for the upsampler and for bicubic
  interpolation from the same 64 px render;
- faithfulness: ``--n-generated`` pictures the default generator draws from random specs, read by the
  evaluation judge at 64 px and again after upscaling and box-downscaling back to 64 px: the share
  of attributes read the same;
- speed: one picture through ``pixelchat.generate`` (p50 / p95 over ``--repeats`` calls, a warm-up
  first) and batched pictures per second, at each size; GFLOP per picture by torch's counter.
- ``--sheet PATH``: a contact sheet of generated pictures, 64 px nearest-neighbour, bicubic, ours.

    python bench_upsampler.py --json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from _machine import machine

import pixelchat
from pixelchat.data.spec import complete_spec
from pixelchat.engines import load_engine
from pixelchat.evaluation.judge import load_judge, predict
from pixelchat.training.upsampler import TEST_SEED, box_down, render_pairs, score_upsampler

FIRST_SEED = 11_000_000  # specs of the generated pictures: far past any training seed


def flops(module, *args) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(*args)
    return counter.get_total_flops() / 1e9


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-renders", type=int, default=200)
    ap.add_argument("--n-generated", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--sheet", default=None, help="write a contact sheet PNG here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    engine = load_engine()
    net, native = engine.upsampler, engine.info.size
    if net is None:
        raise SystemExit("the default model has no upsampler")
    out = {"machine": machine(), "model": engine.info.id, "upsampler": engine.info.upsampler,
           "config": net.cfg.to_dict(), "params": sum(p.numel() for p in net.parameters())}

    # quality on held-out renders
    test = render_pairs(args.n_renders, TEST_SEED, (native, *net.cfg.sizes), progress=False)
    out["renders"] = {"n": args.n_renders, "first_seed": TEST_SEED, **score_upsampler(net, test)}

    # faithfulness on generated pictures
    judge = load_judge()
    specs = [complete_spec({}, engine.schema, FIRST_SEED + i) for i in range(args.n_generated)]
    zs = torch.stack([engine.prepare_latents([FIRST_SEED + i], None)[0] for i in range(args.n_generated)])
    with torch.inference_mode():
        small = torch.cat([engine.generator(zs[i:i + 128], engine.spec_tensor(specs[i:i + 128]))
                           for i in range(0, len(specs), 128)])
        small = ((small.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1  # the 8-bit picture users get
    before = [p.attributes for p in predict(judge, small)]
    out["faithful"] = {"n": args.n_generated}
    for scale in net.cfg.scales:
        big = engine.upscale(small, native * scale)
        big = ((big + 1) * 127.5).round()
        back = box_down(big, scale) / 127.5 - 1
        after = [p.attributes for p in predict(judge, back)]
        same = [after_i.get(k) == v for b, after_i in zip(before, after) for k, v in b.items()]
        whole = [b == a for b, a in zip(before, after)]
        bic = F.interpolate(small, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)
        bic_back = box_down(((bic + 1) * 127.5).round(), scale) / 127.5 - 1
        bic_after = [p.attributes for p in predict(judge, bic_back)]
        out["faithful"][f"x{scale}"] = {
            "attributes_same": round(float(np.mean(same)), 4), "pictures_all_same": round(float(np.mean(whole)), 4),
            "bicubic_attributes_same": round(float(np.mean([a.get(k) == v for b, a in zip(before, bic_after)
                                                            for k, v in b.items()])), 4)}

    # speed
    x1 = small[:1].contiguous(memory_format=torch.channels_last)
    gen_flops = flops(engine.generator, zs[:1], engine.spec_tensor(specs[:1]))
    out["speed"] = {}
    for side in engine.info.sizes:
        ms = timed(lambda: pixelchat.generate("a lake at night", n=1, seed=1, size=side), args.repeats)
        t0 = time.perf_counter()
        k = 0
        while time.perf_counter() - t0 < 3 or k < 2:
            pixelchat.generate("a lake at night", n=args.batch, seed=k, size=side)
            k += 1
        per_s = k * args.batch / (time.perf_counter() - t0)
        up_flops = 0.0 if side == native else flops(lambda x: net.upscale(x, side // native), x1)
        out["speed"][str(side)] = {"p50_ms": round(float(np.percentile(ms, 50)), 2),
                                   "p95_ms": round(float(np.percentile(ms, 95)), 2),
                                   "batched_per_s": round(per_s, 1),
                                   "gflop_per_picture": round(gen_flops + up_flops, 3)}
    if args.sheet:
        write_sheet(engine, small[:6], args.sheet)
        out["sheet"] = args.sheet
    print(json.dumps(out, indent=None if args.json else 2))


def write_sheet(engine, small: torch.Tensor, path: str) -> None:
    """Rows: pictures; columns: 64 px shown with nearest-neighbour, bicubic, the upsampler (each 256 px)."""
    from PIL import Image, ImageDraw

    side = 256
    cols = [F.interpolate(small, size=side, mode="nearest"),
            F.interpolate(small, size=side, mode="bicubic", align_corners=False).clamp(-1, 1),
            engine.upscale(small, side)]
    pad, head = 8, 28
    sheet = Image.new("RGB", (3 * side + 4 * pad, head + len(small) * (side + pad) + pad), "white")
    d = ImageDraw.Draw(sheet)
    for j, label in enumerate(("64 px, nearest", "bicubic", "upsampler")):
        d.text((pad + j * (side + pad) + 4, 8), label, fill="black")
    for j, col in enumerate(cols):
        for i, im in enumerate(engine.to_pil(col)):
            sheet.paste(im, (pad + j * (side + pad), head + i * (side + pad)))
    sheet.save(path)


if __name__ == "__main__":
    main()
