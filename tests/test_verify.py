"""`verify` and `pixelchat verify`: clean files agree, stripped files still show the watermark,
edited records disagree, and the exit codes say so."""

import io
import json
import sys
import types

import pytest
from PIL import Image
from typer.testing import CliRunner

from pixelchat.cli import app
from pixelchat.data.scenes import scene_sample
from pixelchat.generate import generate_records
from pixelchat.safety.provenance import image_bytes
from pixelchat.safety.verify import summary, verify

runner = CliRunner()


@pytest.fixture(scope="module")
def made():
    return generate_records("snowy mountains at sunset with pink clouds", 1, seed=31)[0]


def pixels_only(data: bytes, fmt: str = "PNG", **options) -> bytes:
    """The picture re-encoded with no metadata at all, as many upload pipelines do."""
    im = Image.open(io.BytesIO(data)).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_clean_file_agrees(made, fmt):
    report = verify(image_bytes(made.image, made.record, fmt))
    assert report.found and report.agree and report.exit_code == 0, report.disagreements
    assert report.provenance.record == made.record and report.provenance.ai_generated
    assert report.watermark.status == "found" and report.watermark.matches_record
    assert report.c2pa.status in ("absent", "not checked")
    assert summary(report)[-1] == ("verdict", "everything found agrees", True)


@pytest.mark.parametrize("fmt,options", [("PNG", {}), ("JPEG", {"quality": 85})])
def test_stripped_file_still_shows_the_watermark_at_64px(made, fmt, options):
    report = verify(pixels_only(image_bytes(made.image, made.record), fmt, **options))
    assert report.provenance.record is None and report.provenance.parameters is None
    assert report.watermark.status == "found" and report.watermark.matches_record is None
    assert report.found and report.agree and report.exit_code == 0
    assert any("metadata was removed" in n for n in report.notes)


def test_stripped_small_picture_has_nothing_left(made):
    small = made.image.resize((32, 32), Image.Resampling.LANCZOS)
    marked = verify(image_bytes(small, made.record))
    assert marked.watermark.status == "too small" and marked.found and marked.agree
    stripped = verify(pixels_only(image_bytes(small, made.record)))
    assert not stripped.found and stripped.exit_code == 1


def test_edited_record_disagrees(made):
    original = image_bytes(made.image, made.record)
    pixels = Image.open(io.BytesIO(original)).convert("RGB")
    forged = dict(made.record, prompt="a quiet beach at noon")
    # the metadata rewritten on the marked pixels, without marking them again
    report = verify(image_bytes(pixels, forged, watermark=False))
    assert not report.agree and report.exit_code == 1
    assert any("watermark was made for another record" in d for d in report.disagreements)


def test_edited_parameters_disagree(made):
    from PIL import PngImagePlugin

    im = Image.open(io.BytesIO(image_bytes(made.image, made.record)))
    info = PngImagePlugin.PngInfo()
    for key, value in im.text.items():
        info.add_itxt(key, value.replace("pink clouds", "gray clouds") if key == "parameters" else value)
    buf = io.BytesIO()
    im.save(buf, "PNG", pnginfo=info)
    report = verify(buf.getvalue())
    assert report.disagreements == ["the 'parameters' text does not say what the record says"]


def test_marked_pixels_under_another_picture_record(made):
    """A record moved onto a different picture of ours: the mark names the other record."""
    other = generate_records("a desert at noon", 1, seed=2)[0]
    marked_other = Image.open(io.BytesIO(image_bytes(other.image, other.record))).convert("RGB")
    report = verify(image_bytes(marked_other, made.record, watermark=False))
    assert report.exit_code == 1 and report.watermark.matches_record is False


def test_picture_with_nothing(tmp_path):
    path = tmp_path / "render.png"
    scene_sample(3, 64).image.save(path)
    report = verify(path)
    assert not report.found and report.exit_code == 1 and report.watermark.status == "not found"


def test_c2pa_record_is_compared(made, monkeypatch):
    data = image_bytes(made.image, made.record)  # written before the C2PA module is replaced by a fake reader
    fake = types.ModuleType("pixelchat.safety.c2pa")
    fake.read_manifest = lambda data, fmt, **options: types.SimpleNamespace(
        valid=True, errors=[], record=dict(made.record, seed=1), signer="Example", claim_generator="pixelchat")
    monkeypatch.setitem(sys.modules, "pixelchat.safety.c2pa", fake)
    monkeypatch.setattr("pixelchat.safety.c2pa", fake, raising=False)
    report = verify(data)
    assert report.c2pa.status == "valid" and "the C2PA manifest's record is not the file's record" in report.disagreements

    fake.read_manifest = lambda data, fmt, **options: types.SimpleNamespace(
        valid=False, errors=["assertion.dataHash.mismatch"], record=made.record, signer=None, claim_generator=None)
    report = verify(data)
    assert report.c2pa.status == "invalid" and report.exit_code == 1

    def broken(data, fmt, **options):
        raise ImportError("no c2pa")
    fake.read_manifest = broken
    report = verify(data)
    assert report.c2pa.status == "not checked" and "no c2pa" in report.c2pa.reason and report.exit_code == 0


def test_cli_exit_codes_and_json(made, tmp_path):
    good = tmp_path / "good.webp"
    good.write_bytes(image_bytes(made.image, made.record, "webp"))
    result = runner.invoke(app, ["verify", str(good)])
    assert result.exit_code == 0, result.output
    assert "trainedAlgorithmicMedia" in result.stdout and "everything found agrees" in result.stdout

    result = runner.invoke(app, ["verify", str(good), "--json"])
    payload = json.loads(result.stdout)
    assert result.exit_code == 0 and payload["agree"] and payload["watermark"]["status"] == "found"
    assert payload["metadata"]["record"]["seed"] == 31

    nothing = tmp_path / "nothing.png"
    scene_sample(4, 64).image.save(nothing)
    assert runner.invoke(app, ["verify", str(nothing)]).exit_code == 1

    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    result = runner.invoke(app, ["verify", str(garbage)])
    assert result.exit_code == 2 and "not a readable image" in result.output
    assert runner.invoke(app, ["verify", str(tmp_path / "missing.png")]).exit_code == 2


def test_a_camera_comment_is_not_provenance():
    from PIL.ExifTags import IFD

    exif = Image.Exif()
    exif.get_ifd(IFD.Exif)[0x9286] = b"ASCII\0\0\0holiday at the lake"
    buf = io.BytesIO()
    scene_sample(5, 64).image.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    report = verify(buf.getvalue())
    assert report.provenance.parameters == "holiday at the lake"
    assert not report.found and report.exit_code == 1
