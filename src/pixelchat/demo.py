"""`make demo`: draw the example prompts with the shipped model into a folder, plus a contact sheet."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image, ImageDraw

from pixelchat.generate import generate_records, save_generated

DEMO_PROMPTS = [
    "a pink cloud at sunset",
    "a beautiful mountain landscape",
    "mountains with tall peaks and rising clouds",
    "a starry night over a lake",
    "a house by the sea at noon",
    "snowy hills with a forest by day",
    "a boat on a lake under a full moon",
    "a desert with a few white clouds",
]


def contact_sheet(rows: list[tuple[str, list[Image.Image]]], scale: int = 2) -> Image.Image:
    """One row per prompt: its label, then its images enlarged ``scale`` times (nearest neighbour, crisp)."""
    w = rows[0][1][0].width * scale
    label_w = 300
    sheet = Image.new("RGB", (label_w + w * max(len(r[1]) for r in rows), w * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (prompt, images) in enumerate(rows):
        draw.text((8, i * w + w // 2 - 6), prompt, fill="black")
        for j, image in enumerate(images):
            sheet.paste(image.resize((w, w), Image.Resampling.NEAREST), (label_w + j * w, i * w))
    return sheet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)

    rows = []
    for prompt in DEMO_PROMPTS:
        t = time.perf_counter()
        results = generate_records(prompt, args.n, args.seed, model=args.model)
        ms = (time.perf_counter() - t) * 1000
        stem = "-".join(prompt.split()[:6])
        for path in save_generated(results, args.out, stem=stem):
            print(path)
        print(f"  {prompt!r}: {args.n} images in {ms:.0f} ms")
        rows.append((prompt, [r.image for r in results]))
    sheet = args.out / "demo.png"
    contact_sheet(rows).save(sheet)
    print(f"contact sheet: {sheet}")


if __name__ == "__main__":
    main()
