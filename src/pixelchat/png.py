"""8-bit RGB PNG files with text chunks, written faster than Pillow writes them.

Every filter of a 256 px picture's PNG went through Pillow's encoder, which tries the five PNG
filters on each row and keeps the one with the smallest sum (as libpng does): about 4 ms, most of
a file's cost. On our pictures it ends up with Paeth's predictor on nearly every row, so here every
row is filtered with Paeth in a few numpy operations and deflated once by zlib: files of the same
size in about two thirds of the time (RESULTS.md, "Runtimes"). The file is a plain PNG (ISO/IEC
15948): IHDR, the iTXt chunks in order, one IDAT, IEND. The deflating is zlib-ng's where it is
installed (a dependency): at level 1 with the run-length strategy it writes files of the same size
as zlib in about 60% of the time. (Deflating bands of rows on two threads, as pigz does, was
tried: no faster beside the torch threads that just drew the picture.)
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

try:
    from zlib_ng import zlib_ng as deflate
except ImportError:  # pragma: no cover - a platform without its wheel: the standard library's, slower
    deflate = zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def itxt(keyword: str, text: str) -> bytes:
    """An uncompressed iTXt chunk's data: keyword, flags, no language, no translated keyword, UTF-8 text."""
    key = keyword.encode("latin-1")
    if not 1 <= len(key) <= 79:
        raise ValueError(f"a PNG keyword has 1 to 79 characters; got {keyword!r}")
    return key + b"\x00\x00\x00\x00\x00" + text.encode("utf-8")


def paeth_filtered(rows: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 rows → (h, 1 + 3w) bytes: each row's filter type (4, Paeth) and its filtered bytes."""
    h, w, c = rows.shape
    x = rows.reshape(h, w * c).astype(np.int16)
    up = np.zeros_like(x)
    up[1:] = x[:-1]
    left = np.zeros_like(x)
    left[:, c:] = x[:, :-c]
    corner = np.zeros_like(x)
    corner[:, c:] = up[:, :-c]
    # p = left + up - corner; the predictor is whichever of the three is nearest p, in that order on ties
    pa, pb, pc = np.abs(up - corner), np.abs(left - corner), np.abs(left + up - 2 * corner)
    predicted = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, corner))
    out = np.empty((h, w * c + 1), np.uint8)
    out[:, 0] = 4
    out[:, 1:] = (x - predicted).astype(np.uint8)  # modulo 256, as PNG's filters are
    return out


def png_bytes(rgb: np.ndarray, texts: list[tuple[str, str]] = (), *, level: int = 1,
              strategy: int = zlib.Z_RLE) -> bytes:
    """``rgb`` (h, w, 3) uint8 as a PNG file with ``texts`` as iTXt chunks (keyword, text), in order."""
    rgb = np.ascontiguousarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(f"png_bytes takes (h, w, 3) uint8 pixels; got {rgb.dtype} {rgb.shape}")
    h, w, _ = rgb.shape
    z = deflate.compressobj(level, deflate.DEFLATED, 15, 9, strategy)
    stream = z.compress(paeth_filtered(rgb).tobytes()) + z.flush()
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8 bits, truecolour, deflate, adaptive filters, no interlace
    return b"".join([SIGNATURE, _chunk(b"IHDR", header), *(_chunk(b"iTXt", itxt(k, t)) for k, t in texts),
                     _chunk(b"IDAT", stream), _chunk(b"IEND", b"")])
