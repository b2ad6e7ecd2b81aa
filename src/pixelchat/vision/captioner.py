"""Describe anything: a pretrained image-to-text model (BLIP, GIT, Florence-2, a vision-encoder-
decoder, ...) loaded through `transformers` from a folder or a hub id, safetensors only.

The built-in describer reads the scenes it was trained on (terrain, sky, water); a captioner
writes what any photo shows ("a cat sitting on a red couch") and a prompt to redraw it. It
returns the same `Description` as the built-in describer, with no scene attributes.

A folder is refused before anything opens a weight file when it holds pickle weights only, and
when its config is not one of an image-to-text model.
"""

from __future__ import annotations

import json
import re
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from PIL import Image

from pixelchat.training.checkpoint import HUB_ID, PICKLE_SUFFIXES, CheckpointError, folder_or_hub
from pixelchat.vision.describer import Description

MAX_NEW_TOKENS = 40
# words BLIP-family captioners are known to invent at the start of a caption (a training artefact)
ARTEFACTS = re.compile(r"^(?:arafed|araffe|arafe|araffed|there is|this is)\s+", re.I)
CONVERT = ("python -c \"from transformers import AutoModelForImageTextToText as M; "
           "M.from_pretrained('{src}').save_pretrained('{src}-safetensors', safe_serialization=True)\"")


def need_transformers() -> None:
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        raise CheckpointError("describing with an image-to-text model needs transformers: pip install transformers")


def chosen_describer(describer: str | Path | None = None) -> str | Path | None:
    """The image-to-text model asked for: ``describer``, else ``PIXELCHAT_DESCRIBER``, else None."""
    import os

    return describer or os.environ.get("PIXELCHAT_DESCRIBER") or None


@contextmanager
def quiet():
    """transformers' progress bars and advice off while a model loads; errors still raise."""
    from transformers.utils import logging as tlog

    level, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(level)
        if bars:
            tlog.enable_progress_bar()


def image_to_text_types() -> dict[str, str]:
    """model_type → class name of the image-to-text models this transformers version knows."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return dict(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)


def captioner_folder(model: str | Path) -> tuple[Path, str | None]:
    """The local folder of an image-to-text model (and its hub id when fetched: safetensors and
    configs only, into the Hugging Face cache), checked (`check_captioner_folder`)."""
    return folder_or_hub(model, what="describer folder", check=check_captioner_folder, fetch=fetch_captioner,
                         single_file=lambda path: f"{path} is a single file; a describer is a folder saved with "
                                                  "save_pretrained (config.json, the processor's files and "
                                                  "model.safetensors)")


def fetch_captioner(name: str) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.py.lock"])


def transformers_config(folder: Path) -> dict:
    """The config.json of a transformers model folder; a CheckpointError when it is missing or unreadable."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder} is not a transformers model folder: it has no config.json")
    try:
        return json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{config_file} is not readable JSON: {e}") from None


def require_safetensors(folder: Path, convert: str) -> None:
    """A CheckpointError unless ``folder`` holds safetensors weights, naming the pickle weights it holds
    instead and the command (``convert``) that turns them into safetensors."""
    if sorted(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    hint = (f"it holds pickle weights ({', '.join(pickles)}), which can run code when loaded; pixelchat loads "
            "safetensors only: convert them once, where you trust the file: " + convert) \
        if pickles else "it has no model.safetensors"
    raise CheckpointError(f"{folder} cannot be loaded: {hint}")


def check_captioner_folder(folder: Path) -> dict:
    """The folder's config, when it is an image-to-text model whose weights are safetensors files;
    else a CheckpointError saying what it is instead."""
    config = transformers_config(folder)
    kind = config.get("model_type")
    known = image_to_text_types()
    if kind not in known:
        what = ", ".join(config.get("architectures") or []) or "no architecture named"
        raise CheckpointError(f"{folder} is not an image-to-text model (model_type {kind!r}: {what}); a describer "
                              "writes text from a picture: BLIP, GIT, Florence-2, a vision-encoder-decoder, "
                              f"... ({len(known)} kinds in this transformers)")
    require_safetensors(folder, CONVERT.format(src=folder))
    return config


class Captioner:
    """An image-to-text model and its processor. ``prefix``: text the caption continues (BLIP's
    conditional captioning, e.g. "a photograph of"); empty for none."""

    def __init__(self, model, processor, *, name: str, path: str, device: str = "cpu", prefix: str = "",
                 max_new_tokens: int = MAX_NEW_TOKENS):
        self.model, self.processor = model.eval(), processor
        self.name, self.path, self.device, self.prefix = name, path, device, prefix
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()  # generate is not safe to run twice at once on one model

    def caption(self, image: Image.Image) -> str:
        """What the picture shows, in one sentence."""
        import torch

        inputs = self.processor(images=image.convert("RGB"), text=self.prefix or None, return_tensors="pt")
        dtype = next(self.model.parameters()).dtype
        inputs = {k: (v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items()}
        with self._lock, torch.inference_mode():
            tokens = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, min_new_tokens=1,
                                         do_sample=False)
        text = self.processor.batch_decode(tokens, skip_special_tokens=True)[0]
        return " ".join(text.split())

    def describe(self, image: Image.Image) -> Description:
        """A `Description`: the caption, and a prompt to redraw the picture (the caption without the
        captioner's artefacts). No scene attributes: the model writes free text."""
        caption = self.caption(image)
        return Description(caption=caption, attributes={}, confidence={}, prompt=redraw_prompt(caption))


def redraw_prompt(caption: str) -> str:
    """A text-to-image prompt from a caption: the captioner's stock openings dropped."""
    text = caption.strip().rstrip(".")
    while (shorter := ARTEFACTS.sub("", text)) != text:
        text = shorter
    return text


def is_captioner(describer) -> bool:
    """Whether ``describer`` (a path, hub id or loaded object) names an image-to-text model rather
    than a built-in describer checkpoint."""
    if isinstance(describer, Captioner):
        return True
    if not isinstance(describer, (str, Path)):
        return False
    path = Path(describer).expanduser()
    return (path / "config.json").is_file() or (not path.exists() and bool(HUB_ID.match(str(describer)))
                                                and not str(describer).endswith(".safetensors"))


def load_captioner(model: str | Path, *, device: str | None = None, prefix: str = "") -> Captioner:
    """The captioner in a folder (or at a hub id), loaded once per folder version: on CUDA in fp16
    when a GPU is visible, else on the CPU in fp32 (``device`` chooses)."""
    need_transformers()
    folder, hub_id = captioner_folder(model)
    return _load(str(folder), hub_id, (folder / "config.json").stat().st_mtime, device, prefix)


@lru_cache(maxsize=2)
def _load(folder: str, hub_id: str | None, mtime: float, device: str | None, prefix: str) -> Captioner:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} is not available: no CUDA GPU is visible; use cpu")
    dtype = torch.float32 if device == "cpu" else torch.float16
    try:
        with quiet():
            processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
            model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype, use_safetensors=True,
                                                                local_files_only=True)
    except Exception as e:  # transformers raises many types for a broken folder
        raise CheckpointError(f"could not load the describer in {folder}: {str(e).splitlines()[0]}") from None
    return Captioner(model.to(device), processor, name=hub_id or Path(folder).name, path=hub_id or folder,
                     device=device, prefix=prefix)
