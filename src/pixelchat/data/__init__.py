"""Datasets: the procedural `scenes` set and readers for users' own captioned images."""

from __future__ import annotations

from pixelchat.data.dataset import CaptionedImages
from pixelchat.data.scenes import ATTRIBUTES, SCHEMA, SceneSample, render_dataset, render_scene, scene_sample


def load_captioned_images(source: str, size: int, *, limit: int | None = None, scenes: int = 20000,
                          captions_per_image: int = 2, progress: bool = True) -> CaptionedImages:
    """Training data by name: ``"scenes"`` renders ``scenes`` samples; anything else is read from disk."""
    if source == "scenes":
        n = min(scenes, limit) if limit else scenes
        return render_dataset(n, size, captions_per_image=captions_per_image, progress=progress)
    from pixelchat.data.readers import read_dataset

    return read_dataset(source, size, limit=limit)


__all__ = ["ATTRIBUTES", "SCHEMA", "CaptionedImages", "SceneSample", "load_captioned_images", "render_dataset",
           "render_scene", "scene_sample"]
