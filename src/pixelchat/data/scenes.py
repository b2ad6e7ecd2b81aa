"""`scenes`: a procedural renderer of small landscape pictures with exact ground truth.

Every sample is a deterministic function of its seed: attributes are drawn from the fixed
schema (see ``SCHEMA``), the picture is drawn at a higher resolution and box-filtered down
(clean edges at 64 px), and a caption names some of the attributes (see ``captions.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

# The attribute schema: names and values are fixed (more attributes may be added).
SCHEMA: dict[str, tuple[str, ...]] = {
    "time": ("day", "sunset", "night"),
    "celestial": ("sun", "moon", "none"),
    "clouds": ("none", "few", "many"),
    "cloud_color": ("white", "pink", "gray"),
    "terrain": ("mountains", "hills", "desert", "plain"),
    "snow": ("yes", "no"),
    "water": ("none", "lake", "sea"),
    "trees": ("none", "few", "forest"),
    "house": ("yes", "no"),
    "boat": ("yes", "no"),
}
ATTRIBUTES = tuple(SCHEMA)
# Side of the canvas the scene is drawn on before it is downsampled to the requested size.
CANVAS = 256  # the drawing canvas; 512 px pictures are drawn on a canvas twice as large
SIZES = (16, 32, 64, 128, 256, 512)


@dataclass
class SceneSample:
    image: Image.Image
    caption: str
    attributes: dict[str, str]
    mentioned: list[str] = field(default_factory=list)  # attributes the caption names
    seed: int = 0


def validate_attributes(attributes: dict[str, str]) -> dict[str, str]:
    """Check names, values and the schema's constraints; return a complete copy."""
    unknown = set(attributes) - set(SCHEMA)
    if unknown:
        raise ValueError(f"unknown scene attribute(s): {', '.join(sorted(unknown))}")
    for name, value in attributes.items():
        if value not in SCHEMA[name]:
            raise ValueError(f"{name}={value!r}: expected one of {', '.join(SCHEMA[name])}")
    missing = set(SCHEMA) - set(attributes)
    if missing:
        raise ValueError(f"missing scene attribute(s): {', '.join(sorted(missing))}")
    a = dict(attributes)
    if a["celestial"] == "sun" and a["time"] == "night":
        raise ValueError("the sun is only in the sky by day or at sunset")
    if a["celestial"] == "moon" and a["time"] != "night":
        raise ValueError("the moon is only in the sky at night")
    if a["boat"] == "yes" and a["water"] == "none":
        raise ValueError("a boat needs water (lake or sea)")
    return a


def observable(attributes: dict[str, str]) -> dict[str, str]:
    """The attributes a picture can show: a cloud colour needs clouds."""
    return {k: v for k, v in attributes.items() if not (k == "cloud_color" and attributes.get("clouds") == "none")}


def sample_attributes(rng: np.random.Generator, fixed: dict[str, str] | None = None) -> dict[str, str]:
    """Draw a full attribute set respecting the schema's constraints; ``fixed`` pins some of them."""
    fixed = dict(fixed or {})
    a: dict[str, str] = {}
    choice = lambda name, values: fixed.get(name) or values[rng.integers(len(values))]  # noqa: E731
    a["time"] = choice("time", SCHEMA["time"])
    allowed_celestial = ("moon", "none") if a["time"] == "night" else ("sun", "none")
    a["celestial"] = fixed.get("celestial") or ("none" if rng.random() < 0.35 else allowed_celestial[0])
    a["clouds"] = choice("clouds", SCHEMA["clouds"])
    a["cloud_color"] = choice("cloud_color", SCHEMA["cloud_color"])
    a["terrain"] = choice("terrain", SCHEMA["terrain"])
    a["snow"] = fixed.get("snow") or ("yes" if rng.random() < 0.3 else "no")
    a["water"] = choice("water", SCHEMA["water"])
    a["trees"] = choice("trees", SCHEMA["trees"])
    a["house"] = fixed.get("house") or ("yes" if rng.random() < 0.45 else "no")
    boat_p = 0.0 if a["water"] == "none" else 0.5
    a["boat"] = fixed.get("boat") or ("yes" if rng.random() < boat_p else "no")
    return validate_attributes(a)


# --- colours -------------------------------------------------------------------------------

SKY = {  # (top, horizon)
    "day": ((62, 120, 205), (165, 205, 240)),
    "sunset": ((70, 50, 120), (250, 150, 85)),
    "night": ((6, 8, 30), (30, 40, 85)),
}
LIGHT = {"day": 1.0, "sunset": 0.8, "night": 0.42}  # how lit the land and clouds are
CLOUD = {"white": (246, 246, 248), "pink": (246, 150, 185), "gray": (118, 118, 128)}
LAND = {  # (far terrain, ground)
    "mountains": ((112, 104, 112), (96, 128, 76)),
    "hills": ((78, 148, 66), (92, 160, 72)),
    "desert": ((222, 186, 112), (230, 200, 130)),
    "plain": ((118, 172, 80), (110, 168, 76)),
}
SNOW = (238, 242, 250)
WATER = {"day": (48, 108, 196), "sunset": (112, 86, 150), "night": (20, 30, 78)}


def _shade(rgb: tuple[int, int, int], k: float, warm: float = 0.0) -> tuple[int, int, int]:
    r, g, b = (c * k for c in rgb)
    return (int(min(255, r + warm * 40)), int(min(255, g + warm * 8)), int(b))


def _lit(rgb: tuple[int, int, int], time: str) -> tuple[int, int, int]:
    return _shade(rgb, LIGHT[time], warm=1.0 if time == "sunset" else 0.0)


# --- drawing -------------------------------------------------------------------------------


def render_scene(attributes: dict[str, str], size: int = 64, seed: int = 0) -> Image.Image:
    """Draw the scene ``attributes`` describe; layout details (positions, shapes) come from ``seed``."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size}")
    a = validate_attributes(attributes)
    rng = np.random.default_rng([seed, 7])
    W = max(CANVAS, size)  # every length below is a fraction of W (px: the few fixed pixel lengths)
    px = W / CANVAS
    img = Image.new("RGB", (W, W))
    d = ImageDraw.Draw(img)
    horizon = rng.uniform(0.52, 0.62) * W
    t = a["time"]

    # sky: vertical gradient, stars at night
    top, bottom = SKY[t]
    rows = np.linspace(0.0, 1.0, int(horizon) + 1)[:, None]
    sky = (np.array(top)[None] * (1 - rows) + np.array(bottom)[None] * rows).astype(np.uint8)
    img.paste(Image.fromarray(np.repeat(sky[:, None, :], W, axis=1)), (0, 0))
    if t == "night":
        for _ in range(rng.integers(25, 45)):
            x, y = rng.uniform(0, W), rng.uniform(0, horizon * 0.85)
            r = rng.uniform(0.6, 1.6) * px
            d.ellipse((x - r, y - r, x + r, y + r), fill=(235, 235, 215))

    # sun or moon
    body = None
    if a["celestial"] != "none":
        if a["celestial"] == "sun" and t == "sunset":
            r, colour = W * 0.085, (255, 118, 48)
            cx, cy = rng.uniform(0.2, 0.8) * W, horizon - rng.uniform(0.2, 0.3) * W
        elif a["celestial"] == "sun":
            r, colour = W * 0.065, (255, 232, 90)
            cx, cy = rng.uniform(0.15, 0.85) * W, rng.uniform(0.1, 0.25) * W
        else:
            r, colour = W * 0.06, (236, 236, 212)
            cx, cy = rng.uniform(0.15, 0.85) * W, rng.uniform(0.1, 0.25) * W
        body = (cx, cy, r)
        if a["celestial"] == "sun":  # halo
            d.ellipse((cx - 1.5 * r, cy - 1.5 * r, cx + 1.5 * r, cy + 1.5 * r), fill=_blend(colour, sky[int(cy)], 0.3))
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        if a["celestial"] == "moon":  # two craters
            for dx, dy, cr in ((-0.3, -0.2, 0.22), (0.25, 0.3, 0.16)):
                x, y = cx + dx * r, cy + dy * r
                d.ellipse((x - cr * r, y - cr * r, x + cr * r, y + cr * r), fill=(205, 205, 188))

    # clouds, kept clear of the sun or moon so both stay visible
    if a["clouds"] != "none":
        n = int(rng.integers(1, 3)) if a["clouds"] == "few" else int(rng.integers(5, 8))
        colour = _shade(CLOUD[a["cloud_color"]], max(LIGHT[t], 0.6))
        placed = 0
        for _ in range(60):
            if placed == n:
                break
            w = rng.uniform(0.16, 0.26) * W
            cx, cy = rng.uniform(0.08, 0.92) * W, rng.uniform(0.07, 0.36) * W
            if body and math.hypot(cx - body[0], cy - body[1]) < body[2] * 1.6 + w * 0.55:
                continue
            _cloud(d, rng, cx, min(cy, horizon - 0.12 * W), w, colour)
            placed += 1

    # far terrain on the horizon
    far, ground = LAND[a["terrain"]]
    snow = a["snow"] == "yes"
    _terrain(d, rng, a["terrain"], horizon, W, _lit(far, t), _lit(SNOW, t) if snow else None)
    # ground
    if snow:  # snow-covered ground keeps a tint of what lies under it (sand shows through most)
        ground = _blend(ground, SNOW, 0.55 if a["terrain"] == "desert" else 0.85)
    d.rectangle((0, horizon, W, W), fill=_lit(ground, t))

    # water
    water = None  # (x0, y0, x1, y1) where boats go
    wc = WATER[t]
    if a["water"] == "sea":
        depth = rng.uniform(0.14, 0.22) * W
        d.rectangle((0, horizon, W, horizon + depth), fill=wc)
        for _ in range(6):  # glints
            x, y = rng.uniform(0, W), rng.uniform(horizon + 4 * px, horizon + depth - 3 * px)
            d.line((x, y, x + rng.uniform(8, 20) * px, y), fill=_blend(wc, (255, 255, 255), 0.3), width=round(2 * px))
        water = (0.0, horizon, float(W), horizon + depth)
        land_top = horizon + depth
    else:
        land_top = horizon
    if a["water"] == "lake":
        lw, lh = rng.uniform(0.38, 0.55) * W, rng.uniform(0.1, 0.15) * W
        lx, ly = rng.uniform(0.3, 0.7) * W, horizon + rng.uniform(0.14, 0.2) * W
        d.ellipse((lx - lw / 2, ly - lh / 2, lx + lw / 2, ly + lh / 2), fill=wc)
        d.line((lx - lw * 0.2, ly, lx + lw * 0.15, ly), fill=_blend(wc, (255, 255, 255), 0.25), width=round(2 * px))
        water = (lx - lw * 0.3, ly - lh * 0.3, lx + lw * 0.3, ly + lh * 0.3)
    taken: list[tuple[float, float]] = []  # x-extents used on the ground, so objects do not overlap
    if a["water"] == "lake":
        taken.append((water[0] - lw * 0.2, water[2] + lw * 0.2))

    # boat
    if a["boat"] == "yes" and water:
        bx = rng.uniform(water[0] + 0.06 * W, water[2] - 0.06 * W)
        by = (water[1] + water[3]) / 2 + 0.01 * W
        _boat(d, bx, by, W, t)

    # trees and house stand on land below the water line
    if a["house"] == "yes":
        hx = _free_x(rng, taken, 0.14 * W, W)
        if hx is not None:
            hy = rng.uniform(land_top + 0.12 * W, min(W * 0.97, land_top + 0.3 * W))
            hy = min(max(hy, land_top + 0.12 * W), W * 0.97)
            _house(d, hx, hy, W, t)
            taken.append((hx - 0.1 * W, hx + 0.1 * W))
    if a["trees"] != "none":
        n = int(rng.integers(2, 4)) if a["trees"] == "few" else int(rng.integers(14, 20))
        for _ in range(n):
            tw = rng.uniform(0.05, 0.07) * W
            tx = _free_x(rng, taken, tw, W) if a["trees"] == "few" else rng.uniform(0, W)
            if tx is None:
                continue
            if a["trees"] == "few":
                taken.append((tx - tw, tx + tw))
                ty = rng.uniform(land_top + 0.1 * W, min(W * 0.97, land_top + 0.3 * W))
            else:
                ty = land_top + rng.uniform(0.04, 0.12) * W
                if any(x0 < tx < x1 for x0, x1 in taken):
                    ty = min(W * 0.99, ty + 0.25 * W)  # in front of the lake/house, not over them
            _tree(d, tx, min(ty, W * 0.99), tw, t, snow)

    return img.resize((size, size), Image.Resampling.BOX)


def _blend(c1, c2, k: float) -> tuple[int, int, int]:
    return tuple(int(x * (1 - k) + y * k) for x, y in zip(c1, c2))


def _free_x(rng, taken, half, W):
    for _ in range(30):
        x = rng.uniform(0.08, 0.92) * W
        if all(x + half < x0 or x - half > x1 for x0, x1 in taken):
            return x
    return None


def _cloud(d: ImageDraw.ImageDraw, rng, cx, cy, w, colour):
    h = w * 0.32
    for _ in range(4):
        ox, oy = rng.uniform(-0.35, 0.35) * w, rng.uniform(-0.25, 0.15) * h
        ew, eh = rng.uniform(0.35, 0.55) * w, rng.uniform(0.6, 1.0) * h
        d.ellipse((cx + ox - ew / 2, cy + oy - eh / 2, cx + ox + ew / 2, cy + oy + eh / 2), fill=colour)
    d.ellipse((cx - w / 2, cy - h * 0.1, cx + w / 2, cy + h * 0.45), fill=colour)


def _terrain(d, rng, terrain, horizon, W, colour, snow_colour):
    xs = np.linspace(0, W, 65)
    if terrain == "mountains":
        peaks = int(rng.integers(3, 6))
        px = np.sort(rng.uniform(0, W, peaks))
        ph = rng.uniform(0.16, 0.3, peaks) * W
        heights = np.zeros_like(xs)
        for x0, h in zip(px, ph):
            heights = np.maximum(heights, h - np.abs(xs - x0) * rng.uniform(0.9, 1.3))
        pts = [(0, horizon)] + [(x, horizon - max(h, 0)) for x, h in zip(xs, heights)] + [(W, horizon)]
        d.polygon(pts, fill=colour)
        if snow_colour:
            for x0, h in zip(px, ph):  # caps: the top third of each peak
                cap = h * 0.35
                d.polygon([(x0, horizon - h), (x0 - cap * 0.9, horizon - h + cap), (x0 + cap * 0.9, horizon - h + cap)],
                          fill=snow_colour)
        return
    if terrain == "hills":
        phase, freq = rng.uniform(0, 2 * np.pi, 2), rng.uniform(1.5, 3.0, 2)
        heights = (0.07 + 0.035 * np.sin(xs / W * 2 * np.pi * freq[0] + phase[0])
                   + 0.02 * np.sin(xs / W * 2 * np.pi * freq[1] * 2 + phase[1])) * W
    elif terrain == "desert":
        phase = rng.uniform(0, 2 * np.pi)
        heights = (0.035 + 0.025 * np.abs(np.sin(xs / W * np.pi * 3 + phase))) * W
    else:  # plain: flat to the horizon
        heights = np.full_like(xs, 0.005 * W)
    px = W / CANVAS
    pts = [(0, horizon + px)] + [(x, horizon - h) for x, h in zip(xs, heights)] + [(W, horizon + px)]
    if terrain == "desert":  # sand dunes, their ridges white with snow
        d.polygon(pts, fill=colour)
        ridge = snow_colour or _shade(colour, 0.85)
        d.line([(x, horizon - h) for x, h in zip(xs, heights)], fill=ridge, width=round((4 if snow_colour else 2) * px))
    else:
        d.polygon(pts, fill=snow_colour or colour)


def _tree(d, x, y, w, time, snow):
    trunk = _lit((92, 62, 38), time)
    leaves = _lit((34, 104, 44), time)
    h = w * 2.4
    d.rectangle((x - w * 0.12, y - h * 0.3, x + w * 0.12, y), fill=trunk)
    d.polygon([(x, y - h), (x - w * 0.6, y - h * 0.25), (x + w * 0.6, y - h * 0.25)], fill=leaves)
    if snow:
        d.polygon([(x, y - h), (x - w * 0.25, y - h * 0.7), (x + w * 0.25, y - h * 0.7)], fill=_lit(SNOW, time))


def _house(d, x, y, W, time):
    w, h = 0.15 * W, 0.1 * W
    d.rectangle((x - w / 2, y - h, x + w / 2, y), fill=_lit((196, 82, 58), time))
    d.polygon([(x - w * 0.62, y - h), (x, y - h - 0.08 * W), (x + w * 0.62, y - h)], fill=_lit((96, 44, 36), time))
    window = (255, 220, 90) if time == "night" else _lit((120, 170, 220), time)
    d.rectangle((x - w * 0.3, y - h * 0.7, x - w * 0.05, y - h * 0.35), fill=window)
    d.rectangle((x + w * 0.12, y - h * 0.6, x + w * 0.34, y), fill=_lit((70, 40, 30), time))


def _boat(d, x, y, W, time):
    w = 0.13 * W
    d.polygon([(x - w / 2, y - 0.02 * W), (x + w / 2, y - 0.02 * W), (x + w * 0.35, y + 0.015 * W),
               (x - w * 0.35, y + 0.015 * W)], fill=_lit((120, 58, 30), time))
    d.line((x, y - 0.02 * W, x, y - 0.11 * W), fill=_lit((80, 50, 30), time), width=round(2 * W / CANVAS))
    d.polygon([(x + 0.004 * W, y - 0.105 * W), (x + 0.004 * W, y - 0.03 * W), (x + w * 0.45, y - 0.03 * W)],
              fill=_lit((250, 250, 245), time))


def scene_sample(seed: int, size: int = 64, split: str = "train") -> SceneSample:
    """The sample number ``seed``: attributes, picture and a caption drawn from ``split``'s phrasings."""
    from pixelchat.data.captions import caption_scene

    rng = np.random.default_rng([seed, 0])
    attributes = sample_attributes(rng)
    caption, mentioned = caption_scene(attributes, np.random.default_rng([seed, 1]), split=split)
    return SceneSample(render_scene(attributes, size, seed), caption, attributes, mentioned, seed)


def render_dataset(n: int, size: int = 64, *, split: str = "train", captions_per_image: int = 1,
                   first_seed: int = 0, progress: bool = True):
    """``n`` consecutive samples as a CaptionedImages (seeds ``first_seed`` …), each with several captions."""
    import torch
    from rich.progress import track

    from pixelchat.data.captions import caption_scene
    from pixelchat.data.dataset import CaptionedImages, pil_to_uint8

    images = torch.empty((n, 3, size, size), dtype=torch.uint8)
    captions, attributes, mentioned = [], [], []
    seeds = range(first_seed, first_seed + n)
    for i, seed in enumerate(track(seeds, description=f"rendering {n} scenes", transient=True, disable=not progress)):
        sample = scene_sample(seed, size, split)
        images[i] = pil_to_uint8(sample.image)
        more = [caption_scene(sample.attributes, np.random.default_rng([seed, 1 + k]), split)
                for k in range(1, captions_per_image)]
        captions.append([sample.caption, *(c for c, _ in more)])
        mentioned.append([sample.mentioned, *(m for _, m in more)])
        attributes.append(sample.attributes)
    return CaptionedImages(images, captions, attributes, extra={"mentioned": mentioned},
                           source=f"scenes (split {split}, seeds {first_seed}-{first_seed + n - 1})")


def render_labelled(n: int, first_seed: int, size: int = 64, progress: bool = True):
    """``n`` fresh renders (seeds ``first_seed`` …) as a (n, 3, size, size) uint8 tensor, and their
    attribute indices (n, len(SCHEMA)) in SCHEMA order, -1 where a value cannot be seen."""
    import torch
    from rich.progress import track

    from pixelchat.data.dataset import pil_to_uint8

    names = list(SCHEMA)
    images = torch.empty((n, 3, size, size), dtype=torch.uint8)
    labels = torch.full((n, len(names)), -1, dtype=torch.long)
    for i in track(range(n), description=f"rendering {n} scenes at {size} px", transient=True, disable=not progress):
        seed = first_seed + i
        attrs = sample_attributes(np.random.default_rng([seed, 0]))
        images[i] = pil_to_uint8(render_scene(attrs, size, seed))
        for name, value in observable(attrs).items():
            labels[i, names.index(name)] = SCHEMA[name].index(value)
    return images, labels


def labels_to_attributes(row) -> dict[str, str]:
    """One row of `render_labelled`'s labels → the observable attributes it encodes."""
    return {name: SCHEMA[name][int(k)] for name, k in zip(SCHEMA, row) if int(k) >= 0}
