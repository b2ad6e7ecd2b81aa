"""The math of edits and variations: candidate latents, masks, blending and re-ranking.

An edit redraws the picture from its latent with the revised prompt. Several candidates are
drawn at growing distances from that latent (the first is the latent itself); each is blended
with the original where it must stay (the user's mask, or the region the text change touches),
then the candidates are ranked by how well the describer reads the wanted attributes in them,
with closeness to the original breaking ties. Pure tensor functions: no files, no engines.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# Attributes whose change is a detail rather than the layout: coarse/fine text mixing keeps the
# layout (the first generator blocks) under the old prompt when only these change. Snow is not one:
# it recolours the whole ground, which the coarse blocks decide (measured: with snow here, 2 of 8
# "add/remove snow" edits on generated pictures succeeded instead of 8 of 8).
DETAIL_ATTRIBUTES = frozenset({"cloud_color", "boat", "house"})


def candidate_latents(z0: torch.Tensor, strength: float, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` latents (k, z_dim): ``z0`` itself, then points on the way to fresh noise,
    cos(θ)·z0 + sin(θ)·ε with θ rising to ``strength``·90°, which keeps |z| typical."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, got {strength}")
    theta = torch.linspace(0.0, strength * math.pi / 2, k)[:, None]  # (k, 1)
    eps = torch.randn((k, z0.shape[-1]), generator=generator)
    return torch.cos(theta) * z0.reshape(1, -1) + torch.sin(theta) * eps


def feather(mask: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Soften a (B, 1, H, W) mask's edge with a Gaussian blur so blends show no seam."""
    if sigma <= 0:
        return mask
    import kornia.filters

    k = 2 * int(math.ceil(2 * sigma)) + 1
    return kornia.filters.gaussian_blur2d(mask, (k, k), (sigma, sigma)).clamp(0, 1)


def mask_tensor(mask: np.ndarray, size: int) -> torch.Tensor:
    """An (H, W) mask in [0, 1] at the picture's size → (1, 1, size, size) at the model's size,
    centre-cropped to a square like the picture."""
    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    h, w = m.shape[-2:]
    s = min(h, w)
    m = m[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return F.interpolate(m, size=(size, size), mode="area") if s != size else m


def blend(new: torch.Tensor, old: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``new`` where ``mask`` is 1, ``old`` where it is 0."""
    return mask * new + (1 - mask) * old


def change_mask(with_new_text: torch.Tensor, with_old_text: torch.Tensor, low: float = 0.06, high: float = 0.18,
                sigma: float = 1.5) -> torch.Tensor:
    """Where an edit altered the redraw: (B, 1, H, W) in [0, 1], from the mean absolute colour
    difference (images in [-1, 1]), smoothed: 0 below ``low``, 1 above ``high``, a ramp between."""
    d = (with_new_text - with_old_text).abs().mean(1, keepdim=True)  # (B, 1, H, W)
    d = feather(d, sigma)
    return ((d - low) / (high - low)).clamp(0, 1)


def agreement(probs: dict[str, torch.Tensor], target: dict[str, str], schema: dict[str, list[str]]) -> torch.Tensor:
    """Mean log-probability (B,) that each image shows the ``target`` attributes, by the describer's
    per-attribute probabilities ``probs`` (name → (B, values))."""
    terms = [probs[name][:, schema[name].index(value)].clamp_min(1e-6).log()
             for name, value in target.items() if name in probs and value in schema[name]]
    if not terms:
        return torch.zeros(next(iter(probs.values())).shape[0])
    return torch.stack(terms, 1).mean(1)


def rank(probs: dict[str, torch.Tensor], target: dict[str, str] | None, schema: dict[str, list[str]],
         images: torch.Tensor, reference: torch.Tensor, closeness: float = 1.0) -> torch.Tensor:
    """Candidate order, best first: agreement with ``target`` minus ``closeness`` × the mean squared
    distance to ``reference`` (images in [-1, 1])."""
    score = -closeness * (images - reference).pow(2).flatten(1).mean(1)
    if target:
        score = score + agreement(probs, target, schema)
    return torch.argsort(score, descending=True)


def target_indices(target: dict[str, str], schema: dict[str, list[str]]) -> dict[str, int]:
    return {name: schema[name].index(value) for name, value in target.items() if name in schema and value in schema[name]}


def guided_refine(generator, describer, z: torch.Tensor, text: torch.Tensor, target: dict[str, str], *,
                  fine_text: torch.Tensor | None = None, reference: torch.Tensor | None = None,
                  keep: torch.Tensor | None = None, steps: int = 30, lr: float = 0.05,
                  pixel_weight: float = 2.0, latent_weight: float = 0.02, views: int = 2,
                  seed: int = 0, compose=None) -> torch.Tensor:
    """Move latents ``z`` (B, z_dim) so that the describer reads ``target`` in their redraws, while
    the redraw stays close to ``reference`` where ``keep`` (B or 1, 1, H, W in [0, 1]) is 1 and the
    latent stays near where it started. ``compose`` (redraw → final picture, differentiable) lets
    the describer read the picture as it will be returned (blended). Returns the new latents (B, z_dim).

    Latent optimisation against an attribute reader, as in classifier-guided GAN editing; the
    reader is the describer, never the evaluation instrument. Each step also reads ``views``
    randomly shifted, blurred and noised copies (expectation over transformations), so the latent
    moves towards pictures that show the attributes rather than towards the reader's blind spots."""
    from pixelchat.training.augment import robustness_augment

    idx = target_indices(target, describer.cfg.schema)
    if not idx or steps <= 0:
        return z
    labels = {name: torch.full((z.shape[0],), k, dtype=torch.long) for name, k in idx.items()}
    start = z.detach()
    z = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        for _ in range(steps):
            x = generator(z, text) if fine_text is None else generator(z, text, fine_text)
            if compose is not None:
                x = compose(x)
            seen = torch.cat([x, *(robustness_augment(x, gen) for _ in range(views))])
            logits = describer.attribute_logits(describer.encode(seen))
            loss = torch.stack([F.cross_entropy(logits[name], y.repeat(1 + views)) for name, y in labels.items()]).mean()
            if reference is not None and keep is not None and pixel_weight > 0:
                loss = loss + pixel_weight * (keep * (x - reference).pow(2)).mean()
            loss = loss + latent_weight * (z - start).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return z.detach()
