"""Differentiable augmentation (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient
GAN Training") with Kornia: the same random transforms are applied to every image D sees, real
or generated, and gradients flow through them to G."""

from __future__ import annotations

import kornia.augmentation as K
import torch
import torch.nn as nn

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = set(parts) - set(POLICIES)
    if unknown:
        raise ValueError(f"unknown augmentation(s) {', '.join(sorted(unknown))}; choose from {', '.join(POLICIES)}")
    return parts


def diff_augment(policy: str) -> nn.Module:
    """A module applying ``policy`` (comma-separated: color, translation, cutout) to images in [-1, 1]."""
    ops: list[nn.Module] = []
    for name in parse_policy(policy):
        if name == "color":
            ops.append(K.ColorJiggle(brightness=0.2, contrast=0.2, saturation=0.3, p=1.0))
        elif name == "translation":  # up to 1/8 of the image, as DiffAugment
            ops.append(K.RandomAffine(degrees=0.0, translate=(0.125, 0.125), padding_mode="reflection", p=1.0))
        elif name == "cutout":  # one square of half the side, as DiffAugment
            ops.append(K.RandomErasing(scale=(0.25, 0.25), ratio=(1.0, 1.0), value=0.5, p=1.0))
    if not ops:
        return nn.Identity()
    return _UnitRange(nn.Sequential(*ops))


class _UnitRange(nn.Module):
    """Kornia's colour ops expect [0, 1]; the GAN works in [-1, 1]."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x + 1) / 2) * 2 - 1


def robustness_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """What generated pictures do to renders: shifts, blur, noise; for networks that read pictures
    (attribute readers, captioners). Colours stay: they carry attributes."""
    b = x.shape[0]
    shift = torch.randint(-4, 5, (2,), generator=gen).tolist()
    x = torch.roll(x, shifts=shift, dims=(2, 3))
    x = K.RandomGaussianBlur((5, 5), (0.1, 1.2), p=0.5)(x.contiguous())  # kornia < 0.9 filters need contiguous input
    sigma = torch.rand(b, 1, 1, 1, generator=gen) * 0.08
    return (x + sigma * torch.randn(x.shape, generator=gen)).clamp(-1, 1)
