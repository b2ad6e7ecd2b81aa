"""Image-text similarity: how well a picture matches a prompt, by a pretrained dual encoder (CLIP,
SigLIP) loaded through `transformers` from a folder or a hub id, safetensors only.

The built-in describer checks a scenes picture attribute by attribute; a picture drawn from free
words has no attributes, so an open-vocabulary conversation checks it against its revised prompt
instead: the cosine of the picture's and the text's embeddings (CLIPScore without its 2.5 weight:
Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric for Image Captioning", eq. 1).

A folder is refused before anything opens a weight file when it holds pickle weights only, and
when its config is not one of an image-text dual encoder.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from pathlib import Path

from PIL import Image

from pixelchat.training.checkpoint import CheckpointError, folder_or_hub
from pixelchat.vision.captioner import (
    CONVERT, fetch_captioner, need_transformers, quiet, require_safetensors, transformers_config,
)

# model_type → the dual-encoder class whose forward returns normalised image and text embeddings
FAMILIES = {"clip": "CLIPModel", "siglip": "SiglipModel", "siglip2": "Siglip2Model"}
# Where a picture stops matching a text, per family: a starting point for the usual checkpoints
# (CLIP ViT-B/32 and ViT-L/14 put a matching caption near 0.3 and an unrelated one near 0.15;
# SigLIP's cosines run lower). `min_score` sets another.
MIN_SCORES = {"clip": 0.22, "siglip": 0.08, "siglip2": 0.08}


def chosen_similarity(similarity: str | Path | None = None) -> str | Path | None:
    """The similarity model asked for: ``similarity``, else ``PIXELCHAT_SIMILARITY``, else None."""
    return similarity or os.environ.get("PIXELCHAT_SIMILARITY") or None


def similarity_folder(model: str | Path) -> tuple[Path, str | None]:
    """The local folder of an image-text model (and its hub id when fetched: safetensors and configs
    only, into the Hugging Face cache), checked (`check_similarity_folder`)."""
    return folder_or_hub(model, what="similarity model folder", check=check_similarity_folder, fetch=fetch_captioner,
                         single_file=lambda path: f"{path} is a single file; a similarity model is a folder saved "
                                                  "with save_pretrained (config.json, the processor's files and "
                                                  "model.safetensors)")


def check_similarity_folder(folder: Path) -> dict:
    """The folder's config, when it is an image-text dual encoder (`FAMILIES`) whose weights are
    safetensors files; else a CheckpointError saying what it is instead."""
    config = transformers_config(folder)
    kind, architectures = config.get("model_type"), config.get("architectures") or []
    if kind not in FAMILIES or any(a != FAMILIES[kind] for a in architectures):
        what = ", ".join(architectures) or "no architecture named"
        raise CheckpointError(f"{folder} is not an image-text similarity model (model_type {kind!r}: {what}); the "
                              f"self-check needs a dual encoder that embeds pictures and text: "
                              f"{', '.join(FAMILIES.values())}")
    require_safetensors(folder, CONVERT.format(src=folder).replace("AutoModelForImageTextToText", "AutoModel"))
    return config


class Similarity:
    """A dual encoder and its processor. ``min_score``: the cosine below which a picture is taken
    not to show a text (default: the family's, `MIN_SCORES`)."""

    def __init__(self, model, processor, *, family: str, name: str, path: str, device: str = "cpu",
                 min_score: float | None = None):
        self.model, self.processor = model.eval(), processor
        self.family, self.name, self.path, self.device = family, name, path, device
        self.min_score = MIN_SCORES[family] if min_score is None else check_min_score(min_score)
        self._lock = threading.Lock()

    def scores(self, image: Image.Image, texts: list[str]) -> list[float]:
        """The cosine of ``image``'s embedding with each text's, in [-1, 1]."""
        import torch

        # SigLIP was trained on texts padded to the full length; CLIP on texts padded to the batch's
        padding = "max_length" if self.family.startswith("siglip") else True
        inputs = self.processor(text=list(texts), images=image.convert("RGB"), return_tensors="pt",
                                padding=padding, truncation=True)
        dtype = next(self.model.parameters()).dtype
        inputs = {k: (v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items()}
        with self._lock, torch.inference_mode():
            out = self.model(**inputs)
        image_embeds, text_embeds = out.image_embeds.float(), out.text_embeds.float()  # (1, D), (T, D)
        cosine = torch.nn.functional.normalize(image_embeds, dim=-1) @ torch.nn.functional.normalize(
            text_embeds, dim=-1).T  # (1, T)
        return [round(float(c), 4) for c in cosine[0]]

    def score(self, image: Image.Image, text: str) -> float:
        return self.scores(image, [text])[0]


def check_min_score(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1.0 <= value <= 1.0:
        raise ValueError(f"min_score is a cosine between -1 and 1, got {value!r}")
    return float(value)


def load_similarity(model: str | Path, *, device: str | None = None, min_score: float | None = None) -> Similarity:
    """The similarity model in a folder (or at a hub id), loaded once per folder version: on CUDA in
    fp16 when a GPU is visible, else on the CPU in fp32 (``device`` chooses)."""
    need_transformers()
    if min_score is not None:
        check_min_score(min_score)
    folder, hub_id = similarity_folder(model)
    loaded = _load(str(folder), hub_id, (folder / "config.json").stat().st_mtime, device)
    if min_score is None:
        return loaded
    return Similarity(loaded.model, loaded.processor, family=loaded.family, name=loaded.name, path=loaded.path,
                      device=loaded.device, min_score=min_score)


@lru_cache(maxsize=2)
def _load(folder: str, hub_id: str | None, mtime: float, device: str | None) -> Similarity:
    import torch
    import transformers

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} is not available: no CUDA GPU is visible; use cpu")
    dtype = torch.float32 if device == "cpu" else torch.float16
    family = transformers_config(Path(folder))["model_type"]
    try:
        with quiet():
            processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
            model = getattr(transformers, FAMILIES[family]).from_pretrained(
                folder, dtype=dtype, use_safetensors=True, local_files_only=True)
    except Exception as e:  # transformers raises many types for a broken folder
        raise CheckpointError(f"could not load the similarity model in {folder}: {str(e).splitlines()[0]}") from None
    return Similarity(model.to(device), processor, family=family, name=hub_id or Path(folder).name,
                      path=hub_id or folder, device=device)
