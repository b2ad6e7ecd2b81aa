"""The invisible watermark, measured: for pictures from the shipped model (64 px, and upscaled to
128/256/512 px with Lanczos as an upscaler would), the share of marks found and the hash bits read
right after common changes; false alarms on pictures without a mark; PSNR; milliseconds per
embed and detect. Prints Markdown tables; asserts nothing.

Changes, as someone passing a picture on would make them:
  none            the file as written
  jpeg85 / jpeg70 re-encoded as JPEG, quality 85 / 70
  resize90        shrunk to 90 % (bicubic), read at that size
  resize90-back   shrunk to 90 % and enlarged back to the original size
  resize75        shrunk to 75 %, read at that size
  crop10          10 % of each side's length cut off (split at random between the two edges), no rescale
  crop10+jpeg85   that crop, then JPEG quality 85
  resize90+jpeg85 shrunk to 90 %, then JPEG quality 85

Usage: python benchmarks/bench_watermark.py [--n 100] [--clean 300]
       python benchmarks/bench_watermark.py --kept-widths [--n 20]   # crops by the width they keep, alone
"""

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _machine import machine
from pixelchat.generate import generate_records
from pixelchat.safety import watermark as wm

SIZES = (32, 64, 128, 256, 512)
PROMPTS = Path(__file__).parent / "prompts" / "scenes-eval.jsonl"


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def resize(im: Image.Image, f: float) -> Image.Image:
    return im.resize((round(im.width * f), round(im.height * f)), Image.Resampling.BICUBIC)


def crop(im: Image.Image, f: float, rng: np.random.Generator) -> Image.Image:
    w, h = im.size
    cw, ch = round(w * f), round(h * f)
    left, top = int(rng.integers(0, cw + 1)), int(rng.integers(0, ch + 1))
    return im.crop((left, top, left + w - cw, top + h - ch))


CHANGES = {
    "none": lambda im, rng: im,
    "jpeg85": lambda im, rng: jpeg(im, 85),
    "jpeg70": lambda im, rng: jpeg(im, 70),
    "resize90": lambda im, rng: resize(im, 0.9),
    "resize90-back": lambda im, rng: resize(im, 0.9).resize(im.size, Image.Resampling.BICUBIC),
    "resize75": lambda im, rng: resize(im, 0.75),
    "crop10": lambda im, rng: crop(im, 0.1, rng),
    "crop10+jpeg85": lambda im, rng: jpeg(crop(im, 0.1, rng), 85),
    "resize90+jpeg85": lambda im, rng: jpeg(resize(im, 0.9), 85),
}


def pictures(n: int, first_seed: int) -> list[Image.Image]:
    prompts = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines() if line.strip()]
    return [generate_records(prompts[i % len(prompts)], 1, seed=first_seed + i)[0].image for i in range(n)]


def robustness(images: list[Image.Image], size: int, rng: np.random.Generator):
    found = {k: [] for k in CHANGES}
    bits = {k: [] for k in CHANGES}
    psnr, t_embed, t_detect = [], [], []
    for i, im in enumerate(images):
        if size != im.width:
            im = im.resize((size, size), Image.Resampling.LANCZOS)
        h = int(rng.integers(0, 2**32))
        t = time.perf_counter()
        marked = wm.embed(im, h, min_side=min(wm.MIN_SIDE, size))  # below MIN_SIDE too, to show why not
        t_embed.append(time.perf_counter() - t)
        err = np.asarray(im, np.float64) - np.asarray(marked, np.float64)
        psnr.append(10 * np.log10(255**2 / max((err**2).mean(), 1e-12)))
        for name, change in CHANGES.items():
            picture = change(marked, np.random.default_rng(i))
            t = time.perf_counter()
            d = wm.detect(picture, min_side=min(wm.DETECT_MIN_SIDE, picture.width // 2))
            t_detect.append(time.perf_counter() - t)
            found[name].append(d.matches(h))
            bits[name].append(1 - bin((d.hash32 or 0) ^ h).count("1") / wm.HASH_BITS)
    return found, bits, psnr, t_embed, t_detect


def clean_sets(n: int, rng: np.random.Generator) -> dict[str, list[Image.Image]]:
    from sklearn.datasets import load_sample_images

    from pixelchat.data.scenes import scene_sample

    photos = load_sample_images().images  # two 427×640 photographs shipped with scikit-learn
    crops = []
    for i in range(n):
        a = photos[i % 2]
        s = int(rng.choice([64, 96, 128, 256]))
        y, x = int(rng.integers(0, a.shape[0] - s)), int(rng.integers(0, a.shape[1] - s))
        crops.append(Image.fromarray(a[y:y + s, x:x + s]))
    return {
        "generated, 64 px": pictures(n, 50_000),
        "scenes renders, 64 px": [scene_sample(60_000 + i, 64).image for i in range(n // 2)],
        "scenes renders, 256 px": [scene_sample(70_000 + i, 256).image for i in range(n // 2)],
        "photo crops, 64-256 px": crops,
        "flat and noise, 64 px": [Image.new("RGB", (64, 64), (v, v, v)) for v in (0, 128, 255)]
        + [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(20)],
    }


def kept_widths(images: list[Image.Image], size: int = 128) -> None:
    """Crops of marked ``size`` px pictures by how many pixels they keep (from a whole and from a half
    grid pixel off the corner): the detector searches a few kept widths only."""
    g = size / wm.GRID
    cases = [(size, 0), (round(61 * g), round(2 * g)), (round(58 * g), round(2 * g)), (round(58 * g), round(2.5 * g)),
             (round(57.5 * g), round(2 * g)), (round(59.5 * g), round(2 * g))]
    print(f"Crops of {len(images)} marked {size} px pictures: kept pixels (grid pixels), corner offset -> share found\n")
    print("| kept px | kept grid px | offset (grid px) | found |\n|---|---|---|---|")
    for kept, off in cases:
        found = []
        for i, im in enumerate(images):
            marked = wm.embed(im.resize((size, size), Image.Resampling.LANCZOS), 1000 + i)
            found.append(wm.detect(marked.crop((off, off, off + kept, off + kept))).matches(1000 + i))
        print(f"| {kept} | {kept / g:g} | {off / g:g} | {np.mean(found):.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="marked pictures per size")
    parser.add_argument("--clean", type=int, default=300, help="pictures per clean set (false alarms)")
    parser.add_argument("--kept-widths", action="store_true", help="only: crops by the width they keep (128 px)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.kept_widths:
        kept_widths(pictures(args.n, 1000))
        return

    print(f"machine: {machine()}")
    print(f"mark: {wm.N_BITS} bits ({wm.SYNC_BITS} sync + {wm.HASH_BITS} record hash), step {wm.STEP}, "
          f"embedded from {wm.MIN_SIDE} px, reported at p <= {wm.MAX_FALSE_ALARM:g}\n")
    images = pictures(args.n, 1000)

    rows_found, rows_bits, speed = [], [], []
    for size in SIZES:
        found, bits, psnr, t_embed, t_detect = robustness(images, size, rng)
        note = " (not embedded: under MIN_SIDE)" if size < wm.MIN_SIDE else ""
        rows_found.append(f"| {size}{note} | " + " | ".join(f"{np.mean(found[k]):.2f}" for k in CHANGES) + " |")
        rows_bits.append(f"| {size} | " + " | ".join(f"{np.mean(bits[k]):.3f}" for k in CHANGES) + " |")
        speed.append(f"| {size} | {np.mean(psnr):.1f} (min {np.min(psnr):.1f}) | {1000 * np.median(t_embed):.1f} | "
                     f"{1000 * np.median(t_detect):.0f} |")

    header = "| size (px) | " + " | ".join(CHANGES) + " |\n|" + "---|" * (len(CHANGES) + 1)
    print(f"Marks found with the right record hash (≤ 2 of 32 bits wrong), {args.n} pictures per size:\n")
    print(header)
    print("\n".join(rows_found))
    print("\nHash bit accuracy (fraction of the 32 hash bits read right), same pictures:\n")
    print(header)
    print("\n".join(rows_bits))
    print("\nCost and visibility (PSNR of marked vs unmarked; median ms per picture):\n")
    print("| size (px) | PSNR (dB) | embed (ms) | detect (ms) |\n|---|---|---|---|")
    print("\n".join(speed))

    print(f"\nFalse alarms on pictures without a mark (a mark is reported at p <= {wm.MAX_FALSE_ALARM:g}):\n")
    print("| pictures | n | marks reported | smallest p |\n|---|---|---|---|")
    total = reported = 0
    for name, ims in clean_sets(args.clean, rng).items():
        ds = [wm.detect(im) for im in ims]
        total += len(ds)
        reported += sum(d.found for d in ds)
        print(f"| {name} | {len(ds)} | {sum(d.found for d in ds)} | {min(d.p_value for d in ds):.2g} |")
    print(f"| all | {total} | {reported} | |")


if __name__ == "__main__":
    main()
