"""An invisible watermark that says "pixelchat made this picture, for this record".

Scheme: spread-transform dither modulation (STDM; Chen & Wornell, "Quantization index modulation",
IEEE Trans. Inf. Theory 47(4), 2001), on a 64×64 grid stretched over the whole picture.

- Payload, 56 bits: a fixed 24-bit sync word (it identifies a pixelchat mark, version 1) and the
  first 32 bits of the SHA-256 of the picture's canonical record JSON, less its time of creation
  (`record_hash`), so whoever also reads the metadata can tell whether mark and metadata belong
  together, and the same prompt, seed and model still give the same pixels.
- Each bit has a key-derived random pattern. The detector's projection of the picture on a pattern
  is the luma on the grid, minus its own blur (the picture, roughly), smoothed like the marks (a
  matched filter), correlated with the pattern. Embedding moves each projection, by the least
  change of the picture, onto the nearest point of the lattice ``STEP · (k + dither + bit / 2)``;
  reading a bit is finding which of the two interleaved lattices the projection is nearer. Unlike
  additive spread spectrum, the picture's own content does not fight the mark, which is what
  makes 56 bits fit into a 64×64 picture at about 43 dB PSNR.
- The marks are added to R, G and B alike (luma only, so colours do not shift and JPEG's chroma
  subsampling does not matter) and only inside the centre of the frame (`MARGIN` off each side),
  so a crop that keeps the centre keeps every projection whole.
- Resizing: the detector resizes the picture to the grid. Crops: it also tries the picture as a
  part of a larger frame. A picture of at most the grid's size: `WIDTHS` (kept grid pixels of each
  axis, so up to 12.5 % off an axis) × every whole-grid-pixel offset, 21 placements per axis, 441 in
  all. A larger one, whose crops rarely keep a whole number of grid pixels: every whole kept width
  from 64 to 56 at whole and half-pixel offsets, then around the best of those the kept widths
  within half a grid pixel in quarter steps, at quarter-pixel offsets (`_refine`); its p-value counts
  every placement on that quarter-pixel lattice, 314,721 (`placements(larger=True)`).
- Deciding: for a picture without the mark, the dither makes each sync bit's distance to its
  lattice uniform, so the sum of the 24 distances follows the Irwin–Hall distribution. The
  detector takes the placement with the smallest sum and reports its Irwin–Hall tail times the
  number of placements it could have tried (a Bonferroni bound) as ``p_value``: a bound on the chance that a
  picture without the mark reads as well. A mark is reported when ``p_value <= MAX_FALSE_ALARM``.

`MIN_SIDE`: the smallest picture side the mark is embedded at; smaller pictures cannot carry the
grid and `embed` returns them as they are. The measured figures behind the constants are in
docs/provenance.md; benchmarks/bench_watermark.py prints them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from fractions import Fraction
from math import comb, factorial

import numpy as np
import torch
from PIL import Image

KEY = "pixelchat-watermark-v1"
GRID = 64  # the marks' grid over the whole picture
SYNC_BITS = 24
HASH_BITS = 32
N_BITS = SYNC_BITS + HASH_BITS
MARK_SIGMA = 1.0  # grain of the marks, in grid pixels: coarse enough to survive JPEG and resizing
HOST_SIGMA = 2.0  # the detector takes the grid luma's blur at this scale for the picture itself
STEP = 6.0  # lattice step of the projections: larger is more robust and more visible
SYNC_TOLERANCE = 0.125  # shown as "sync bits close": within this many steps of their lattice
MARGIN = 10  # grid pixels on each side without marks, so crops that keep the centre keep them all
WIDTHS = (64, 61, 58, 56)  # kept grid widths tried for crops: up to 12.5 % off an axis
MIN_SIDE = 64  # measured: smaller pictures lose the grid (docs/provenance.md)
DETECT_MIN_SIDE = 40  # a marked picture shrunk below this is not read
MAX_FALSE_ALARM = 1e-6  # the p-value under which a mark is reported


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma, as JPEG computes it: (..., 3) → (...) float32."""
    return (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114).astype(np.float32)


VOLATILE = ("created",)  # left out of the hash: the same prompt, seed and model give the same pixels


def record_hash(record: dict) -> int:
    """The first 32 bits of the SHA-256 of ``record`` (less its time of creation) as canonical JSON:
    sorted keys, no spaces, UTF-8."""
    stable = {k: v for k, v in record.items() if k not in VOLATILE}
    text = json.dumps(stable, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


@lru_cache(maxsize=1)
def _key() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sync word (SYNC_BITS,) in {0, 1}, the dithers (N_BITS,) in [0, 1), and the patterns
    (N_BITS, G, G): white noise inside the centre window, zero in the margin."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(KEY.encode()).digest()[:8], "big"))
    sync = rng.integers(0, 2, SYNC_BITS).astype(np.float32)
    dither = rng.random(N_BITS).astype(np.float32)
    patterns = rng.standard_normal((N_BITS, GRID, GRID)).astype(np.float32)
    window = np.zeros((GRID, GRID), np.float32)
    window[MARGIN:GRID - MARGIN, MARGIN:GRID - MARGIN] = 1
    return sync, dither, patterns * window


def payload_bits(hash32: int) -> np.ndarray:
    """The 56 payload bits in {0, 1}: the sync word, then ``hash32`` most significant bit first."""
    return np.concatenate([_key()[0], [(hash32 >> (HASH_BITS - 1 - i)) & 1 for i in range(HASH_BITS)]]).astype(np.float32)


@lru_cache(maxsize=32)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n): a Gaussian blur along one axis with reflected borders, as a matrix."""
    r = int(np.ceil(3 * sigma))
    taps = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma**2))
    taps /= taps.sum()
    m = np.zeros((n, n), np.float32)
    for i in range(n):
        for t, w in zip(range(-r, r + 1), taps):
            j = abs(i + t)
            j = 2 * (n - 1) - j if j > n - 1 else j
            m[i, j] += w
    return m


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    h, w = x.shape[-2:]
    return _blur_matrix(h, sigma) @ x @ _blur_matrix(w, sigma).T


def _filtered(y: np.ndarray) -> np.ndarray:
    """The detector's matched filter over grid luma (..., H, W): the picture's own blur taken out,
    then smoothed like the marks."""
    return _blur(y - _blur(y, HOST_SIGMA), MARK_SIGMA)


@lru_cache(maxsize=1)
def _marks() -> tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor]:
    """The patterns flattened (N_BITS, G·G), the marks that embed them (N_BITS, G, G), the inverse of
    the projections' response to the marks (N_BITS, N_BITS), and the patterns' spectra."""
    _, _, patterns = _key()
    marks = _blur(patterns, MARK_SIGMA)
    flat = patterns.reshape(N_BITS, -1)
    response = _filtered(marks).reshape(N_BITS, -1) @ flat.T / GRID  # [j, i]: projection i of mark j
    return flat, marks, np.linalg.inv(response.T.astype(np.float64)), torch.fft.rfft2(torch.from_numpy(patterns))


MATRIX_SIDE = 1024  # sides up to this are resized by two cached matrix products instead of Pillow


@lru_cache(maxsize=64)
def _resize_matrix(n_in: int, n_out: int, resample: Image.Resampling) -> np.ndarray:
    """Pillow's 1-D resampling of ``n_in`` samples to ``n_out`` as a matrix (n_out, n_in): the rows of
    an identity picture, each resized along its width, are its columns."""
    eye = Image.fromarray(np.eye(n_in, dtype=np.float32), "F")
    return np.ascontiguousarray(np.asarray(eye.resize((n_out, n_in), resample)).T)


def _resize(y: np.ndarray, size: tuple[int, int], resample=Image.Resampling.BILINEAR) -> np.ndarray:
    """A float image to ``size`` (width, height); Pillow's filters widen when shrinking (no aliasing).
    Pillow resamples width and height apart, so for pictures of moderate size the same resize is two
    cached matrix products (the same result to float rounding, several times faster)."""
    if y.shape[::-1] == tuple(size):
        return y
    (h, w), (W, H) = y.shape, size
    if max(h, w) <= MATRIX_SIDE:  # by torch, whose threads the networks share (BLAS threads would spin against them)
        rows, cols = torch.from_numpy(_resize_matrix(h, H, resample)), torch.from_numpy(_resize_matrix(w, W, resample))
        return (rows @ torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)) @ cols.T).numpy()
    return np.asarray(Image.fromarray(np.ascontiguousarray(y, dtype=np.float32), "F").resize(size, resample))


def _projections(y_grid: np.ndarray) -> np.ndarray:
    """The projections (N_BITS,) of whole-frame grid luma (G, G)."""
    flat, _, _, _ = _marks()
    return flat @ _filtered(y_grid).reshape(-1) / GRID


def _residue(p: np.ndarray, bits: np.ndarray, dither: np.ndarray) -> np.ndarray:
    """How far (in steps, -0.5 ..< 0.5) projections ``p`` are from the lattice of ``bits``."""
    x = p / STEP - dither - bits / 2
    return x - np.round(x)


@lru_cache(maxsize=16)
def _size_solve(width: int, height: int) -> np.ndarray:
    """For pictures of one size: the inverse of the projections' response to the marks as they reach
    the detector, stretched to the picture (bicubic) and shrunk back to the grid (N_BITS, N_BITS).
    Solving with it, one correction of the amplitudes usually lands every projection: only the
    rounding to 8 bits and clipping are left for the loop in `embed`."""
    flat, marks, solve, _ = _marks()
    if (width, height) == (GRID, GRID):
        return solve
    up = torch.from_numpy(_resize_matrix(GRID, height, Image.Resampling.BICUBIC))
    across = torch.from_numpy(_resize_matrix(GRID, width, Image.Resampling.BICUBIC))
    down = torch.from_numpy(_resize_matrix(height, GRID, Image.Resampling.BILINEAR))
    back = torch.from_numpy(_resize_matrix(width, GRID, Image.Resampling.BILINEAR))
    seen = ((down @ up) @ torch.from_numpy(marks) @ (back @ across).T).numpy()  # (N_BITS, G, G): each mark, round trip
    response = _filtered(seen).reshape(N_BITS, -1) @ flat.T / GRID  # [j, i]: projection i of mark j
    return np.linalg.inv(response.T.astype(np.float64))


def embed(image: Image.Image, hash32: int, *, min_side: int = MIN_SIDE) -> Image.Image:
    """``image`` as RGB with the mark for ``hash32``; with a side under ``min_side`` it comes back
    unmarked (lower it only to measure what happens there)."""
    if min(image.size) < min_side:
        return image
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    bits = payload_bits(hash32)
    _, dither, _ = _key()
    _, marks, solve, _ = _marks()
    if max(image.size) <= MATRIX_SIDE:
        solve = _size_solve(*image.size)
    p = _projections(_resize(luma(rgb), (GRID, GRID)))
    target = p - _residue(p, bits, dither) * STEP  # the nearest lattice point of each bit
    amp = np.zeros(N_BITS)
    out = rgb
    for _ in range(4):  # rounding to 8 bits, clipping (and for large pictures resizing) move the projections: correct
        amp = amp + solve @ (target - p)
        mark = np.tensordot(amp.astype(np.float32), marks, axes=1)  # (G, G)
        out = np.clip(np.rint(rgb + _resize(mark, image.size, Image.Resampling.BICUBIC)[..., None]), 0, 255)
        p = _projections(_resize(luma(out), (GRID, GRID)))
        if np.abs(target - p).max() < 0.05 * STEP:
            break
    marked = Image.fromarray(out.astype(np.uint8), "RGB")
    marked.info.update(image.info)
    return marked


@dataclass
class Detection:
    """What the detector read.

    found: ``p_value <= MAX_FALSE_ALARM``. p_value: a bound on the chance that a picture without the
    mark reads as well (see the module docstring). sync_matched: sync bits within tolerance, of
    SYNC_BITS. hash32: the payload's record hash (meaningful only when found). weak_bits: hash bits
    read with less than a quarter of the margin (the likeliest wrong ones). crop: where the picture
    sits in the frame the mark was found in (left, top, width, height as fractions of that frame).
    too_small: the picture is too small to carry the mark, nothing was read."""

    found: bool
    p_value: float
    sync_matched: int
    hash32: int | None
    weak_bits: int
    crop: tuple[float, float, float, float]
    too_small: bool = False

    def matches(self, hash32: int, max_bit_errors: int = 2) -> bool:
        """Whether the mark was found and carries ``hash32`` up to a few bit errors (a wrong 32-bit hash
        comes this close by chance about once in 8 million)."""
        return self.found and self.hash32 is not None and bin(self.hash32 ^ hash32).count("1") <= max_bit_errors

    def to_dict(self) -> dict:
        return {"found": self.found, "p_value": float(f"{self.p_value:.3g}"),
                "sync_matched": f"{self.sync_matched}/{SYNC_BITS}",
                "hash": f"{self.hash32:08x}" if self.hash32 is not None else None, "weak_bits": self.weak_bits,
                "crop": [round(c, 3) for c in self.crop], "too_small": self.too_small}


def irwin_hall_cdf(n: int, x: float) -> float:
    """P(U_1 + ... + U_n <= x) for independent uniforms on [0, 1), exactly (rational arithmetic:
    the alternating sum cancels too much for floats)."""
    if x <= 0:
        return 0.0
    if x >= n:
        return 1.0
    q = Fraction(x)
    return float(sum((-1) ** k * comb(n, k) * (q - k) ** n for k in range(int(x) + 1)) / factorial(n))


COARSE_WIDTHS = tuple(range(GRID, 55, -1))  # pictures larger than the grid: every whole kept width, 64 .. 56
FINE = (-0.5, -0.25, 0.0, 0.25, 0.5)  # then kept widths around the best whole ones, in quarter grid pixels
QUARTERS = [(a, b) for a in (0.0, 0.25, 0.5, 0.75) for b in (0.0, 0.25, 0.5, 0.75)]


def placements(larger: bool = False) -> int:
    """How many (crop, offset) placements the detector may try: for a picture of at most the grid's
    size, ``WIDTHS`` × whole offsets; for a larger one every kept width and offset in quarter grid pixels
    from 64 down to 56 (a bound on the coarse and the fine search together)."""
    if not larger:
        return sum(GRID - w + 1 for w in WIDTHS) ** 2
    # kept width GRID - j/4 leaves j + 1 quarter-pixel offsets, j = 0 .. 4 (GRID - 56)
    return sum(j + 1 for j in range(4 * (GRID - COARSE_WIDTHS[-1]) + 1)) ** 2


def _fraction_matrix(n_in: int, span: float) -> np.ndarray:
    """(floor(span), n_in): ``n_in`` samples resampled onto ``span`` grid pixels (span may be fractional;
    the last, partly covered pixel is left out) with a triangle filter widened when shrinking, as
    Pillow's bilinear resize does for whole sizes."""
    scale = n_in / span
    support = max(scale, 1.0)
    centers = (np.arange(int(np.floor(span + 1e-9))) + 0.5) * scale - 0.5
    w = np.clip(1 - np.abs(np.arange(n_in)[None, :] - centers[:, None]) / support, 0, None)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def _canvases(y: np.ndarray, shapes: list[tuple[float, float]]) -> np.ndarray:
    """For each kept (height, width) in grid pixels, the filtered luma of ``y`` spanning it, at the top
    left of a grid canvas: (len(shapes), G, G)."""
    out = np.zeros((len(shapes), GRID, GRID), np.float32)
    for s, (h, w) in enumerate(shapes):
        if float(h).is_integer() and float(w).is_integer():
            small = _resize(y, (int(w), int(h)))
        else:
            rows = torch.from_numpy(_fraction_matrix(y.shape[0], h))
            cols = torch.from_numpy(_fraction_matrix(y.shape[1], w))
            small = (rows @ torch.from_numpy(np.ascontiguousarray(y)) @ cols.T).numpy()
        out[s, :small.shape[0], :small.shape[1]] = _filtered(small)
    return out


def _moved(y: np.ndarray, shapes: list[tuple[float, float]], steps: list[tuple[float, float]]) -> torch.Tensor:
    """The spectra of the canvases of ``shapes``, each moved by every sub-grid-pixel step (a crop of a
    larger picture need not end on a grid pixel): (len(shapes) · len(steps), G, G/2 + 1)."""
    k = torch.fft.fftfreq(GRID)
    spectrum = torch.fft.rfft2(torch.from_numpy(_canvases(y, shapes)))
    return torch.stack([spectrum * torch.exp(-2j * torch.pi * (k[:, None] * sy + k[None, : GRID // 2 + 1] * sx))
                        for sy, sx in steps], dim=1).reshape(-1, GRID, GRID // 2 + 1)


def _sync_residues(p_sync: np.ndarray) -> np.ndarray:
    """(placements, SYNC_BITS) projections → how far each sync bit is from its lattice, in [0, 1):
    uniform for a picture without the mark."""
    sync, dither, _ = _key()
    return 2 * np.abs(_residue(p_sync, sync[None], dither[None, :SYNC_BITS]))


def _search(y: np.ndarray, shapes: list[tuple[float, float]], steps: list[tuple[float, float]]):
    """The sync bits at every whole offset of every kept shape moved by every step, by cross-correlation.
    Returns (residues (placements, SYNC_BITS), where: (shape, step, moved row, dy, dx) per placement, moved)."""
    _, _, _, spectra = _marks()
    moved = _moved(y, shapes, steps)
    sync = spectra[None, :SYNC_BITS]
    corr = np.concatenate([torch.fft.irfft2(part.conj()[:, None] * sync, s=(GRID, GRID)).numpy()  # in parts: less memory
                           for part in moved.split(16)]) / GRID
    rows, where = [], []
    for s, (h, w) in enumerate(shapes):
        for m, (sy, sx) in enumerate(steps):
            ny, nx = int(np.floor(GRID - h - sy + 1e-9)) + 1, int(np.floor(GRID - w - sx + 1e-9)) + 1
            rows.append(corr[s * len(steps) + m, :, :ny, :nx].reshape(SYNC_BITS, -1).T)
            where += [(shapes[s], steps[m], s * len(steps) + m, dy, dx) for dy in range(ny) for dx in range(nx)]
    return _sync_residues(np.concatenate(rows)), where, moved


def _refine(y: np.ndarray, near: tuple) -> tuple[np.ndarray, list, torch.Tensor]:
    """Around placement ``near`` (from `_search`): kept widths within half a grid pixel in quarter steps,
    at quarter-pixel steps, at the whole offsets within one grid pixel; by direct projection."""
    flat, _, _, _ = _marks()
    (h0, w0), (sy0, sx0), _, dy0, dx0 = near
    low = COARSE_WIDTHS[-1]
    shapes = [(h0 + a, w0 + b) for a in FINE for b in FINE if low <= h0 + a <= GRID and low <= w0 + b <= GRID]
    moved = _moved(y, shapes, QUARTERS)
    frames = torch.fft.irfft2(moved, s=(GRID, GRID)).numpy()  # (shapes · steps, G, G)
    rows, where = [], []
    for s, (h, w) in enumerate(shapes):
        for m, (sy, sx) in enumerate(QUARTERS):
            r = s * len(QUARTERS) + m
            for dy in range(int(np.floor(dy0 + sy0 - sy)) - 1, int(np.floor(dy0 + sy0 - sy)) + 2):
                for dx in range(int(np.floor(dx0 + sx0 - sx)) - 1, int(np.floor(dx0 + sx0 - sx)) + 2):
                    if 0 <= dy and dy + h + sy <= GRID + 1e-9 and 0 <= dx and dx + w + sx <= GRID + 1e-9:
                        rows.append(np.roll(frames[r], (dy, dx), axis=(0, 1)).reshape(-1))
                        where.append(((h, w), (sy, sx), r, dy, dx))
    p_sync = flat[:SYNC_BITS] @ np.stack(rows).T / GRID  # (SYNC_BITS, placements)
    return _sync_residues(p_sync.T), where, moved


def detect(image: Image.Image, *, min_side: int = DETECT_MIN_SIDE) -> Detection:
    """Read the mark from ``image`` (any mode and size); pictures with a side under ``min_side`` are
    reported too small, unread."""
    if min(image.size) < min_side:
        return Detection(False, 1.0, 0, None, 0, (0.0, 0.0, 1.0, 1.0), too_small=True)
    y = luma(np.asarray(image.convert("RGB"), dtype=np.float32))
    _, dither, _ = _key()
    flat, _, _, _ = _marks()
    larger = max(image.size) > GRID

    # 1. where the sync bits sit closest to their lattices: for a picture of the grid's size every
    # crop width of WIDTHS at whole offsets; for a larger one every whole width at half-pixel offsets,
    # then the widths around the best in quarter pixels, at quarter-pixel offsets
    if not larger:
        residue, where, moved = _search(y, [(h, w) for h in WIDTHS for w in WIDTHS], [(0.0, 0.0)])
    else:
        halves = [(a, b) for a in (0.0, 0.5) for b in (0.0, 0.5)]
        residue, where, moved = _search(y, [(h, w) for h in COARSE_WIDTHS for w in COARSE_WIDTHS], halves)
        fine = _refine(y, where[int(residue.sum(1).argmin())])
        if fine[0].sum(1).min() < residue.sum(1).min():
            residue, where, moved = fine
    totals = residue.sum(1)
    best = int(totals.argmin())
    p_value = min(1.0, placements(larger) * irwin_hall_cdf(SYNC_BITS, float(totals[best])))
    matched = int((residue[best] < 2 * SYNC_TOLERANCE).sum())

    # 2. the hash bits there: which lattice each projection is nearer
    (h, w), (sy, sx), row, dy, dx = where[best]
    frame = np.roll(torch.fft.irfft2(moved[row], s=(GRID, GRID)).numpy(), (dy, dx), axis=(0, 1))
    zero = _residue(flat[SYNC_BITS:] @ frame.reshape(-1) / GRID, np.zeros(HASH_BITS), dither[SYNC_BITS:])
    bits = np.abs(zero) > 0.25
    value = int("".join("1" if b else "0" for b in bits), 2)
    weak = int((np.abs(np.abs(zero) - 0.25) < 0.25 / 4).sum())
    return Detection(p_value <= MAX_FALSE_ALARM, p_value, matched, value, weak,
                     ((dx + sx) / GRID, (dy + sy) / GRID, w / GRID, h / GRID))
