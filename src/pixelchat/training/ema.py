"""Exponential moving average of the generator's weights (Karras et al. 2018; Yazıcı et al. 2019)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


def make_ema(model: nn.Module) -> nn.Module:
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):  # batch-norm statistics are copied, not averaged
        e.copy_(b)


def ema_decay_at(step: int, decay: float) -> float:
    """Decay warmed up over the first steps, min(decay, (1 + step) / (10 + step)): the average forgets
    the random initialisation quickly, which matters in runs of a few thousand steps."""
    return min(decay, (1 + step) / (10 + step))
