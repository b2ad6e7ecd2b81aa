"""Style presets and colour palettes: post-processing on a finished RGB picture.

Styles and palettes act on the generated picture rather than on the model, so they work with
any engine and the user sees exactly what they did. A style is a small set of operations from a
closed vocabulary (``OPERATIONS``) that always run in the same order, whatever order a preset
lists them in. A palette maps every pixel to its nearest colour in CIE Lab (ΔE76), where
distances follow what people see better than RGB distances do. Pure image math: no model.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import kornia.color
import kornia.enhance
import torch
import torch.nn.functional as F
from PIL import Image

from pixelchat.data.dataset import pil_to_uint8

STYLES_FILE = Path(__file__).resolve().parent.parent / "data" / "styles.json"
STYLES_FORMAT = "pixelchat-styles"
IDENTITY = "none"
MAX_PALETTE = 16
# ΔE76 ≈ 2.3 is a just-noticeable difference; within 10 a colour reads as "the same swatch".
DELTA_E_MATCH = 10.0

# name → (kind, low, high, meaning). Dict order is the order operations run in: spatial first,
# then colour, tone, and posterize last so the output keeps exactly 2**bits levels per channel.
OPERATIONS: dict[str, tuple[str, float, float, str]] = {
    "pixelate": ("int", 1, 64, "block size in pixels (1 = off)"),
    "grayscale": ("number", 0.0, 1.0, "blend towards luminance (1 = grey)"),
    "sepia": ("number", 0.0, 1.0, "blend towards the sepia matrix"),
    "hue": ("number", -180.0, 180.0, "hue rotation in degrees"),
    "saturation": ("number", 0.0, 4.0, "saturation factor (1 = off)"),
    "warmth": ("number", -1.0, 1.0, "red up and blue down by up to 25% (negative cools)"),
    "tint": ("gains", 0.0, 2.0, "per-channel [r, g, b] gains"),
    "brightness": ("number", -1.0, 1.0, "added to every channel"),
    "contrast": ("number", 0.0, 4.0, "contrast factor around the mean grey (1 = off)"),
    "gamma": ("number", 0.1, 10.0, "x ** gamma (below 1 lightens)"),
    "fade": ("number", 0.0, 0.5, "lift blacks to this level"),
    "vignette": ("number", 0.0, 1.0, "darkening at the corners"),
    "posterize": ("int", 1, 8, "bits per channel (8 = off)"),
}
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class Style:
    name: str
    description: str
    operations: dict

    def __post_init__(self):
        # Checked here so a Style built in code is as safe to apply as one read from a file.
        check_operations(self.name, self.operations)


def check_operations(name: str, operations: dict) -> None:
    """Raise ValueError naming the preset and operation when an operation is unknown or out of range."""
    if not isinstance(operations, dict):
        raise ValueError(f"style {name!r}: operations must be an object, got {type(operations).__name__}")
    for op, value in operations.items():
        if op not in OPERATIONS:
            raise ValueError(f"style {name!r}: unknown operation {op!r}; known: {', '.join(OPERATIONS)}")
        kind, lo, hi, meaning = OPERATIONS[op]
        if kind == "gains":
            ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(_in_range(v, lo, hi) for v in value)
            want = f"a list of 3 numbers between {lo} and {hi}"
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi
            want = f"an integer between {lo} and {hi}"
        else:
            ok = _in_range(value, lo, hi)
            want = f"a number between {lo} and {hi}"
        if not ok:
            raise ValueError(f"style {name!r}, operation {op!r} ({meaning}): expected {want}, got {value!r}")


def _in_range(value, lo: float, hi: float) -> bool:
    # bool is an int in Python; `true` in a styles file is a mistake, not 1.0.
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return is_number and math.isfinite(value) and lo <= value <= hi


# --- presets -------------------------------------------------------------------------------


def load_styles(path: str | Path | None = None) -> dict[str, Style]:
    """Presets by name from a styles file (default: the shipped one); strict, ValueError on any fault."""
    if path is None:
        return dict(_shipped_styles())
    return _read_styles(Path(path))


@lru_cache(maxsize=1)
def _shipped_styles() -> dict[str, Style]:
    return _read_styles(STYLES_FILE)


def _read_styles(path: Path) -> dict[str, Style]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read styles file: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != STYLES_FORMAT:
        raise ValueError(f"{path}: not a styles file (expected \"format\": \"{STYLES_FORMAT}\")")
    presets = doc.get("styles")
    if not isinstance(presets, list) or not presets:
        raise ValueError(f"{path}: \"styles\" must be a non-empty list")
    styles: dict[str, Style] = {}
    for i, entry in enumerate(presets):
        where = f"{path}: styles[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
        extra = set(entry) - {"name", "description", "operations"}
        if extra:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        name, description = entry.get("name"), entry.get("description", "")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise ValueError(f"{where}: name must be lower-case letters, digits, '-' or '_', got {name!r}")
        if name in styles:
            raise ValueError(f"{where}: duplicate style name {name!r}")
        if not isinstance(description, str):
            raise ValueError(f"{where}: style {name!r}: description must be a string")
        try:
            styles[name] = Style(name, description, dict(entry.get("operations", {})))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from e
    return styles


def get_style(name: str, styles: dict[str, Style] | None = None) -> Style:
    """The preset called ``name`` (any case); ``"none"`` is always the identity."""
    styles = load_styles() if styles is None else styles
    key = name.strip().lower()
    if key in styles:
        return styles[key]
    if key == IDENTITY:
        return Style(IDENTITY, "The picture as generated.", {})
    raise ValueError(f"unknown style {name!r}; known styles: {', '.join(sorted(styles))}")


def apply_style(image: Image.Image, style: Style) -> Image.Image:
    """A new RGB picture, the same size, with ``style``'s operations applied in ``OPERATIONS`` order."""
    if not isinstance(style, Style):
        raise TypeError(f"apply_style needs a Style (see get_style), got {type(style).__name__}")
    x = _to_float(image)  # (1, 3, H, W) in [0, 1]
    for op in OPERATIONS:
        if op in style.operations:
            x = _OPS[op](x, style.operations[op]).clamp(0.0, 1.0)
    return _to_image(x)


def _pixelate(x: torch.Tensor, block: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(h / block)), max(1, round(w / block))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest")


def _blend(x: torch.Tensor, y: torch.Tensor, amount: float) -> torch.Tensor:
    # (1 - a)·x + a·y rather than lerp: at a = 1 it is exactly y, so grey stays R == G == B.
    return (1.0 - amount) * x + amount * y


def _gains(x: torch.Tensor, gains) -> torch.Tensor:
    return x * torch.tensor([float(g) for g in gains], dtype=x.dtype).view(1, 3, 1, 1)


def _vignette(x: torch.Tensor, strength: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    r2 = (xx**2 + yy**2) / 2  # (H, W): 0 at the centre, 1 in the corners
    return x * (1.0 - strength * r2)


_OPS = {
    "pixelate": _pixelate,
    "grayscale": lambda x, a: _blend(x, kornia.color.rgb_to_grayscale(x).expand_as(x), a),
    # rescale=False: the classic matrix, clipped, so the tone does not depend on the brightest pixel.
    "sepia": lambda x, a: _blend(x, kornia.color.sepia(x, rescale=False).clamp(0, 1), a),
    "hue": lambda x, deg: kornia.enhance.adjust_hue(x, math.radians(deg)),
    "saturation": lambda x, f: kornia.enhance.adjust_saturation(x, float(f)),
    "warmth": lambda x, t: _gains(x, (1 + 0.25 * t, 1.0, 1 - 0.25 * t)),
    "tint": _gains,
    "brightness": lambda x, b: kornia.enhance.adjust_brightness(x, float(b)),
    # kornia's adjust_contrast only scales (a brightness change); this one pivots on the mean grey.
    "contrast": lambda x, f: kornia.enhance.adjust_contrast_with_mean_subtraction(x, float(f)),
    "gamma": lambda x, g: kornia.enhance.adjust_gamma(x, float(g)),
    "fade": lambda x, f: f + (1.0 - f) * x,
    "vignette": _vignette,
    "posterize": lambda x, bits: kornia.enhance.posterize(x, int(bits)),
}
assert set(_OPS) == set(OPERATIONS)


def _to_float(image: Image.Image) -> torch.Tensor:
    return pil_to_uint8(image)[None].float() / 255.0  # (1, 3, H, W)


def _to_image(x: torch.Tensor) -> Image.Image:
    arr = (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
    return Image.fromarray(arr, mode="RGB")


# --- palettes ------------------------------------------------------------------------------

_HEX = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


def parse_palette(colours: str | list) -> list[tuple[int, int, int]]:
    """RGB triples from "#ff8800", "ff8800" or "#f80" entries (a comma/space separated string or a
    list; (r, g, b) triples pass through); 1 to 16 distinct colours, in the order given."""
    entries = re.split(r"[\s,]+", colours.strip()) if isinstance(colours, str) else list(colours)
    entries = [e for e in entries if e != ""]
    if not 1 <= len(entries) <= MAX_PALETTE:
        raise ValueError(f"a palette needs 1 to {MAX_PALETTE} colours, got {len(entries)}")
    out: list[tuple[int, int, int]] = []
    for entry in entries:
        rgb = _parse_colour(entry)
        if rgb not in out:  # a repeated colour would split its "used" share in palette_report
            out.append(rgb)
    return out


def _parse_colour(entry) -> tuple[int, int, int]:
    if isinstance(entry, (tuple, list)):
        if len(entry) == 3 and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in entry):
            return tuple(entry)
        raise ValueError(f"bad palette colour {entry!r}: expected (r, g, b) with integers 0-255")
    m = _HEX.match(entry.strip()) if isinstance(entry, str) else None
    if not m:
        raise ValueError(f"bad palette colour {entry!r}: expected a hex colour like #ff8800 or #f80")
    digits = m.group(1)
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return tuple(int(digits[i:i + 2], 16) for i in (0, 2, 4))


def palette_hex(colours: str | list) -> list[str]:
    """The palette as "#rrggbb" strings."""
    return ["#{:02x}{:02x}{:02x}".format(*rgb) for rgb in parse_palette(colours)]


def _lab(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3) uint8 sRGB → (N, 3) CIE Lab."""
    x = (rgb.float() / 255.0).T.reshape(1, 3, -1, 1)  # (1, 3, N, 1): kornia wants an image
    return kornia.color.rgb_to_lab(x).reshape(3, -1).T


def _nearest(image: Image.Image, colours) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixels (N, 3) uint8, palette (K, 3) uint8, each pixel's nearest palette index (N,) and its ΔE76 (N,)."""
    pixels = pil_to_uint8(image).reshape(3, -1).T  # (N, 3)
    palette = torch.tensor(parse_palette(colours), dtype=torch.uint8)  # (K, 3)
    # Exact distances (no matmul trick) so a pixel that is a palette colour is at ΔE 0, not 1e-3.
    d = torch.cdist(_lab(pixels), _lab(palette), compute_mode="donot_use_mm_for_euclid_dist")  # (N, K)
    dist, idx = d.min(dim=1)
    return pixels, palette, idx, dist


def apply_palette(image: Image.Image, colours: str | list, strength: float = 1.0) -> Image.Image:
    """Each pixel moved towards its nearest palette colour (CIE Lab, ΔE76) by ``strength`` in [0, 1];
    at 1 every pixel is exactly a palette colour."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise ValueError(f"palette strength must be a number between 0 and 1, got {strength!r}")
    w, h = image.size
    pixels, palette, idx, _ = _nearest(image, colours)
    out = _blend(pixels.float(), palette[idx].float(), float(strength))  # (N, 3)
    arr = out.round().to(torch.uint8).reshape(h, w, 3).numpy()
    return Image.fromarray(arr, mode="RGB")


def palette_report(image: Image.Image, colours: str | list) -> dict:
    """How well ``image`` keeps to the palette: coverage (share of pixels within ΔE76 10 of a palette
    colour), mean ΔE76 to the nearest colour, and the share of pixels nearest to each colour."""
    _, palette, idx, dist = _nearest(image, colours)
    counts = torch.bincount(idx, minlength=len(palette)).float() / idx.numel()
    return {
        "coverage": float((dist <= DELTA_E_MATCH).float().mean()),
        "mean_delta_e": float(dist.mean()),
        "delta_e_threshold": DELTA_E_MATCH,
        "used": {hex_: float(c) for hex_, c in zip(palette_hex(palette.tolist()), counts)},
    }


__all__ = ["DELTA_E_MATCH", "OPERATIONS", "Style", "apply_palette", "apply_style", "check_operations", "get_style",
           "load_styles", "palette_hex", "palette_report", "parse_palette"]
