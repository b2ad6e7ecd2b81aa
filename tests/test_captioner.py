"""Describe anything: an image-to-text model (a tiny random BLIP built from a config and saved with
save_pretrained) through `pixelchat.describe`, the CLI, a pipeline engine and the server; folders
with pickle weights or with a model that is not an image-to-text one are refused clearly."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("transformers")

from pixelchat.cli import app  # noqa: E402
from pixelchat.training.checkpoint import CheckpointError  # noqa: E402
from pixelchat.vision.captioner import load_captioner, redraw_prompt  # noqa: E402

try:  # the tiny text-to-image pipeline, for the engine test
    from test_diffusers_engine import engine_for, pipelines  # noqa: F401
except pytest.skip.Exception:
    pipelines = None

WORDS = ["a", "cat", "dog", "on", "the", "red", "couch", "sitting", "photo", "of", "grass", "in", "with", "hat"]


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory) -> Path:
    """BlipForConditionalGeneration with a few channels, a 32 px vision tower and a word-level
    BERT vocabulary, with its processor: a folder as save_pretrained writes it (safetensors)."""
    import torch
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    root = tmp_path_factory.mktemp("captioner")
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizer(str(root / "vocab.txt"))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    torch.manual_seed(0)
    config = BlipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, encoder_hidden_size=16,
                         bos_token_id=tokenizer.bos_token_id, sep_token_id=3, pad_token_id=0),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    folder = root / "tiny-blip"
    BlipForConditionalGeneration(config).save_pretrained(folder)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    return folder


def photo() -> Image.Image:
    return Image.new("RGB", (48, 40), (180, 60, 40))


def test_describe_returns_a_caption_and_a_prompt(tiny_blip):
    import pixelchat

    d = pixelchat.describe(photo(), describer=tiny_blip)
    assert d.caption and set(d.caption.split()) <= set(WORDS)  # the model's own words, nothing else
    assert d.prompt == redraw_prompt(d.caption) and d.attributes == {} and d.confidence == {}
    assert pixelchat.describe(photo(), describer=str(tiny_blip)).caption == d.caption  # deterministic
    assert load_captioner(tiny_blip) is load_captioner(str(tiny_blip))  # loaded once


def test_the_redraw_prompt_drops_captioner_artefacts():
    assert redraw_prompt("arafed cat sitting on a couch.") == "cat sitting on a couch"
    assert redraw_prompt("there is a dog in the grass") == "a dog in the grass"
    assert redraw_prompt("a red door") == "a red door"


def test_the_environment_chooses_the_describer(tiny_blip, monkeypatch, tmp_path):
    import pixelchat

    monkeypatch.setenv("PIXELCHAT_DESCRIBER", str(tiny_blip))
    d = pixelchat.describe(photo())
    assert d.caption and d.attributes == {}
    photo().save(tmp_path / "photo.png")
    result = CliRunner().invoke(app, ["describe", str(tmp_path / "photo.png"), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["caption"] == d.caption and out["prompt"] == d.prompt and out["attributes"] == {}


def test_cli_describe_with_a_describer(tiny_blip, tmp_path):
    photo().save(tmp_path / "photo.png")
    result = CliRunner().invoke(app, ["describe", str(tmp_path / "photo.png"), "--describer", str(tiny_blip)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[1].startswith("prompt: ") and "attributes" not in result.stdout


def test_a_pipeline_engine_describes_with_the_captioner(tiny_blip, tiny_describer, request):
    if pipelines is None:
        pytest.skip("diffusers is not installed")
    engine = engine_for(request.getfixturevalue("pipelines")["t2i"], tiny_describer)
    try:
        engine.describer = tiny_blip
        d = engine.describe(photo())
        assert d.caption and d.attributes == {}
        assert engine.describe(photo()).caption == d.caption
    finally:
        engine.describer = tiny_describer


def test_pickle_weights_are_refused(tiny_blip, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_blip, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # never opened
    with pytest.raises(CheckpointError, match=r"pickle weights \(pytorch_model.bin\).*safetensors only"):
        load_captioner(folder)
    photo().save(tmp_path / "photo.png")
    result = CliRunner().invoke(app, ["describe", str(tmp_path / "photo.png"), "--describer", str(folder)])
    assert result.exit_code == 2 and "pickle weights" in result.output and "Traceback" not in result.output


def test_a_model_that_is_not_image_to_text_is_refused(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(tmp_path / "bert")
    with pytest.raises(CheckpointError, match=r"not an image-to-text model \(model_type 'bert': BertModel\)"):
        load_captioner(tmp_path / "bert")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_captioner(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="not a hub id"):
        load_captioner(tmp_path / "missing")


def test_the_server_describes_with_the_configured_describer(tiny_blip, tiny_model, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from pixelchat.server.admin import create_key, create_user
    from pixelchat.server.app import create_app
    from pixelchat.server.config import Settings

    monkeypatch.setenv("PIXELCHAT_DESCRIBER", str(tiny_blip))
    api = create_app(Settings(data_dir=tmp_path / "data", model=str(tiny_model), secret_key="test-secret"))
    with api.state.sessions() as db:
        create_user(db, "ada")
        key = create_key(db, "ada")
    buffer = io.BytesIO()
    photo().save(buffer, "PNG")
    with TestClient(api) as client:
        r = client.post("/api/describe", headers={"Authorization": f"Bearer {key}"},
                        files={"image": ("photo.png", buffer.getvalue(), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["caption"] and body["prompt"] and body["attributes"] == {}
