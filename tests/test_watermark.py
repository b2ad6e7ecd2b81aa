"""The invisible watermark on real pictures from the shipped model (64 px and the default 256 px): found after the changes
docs/provenance.md claims it survives (JPEG q85, resizing to 90 %, 10 % crops), never found on
pictures without it, and not embedded where pictures are too small to carry it."""

import io

import numpy as np
import pytest
from PIL import Image

from pixelchat.data.scenes import scene_sample
from pixelchat.generate import generate_records
from pixelchat.safety import watermark as wm
from pixelchat.safety.provenance import image_bytes

HASHES = (0x00000000, 0xFFFFFFFF, 0x1234ABCD, 0x9E3779B9)


PROMPTS = ["a lake at night under a moon", "snowy mountains at sunset with pink clouds",
           "a house in a forest by the sea", "a desert at noon with a boat"]


@pytest.fixture(scope="module")
def pictures():
    """64 px pictures (the generator's own size)."""
    return [generate_records(p, 1, seed=20 + i, size=64)[0].image for i, p in enumerate(PROMPTS)]


@pytest.fixture(scope="module")
def marked(pictures):
    return [wm.embed(im, h) for im, h in zip(pictures, HASHES)]


@pytest.fixture(scope="module")
def marked_256():
    """The default size: 256 px pictures through the upsampler."""
    return [wm.embed(generate_records(p, 1, seed=20 + i, size=256)[0].image, h)
            for (i, p), h in zip(enumerate(PROMPTS), HASHES)]


def jpeg(im, quality=85):
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def shrink(im, f=0.9):
    return im.resize((round(im.width * f), round(im.height * f)), Image.Resampling.BICUBIC)


def crop(box):
    """A crop box given for 64 px, scaled to the picture's size."""
    return lambda im: im.crop(tuple(v * im.width // 64 for v in box))


CHANGES = {
    "none": lambda im: im,
    "jpeg85": jpeg,
    "resize90": shrink,
    "resize90-back": lambda im: shrink(im).resize(im.size, Image.Resampling.BICUBIC),
    "crop10-centre": crop((3, 3, 61, 61)),
    "crop10-corner": crop((6, 0, 64, 58)),
    "crop10+jpeg85": lambda im: jpeg(crop((2, 5, 60, 63))(im)),
}
# On the 64 px pictures of pixelchat-spec64 v1.1 a 90% shrink to 58 px loses the mark: the sync bits
# read with p 1e-5 to 4e-4, short of the detector's bar, and 1-2 hash bits would be wrong (flagged
# weak); the table in docs/provenance.md was measured on v1.0's pictures. 256 px pictures survive it.
KNOWN_64 = {"resize90": "a 90% shrink of these 64 px pictures loses the mark"}


@pytest.mark.parametrize("change", [pytest.param(c, marks=pytest.mark.xfail(reason=KNOWN_64[c], strict=True))
                                    if c in KNOWN_64 else c for c in CHANGES])
def test_mark_survives_at_64px(marked, change):
    survives(marked, change)


@pytest.mark.parametrize("change", CHANGES)
def test_mark_survives_at_the_default_size(marked_256, change):
    survives(marked_256, change)


def survives(marked, change):
    for im, h in zip(marked, HASHES):
        d = wm.detect(CHANGES[change](im))
        assert d.found and d.p_value <= wm.MAX_FALSE_ALARM, (change, d)
        assert d.matches(h), (change, f"{d.hash32:08x} != {h:08x}")


def test_crops_of_the_default_size_that_keep_part_of_a_grid_pixel_are_mostly_read(marked_256):
    """A 256 px picture has 4 pixels per grid pixel, so most crops keep a fractional number of grid
    pixels (230 px: 57.5). Searching whole kept widths only, the detector read 1 of these 8 crops;
    with the search in quarter grid pixels, 6 (docs/provenance.md: 95% of 10% crops at 256 px)."""
    boxes = [(13, 7, 230, 230), (3, 20, 238, 231), (25, 0, 231, 250), (9, 9, 241, 236), (0, 11, 233, 245),
             (17, 2, 227, 229), (5, 5, 246, 246), (21, 14, 235, 239)]  # left, top, kept width, kept height
    read = 0
    for k, (left, top, w, h) in enumerate(boxes):
        im, hash32 = marked_256[k % len(marked_256)], HASHES[k % len(marked_256)]
        d = wm.detect(im.crop((left, top, left + w, top + h)))
        assert not d.found or d.matches(hash32), (k, d)  # never a wrong hash reported as found
        if d.found and d.matches(hash32):
            read += 1
            assert abs(d.crop[2] - w / 256) < 0.01 and abs(d.crop[3] - h / 256) < 0.01  # the kept size, read back
    assert read >= 5, read


def test_mark_survives_on_larger_pictures(pictures):
    im = pictures[0].resize((256, 256), Image.Resampling.LANCZOS)
    m = wm.embed(im, 0xC0FFEE)
    for change in (jpeg, shrink, lambda x: jpeg(shrink(x, 0.75))):
        assert wm.detect(change(m)).matches(0xC0FFEE)


def test_mark_is_faint(pictures, marked):
    for a, b in zip(pictures, marked):
        err = np.asarray(a, np.float64) - np.asarray(b, np.float64)
        assert 10 * np.log10(255**2 / (err**2).mean()) > 40  # dB PSNR
        assert np.abs(err).max() <= 16


def test_no_mark_is_reported_on_pictures_without_one(pictures):
    rng = np.random.default_rng(0)
    clean = [*pictures, *(scene_sample(900 + i, 64).image for i in range(4)),
             scene_sample(950, 256).image, Image.new("RGB", (64, 64), (128, 128, 128)),
             Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))]
    for im in clean:
        d = wm.detect(im)
        assert not d.found and d.p_value > 1e-3


def test_a_different_hash_is_not_a_match(marked):
    d = wm.detect(marked[2])
    assert d.matches(HASHES[2]) and not d.matches(HASHES[3]) and not d.matches(HASHES[2] ^ 0b111)


def test_too_small_pictures_are_left_alone(pictures):
    small = pictures[0].resize((32, 32), Image.Resampling.LANCZOS)
    assert wm.embed(small, 1) is small
    assert wm.detect(small).too_small and not wm.detect(small).found


def test_embedding_is_deterministic_and_idempotent(pictures, marked):
    assert wm.embed(pictures[1], HASHES[1]).tobytes() == marked[1].tobytes()
    again = np.asarray(wm.embed(marked[1], HASHES[1]), np.int16)
    assert np.abs(again - np.asarray(marked[1], np.int16)).max() <= 1


def test_same_seed_same_pixels_in_files():
    """The time of creation is not in the mark's hash, so the same prompt, seed and model still give
    identical pixels."""
    a = generate_records("a lake", 1, seed=7)[0]
    b = generate_records("a lake", 1, seed=7)[0]
    b.record["created"] = "1999-01-01T00:00:00+00:00"
    pa = Image.open(io.BytesIO(image_bytes(a.image, a.record)))
    pb = Image.open(io.BytesIO(image_bytes(b.image, b.record)))
    assert pa.tobytes() == pb.tobytes() and pa.tobytes() != a.image.tobytes()


def test_every_written_picture_is_marked(pictures):
    record = generate_records("a lake", 1, seed=8)[0].record
    for fmt in ("png", "jpeg", "webp"):
        im = Image.open(io.BytesIO(image_bytes(pictures[0], record, fmt)))
        assert wm.detect(im).matches(wm.record_hash(record)), fmt


def test_false_alarm_bound_is_exact_arithmetic():
    assert wm.irwin_hall_cdf(24, 1.0) == pytest.approx(1 / 620448401733239439360000)
    assert wm.irwin_hall_cdf(2, 1.0) == pytest.approx(0.5) and wm.irwin_hall_cdf(24, 0) == 0
