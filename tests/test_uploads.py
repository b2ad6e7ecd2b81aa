"""Uploads: real files made here with Pillow, good ones decoded, hostile ones refused fast."""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from io import BytesIO

import numpy as np
import pytest
from PIL import Image, ImageFile, PngImagePlugin

from pixelchat.server.uploads import Limits, UploadError, decode_image, encode_image, read_capped, sniff_format

RED, BLUE = (255, 0, 0), (0, 0, 255)


def save(image: Image.Image, fmt: str, **options) -> bytes:
    buf = BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def noise(w: int = 48, h: int = 32, mode: str = "RGB") -> Image.Image:
    channels = len(mode)
    a = np.random.default_rng(0).integers(0, 256, (h, w, channels), dtype=np.uint8)
    return Image.fromarray(a.squeeze(-1) if channels == 1 else a, mode)


def png_header_only(width: int, height: int) -> bytes:
    """A valid-looking PNG (correct CRCs) that declares width×height RGB but carries one row of data:
    a decoder that trusted the header would allocate width×height×3 bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00" * 3 * width)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def refused(data: bytes, **kwargs) -> UploadError:
    t0 = time.perf_counter()
    with pytest.raises(UploadError) as info:
        decode_image(data, **kwargs)
    assert time.perf_counter() - t0 < 1.0, "refusing an upload must not decode it"
    return info.value


# good uploads

@pytest.mark.parametrize("fmt, magic", [("PNG", "PNG"), ("JPEG", "JPEG"), ("WEBP", "WEBP")])
def test_good_files_decode_to_rgb(fmt, magic):
    source = noise(48, 32)
    data = save(source, fmt, quality=95) if fmt != "PNG" else save(source, fmt)
    assert sniff_format(data) == magic
    out = decode_image(data)
    assert out.mode == "RGB" and out.size == (48, 32)
    if fmt == "PNG":
        assert np.array_equal(np.asarray(out), np.asarray(source))


def test_alpha_is_composited_on_white_and_kept_for_rgba():
    a = np.zeros((8, 8, 4), dtype=np.uint8)
    a[:, :4] = (255, 0, 0, 128)  # left: half-transparent red; right: fully transparent
    data = save(Image.fromarray(a, "RGBA"), "PNG")
    rgb = np.asarray(decode_image(data)).astype(int)
    assert np.abs(rgb[0, 0] - (255, 127, 127)).max() <= 1
    assert (rgb[:, 4:] == 255).all()
    rgba = decode_image(data, param="mask", mode="RGBA")
    assert rgba.mode == "RGBA" and rgba.getpixel((0, 0)) == (255, 0, 0, 128) and rgba.getpixel((7, 7))[3] == 0
    assert decode_image(data, mode="L").mode == "L"


def test_palette_png_with_transparency_becomes_rgb():
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    out = decode_image(save(im, "PNG", transparency=1))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    a = np.full((4, 4), 32768, dtype=np.uint16)
    out = decode_image(save(Image.fromarray(a), "PNG"))
    assert out.getpixel((0, 0)) == (128, 128, 128)


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (40, 20), BLUE)
    im.paste(RED, (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    out = decode_image(save(im, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)
    top, bottom = np.asarray(out)[5, 10].astype(int), np.asarray(out)[35, 10].astype(int)
    assert top[0] > 200 and top[2] < 60  # the left half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_image_gives_first_frame(fmt):
    frames = [Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), BLUE)]
    data = save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    assert Image.open(BytesIO(data)).n_frames == 2
    out = decode_image(data)
    assert out.size == (16, 16) and out.getpixel((8, 8)) == RED


def test_metadata_is_stripped():
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "secret location")
    png = save(noise(), "PNG", pnginfo=text, dpi=(300, 300))
    assert "Comment" in Image.open(BytesIO(png)).info
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"  # Make
    exif[0x0112] = 1
    jpeg = save(noise(), "JPEG", exif=exif.tobytes())
    for data in (png, jpeg):
        out = decode_image(data)
        assert out.info == {} and len(out.getexif()) == 0


# hostile uploads

@pytest.mark.parametrize("width, height", [(30000, 30000), (5000, 100), (4000, 4200)])
def test_huge_declared_dimensions_are_refused_before_decoding(width, height):
    data = png_header_only(width, height)
    assert len(data) < 1000
    e = refused(data, param="mask")
    assert (e.status, e.code, e.param) == (413, "too_many_pixels", "mask")


def test_decompression_bomb_guard_holds_even_with_loose_limits():
    # 10000×10000 exceeds Pillow's MAX_IMAGE_PIXELS (~89 M) but not these limits: the warning must be an error
    e = refused(png_header_only(10000, 10000), limits=Limits(max_pixels=10**9, max_side=10**5))
    assert (e.status, e.code) == (413, "too_many_pixels")
    e = refused(png_header_only(30000, 30000), limits=Limits(max_pixels=10**10, max_side=10**5))
    assert (e.status, e.code) == (413, "too_many_pixels")


def test_real_image_over_side_limit_is_refused():
    e = refused(save(noise(48, 32), "PNG"), limits=Limits(max_side=40))
    assert (e.status, e.code) == (413, "too_many_pixels")


@pytest.mark.parametrize("data", [
    b"<html><body><script>alert(1)</script></body></html>",
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
    b"just some text saved as photo.png\n",
    save(noise(8, 8), "GIF"),
    save(noise(8, 8), "BMP"),
    b"\x89PN",  # a PNG signature cut short
], ids=["html", "svg", "text", "gif", "bmp", "short-signature"])
def test_other_formats_are_unsupported(data):
    e = refused(data)
    assert (e.status, e.code) == (415, "unsupported_format")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_files_are_corrupt(fmt):
    data = save(noise(64, 64), fmt)
    e = refused(data[: len(data) // 2])
    assert (e.status, e.code) == (400, "corrupt_image")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("data", [
    b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
    b"\xff\xd8\xff" + b"garbage" * 10,
    b"RIFF\x00\x00\x00\x00WEBPVP8 garbage",
], ids=["png", "jpeg", "webp"])
def test_garbage_after_magic_is_corrupt(data):
    e = refused(data)
    assert (e.status, e.code) == (400, "corrupt_image")


def test_damaged_compressed_data_is_corrupt():
    data = bytearray(save(noise(64, 64), "PNG"))
    data[len(data) // 2:len(data) // 2 + 64] = b"\xff" * 64
    e = refused(bytes(data))
    assert (e.status, e.code) == (400, "corrupt_image")


def test_empty_and_too_many_bytes():
    e = refused(b"", param="mask")
    assert (e.status, e.code, e.param) == (400, "empty", "mask")
    data = save(noise(), "PNG")
    e = refused(data, limits=Limits(max_bytes=len(data) - 1))
    assert (e.status, e.code) == (413, "too_large")
    assert decode_image(data, limits=Limits(max_bytes=len(data))).size == (48, 32)


# read_capped

class FakeUpload:
    """starlette's UploadFile as far as reading goes: `await f.read(n)`."""

    def __init__(self, data: bytes):
        self.data, self.position, self.largest_request = data, 0, 0

    async def read(self, n: int = -1) -> bytes:
        self.largest_request = max(self.largest_request, n)
        chunk = self.data[self.position:] if n < 0 else self.data[self.position:self.position + n]
        self.position += len(chunk)
        return chunk


def test_read_capped_returns_the_bytes_within_the_limit():
    data = bytes(range(256)) * 1000
    f = FakeUpload(data)
    assert asyncio.run(read_capped(f, len(data), param="image", chunk_size=4096)) == data
    assert f.largest_request <= 4096


def test_read_capped_stops_at_the_limit():
    f = FakeUpload(b"x" * 10_000_000)
    with pytest.raises(UploadError) as info:
        asyncio.run(read_capped(f, 100_000, param="mask", chunk_size=65536))
    assert (info.value.status, info.value.code, info.value.param) == (413, "too_large", "mask")
    assert f.position == 100_001  # one byte past the limit, never more


def test_read_capped_takes_async_iterators():
    async def chunks(n):
        for _ in range(n):
            yield b"y" * 1000

    assert asyncio.run(read_capped(chunks(5), 5000, param="image")) == b"y" * 5000
    with pytest.raises(UploadError, match="larger than"):
        asyncio.run(read_capped(chunks(6), 5000, param="image"))


# encode_image

@pytest.mark.parametrize("fmt, magic", [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_encode_image_round_trips(fmt, magic):
    x, y = np.meshgrid(np.linspace(0, 255, 24), np.linspace(0, 255, 16))
    source = Image.fromarray(np.stack([x, y, 255 - x], -1).astype(np.uint8))  # smooth: lossy codecs keep it
    data = encode_image(source, fmt, quality=95)
    assert sniff_format(data) == magic
    out = decode_image(data)
    assert out.size == (24, 16)
    error = np.abs(np.asarray(out).astype(int) - np.asarray(source).astype(int)).mean()
    assert error == 0 if fmt == "png" else error < 8


def test_encode_image_drops_alpha_for_jpeg_and_metadata_everywhere():
    im = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    im.info["icc_profile"] = b"not a profile"
    assert decode_image(encode_image(im, "jpeg")).getpixel((4, 4)) == (255, 255, 255)
    assert "icc_profile" not in Image.open(BytesIO(encode_image(im, "png"))).info
    assert decode_image(encode_image(im, "webp"), mode="RGBA").getpixel((4, 4))[3] == 0


@pytest.mark.parametrize("fmt", ["gif", "bmp", "jpg "])
def test_encode_image_rejects_other_formats(fmt):
    with pytest.raises(ValueError, match="fmt must be one of"):
        encode_image(noise(), fmt)


def test_refuses_to_run_when_truncated_images_are_allowed(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some other library might set it
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(save(noise(), "PNG"))
