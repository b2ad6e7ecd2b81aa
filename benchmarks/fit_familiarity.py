"""Familiarity statistics for the shipped describer: does a picture look like the scenes it was made
for? Writes `src/pixelchat/weights/describer-scenes-familiarity.{safetensors,json}` (or ``--out``)
and prints how often each kind of picture is flagged as unfamiliar.

Familiar pictures: fresh `scenes` renders (seeds 63,000,000 …, used by no other figure) and pictures
the shipped generator draws for training-split captions, each set cut three ways: fit (the mean and
covariance of the describer's features), calibrate (the threshold: the 99.5th percentile of their
distances) and test (reported). Unfamiliar kinds, never used to fit or choose anything: noise, solid
colours, random shapes, crops of the two photos scikit-learn ships, renders upside down and with
inverted colours. Styled pictures (the studio's looks) are reported too, as neither.

    python fit_familiarity.py [--n 3000] [--out PATH]
"""

from __future__ import annotations

import argparse
import io
import json
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from _machine import machine

from pixelchat.data.scenes import render_labelled
from pixelchat.engines import GenerateRequest, load_engine
from pixelchat.text.reader import caption_set
from pixelchat.vision.describer import DEFAULT_DESCRIBER, familiarity_path, fit_familiarity

RENDER_SEED = 63_000_000


def tensor(pictures: list[Image.Image], side: int = 64) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(p.convert("RGB").resize((side, side), Image.BICUBIC))).permute(2, 0, 1)
                        for p in pictures])


def pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray(x.permute(1, 2, 0).numpy())


def unfamiliar(renders: torch.Tensor, rng: np.random.Generator, n: int = 200) -> dict[str, torch.Tensor]:
    from sklearn.datasets import load_sample_images

    shapes = []
    for _ in range(n):
        im = Image.new("RGB", (64, 64), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(1, 5))):
            x0, x1 = sorted(int(v) for v in rng.integers(0, 64, 2))
            y0, y1 = sorted(int(v) for v in rng.integers(0, 64, 2))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1 + 1, y1 + 1),
                                                                    fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        shapes.append(im)
    photos = []
    for image in load_sample_images().images:
        photo = Image.fromarray(image)
        for scale in (1.0, 0.7, 0.5, 0.35):
            w = int(min(photo.size) * scale)
            for _ in range(12):
                x0, y0 = int(rng.integers(0, photo.size[0] - w + 1)), int(rng.integers(0, photo.size[1] - w + 1))
                photos.append(photo.crop((x0, y0, x0 + w, y0 + w)))
    return {
        "uniform noise": torch.from_numpy((rng.random((n, 64, 64, 3)) * 255).astype(np.uint8)).permute(0, 3, 1, 2),
        "solid colours": torch.from_numpy(np.broadcast_to((rng.random((n, 1, 1, 3)) * 255).astype(np.uint8),
                                                          (n, 64, 64, 3)).copy()).permute(0, 3, 1, 2),
        "random shapes": tensor(shapes),
        "photos (crops of scikit-learn's two)": tensor(photos),
        "renders upside down": torch.flip(renders, [2]),
        "renders, colours inverted": 255 - renders,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="familiar pictures of each kind (renders, generated)")
    ap.add_argument("--out", default=None, help="default: beside the shipped describer")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.n < 100:
        raise SystemExit("--n must be at least 100")
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    engine = load_engine()
    describer = engine.describer
    renders, _ = render_labelled(args.n, RENDER_SEED, 64, progress=False)
    captions, _ = caption_set(args.n // 8 + 1, 5, "train")
    drawn = []
    for i, caption in enumerate(captions):
        drawn += [g.image for g in engine.generate(GenerateRequest(caption, n=8, seed=20_000_000 + 8 * i, size=64))]
    generated = tensor(drawn[:args.n])
    a, b = int(args.n * 2 / 3), int(args.n * 5 / 6)  # fit / calibrate / test
    stats = fit_familiarity(describer, torch.cat([renders[:a], generated[:a]]),
                            torch.cat([renders[a:b], generated[a:b]]))

    def flagged(x: torch.Tensor) -> float:
        with torch.inference_mode():
            return float((stats.novelty(describer.encode(x)) > 1).double().mean())

    def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
        out = []
        for p in x:
            buf = io.BytesIO()
            pil(p).save(buf, "JPEG", quality=quality)
            out.append(Image.open(io.BytesIO(buf.getvalue())))
        return tensor(out)

    from pixelchat.vision.style import apply_style, get_style

    big = [g.image for g in engine.generate(GenerateRequest("hills by a lake at sunset", n=64, seed=30_000_000, size=256))]
    familiar = {"renders (test)": renders[b:], "generated, 64 px (test)": generated[b:],
                "generated at 256 px, read as they are": tensor(big, 256),
                "renders, JPEG quality 70": jpeg(renders[b:b + 200], 70)}
    styled = {f"generated, style {name}": tensor([apply_style(pil(p), get_style(name)) for p in generated[b:b + 100]])
              for name in ("vivid", "muted", "noir", "sepia", "pixel")}
    others = unfamiliar(renders[b:b + 200], rng)
    figures = {"familiar": {k: flagged(v) for k, v in familiar.items()},
               "styled": {k: flagged(v) for k, v in styled.items()},
               "unfamiliar": {k: flagged(v) for k, v in others.items()}}
    out = args.out or familiarity_path(DEFAULT_DESCRIBER)
    from pixelchat.training.checkpoint import file_sha256

    meta = {"describer_sha256": file_sha256(DEFAULT_DESCRIBER),
            "fit": {"renders": a, "generated": a, "render_seed": RENDER_SEED, "calibrate": 2 * (b - a),
                    "quantile": 0.995, "features": "per-channel mean and spread of the describer's 8x8 feature map"},
            "flagged_as_unfamiliar": figures, "machine": machine(), "minutes": round((time.time() - t0) / 60, 1)}
    path = stats.save(out, meta)
    print(f"machine: {machine()}; wrote {path} in {meta['minutes']} min; threshold {stats.threshold:.1f}")
    print("| pictures | flagged as unfamiliar |\n|---|---|")
    for group in figures.values():
        for k, v in group.items():
            print(f"| {k} | {v:.3f} |")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
