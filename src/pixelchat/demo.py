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


MIN_CELL = 192  # pictures are shown at least this wide, enlarged by a whole factor (crisp pixels)
LABEL_SIZE = 18  # the prompt's font size, in pixels
PAD = 8


def contact_sheet(rows: list[tuple[str, list[Image.Image]]]) -> Image.Image:
    """One band per prompt: the prompt in readable type above its pictures, which are enlarged by a whole
    factor (nearest neighbour) to at least MIN_CELL pixels; the sheet is as wide as the widest row."""
    from PIL import ImageFont

    font = ImageFont.load_default(size=LABEL_SIZE)
    side = rows[0][1][0].width
    cell = side * max(1, -(-MIN_CELL // side))  # the smallest whole multiple of the side at least MIN_CELL
    width = max(cell * max(len(images) for _, images in rows), max(int(font.getlength(p)) for p, _ in rows)) + 2 * PAD
    label_h = LABEL_SIZE + 2 * PAD
    sheet = Image.new("RGB", (width, (label_h + cell) * len(rows) + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (prompt, images) in enumerate(rows):
        top = i * (label_h + cell)
        draw.text((PAD, top + PAD), prompt, fill="black", font=font)
        for j, image in enumerate(images):
            sheet.paste(image.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST), (PAD + j * cell, top + label_h))
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
