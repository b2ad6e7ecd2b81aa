"""Quality as numbers: prompt adherence from judged attributes, and fidelity/diversity in a feature space.

Pure functions over predictions and feature matrices; `evaluate.py` wires them to a model.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Adherence:
    adherence: float  # mean over attributes of the per-attribute accuracy
    exact_match: float  # share of images with every named attribute right
    per_attribute: dict[str, float]
    counts: dict[str, int]  # (image, attribute) pairs scored per attribute

    def to_dict(self) -> dict:
        return {"adherence": self.adherence, "exact_match": self.exact_match, "per_attribute": self.per_attribute,
                "counts": self.counts}


def adherence(predicted: list[dict[str, str]], targets: list[dict[str, str]]) -> Adherence:
    """Compare each image's predicted attributes with the attributes its prompt names (only those).
    Images whose prompt names nothing are skipped; an attribute the prediction lacks counts as wrong."""
    if len(predicted) != len(targets):
        raise ValueError(f"{len(predicted)} predictions for {len(targets)} targets")
    right: dict[str, int] = {}
    total: dict[str, int] = {}
    exact, scored = 0, 0
    for pred, target in zip(predicted, targets):
        if not target:
            continue
        scored += 1
        all_right = True
        for name, value in target.items():
            ok = pred.get(name) == value
            right[name] = right.get(name, 0) + ok
            total[name] = total.get(name, 0) + 1
            all_right &= ok
        exact += all_right
    if not scored:
        raise ValueError("no prompt names any attribute: adherence needs prompts with attributes")
    per = {name: right[name] / total[name] for name in total}
    return Adherence(float(np.mean(list(per.values()))), exact / scored, per, total)


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of range(n) that moves every index (n >= 2)."""
    if n < 2:
        raise ValueError("shuffling needs at least two prompts")
    while True:
        p = rng.permutation(n)
        if not (p == np.arange(n)).any():
            return p


def shuffled_floor(predicted: list[dict[str, str]], targets_per_prompt: list[dict[str, str]], per_prompt: int,
                   rng: np.random.Generator) -> Adherence:
    """The same images scored against other prompts' attributes: what adherence a model that ignores
    the prompt would get. ``predicted`` is grouped by prompt, ``per_prompt`` images each."""
    with_attrs = [i for i, t in enumerate(targets_per_prompt) if t]
    perm = derangement(len(with_attrs), rng)
    moved = {with_attrs[i]: targets_per_prompt[with_attrs[j]] for i, j in enumerate(perm)}
    targets = [moved.get(i, {}) for i in range(len(targets_per_prompt)) for _ in range(per_prompt)]
    return adherence(predicted, targets)


# --- feature-space metrics -----------------------------------------------------------------


class Precomputed(torch.nn.Module):
    """A feature extractor for torchmetrics whose "images" are already features (N, D): each set is
    passed through the real extractor once and shared by FD, KID, PRDC and diversity."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.double()


def fd_kid(real: torch.Tensor, fake: torch.Tensor, *, kid_subsets: int = 100, kid_subset_size: int = 1000) -> dict[str, float]:
    """Fréchet distance and KID (mean, std) between two feature sets (N, D), with torchmetrics'
    FrechetInceptionDistance and KernelInceptionDistance over a custom feature extractor."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise ValueError("FD and KID need at least two images per set")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: {real.shape[1]} and {fake.shape[1]}")
    extractor = Precomputed(real.shape[1])
    fid = FrechetInceptionDistance(feature=extractor, normalize=False)
    with warnings.catch_warnings():  # "will save all extracted features": a few thousand vectors here
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=extractor, normalize=False, subsets=kid_subsets,
                                      subset_size=min(kid_subset_size, len(real), len(fake)))
    for features, is_real in ((real, True), (fake, False)):
        fid.update(features, real=is_real)
        kid.update(features, real=is_real)
    kid_mean, kid_std = (float(v) for v in kid.compute())
    return {"fd": float(fid.compute()), "kid": kid_mean, "kid_std": kid_std}


def _kth_neighbour_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) with k-nearest-neighbour balls."""
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"precision/recall need more than k={k} images per set")
    real, fake = real.double(), fake.double()
    r_real = _kth_neighbour_radius(real, k)  # (R,)
    r_fake = _kth_neighbour_radius(fake, k)  # (F,)
    d = torch.cdist(real, fake)  # (R, F)
    inside = d < r_real[:, None]  # fake j inside real i's ball
    precision = inside.any(0).double().mean()
    recall = (d < r_fake[None, :]).any(1).double().mean()
    density = inside.double().sum(0).mean() / k
    coverage = (d.min(1).values < r_real).double().mean()
    return {"precision": float(precision), "recall": float(recall), "density": float(density),
            "coverage": float(coverage)}


def pairwise_distances(groups: list[torch.Tensor]) -> torch.Tensor:
    """All within-group pairwise distances, concatenated."""
    out = []
    for g in groups:
        if len(g) >= 2:
            d = torch.cdist(g.double(), g.double())
            i, j = torch.triu_indices(len(g), len(g), 1)
            out.append(d[i, j])
    if not out:
        raise ValueError("diversity needs at least two images per prompt")
    return torch.cat(out)


def diversity(fake_groups: list[torch.Tensor], real_groups: list[torch.Tensor], near: float = 0.1) -> dict[str, float]:
    """Within-prompt diversity: mean pairwise feature distance of each prompt's images (generated and,
    for scale, real renders of the same prompts), and the share of generated pairs closer than
    ``near`` × the real mean (near-duplicates)."""
    fake_d, real_d = pairwise_distances(fake_groups), pairwise_distances(real_groups)
    real_mean = float(real_d.mean())
    return {"mean_pairwise": float(fake_d.mean()), "real_mean_pairwise": real_mean,
            "near_duplicates": float((fake_d < near * real_mean).double().mean())}
