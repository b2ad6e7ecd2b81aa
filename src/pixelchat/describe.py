"""`pixelchat.describe(image)`: what a picture shows, in words, attributes and a prompt."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from pixelchat.engines import load_engine
from pixelchat.imagefiles import load_image, to_rgb
from pixelchat.vision.captioner import chosen_describer, load_captioner


def as_image(image: Image.Image | str | os.PathLike) -> Image.Image:
    """A picture from a path (size limits, EXIF rotation, transparency on white) or an open image."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    return load_image(image)


def describe(image: Image.Image | str | os.PathLike, *, model: str | Path | None = None, engine: str | None = None,
             describer: str | Path | None = None):
    """A `pixelchat.vision.Description` of ``image``: caption, attributes with confidences, and a
    prompt that redraws a similar picture with ``model`` (default: the shipped one) served by
    ``engine`` ("gan" or "diffusers"; default: inferred from ``model``).

    describer: an image-to-text model (a folder saved with save_pretrained, or a hub id; BLIP, GIT,
    ...; default: ``PIXELCHAT_DESCRIBER``) that describes any picture in free words: then the
    caption and prompt are its own and there are no scene attributes. Without one, the model's
    own describer reads the picture (the built-in one knows the scenes vocabulary)."""
    chosen = chosen_describer(describer)
    if chosen is not None:
        return load_captioner(chosen).describe(as_image(image))
    return load_engine(model, engine).describe(as_image(image))
