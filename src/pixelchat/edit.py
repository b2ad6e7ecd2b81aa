"""`pixelchat.edit(image, "make the clouds pink")` and `pixelchat.vary(image)`.

An instruction is read into a revised prompt over what the picture shows now (its description);
a full prompt is taken as it is. The engine then redraws the picture from its latent (its own,
or one found by inversion) under the revised prompt, so what was not asked for stays.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from pixelchat.describe import as_image
from pixelchat.engines import GeneratedImage, load_engine
from pixelchat.engines.base import PIPELINE_SETTINGS, check_pipeline_settings
from pixelchat.data.captions import scene_prompt
from pixelchat.imagefiles import ImageFileError, mask_array, open_image_file, read_record
from pixelchat.text.instructions import Revision, apply_instruction, apply_values, looks_like_instruction, read_attributes


@dataclass
class EditResult:
    images: list[GeneratedImage]
    revised_prompt: str
    revision: Revision  # attributes before → after, notes on what was repaired or left out
    source: dict = field(default_factory=dict)  # how the picture's latent was found

    def to_dict(self) -> dict:
        return {"revised_prompt": self.revised_prompt, **self.revision.to_dict(), "source": self.source}


def revise(current: dict[str, str], text: str, resolve=None) -> Revision:
    """An instruction ("add a boat") revises ``current``; a prompt ("a desert at night") replaces
    what it names and keeps the rest. resolve: maps unknown words to their nearest value (see
    `pixelchat.text.vocabulary.NearestValue`)."""
    if looks_like_instruction(text):
        return apply_instruction(current, text, resolve=resolve)
    return apply_values(current, read_attributes(text), prompt=text.strip())


def pipeline_settings(served, options: dict) -> None:
    """Steps, guidance and scheduler left unset are dropped from ``options``; set ones are refused by an
    engine without them (the built-in models)."""
    for k in PIPELINE_SETTINGS:
        if options.get(k) is None:
            options.pop(k, None)
    check_pipeline_settings(served, **{k: options.get(k) for k in PIPELINE_SETTINGS})


def load_mask(mask, image: Image.Image, size: int | None = None):
    """A mask from a path or picture → array (H, W) in [0, 1], 1 where the picture may change; at the
    picture's size, or at the output's (``size``, a side) when one is asked."""
    if mask is None:
        return None
    if not isinstance(mask, Image.Image):
        mask = open_image_file(mask)
    if size and mask.size == (size, size):
        return mask_array(mask, mask.size)
    if mask.size != image.size:
        raise ImageFileError(f"the mask is {mask.size[0]}×{mask.size[1]}; it must match the picture "
                             f"({image.width}×{image.height})" + (f" or the output ({size}×{size})" if size else ""))
    return mask_array(mask, image.size)


def edit(image: Image.Image | str | os.PathLike, instruction_or_prompt: str, *, mask=None,
         strength: float | None = None, n: int = 1, seed: int | None = None, model: str | Path | None = None,
         engine: str | None = None, wording: str = "full", revision: Revision | None = None,
         **options) -> EditResult:
    """Change ``image`` as ``instruction_or_prompt`` says and keep the rest.

    mask: a path or picture the size of ``image``; white (or transparent) where it may change.
    strength: how far the redraw may move from the picture (0–1; default: the engine's, 0.35 for the
    GAN). engine: "gan" or "diffusers" (default: inferred from ``model``); a pipeline that edits by
    instruction (InstructPix2Pix) is handed ``instruction_or_prompt`` as it is. wording: "full" (the
    revised prompt names everything the picture shows) or "minimal" (for pictures with a record:
    only what their prompt named, plus the changes). revision: the text path's result when the
    caller has already read the instruction (a conversation does); then the picture is not
    described here. A pipeline also takes ``steps``, ``guidance`` and ``scheduler`` (a name such as
    "euler"); the built-in models refuse them. Each result's record holds the revised prompt and its
    new latent, so it can be edited again."""
    if wording not in ("full", "minimal"):
        raise ValueError(f"wording must be 'full' or 'minimal', got {wording!r}")
    served = load_engine(model, engine)
    pipeline_settings(served, options)
    picture = as_image(image)
    m = load_mask(mask, picture, options.get("size"))
    if strength is not None:
        options["strength"] = strength
    if getattr(served, "instruction_edits", False):  # the pipeline reads the instruction itself
        instruction = instruction_or_prompt.strip()
        revision = revision or Revision({}, {}, prompt=instruction)
        images = served.edit(picture, instruction, mask=m, n=n, seed=seed, target=revision.attributes, **options)
    else:
        spec_edits = getattr(served, "spec_edits", False)
        if revision is None:
            current = served.attributes_of(picture) if spec_edits else served.describe(picture).attributes
            revision = revise(current, instruction_or_prompt)
        record = read_record(picture)
        if wording == "minimal" and record and looks_like_instruction(instruction_or_prompt):
            names = set(read_attributes(record.get("prompt", ""))) | set(revision.changes)
            revision.prompt = scene_prompt({k: v for k, v in revision.attributes.items() if k in names},
                                           revision.free_text)
        if spec_edits:  # the spec changes what was asked and keeps the rest
            options["changes"] = {k: after for k, (_, after) in revision.changes.items()}
        images = served.edit(picture, revision.prompt, mask=m, n=n, seed=seed, target=revision.attributes,
                             **options)
    for r in images:
        r.record["edit"]["instruction"] = instruction_or_prompt
        r.image.info["pixelchat"] = r.record
    source = images[0].record["edit"]["source"] if images else {}
    return EditResult(images, revision.prompt, revision, source)


def vary(image: Image.Image | str | os.PathLike, *, strength: float = 0.5, n: int = 4, seed: int | None = None,
         model: str | Path | None = None, engine: str | None = None, **options) -> list[GeneratedImage]:
    """``n`` variations of ``image`` that keep what it shows; ``strength`` (0–1) is how different.
    engine: "gan" or "diffusers" (default: inferred from ``model``). A pipeline also takes ``steps``,
    ``guidance`` and ``scheduler``; the built-in models refuse them."""
    served = load_engine(model, engine)
    pipeline_settings(served, options)
    results = served.vary(as_image(image), strength=strength, n=n, seed=seed, **options)
    for r in results:
        r.image.info["pixelchat"] = r.record
    return results
