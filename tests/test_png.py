"""The PNG writer: any 8-bit RGB picture comes back pixel for pixel, with its text chunks."""

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from pixelchat import png


def _read(data: bytes) -> Image.Image:
    Image.open(io.BytesIO(data)).verify()  # chunk CRCs and structure
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


@pytest.mark.parametrize("h, w", [(1, 1), (2, 3), (64, 64), (257, 256), (512, 512), (300, 41)])
def test_pixels_and_texts_come_back(h, w):
    rng = np.random.default_rng(h * 1000 + w)
    smooth = np.cumsum(rng.integers(-3, 4, (h, w, 3)), axis=1)  # like a picture: neighbours close
    rgb = np.clip(smooth + 128, 0, 255).astype(np.uint8)
    rgb[: h // 3] = rng.integers(0, 256, (h // 3, w, 3), dtype=np.uint8)  # and noise, where every filter byte differs
    texts = [("pixelchat", '{"prompt": "ünïcödé 東京"}'), ("parameters", "a lake\nSeed: 3"), ("XML:com.adobe.xmp", "<x/>")]
    data = png.png_bytes(rgb, texts)
    im = _read(data)
    assert im.mode == "RGB" and im.size == (w, h)
    assert np.array_equal(np.asarray(im), rgb)
    assert {k: im.text[k] for k, _ in texts} == dict(texts)


def test_the_stream_is_paeth_filtered_rows_and_matches_pillows_choice():
    """Pillow's adaptive filtering picks Paeth for every row of a smooth picture: the same bytes here."""
    y, x = np.mgrid[0:64, 0:96]
    rgb = np.stack([x * 2, y * 3, (x + y)], -1).astype(np.uint8)
    data = png.png_bytes(rgb)
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4:idat], "big")
    raw = zlib.decompress(data[idat + 4: idat + 4 + length])
    assert raw == png.paeth_filtered(rgb).tobytes()
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    theirs = buf.getvalue()
    at = theirs.index(b"IDAT")
    assert zlib.decompress(theirs[at + 4: at + 4 + int.from_bytes(theirs[at - 4:at], "big")])[1:] == raw[1:]


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)])
def test_bad_pixels_are_refused(bad):
    with pytest.raises(ValueError, match="uint8"):
        png.png_bytes(bad)


def test_bad_keyword_is_refused():
    with pytest.raises(ValueError, match="keyword"):
        png.png_bytes(np.zeros((2, 2, 3), np.uint8), [("", "x")])
