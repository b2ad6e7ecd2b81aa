"""Client uploads → safe pictures. Every upload is hostile until decoded within limits.

Pure functions over bytes (no web framework here): the HTTP layer reads the body with
``read_capped``, calls ``decode_image`` (or both, off the event loop and a few at a time, with
``read_picture``) and maps ``UploadError.status`` to its response. A picture is decoded at the size
the engines work at (``Limits.work_side``), not at the size it declares: a small file may declare
16 million pixels. Everything the server stores or serves is re-encoded with ``encode_image``,
pixels only."""

from __future__ import annotations

import asyncio
import inspect
import struct
import warnings
import zlib
from dataclasses import dataclass
from io import BytesIO

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from pixelchat.imagefiles import to_rgb

CHUNK_BYTES = 64 * 1024
FORMATS = ("PNG", "JPEG", "WEBP")
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
MODES = ("RGB", "RGBA", "L")
STATUS = {"empty": 400, "corrupt_image": 400, "too_large": 413, "too_many_pixels": 413,
          "unsupported_format": 415}

# What Pillow raises on bytes that start like an image but are not one: truncated streams
# (OSError), broken chunks (SyntaxError), bad headers (ValueError, struct.error), bad deflate data.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


class UploadError(ValueError):
    """An upload the server refuses; ``status`` is the HTTP status, ``code`` a short machine code,
    ``param`` the form field it came in (as in OpenAI's error body)."""

    def __init__(self, code: str, message: str, *, param: str = "image"):
        super().__init__(message)
        self.code = code
        self.status = STATUS[code]
        self.param = param
        self.message = message


# The largest picture any engine works from: the GAN reads 64–256 px, diffusion pipelines up to 1024 px
# (SDXL); every upload is brought down to this before anything else sees it. What an upload may declare
# follows from it: four times that a side (a phone photo, 4032×3024, passes), so a picture is reduced by
# a whole factor of at most 4 and decodes to 64 MiB at the most (RGBA), a JPEG to a sixteenth of that.
WORK_SIDE = 1024
MAX_SIDE = 4 * WORK_SIDE


@dataclass(frozen=True)  # frozen: the default instance is shared by every call
class Limits:
    max_bytes: int = 4 * 1024 * 1024  # OpenAI's image edit endpoint takes PNGs up to 4 MB
    max_pixels: int = MAX_SIDE * MAX_SIDE
    max_side: int = MAX_SIDE
    work_side: int | None = WORK_SIDE  # decoded pictures fit this square (None: full size)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def sniff_format(data: bytes) -> str | None:
    """"PNG", "JPEG" or "WEBP" from the file's magic bytes; None for anything else.

    Magic numbers: PNG spec §5.2, JPEG SOI marker + first marker's FF, WebP RIFF container."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


async def read_capped(stream, limit: int, *, param: str, chunk_size: int = CHUNK_BYTES) -> bytes:
    """All bytes of ``stream`` (an object with ``read(n)``, e.g. starlette's UploadFile, or an async
    iterator of byte chunks); UploadError 413 as soon as more than ``limit`` bytes arrive.

    With ``read(n)`` at most ``limit + 1`` bytes are ever held; with an iterator, ``limit`` plus one chunk."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    parts: list[bytes] = []
    total = 0

    def add(chunk: bytes) -> None:
        nonlocal total
        total += len(chunk)
        if total > limit:
            raise UploadError("too_large", f"{param} is larger than {_mib(limit)}, the upload limit", param=param)
        parts.append(bytes(chunk))

    if hasattr(stream, "read"):
        while True:
            chunk = stream.read(min(chunk_size, limit + 1 - total))  # one byte past the limit proves overflow
            if inspect.isawaitable(chunk):
                chunk = await chunk
            if not chunk:
                break
            add(chunk)
    else:
        async for chunk in stream:
            if chunk:
                add(chunk)
    return b"".join(parts)


def decode_image(data: bytes, *, param: str = "image", limits: Limits = Limits(), mode: str = "RGB") -> Image.Image:
    """Upload bytes → a new ``mode`` image ("RGB", "RGBA" or "L") holding pixels only, or UploadError.

    1. check size and magic bytes (client content types and file names are ignored)
    2. open the header only and check its dimensions before decoding anything
    3. decode the first frame, with decompression bombs and truncated data as errors; a JPEG is decoded
       already scaled down (DCT scaling) towards ``limits.work_side``
    4. apply EXIF orientation, shrink to fit ``limits.work_side``, convert to ``mode`` (RGB:
       transparency on white)
    5. copy the pixels into a fresh image, so EXIF, ICC profiles and text chunks are dropped"""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Set process-wide by some other code: Pillow would then pad truncated uploads with grey.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process; uploads need it False "
                           "so truncated files are refused")
    fmt = check_bytes(data, param=param, limits=limits)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(BytesIO(data), formats=[fmt]) as im:
                check_dimensions(im.size, param=param, limits=limits)
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)  # animated: first frame only, the rest is never decoded
                if fmt == "JPEG" and limits.work_side:
                    im.draft(None, fitted(im.size, limits.work_side))  # 1/2, 1/4 or 1/8 scale, never below it
                im.load()
                im = ImageOps.exif_transpose(im)
        except UploadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise UploadError("too_many_pixels", f"{param} declares too many pixels ({e})", param=param) from None
        except UnidentifiedImageError:
            raise UploadError("corrupt_image", f"{param} looks like {fmt} but its header cannot be read",
                              param=param) from None
        except DECODE_ERRORS as e:
            raise UploadError("corrupt_image", f"{param} is a truncated or corrupt {fmt} file ({e})",
                              param=param) from None
    if im.mode not in ("RGB", "RGBA", "L", "LA") or "transparency" in im.info:  # palette, 16-bit, CMYK, tRNS: first
        im = convert_mode(im, mode)
    out = convert_mode(shrunk(im, limits.work_side), mode)
    clean = Image.new(out.mode, out.size)
    clean.paste(out)  # same mode: a straight pixel copy, alpha included; `info` stays empty
    return clean


def fitted(size: tuple[int, int], side: int) -> tuple[int, int]:
    """``size`` scaled to fit a ``side``-pixel square, aspect kept (unchanged if it fits)."""
    w, h = size
    scale = min(1.0, side / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def shrunk(im: Image.Image, side: int | None) -> Image.Image:
    """``im`` fitting a ``side``-pixel square: reduced by a whole factor (box filter), then resampled."""
    if side is None or max(im.size) <= side:
        return im
    im = im.copy() if im.readonly else im
    im.thumbnail(fitted(im.size, side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return im


async def read_picture(stream, *, param: str, limits: Limits = Limits(), mode: str = "RGB", gate=None) -> Image.Image:
    """``read_capped`` then ``decode_image`` on a worker thread, so the event loop goes on serving
    others meanwhile. gate: called for an async context manager held while decoding (e.g. the server's
    `ratelimit.Gate`), so only a few decodes (tens of MiB each at the most) run at once."""
    data = await read_capped(stream, limits.max_bytes, param=param)
    if gate is None:
        return await asyncio.to_thread(decode_image, data, param=param, limits=limits, mode=mode)
    async with gate():
        return await asyncio.to_thread(decode_image, data, param=param, limits=limits, mode=mode)


def check_bytes(data: bytes, *, param: str, limits: Limits) -> str:
    """The upload's format from its magic bytes, after the empty and size checks."""
    if not data:
        raise UploadError("empty", f"{param} is empty", param=param)
    if len(data) > limits.max_bytes:
        raise UploadError("too_large", f"{param} is {_mib(len(data))}; the limit is {_mib(limits.max_bytes)}",
                          param=param)
    fmt = sniff_format(data)
    if fmt is None:
        raise UploadError("unsupported_format", f"{param} must be a PNG, JPEG or WebP image", param=param)
    return fmt


def check_dimensions(size: tuple[int, int], *, param: str, limits: Limits) -> None:
    """Refuse declared dimensions over the limits; called on the header, before any pixel is decoded."""
    w, h = size
    if w <= 0 or h <= 0:
        raise UploadError("corrupt_image", f"{param} declares a {w}×{h} image", param=param)
    if max(w, h) > limits.max_side or w * h > limits.max_pixels:
        raise UploadError("too_many_pixels", f"{param} is {w}×{h} pixels; the limit is {limits.max_side} pixels "
                          f"a side and {limits.max_pixels:,} pixels in all", param=param)


def convert_mode(im: Image.Image, mode: str) -> Image.Image:
    """``im`` in ``mode``: RGB composites any transparency on white; RGBA keeps alpha; 16-bit greyscale
    is scaled to 8 bits (Pillow's own conversion would clip it to white)."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        im = im.convert("I").point(lambda v: v / 256).convert("L")
    if mode == "RGB":
        if "transparency" in im.info and im.mode != "P":  # tRNS on L/RGB PNGs; to_rgb handles P
            im = im.convert("RGBA")
        return to_rgb(im)
    return im if im.mode == mode else im.convert(mode)


def encode_image(image: Image.Image, fmt: str = "png", quality: int = 90) -> bytes:
    """``image`` as PNG, JPEG or WebP bytes, pixels only (no EXIF, ICC or text chunks).

    JPEG has no alpha: transparency is composited on white. ``quality`` (0–100) applies to JPEG and WebP."""
    key = fmt.lower()
    if key not in OUTPUT_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(OUTPUT_FORMATS)}; got {fmt!r}")
    if not 0 <= quality <= 100:  # OpenAI's output_compression range
        raise ValueError(f"quality must be in 0..100; got {quality}")
    if key == "jpeg" and image.mode not in ("RGB", "L"):
        image = to_rgb(image)
    if image.info:
        image = image.copy()
        image.info = {}  # Pillow's writers read ICC profiles and transparency from `info`
    buf = BytesIO()
    options = {"quality": quality} if key in ("jpeg", "webp") else {}
    image.save(buf, format=OUTPUT_FORMATS[key], **options)
    return buf.getvalue()
