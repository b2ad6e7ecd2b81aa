"""The diffusers engine on tiny random-weight pipelines saved as a user's folder would be: generate,
img2img, inpainting, instruction edits, variations, the CLI, a conversation, the OpenAI endpoint,
and the refusal of pickle weights and corrupt folders."""

from __future__ import annotations

import base64
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("diffusers")

from conftest import serving  # noqa: E402
from pixelchat.cli import app  # noqa: E402
from pixelchat.engines import GenerateRequest, UnsupportedOperation, load_engine  # noqa: E402
from pixelchat.imagefiles import read_record  # noqa: E402
from pixelchat.training.checkpoint import CheckpointError  # noqa: E402

STEPS = 3
WORDS = ["a", "lake", "at", "night", "sunset", "hills", "desert", "make", "it", "the", "clouds", "pink", "add", "snow"]


def tiny_components(in_channels: int):
    """UNet, VAE (scale factor 2: 32 px pictures from 16 × 16 latents), CLIP text encoder and
    tokenizer, scheduler: a few channels each, random weights."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tiny_vocab()), hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
        max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, scheduler=scheduler, safety_checker=None,
                feature_extractor=None, requires_safety_checker=False)


def tiny_vocab() -> dict[str, int]:
    """A byte-pair vocabulary of our test words and single letters (no merges)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [w + "</w>" for w in WORDS] + [c + e for c in "abcdefghijklmnopqrstuvwxyz" for e in ("", "</w>")]:
        vocab.setdefault(token, len(vocab))
    return vocab


@pytest.fixture(scope="session")
def pipelines(tmp_path_factory) -> dict[str, Path]:
    """Two pipeline folders written with save_pretrained (safetensors): text-to-image and InstructPix2Pix."""
    from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    root = tmp_path_factory.mktemp("pipelines")
    (root / "vocab.json").write_text(json.dumps(tiny_vocab()))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=16)
    folders = {"t2i": root / "tiny-sd", "instruct": root / "tiny-pix2pix"}
    StableDiffusionPipeline(tokenizer=tokenizer, **tiny_components(4)).save_pretrained(folders["t2i"])
    StableDiffusionInstructPix2PixPipeline(tokenizer=tokenizer, **tiny_components(8)).save_pretrained(
        folders["instruct"], safe_serialization=True)
    return folders


def engine_for(folder: Path, describer: Path):
    """The engine a user's folder gets (cached per folder, so the CLI, sessions and the server below
    find it with these steps and the tiny describer)."""
    engine = load_engine(folder)
    engine.steps, engine.describer = STEPS, describer
    return engine


@pytest.fixture
def sd(pipelines, tiny_describer):
    return engine_for(pipelines["t2i"], tiny_describer)


@pytest.fixture
def pix2pix(pipelines, tiny_describer):
    return engine_for(pipelines["instruct"], tiny_describer)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_a_pipeline_folder_loads_as_a_diffusers_engine(sd, pipelines):
    from pixelchat.engines.diffusers import DiffusersEngine

    assert isinstance(sd, DiffusersEngine)
    info = sd.info
    assert (info.id, info.engine, info.arch, info.size) == ("tiny-sd", "diffusers", "StableDiffusionPipeline", 32)
    assert len(info.sha256) == 64 and info.path == str(pipelines["t2i"].resolve())
    assert load_engine(str(pipelines["t2i"]), "diffusers") is sd  # loaded once


def test_generate_is_deterministic_per_seed(sd):
    first = sd.generate(GenerateRequest("a lake at night", n=2, seed=3))
    alone = sd.generate(GenerateRequest("a lake at night", n=1, seed=4))
    assert [r.seed for r in first] == [3, 4] and first[0].image.size == (32, 32)
    assert np.array_equal(pixels(first[1].image), pixels(alone[0].image))  # image i gets seed + i
    assert not np.array_equal(pixels(first[0].image), pixels(first[1].image))
    other = sd.generate(GenerateRequest("a lake at night", seed=3, negative_prompt="clouds"))[0]
    assert not np.array_equal(pixels(other.image), pixels(first[0].image))
    record = other.record
    assert record["engine"] == "diffusers" and record["pipeline"] == "StableDiffusionPipeline"
    assert (record["seed"], record["steps"], record["guidance"], record["size"]) == (3, STEPS, 7.5, [32, 32])
    assert record["negative_prompt"] == "clouds" and record["scheduler"] == "DDIMScheduler"
    assert record["model"] == {"id": "tiny-sd", "sha256": sd.info.sha256, "arch": "StableDiffusionPipeline",
                               "text_encoder": "CLIPTextModel"}


def test_batches_and_sizes(sd, monkeypatch):
    monkeypatch.setattr(sd, "batch_size", 2)  # the three 32 px images take two pipeline calls
    requests = [GenerateRequest("hills", n=2, seed=1), GenerateRequest("a desert", seed=9, size=48),
                GenerateRequest("a lake", seed=5, negative_prompt="snow")]
    batched = sd.generate_batch(requests)
    assert [len(b) for b in batched] == [2, 1, 1] and batched[1][0].image.size == (48, 48)
    for request, images in zip(requests, batched):
        for got, alone in zip(images, sd.generate(request)):
            assert np.abs(pixels(got.image) - pixels(alone.image)).max() <= 2  # batched float maths may round apart
    for bad, error in [(GenerateRequest("hills", size=36), ValueError), (GenerateRequest("hills", n=0), ValueError),
                       (GenerateRequest(" "), ValueError),
                       (GenerateRequest("hills", truncation=1.0), UnsupportedOperation)]:
        with pytest.raises(error):
            sd.generate(bad)


def test_img2img_redraws_the_picture(sd):
    picture = sd.generate(GenerateRequest("hills", seed=0))[0].image
    a = sd.edit(picture, "a desert at sunset", strength=0.5, n=2, seed=7)
    b = sd.edit(picture, "a desert at sunset", strength=0.5, n=1, seed=8)
    assert [r.seed for r in a] == [7, 8] and np.array_equal(pixels(a[1].image), pixels(b[0].image))
    assert a[0].image.size == (32, 32) and not np.array_equal(pixels(a[0].image), pixels(picture))
    edit = a[0].record["edit"]
    assert (edit["mode"], edit["strength"]) == ("img2img", 0.5)
    assert a[0].record["pipeline"] == "StableDiffusionImg2ImgPipeline"
    assert sd.derived("img2img").unet is sd.pipeline.unet  # the weights are shared, not loaded again
    with pytest.raises(ValueError, match="no denoising step"):
        sd.edit(picture, "a desert", strength=0.3)  # 3 steps × 0.3 rounds down to none
    with pytest.raises(UnsupportedOperation, match="candidates"):
        sd.edit(picture, "a desert", candidates=4)


def test_inpainting_keeps_the_pixels_outside_the_mask(sd):
    import pixelchat

    picture = pixelchat.generate("hills", seed=2, model=sd)[0]
    mask = Image.new("RGBA", (32, 32), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 16))  # OpenAI's convention: the transparent top half changes
    result = pixelchat.edit(picture, "a lake at night", mask=mask, seed=1, model=sd).images[0]
    change = np.abs(pixels(result.image) - pixels(picture))
    assert change[16:].max() == 0 and change[:16].mean() > 10
    assert result.record["edit"]["mode"] == "inpaint" and result.record["edit"]["strength"] == 1.0
    assert result.record["pipeline"] == "StableDiffusionInpaintPipeline"


def test_instruction_edits_take_the_words_as_said(sd, pix2pix):
    import pixelchat

    picture = sd.generate(GenerateRequest("hills", seed=0))[0].image
    night = pixelchat.edit(picture, "make it night", seed=3, model=pix2pix)
    snow = pixelchat.edit(picture, "add snow", seed=3, model=pix2pix)
    assert night.revised_prompt == "make it night" and night.images[0].prompt == "make it night"
    record = night.images[0].record
    assert record["pipeline"] == "StableDiffusionInstructPix2PixPipeline" and record["edit"]["mode"] == "instruct"
    assert record["edit"]["instruction"] == "make it night" and record["edit"]["image_guidance"] == 1.5
    assert not np.array_equal(pixels(night.images[0].image), pixels(snow.images[0].image))
    mask = np.zeros((32, 32), np.float32)
    mask[:, :16] = 1
    masked = pix2pix.edit(picture, "make it night", mask=mask, seed=3)[0]
    assert np.abs(pixels(masked.image) - pixels(picture))[:, 16:].max() == 0
    with pytest.raises(UnsupportedOperation, match="cannot draw from text"):
        pix2pix.generate(GenerateRequest("hills"))
    with pytest.raises(UnsupportedOperation, match="no variations"):
        pix2pix.vary(picture)


def test_variations_keep_the_pictures_prompt(sd):
    import pixelchat

    picture = pixelchat.generate("a lake at sunset", seed=4, model=sd)[0]
    results = pixelchat.vary(picture, n=2, seed=11, model=sd)
    assert [r.seed for r in results] == [11, 12] and [r.prompt for r in results] == ["a lake at sunset"] * 2
    assert not np.array_equal(pixels(results[0].image), pixels(results[1].image))
    vary = results[0].record["vary"]
    assert vary["strength"] == 0.5 and vary["source"]["prompt"] == "a lake at sunset"
    assert vary["source"]["model_sha256"] == sd.info.sha256 and vary["source"]["seed"] == 4
    plain = pixelchat.vary(Image.fromarray(np.asarray(picture)), n=1, seed=11, model=sd)[0]  # no record: no prompt
    assert plain.prompt == "" and plain.image.size == (32, 32)


def test_describe_reads_the_picture_with_the_describer(sd):
    import pixelchat

    picture = sd.generate(GenerateRequest("hills", seed=0))[0].image
    d = pixelchat.describe(picture, model=sd.info.path, engine="diffusers")
    assert d.caption and d.prompt and set(d.attributes) <= set(d.confidence)


def test_cli_generate_and_edit_write_files_with_their_records(sd, pipelines, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["generate", "a lake at night", "--n", "2", "--seed", "5", "--out", str(tmp_path),
                                 "--model", str(pipelines["t2i"]), "--engine", "diffusers", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["seeds"] == [5, 6] and out["model"]["id"] == "tiny-sd"
    record = read_record(out["files"][0])
    assert record["engine"] == "diffusers" and record["steps"] == STEPS and record["seed"] == 5
    with Image.open(out["files"][0]) as image:
        assert "trainedAlgorithmicMedia" in image.text["XML:com.adobe.xmp"]
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 16, 32))
    mask.save(tmp_path / "mask.png")
    result = runner.invoke(app, ["edit", out["files"][0], "a desert at sunset", "--mask", str(tmp_path / "mask.png"),
                                 "--seed", "2", "--out", str(tmp_path / "edits"), "--model", str(pipelines["t2i"]),
                                 "--engine", "diffusers", "--json"])
    assert result.exit_code == 0, result.output
    edited = json.loads(result.stdout)
    record = read_record(edited["files"][0])
    assert record["edit"]["mode"] == "inpaint" and record["prompt"] == edited["revised_prompt"] == "a desert at sunset"
    assert record["edit"]["source"]["prompt"] == "a lake at night" and record["model"]["sha256"] == sd.info.sha256


def test_cli_hands_a_hub_id_to_the_loader_intact(monkeypatch, tmp_path):
    from diffusers import DiffusionPipeline

    asked = []

    def offline(name, **kwargs):
        asked.append((name, kwargs.get("use_safetensors")))
        raise OSError("Name or service not known")

    monkeypatch.setattr(DiffusionPipeline, "download", offline)
    result = CliRunner().invoke(app, ["generate", "a lake", "--model", "someone/tiny-pipeline", "--engine", "diffusers",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2 and asked == [("someone/tiny-pipeline", True)]
    assert "could not fetch 'someone/tiny-pipeline'" in result.output and "hf download" in result.output


def test_a_conversation_runs_on_a_pipeline(sd, pipelines, tmp_path):
    from pixelchat.conversation import Session

    s = Session(model=pipelines["t2i"], seed=1, checks=1)
    first = s.turn("a lake at sunset")
    assert first.kind == "generate" and first.node.record["engine"] == "diffusers"
    changed = s.turn("add snow")
    assert changed.kind == "edit", changed.reply
    assert changed.node.record["edit"]["mode"] == "img2img" and changed.node.record["edit"]["instruction"] == "add snow"
    assert s.turn("what do you see?").reply.startswith("I see ")
    again = Session.load(s.save(tmp_path / "chat.json"))
    assert again.model == str(pipelines["t2i"])
    assert again.turn("another one").kind == "vary"


def test_the_openai_endpoint_serves_a_pipeline(sd, pipelines, tmp_path):
    with serving(tmp_path / "data", pipelines["t2i"], engine="diffusers") as client:
        r = client.post("/v1/images/generations", headers=client.as_user(),
                        json={"prompt": "a lake at night", "n": 2, "seed": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["data"]) == 2 and body["size"] == "32x32"
    first = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    record = json.loads(first.text["pixelchat"])
    assert record["engine"] == "diffusers" and record["seed"] == 5 and record["model"]["id"] == "tiny-sd"
    alone = sd.generate(GenerateRequest("a lake at night", seed=5))[0].image
    assert np.abs(pixels(first) - pixels(alone)).max() <= 2  # the watermark moves pixels by at most a step


class Mark:
    """A pickle that creates a file when it is loaded: proof of whether anything unpickled it."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def test_pickle_weights_are_refused_before_anything_unpickles_them(pipelines, tmp_path):
    marker = tmp_path / "unpickled"
    payload = Mark(marker).__reduce__()
    payload[0](*payload[1])  # what unpickling the file would run: it makes the marker
    assert marker.exists()
    marker.unlink()
    bomb = pickle.dumps(Mark(marker))
    assert b"Path.touch" in bomb and marker.name.encode() in bomb  # the file carries that call

    folder = tmp_path / "pickled"
    shutil.copytree(pipelines["t2i"], folder)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(bomb)
    with pytest.raises(CheckpointError, match="pickle weights") as e:
        load_engine(folder)
    assert "unet/diffusion_pytorch_model.bin" in str(e.value) and "safe_serialization=True" in str(e.value)
    single = tmp_path / "model.ckpt"
    single.write_bytes(bomb)
    with pytest.raises(CheckpointError, match="from_single_file"):
        load_engine(single, "diffusers")
    assert not marker.exists()

    beside = tmp_path / "beside"  # pickles next to safetensors files are never opened
    shutil.copytree(pipelines["t2i"], beside)
    for part in ("unet", "vae", "text_encoder"):
        (beside / part / "pytorch_model.bin").write_bytes(bomb)
    assert load_engine(beside).generate(GenerateRequest("hills", seed=0))[0].image.size == (32, 32)
    assert not marker.exists()


def test_broken_folders_get_clear_errors(pipelines, tmp_path):
    folder = tmp_path / "corrupt"
    shutil.copytree(pipelines["t2i"], folder)
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="vae/diffusion_pytorch_model.safetensors is not a readable safetensors"):
        load_engine(folder)
    (folder / "model_index.json").unlink()
    with pytest.raises(CheckpointError, match="no model_index.json"):
        load_engine(folder, "diffusers")
    with pytest.raises(CheckpointError, match="no pipeline folder"):
        load_engine(tmp_path / "missing", "diffusers")


@pytest.mark.parametrize("kind", ["pipeline", "describer"])
def test_pipelines_and_describers_find_folders_and_hub_ids_alike(kind, monkeypatch, tmp_path):
    import huggingface_hub
    from diffusers import DiffusionPipeline

    from pixelchat.engines.diffusers import pipeline_folder
    from pixelchat.vision.captioner import captioner_folder

    def unreachable(name, **kwargs):
        raise OSError()  # a failure that says nothing of itself

    monkeypatch.setattr(DiffusionPipeline, "download", unreachable)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    resolve = pipeline_folder if kind == "pipeline" else captioner_folder
    with pytest.raises(CheckpointError, match=r"could not fetch 'someone/model' from the Hugging Face hub \(OSError\)"
                                              r"; .*hf download someone/model"):
        resolve("someone/model")
    with pytest.raises(CheckpointError, match=rf"no {kind} folder at .*missing, and .* is not a hub id"):
        resolve(tmp_path / "missing")
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"weights.safetensors is a single file"):
        resolve(tmp_path / "weights.safetensors")
