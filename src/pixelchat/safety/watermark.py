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
  part of a larger frame: `WIDTHS` (kept grid pixels of each axis, so up to 12.5 % off an axis)
  × every whole-grid-pixel offset, 21 placements per axis, 441 in all; for pictures larger than the
  grid also every half-pixel offset, 1,444 in all.
- Deciding: for a picture without the mark, the dither makes each sync bit's distance to its
  lattice uniform, so the sum of the 24 distances follows the Irwin–Hall distribution. The
  detector takes the placement with the smallest sum and reports its Irwin–Hall tail times the
  number of placements tried (a Bonferroni bound) as ``p_value``: a bound on the chance that a
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
    _, marks, solve, _ = _marks()
    if (width, height) == (GRID, GRID):
        return solve
    up = torch.from_numpy(_resize_matrix(GRID, height, Image.Resampling.BICUBIC))
    across = torch.from_numpy(_resize_matrix(GRID, width, Image.Resampling.BICUBIC))
    down = torch.from_numpy(_resize_matrix(height, GRID, Image.Resampling.BILINEAR))
    back = torch.from_numpy(_resize_matrix(width, GRID, Image.Resampling.BILINEAR))
    seen = ((down @ up) @ torch.from_numpy(marks) @ (back @ across).T).numpy()  # (N_BITS, G, G): each mark, round trip
    flat, _, _, _ = _marks()
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
    _, marks, _, _ = _marks()
    solve = _size_solve(*image.size) if max(image.size) <= MATRIX_SIDE else _marks()[2]
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


def placements() -> int:
    """How many (crop, offset) placements the detector tries."""
    return sum(GRID - w + 1 for w in WIDTHS) ** 2


def detect(image: Image.Image, *, min_side: int = DETECT_MIN_SIDE) -> Detection:
    """Read the mark from ``image`` (any mode and size); pictures with a side under ``min_side`` are
    reported too small, unread."""
    if min(image.size) < min_side:
        return Detection(False, 1.0, 0, None, 0, (0.0, 0.0, 1.0, 1.0), too_small=True)
    y = luma(np.asarray(image.convert("RGB"), dtype=np.float32))
    sync, dither, _ = _key()
    flat, _, _, spectra = _marks()

    # 1. the filtered luma for every kept width, at the top-left of a grid canvas
    shapes = [(h, w) for h in WIDTHS for w in WIDTHS]
    canvases = np.zeros((len(shapes), GRID, GRID), np.float32)
    for s, (h, w) in enumerate(shapes):
        canvases[s, :h, :w] = _filtered(_resize(y, (w, h)))

    # 2. the canvases moved by every sub-grid-pixel step (a crop of a larger picture need not end on
    # a grid pixel), then the sync projections at every whole offset at once: a cross-correlation
    steps = [(0.0, 0.0)] if max(image.size) <= GRID else [(a, b) for a in (0.0, 0.5) for b in (0.0, 0.5)]
    k = torch.fft.fftfreq(GRID)
    spectrum = torch.fft.rfft2(torch.from_numpy(canvases))
    moved = torch.stack([spectrum * torch.exp(-2j * torch.pi * (k[:, None] * sy + k[None, : GRID // 2 + 1] * sx))
                         for sy, sx in steps], dim=1).reshape(-1, GRID, GRID // 2 + 1)
    corr = torch.fft.irfft2(moved.conj()[:, None] * spectra[None, :SYNC_BITS], s=(GRID, GRID)).numpy() / GRID
    rows, where = [], []
    for s, (h, w) in enumerate(shapes):
        for m, (sy, sx) in enumerate(steps):
            ny, nx = int(GRID - h - sy) + 1, int(GRID - w - sx) + 1
            rows.append(corr[s * len(steps) + m, :, :ny, :nx].reshape(SYNC_BITS, -1).T)
            where += [(s, m, dy, dx) for dy in range(ny) for dx in range(nx)]
    p_sync = np.concatenate(rows)  # (placements, SYNC_BITS)

    # 3. the placement where the sync bits sit closest to their lattices; its p-value
    residue = 2 * np.abs(_residue(p_sync, sync[None], dither[None, :SYNC_BITS]))  # uniform on [0, 1) unmarked
    total = residue.sum(1)
    best = int(total.argmin())
    p_value = min(1.0, len(p_sync) * irwin_hall_cdf(SYNC_BITS, float(total[best])))
    matched = int((residue[best] < 2 * SYNC_TOLERANCE).sum())

    # 4. the hash bits there: which lattice each projection is nearer
    s, m, dy, dx = where[best]
    (h, w), (sy, sx) = shapes[s], steps[m]
    frame = np.roll(torch.fft.irfft2(moved[s * len(steps) + m], s=(GRID, GRID)).numpy(), (dy, dx), axis=(0, 1))
    zero = _residue(flat[SYNC_BITS:] @ frame.reshape(-1) / GRID, np.zeros(HASH_BITS), dither[SYNC_BITS:])
    bits = np.abs(zero) > 0.25
    value = int("".join("1" if b else "0" for b in bits), 2)
    weak = int((np.abs(np.abs(zero) - 0.25) < 0.25 / 4).sum())
    return Detection(p_value <= MAX_FALSE_ALARM, p_value, matched, value, weak,
                     ((dx + sx) / GRID, (dy + sy) / GRID, w / GRID, h / GRID))
