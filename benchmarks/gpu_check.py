"""One prepared check of every open-vocabulary path on one device: does it run, how long does it take.

Each path goes through pixelchat's own loading code and engines: text-to-image, image-to-image and
inpainting (`DiffusersEngine.generate` / `edit`), an instruction edit (an InstructPix2Pix pipeline),
the settings (every scheduler that fits the pipeline, with steps and guidance, on generate and on
an edit), the describer (`vision.captioner`, through the engine's `describe`), image-text
similarity (`vision.similarity`) and the built-in engine. Per path the JSON says ok or the error,
and seconds to load, for the first call and the median of the steady calls after it, and the peak
GPU memory (`torch.cuda.max_memory_allocated`; the models that stay loaded count).

Nothing is downloaded. Models are folders given on the command line (real models, fetched once on
a machine with network: docs/real-models.md), or else built here from configs with random weights
(the cost of a call does not depend on the weights), saved with `save_pretrained` (safetensors)
into a temporary folder and loaded from there: ``--sizes sd15`` has Stable Diffusion 1.5's shapes
(as benchmarks/bench_diffusers.py builds them), a BLIP-base-sized describer and a CLIP
ViT-B/32-sized similarity model; ``--sizes tiny`` a few channels each, for a quick run anywhere.

    python benchmarks/gpu_check.py --device cuda --dtype fp16 --sizes sd15 --out gpu-check.json
    python benchmarks/gpu_check.py --device cuda --sd models/sd15 --instruct models/instruct-pix2pix \\
        --describer models/blip-base --similarity models/clip-vit-base-patch32
    python benchmarks/gpu_check.py --device cpu --dtype fp32 --sizes tiny --steps 2   # seconds, on a CPU

Each path runs on its own: one that fails is recorded and the rest still run; the JSON is
rewritten after every path, so a run cut short leaves what it measured. ``--budget`` skips the
paths left once that many seconds have gone. Exit status 1 when a path failed or was skipped
(a path whose pixelchat API is not there is "not available" and does not count).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a folder that is not there must fail, not download
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from _machine import machine  # noqa: E402

PATHS = ("text-to-image", "image-to-image", "inpainting", "instruction-edit", "settings", "describer", "similarity",
         "built-in")
PROMPT = "a photo of a cat sitting on a red couch"
WORDS = "a photo of an the cat dog sitting on red couch make it snow winter hat at sunset lake".split()


@dataclass(frozen=True)
class Shapes:
    """The shapes of the random models built when no folder is given."""
    unet_channels: tuple[int, ...]
    unet_layers: int
    unet_heads: int  # attention_head_dim, as diffusers' SD 1.5 config names it
    unet_groups: int
    latent_size: int  # the picture is latent_size × 2^(len(vae_channels) - 1) pixels
    vae_channels: tuple[int, ...]
    vae_layers: int
    vae_groups: int
    text_width: int  # the CLIP text encoder: hidden size, layers, heads, tokens, vocabulary
    text_layers: int
    text_heads: int
    text_tokens: int
    text_vocab: int
    blip: dict  # BlipConfig's text_config / vision_config overrides, the describer's picture size
    clip: dict  # CLIPConfig's text_config / vision_config overrides, the similarity model's picture size


SHAPES = {
    "tiny": Shapes(
        unet_channels=(8, 16), unet_layers=1, unet_heads=2, unet_groups=4, latent_size=16, vae_channels=(8, 16),
        vae_layers=1, vae_groups=4, text_width=16, text_layers=2, text_heads=2, text_tokens=16, text_vocab=0,
        blip=dict(text=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                            max_position_embeddings=32, encoder_hidden_size=16),
                  vision=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8),
                  projection_dim=16, vocab=0, image_size=32),
        clip=dict(text=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                            max_position_embeddings=32),
                  vision=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8),
                  projection_dim=8, image_size=32)),
    # SD 1.5: UNet 860 M, VAE 84 M, CLIP ViT-L/14 text tower 123 M; BLIP base; CLIP ViT-B/32
    "sd15": Shapes(
        unet_channels=(320, 640, 1280, 1280), unet_layers=2, unet_heads=8, unet_groups=32, latent_size=64,
        vae_channels=(128, 256, 512, 512), vae_layers=2, vae_groups=32, text_width=768, text_layers=12,
        text_heads=12, text_tokens=77, text_vocab=49408,
        blip=dict(text=dict(), vision=dict(image_size=384, patch_size=16), projection_dim=512, vocab=30524,
                  image_size=384),
        clip=dict(text=dict(), vision=dict(), projection_dim=512, image_size=224)),
}


# --- random models, saved as a user's folders would be -------------------------------------------


def clip_tokenizer(root: Path, tokens: int):
    """A byte-pair tokenizer over our words and single letters (no merges); prompts are padded to
    ``tokens``, so the text encoder does its full work."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [w + "</w>" for w in WORDS] + [c + e for c in "abcdefghijklmnopqrstuvwxyz" for e in ("", "</w>")]:
        vocab.setdefault(token, len(vocab))
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=tokens)


def save_pipeline(root: Path, shapes: Shapes, kind: str) -> Path:
    """A text-to-image pipeline (``kind`` "sd") or an InstructPix2Pix one ("instruct": its UNet reads
    8 channels, the noisy latents and the picture's), saved with save_pretrained."""
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionInstructPix2PixPipeline,
                           StableDiffusionPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer(root, shapes.text_tokens)
    s = shapes
    down = ("CrossAttnDownBlock2D",) * (len(s.unet_channels) - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (len(s.unet_channels) - 1)

    def components(in_channels: int) -> dict:
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=s.latent_size, in_channels=in_channels, out_channels=4, layers_per_block=s.unet_layers,
            block_out_channels=s.unet_channels, down_block_types=down, up_block_types=up,
            cross_attention_dim=s.text_width, attention_head_dim=s.unet_heads, norm_num_groups=s.unet_groups)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=s.vae_layers,
            block_out_channels=s.vae_channels, norm_num_groups=s.vae_groups,
            down_block_types=("DownEncoderBlock2D",) * len(s.vae_channels),
            up_block_types=("UpDecoderBlock2D",) * len(s.vae_channels),
            sample_size=s.latent_size * 2 ** (len(s.vae_channels) - 1))
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=s.text_vocab or len(tokenizer), hidden_size=s.text_width, intermediate_size=4 * s.text_width,
            num_hidden_layers=s.text_layers, num_attention_heads=s.text_heads, max_position_embeddings=s.text_tokens,
            hidden_act="quick_gelu", projection_dim=s.text_width, bos_token_id=0, eos_token_id=1, pad_token_id=1))
        scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  clip_sample=False, set_alpha_to_one=False, steps_offset=1)
        return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                    safety_checker=None, feature_extractor=None, requires_safety_checker=False)

    if kind == "instruct":
        folder, pipeline = root / "random-instruct-pix2pix", StableDiffusionInstructPix2PixPipeline(**components(8))
    else:
        folder, pipeline = root / "random-sd", StableDiffusionPipeline(**components(4))
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


def save_describer(root: Path, shapes: Shapes) -> Path:
    """BlipForConditionalGeneration with its processor; the word-level vocabulary fills the model's
    so that every token it writes decodes to a word."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    b = shapes.blip
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    words += [f"word{i}" for i in range(max(0, b["vocab"] - 1 - len(words)))]  # [DEC] comes last
    (root / "bert-vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(root / "bert-vocab.txt"))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    torch.manual_seed(0)
    config = BlipConfig(text_config=dict(b["text"], vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                         sep_token_id=3, pad_token_id=0),
                        vision_config=b["vision"], projection_dim=b["projection_dim"])
    folder = root / "random-blip"
    BlipForConditionalGeneration(config).save_pretrained(folder, safe_serialization=True)
    size = b["image_size"]
    BlipProcessor(BlipImageProcessor(size={"height": size, "width": size}), tokenizer).save_pretrained(folder)
    return folder


def save_similarity(root: Path, shapes: Shapes) -> Path:
    """CLIPModel with its processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    c = shapes.clip
    tokenizer = clip_tokenizer(root, 77)
    torch.manual_seed(0)
    config = CLIPConfig(text_config=dict(c["text"], vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=1,
                                         pad_token_id=1),
                        vision_config=c["vision"], projection_dim=c["projection_dim"])
    folder = root / "random-clip"
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    size = c["image_size"]
    CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
                  tokenizer).save_pretrained(folder)
    return folder


# the models each path loads
NEEDS = {"text-to-image": ("sd",), "image-to-image": ("sd",), "inpainting": ("sd",), "settings": ("sd",),
         "instruction-edit": ("instruct",), "describer": ("sd", "describer"), "similarity": ("similarity",),
         "built-in": ()}
SAVERS = {"sd": lambda root, shapes: save_pipeline(root, shapes, "sd"),
          "instruct": lambda root, shapes: save_pipeline(root, shapes, "instruct"),
          "describer": save_describer, "similarity": save_similarity}


def random_models(root: Path, sizes: str, given: dict[str, Path | None], paths: list[str]) -> dict[str, Path]:
    """The model folders ``paths`` load: those given, the others built with ``sizes`` shapes under ``root``."""
    from pixelchat.engines.diffusers import quiet

    folders = dict(given)
    with quiet():
        for kind in dict.fromkeys(k for p in paths for k in NEEDS[p]):
            folders[kind] = folders[kind] or SAVERS[kind](root, SHAPES[sizes])
    return folders


# --- measuring one path --------------------------------------------------------------------------


class CheckFailed(AssertionError):
    """A path ran but its result is not what pixelchat promises."""


class NotAvailable(Exception):
    """pixelchat has no API for this path (yet)."""


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def seconds(fn, device: str):
    """fn's result and its wall time, the GPU's queued work included."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


class Measured:
    """One path's entry in the report: what ran, its outcome, its timings."""

    def __init__(self, name: str, device: str):
        self.name, self.device = name, device
        self.entry: dict = {"path": name, "ok": False, "status": "failed", "device": device, "load_s": None,
                            "first_s": None, "steady_p50_s": None, "steady_s": [], "peak_gpu_mib": None}

    def load(self, fn):
        out, self.entry["load_s"] = seconds(fn, self.device)
        return out

    def calls(self, fn, repeats: int) -> list:
        """A first call, then ``repeats`` steady ones (fn gets the call's index, for a new seed)."""
        first, self.entry["first_s"] = seconds(lambda: fn(0), self.device)
        results = [first]
        for i in range(1, repeats + 1):
            out, took = seconds(lambda: fn(i), self.device)
            results.append(out)
            self.entry["steady_s"].append(round(took, 4))
        if self.entry["steady_s"]:
            self.entry["steady_p50_s"] = statistics.median(self.entry["steady_s"])
        return results


def run_path(name: str, device: str, check, report: dict, out: Path | None) -> dict:
    """Run one path's check; whatever it raises is its error, and the next path still runs."""
    path = Measured(name, device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    report["paths"][name] = dict(path.entry, status="running")  # what a run killed here was doing
    write(report, out)
    try:
        note = check(path)
        path.entry.update(ok=True, status="ok")
        if note:
            path.entry["note"] = note
    except NotAvailable as e:
        path.entry.update(ok=None, status="not available", note=str(e))
    except Exception as e:  # any failure of a path is its outcome, not the end of the check
        path.entry["error"] = f"{type(e).__name__}: {e}".strip()
        path.entry["traceback"] = traceback.format_exc(limit=-4)
    finally:
        if cuda:
            path.entry["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        for key in ("load_s", "first_s", "steady_p50_s"):
            if path.entry[key] is not None:
                path.entry[key] = round(path.entry[key], 4)
    report["paths"][name] = path.entry
    write(report, out)
    return path.entry


# --- the paths -------------------------------------------------------------------------------------


def check_paths(folders: dict[str, Path], o: argparse.Namespace) -> dict:
    """Each path as a function of its `Measured`; a check returns an optional note."""
    from pixelchat.engines import GenerateRequest, UnsupportedOperation, load_engine

    state: dict = {}

    def sd_engine():
        engine = load_engine(folders["sd"], "diffusers", device=o.device, dtype=o.dtype, offload=o.offload)
        engine.steps = o.steps
        return engine

    def placed(record: dict, mode: str | None = None) -> None:
        expect((record["device"], record["dtype"]) == (o.device, o.dtype),
               f"the record says {record['device']}/{record['dtype']}, not {o.device}/{o.dtype}")
        expect(record["steps"] == o.steps, f"the record says {record['steps']} steps, not {o.steps}")
        if mode:
            expect(record["edit"]["mode"] == mode, f"the edit ran as {record['edit']['mode']}, not {mode}")

    def text_to_image(p: Measured):
        engine = state["sd"] = p.load(sd_engine)
        size = engine.info.size
        images = p.calls(lambda i: engine.generate(GenerateRequest(PROMPT, seed=i))[0], o.repeats)
        expect(all(g.image.size == (size, size) for g in images), f"pictures are not {size}×{size}")
        placed(images[0].record)
        state["picture"] = images[0]
        return blank(images[0].image)

    def picture():
        if "picture" not in state:  # text-to-image failed or was not asked for: a plain picture to edit
            size = state["sd"].info.size
            gradient = np.linspace(0, 255, size, dtype=np.float32)
            grey = (np.add.outer(gradient, gradient) / 2).astype(np.uint8)  # (H, W)
            state["picture"] = Image.fromarray(np.stack([grey] * 3, -1))
        image = state["picture"]
        return image.image if hasattr(image, "image") else image

    def with_engine(p: Measured):
        if "sd" not in state:
            state["sd"] = p.load(sd_engine)
        return state["sd"]

    def image_to_image(p: Measured):
        engine = with_engine(p)
        source = picture()
        p.entry["load_s"] = (p.entry["load_s"] or 0.0) + seconds(lambda: engine.derived("img2img"), o.device)[1]
        edits = p.calls(lambda i: engine.edit(source, "a dog at sunset", strength=0.6, seed=i)[0], o.repeats)
        expect(edits[0].image.size == source.size, "the edit changed the picture's size")
        placed(edits[0].record, "img2img")
        return blank(edits[0].image)

    def inpainting(p: Measured):
        engine = with_engine(p)
        source = picture()
        w, h = source.size
        mask = np.zeros((h, w), dtype=np.float32)
        mask[:, w // 2:] = 1.0  # the right half may change
        p.entry["load_s"] = (p.entry["load_s"] or 0.0) + seconds(lambda: engine.derived("inpaint"), o.device)[1]
        edits = p.calls(lambda i: engine.edit(source, "a red hat", mask=mask, seed=i)[0], o.repeats)
        placed(edits[0].record, "inpaint")
        kept = np.asarray(source.convert("RGB"))[:, : w // 4], np.asarray(edits[0].image)[:, : w // 4]
        expect(np.array_equal(*kept), "inpainting changed pixels outside the mask")
        return blank(edits[0].image)

    def instruction_edit(p: Measured):
        engine = p.load(lambda: load_engine(folders["instruct"], "diffusers", device=o.device, dtype=o.dtype,
                                            offload=o.offload))
        engine.steps = o.steps
        expect(engine.instruction_edits, f"{folders['instruct']} is not an instruction-edit pipeline "
                                         f"({engine.info.arch})")
        source = picture() if "sd" in state else Image.new("RGB", (engine.info.size,) * 2, (90, 120, 200))
        edits = p.calls(lambda i: engine.edit(source, "make it winter", seed=i)[0], o.repeats)
        placed(edits[0].record, "instruct")
        expect(edits[0].record["edit"]["image_guidance"] == engine.image_guidance, "image_guidance not recorded")
        return blank(edits[0].image)

    def settings(p: Measured):
        engine = with_engine(p)
        names = engine.fitting_schedulers()
        p.entry["schedulers"] = {}
        missing = []
        steps, guidance = o.steps, 3.0  # guidance other than the engine's default: the call's own must be used
        for k, name in enumerate(names):  # every scheduler that fits; one failing does not stop the others
            try:  # load: making every scheduler from the pipeline's own config
                made = seconds(lambda: engine.scheduler_for(name), o.device)[1]
                p.entry["load_s"] = (p.entry["load_s"] or 0.0) + made
            except UnsupportedOperation as e:  # a scheduler whose package is not installed
                p.entry["schedulers"][name] = {"ok": None, "note": str(e)}
                missing.append(name)
                continue
            try:
                image, took = seconds(lambda: engine.generate(GenerateRequest(
                    PROMPT, seed=k, steps=steps, guidance=guidance, scheduler=name))[0], o.device)
                r = image.record
                expect((r["scheduler_name"], r["steps"], r["guidance"]) == (name, steps, guidance),
                       f"the record says {r['scheduler_name']}, {r['steps']} steps, guidance {r['guidance']}")
                p.entry["schedulers"][name] = {"ok": True, "class": r["scheduler"], "seconds": round(took, 4)}
            except Exception as e:  # recorded per scheduler; the path fails below
                p.entry["schedulers"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}".strip()}
        ran = [v["seconds"] for v in p.entry["schedulers"].values() if v["ok"]]
        expect(bool(ran), "no scheduler ran")
        p.entry["first_s"], p.entry["steady_s"] = ran[0], ran[1:]
        p.entry["steady_p50_s"] = statistics.median(ran[1:]) if ran[1:] else None
        edited = engine.edit(picture(), "a dog at sunset", strength=0.8, seed=1, steps=o.steps + 1, guidance=2.0,
                             scheduler=names[0])[0].record
        expect((edited["steps"], edited["guidance"], edited["scheduler_name"], edited["edit"]["strength"])
               == (o.steps + 1, 2.0, names[0], 0.8), "an edit's settings did not reach its record")
        failed = [n for n, v in p.entry["schedulers"].items() if v["ok"] is False]
        expect(not failed, f"scheduler(s) failed at {steps} steps: " + "; ".join(
            f"{n}: {p.entry['schedulers'][n]['error']}" for n in failed))
        return f"{len(ran)} schedulers ran" + (f"; not installed: {', '.join(missing)}" if missing else "")

    def describer(p: Measured):
        from pixelchat.vision.captioner import load_captioner

        engine = with_engine(p)
        captioner = p.load(lambda: load_captioner(folders["describer"], device=o.device))
        engine.describer = captioner
        dtype = str(next(captioner.model.parameters()).dtype).removeprefix("torch.")
        p.entry["dtype"] = dtype
        source = picture()
        said = p.calls(lambda i: engine.describe(source), o.repeats)
        expect(said[0].caption.strip() != "", "the describer wrote an empty caption")
        expect(isinstance(said[0].prompt, str), "the description has no redraw prompt")
        return f"{dtype}; caption: {said[0].caption[:60]!r}"

    def similarity(p: Measured):
        try:  # the API this path uses: load_similarity(folder, device=...).scores(image, texts)
            module = importlib.import_module("pixelchat.vision.similarity")
            load_similarity = module.load_similarity
            inspect.signature(load_similarity).bind(folders["similarity"], device=o.device)
            inspect.signature(module.Similarity.scores).bind(None, Image.new("RGB", (8, 8)), [PROMPT])
        except (ImportError, AttributeError, TypeError) as e:
            raise NotAvailable(f"pixelchat.vision.similarity has no usable load_similarity(folder, device=...)"
                               f".scores(image, texts) ({type(e).__name__}: {e})") from None
        model = p.load(lambda: load_similarity(folders["similarity"], device=o.device))
        dtype = str(next(model.model.parameters()).dtype).removeprefix("torch.")
        p.entry["dtype"] = dtype
        source = picture()
        texts = [PROMPT, "a lake at sunset"]
        scores = p.calls(lambda i: model.scores(source, texts), o.repeats)[0]
        expect(len(scores) == 2 and all(math.isfinite(s) and -1.0 <= s <= 1.0 for s in scores),
               f"scores are not two cosines: {scores}")
        return f"{dtype}; scores {scores}"

    def built_in(p: Measured):
        note = None
        try:
            engine = p.load(lambda: load_engine(device=o.device, dtype=o.dtype))
        except UnsupportedOperation as e:  # the built-in networks run on the CPU in float32
            engine = p.load(load_engine)
            p.entry["device"] = "cpu"
            note = f"CPU only: {e}"
        images = p.calls(lambda i: engine.generate(GenerateRequest("a lake at sunset", seed=i))[0], o.repeats)
        size = engine.info.default_size
        expect(images[0].image.size == (size, size), f"the built-in engine drew {images[0].image.size}, not {size}")
        return note or f"{engine.info.id}"

    return {"text-to-image": text_to_image, "image-to-image": image_to_image, "inpainting": inpainting,
            "instruction-edit": instruction_edit, "settings": settings, "describer": describer,
            "similarity": similarity, "built-in": built_in}


def blank(image: Image.Image) -> str | None:
    """A note when a picture is one flat colour: what fp16 overflow (NaN latents) turns into."""
    return "the picture is one flat colour (NaN or overflow in this dtype?)" if np.asarray(image).std() == 0 else None


# --- the report --------------------------------------------------------------------------------------


def machine_info(device: str) -> dict:
    import diffusers
    import transformers

    info = {"machine": machine(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "gpu": None, "gpu_memory_gib": None}
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        info["gpu"] = torch.cuda.get_device_name(index)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1)
    return info


def write(report: dict, out: Path | None) -> None:
    if out is not None:
        out.write_text(json.dumps(report, indent=1) + "\n")


def table(report: dict) -> str:
    def num(x, fmt="{:.3f}"):
        return "-" if x is None else fmt.format(x)

    rows = [("path", "status", "load s", "first s", "p50 s", "peak MiB", "note / error")]
    for e in report["paths"].values():
        rows.append((e["path"], e["status"], num(e["load_s"]), num(e["first_s"]), num(e["steady_p50_s"]),
                     num(e["peak_gpu_mib"], "{:.0f}"), (e.get("error") or e.get("note") or "")[:90]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def gpu_check(o: argparse.Namespace, root: Path) -> dict:
    """Every path asked for, in order, on ``o.device``; the report (also written to ``o.out``)."""
    report = {"options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(o).items()},
              "machine": machine_info(o.device), "paths": {}}
    # build the random models (their time is not counted), then run the paths
    start = time.perf_counter()
    given = {"sd": o.sd, "instruct": o.instruct, "describer": o.describer, "similarity": o.similarity}
    folders = random_models(root, o.sizes, given, o.paths)
    report["models"] = {k: {"folder": str(v), "random": given[k] is None} for k, v in folders.items() if v}
    report["build_s"] = round(time.perf_counter() - start, 2)
    checks = check_paths(folders, o)
    start = time.perf_counter()
    for name in o.paths:
        if o.budget is not None and time.perf_counter() - start > o.budget:
            report["paths"][name] = {"path": name, "ok": False, "status": "skipped", "device": o.device,
                                     "load_s": None, "first_s": None, "steady_p50_s": None, "steady_s": [],
                                     "peak_gpu_mib": None, "note": f"the {o.budget:g} s budget was spent"}
            continue
        entry = run_path(name, o.device, checks[name], report, o.out)
        print(f"  {name}: {entry['status']}" + (f" ({entry['error']})" if entry.get("error") else ""), flush=True)
        gc.collect()
        if o.device.startswith("cuda"):
            torch.cuda.empty_cache()
    report["total_s"] = round(time.perf_counter() - start, 2)
    write(report, o.out)
    return report


def folder(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder (a model saved with save_pretrained; hub ids are "
                                         "not fetched here)")
    return path.resolve()


def options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, mps or cpu (default cuda)")
    parser.add_argument("--dtype", default=None, help="fp16, bf16 or fp32 (default fp16 on a GPU, fp32 on the CPU)")
    parser.add_argument("--offload", action="store_true", help="model CPU offload for the pipelines")
    parser.add_argument("--sizes", choices=sorted(SHAPES), default="sd15",
                        help="shapes of the random models built for folders not given (default sd15)")
    parser.add_argument("--sd", type=folder, help="a text-to-image pipeline folder (model_index.json)")
    parser.add_argument("--instruct", type=folder, help="an InstructPix2Pix pipeline folder")
    parser.add_argument("--describer", type=folder, help="an image-to-text model folder (BLIP, GIT, ...)")
    parser.add_argument("--similarity", type=folder, help="an image-text model folder (CLIP, SigLIP)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per picture (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="steady calls after the first (default 3)")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated subset of: {', '.join(PATHS)}")
    parser.add_argument("--budget", type=float, default=None, help="skip the paths left after this many seconds")
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"), help="the JSON report")
    o = parser.parse_args(argv)
    from pixelchat.engines.diffusers import runtime

    try:  # a device that is not there, or fp16 on the CPU: one line, before anything is built
        o.device, o.dtype = runtime(o.device, o.dtype, o.offload)
    except (ValueError, NotImplementedError) as e:
        parser.error(str(e))
    o.paths = [p.strip() for p in o.paths.split(",") if p.strip()]
    unknown = [p for p in o.paths if p not in PATHS]
    if unknown or not o.paths:
        parser.error(f"unknown path(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(PATHS)}")
    if not 1 <= o.steps <= 1000 or o.repeats < 0:
        parser.error("--steps is 1 to 1000 and --repeats 0 or more")
    return o


def main(argv: list[str] | None = None) -> int:
    o = options(argv)
    print("gpu check: " + ", ".join(f"{k}={v}" for k, v in vars(o).items() if v not in (None, False)), flush=True)
    with tempfile.TemporaryDirectory(prefix="pixelchat-gpu-check-") as tmp:
        report = gpu_check(o, Path(tmp))
    m = report["machine"]
    print(f"machine: {m['machine']}; GPU: {m['gpu'] or 'none'}"
          + (f" ({m['gpu_memory_gib']} GiB)" if m["gpu"] else "")
          + f"; diffusers {m['diffusers']}, transformers {m['transformers']}")
    print(f"models built in {report['build_s']} s, paths ran in {report['total_s']} s; "
          f"{o.steps} steps, {o.repeats} steady calls")
    print(table(report))
    print(f"wrote {o.out}")
    return 1 if any(e["ok"] is False for e in report["paths"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
