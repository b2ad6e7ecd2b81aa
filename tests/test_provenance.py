"""Every file we write says how it was made, in PNG, JPEG and WebP: our record, the A1111
``parameters`` text and XMP with the IPTC "trainedAlgorithmicMedia" source type."""

import io

import pytest
from PIL import Image, PngImagePlugin

from pixelchat.generate import generate_records
from pixelchat.imagefiles import ImageFileError, a1111_parameters, png_bytes, read_record, save_png
from pixelchat.safety.provenance import (
    TRAINED_ALGORITHMIC_MEDIA, XMP_KEY, canonical_format, image_bytes, read_provenance,
)

FORMATS = ("png", "jpeg", "webp")


@pytest.fixture(scope="module")
def made():
    """A real 64 px picture from the shipped model, with a prompt outside ASCII."""
    return generate_records("a lake at night under a moon, café «ünïcode» 山", 1, seed=5)[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_in_every_format(made, fmt, tmp_path):
    data = image_bytes(made.image, made.record, fmt)
    assert Image.open(io.BytesIO(data)).format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
    path = tmp_path / f"picture.{fmt}"
    path.write_bytes(data)
    for source in (data, path):
        p = read_provenance(source)
        assert p.format == fmt and p.problems == []
        assert p.record == made.record
        assert p.parameters == a1111_parameters(made.record)
        assert p.digital_source_type == TRAINED_ALGORITHMIC_MEDIA and p.ai_generated
        assert p.creator_tool == f"pixelchat {made.record['pixelchat_version']}"
        assert p.description == made.record["prompt"]
    assert read_record(path) == made.record


def test_record_has_what_says_how_it_was_made(made):
    r = made.record
    assert r["prompt"] and r["seed"] == 5 and r["latent"] and r["engine"] == "gan"
    assert r["model"]["id"] and len(r["model"]["sha256"]) == 64
    assert r["pixelchat_version"] and r["created"]


def test_png_keeps_its_text_chunks_as_itxt(made):
    im = Image.open(io.BytesIO(png_bytes(made.image, made.record)))
    assert {"pixelchat", "parameters", XMP_KEY} <= set(im.text)
    assert b"trainedAlgorithmicMedia" in im.text[XMP_KEY].encode()


def test_jpeg_parameters_are_in_exif_user_comment(made):
    from PIL.ExifTags import IFD

    im = Image.open(io.BytesIO(image_bytes(made.image, made.record, "jpeg")))
    comment = im.getexif().get_ifd(IFD.Exif)[0x9286]
    assert comment.startswith(b"UNICODE\0") and comment[8:].decode("utf-16-be") == a1111_parameters(made.record)
    assert im.info["comment"].startswith(b"pixelchat:")


def test_save_png_and_read_record(made, tmp_path):
    path = save_png(made.image, tmp_path / "a.png", made.record)
    assert read_record(path) == made.record and read_record(Image.open(path)) == made.record
    assert not list(tmp_path.glob(".*.tmp"))


def test_read_record_reads_pngs_written_before(made, tmp_path):
    """Files from earlier versions: iTXt 'pixelchat' and tEXt 'parameters', no XMP, no watermark."""
    import json

    info = PngImagePlugin.PngInfo()
    info.add_itxt("pixelchat", json.dumps(made.record, separators=(",", ":")))
    info.add_text("parameters", a1111_parameters(made.record))
    path = tmp_path / "old.png"
    made.image.save(path, pnginfo=info)
    assert read_record(path) == made.record
    p = read_provenance(path)
    assert p.record == made.record and p.parameters and not p.xmp and p.digital_source_type is None


def test_in_memory_record_and_no_record():
    image = Image.new("RGB", (8, 8))
    assert read_record(image) is None
    image.info["pixelchat"] = {"prompt": "x"}
    assert read_record(image) == {"prompt": "x"}
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    p = read_provenance(buf.getvalue())
    assert p.record is None and p.parameters is None and not p.xmp


def test_server_answers_carry_metadata_in_jpeg_and_webp(made):
    from pixelchat.server.routes.openai_images import encode

    for fmt in FORMATS:
        p = read_provenance(encode(made.image, fmt, 80, made.record))
        assert p.record == made.record and p.ai_generated and p.parameters


def test_unreadable_and_hostile_input(tmp_path):
    with pytest.raises(ImageFileError):
        read_provenance(b"not an image")
    with pytest.raises(ImageFileError):
        read_provenance(tmp_path / "missing.png")
    with pytest.raises(ValueError):
        canonical_format("gif")
    info = PngImagePlugin.PngInfo()
    info.add_itxt(XMP_KEY, '<!DOCTYPE x [<!ENTITY a "aaaa">]><x:xmpmeta xmlns:x="adobe:ns:meta/">&a;</x:xmpmeta>')
    info.add_itxt("pixelchat", "{not json")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG", pnginfo=info)
    p = read_provenance(buf.getvalue())
    assert p.record is None and p.digital_source_type is None and len(p.problems) == 2


def test_a1111_line_names_the_steps_sampler_and_guidance_of_a_diffusion_record():
    gan = a1111_parameters({"prompt": "a lake", "seed": 3, "size": [64, 64], "model": {"id": "m"}})
    assert gan.splitlines()[1].startswith("Steps: 1, Sampler: GAN, Seed: 3, Size: 64x64")
    diffusion = a1111_parameters({"prompt": "a lake", "negative_prompt": "fog", "seed": 3, "size": [512, 512],
                                  "steps": 25, "scheduler": "DDIMScheduler", "guidance": 7.5})
    assert diffusion.splitlines()[1] == "Negative prompt: fog"
    assert diffusion.splitlines()[2].startswith("Steps: 25, Sampler: DDIMScheduler, CFG scale: 7.5, Seed: 3, Size: 512x512")
