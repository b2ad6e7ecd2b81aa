"""GAN losses as small pure functions over discriminator logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_hinge_loss(real: torch.Tensor, fake: torch.Tensor, mismatched: torch.Tensor | None = None) -> torch.Tensor:
    """Hinge loss for D (Lim & Ye 2017, "Geometric GAN"), with DF-GAN's mismatched-caption negative:
    real images under wrong captions count as fakes, so D must check the text, not only realism."""
    loss_real = F.relu(1.0 - real).mean()
    if mismatched is None:
        return loss_real + F.relu(1.0 + fake).mean()
    return loss_real + 0.5 * (F.relu(1.0 + fake).mean() + F.relu(1.0 + mismatched).mean())


def g_hinge_loss(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def d_bce_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The original GAN objective (Goodfellow et al. 2014) as DCGAN trains it."""
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def g_bce_loss(fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: maximise log D(G(z))."""
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def matching_aware_gp(D, images: torch.Tensor, text: torch.Tensor, *, weight: float = 2.0, p: float = 6.0) -> torch.Tensor:
    """Matching-aware zero-centred gradient penalty (DF-GAN, eq. 3): k·E[(‖∇_x D‖² + ‖∇_e D‖²)^(p/2)]
    on real images with their own captions, smoothing D around real, matching pairs."""
    images = images.detach().requires_grad_(True)
    text = text.detach().requires_grad_(True)
    out = D(images, text)
    gx, ge = torch.autograd.grad(out.sum(), (images, text), create_graph=True)
    norm = torch.sqrt(gx.float().pow(2).flatten(1).sum(1) + ge.float().pow(2).sum(1) + 1e-12)
    return weight * norm.pow(p).mean()


def attribute_loss(logits: list[torch.Tensor], labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of per-attribute logits against value indices, averaged over the (picture,
    attribute) pairs ``mask`` selects; zero when it selects none."""
    total, count = logits[0].new_zeros(()), mask.sum()
    for k, out in enumerate(logits):
        m = mask[:, k]
        if m.any():
            total = total + F.cross_entropy(out[m].float(), labels[m, k], reduction="sum")
    return total / count.clamp(min=1)
