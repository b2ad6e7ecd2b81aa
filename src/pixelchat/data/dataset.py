"""The in-memory form every training source is read into."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image


@dataclass
class CaptionedImages:
    """Images at one square size with one or more captions each."""

    images: torch.Tensor  # (N, 3, size, size) uint8
    captions: list[list[str]]  # per image, at least one caption
    attributes: list[dict] | None = None  # per image, where known (scenes)
    source: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[1] != 3 or self.images.dtype != torch.uint8:
            raise ValueError(f"images must be a (N, 3, H, W) uint8 tensor, got {tuple(self.images.shape)} {self.images.dtype}")
        if len(self.captions) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.captions)} caption lists")
        if any(not caps for caps in self.captions):
            raise ValueError("every image needs at least one caption")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])


def to_square_rgb(image: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square and resize: how every source image is brought to the training size."""
    image = image.convert("RGB")
    w, h = image.size
    s = min(w, h)
    image = image.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if s != size:
        image = image.resize((size, size), Image.Resampling.LANCZOS if s > size else Image.Resampling.BICUBIC)
    return image


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, H, W)
