"""Networks: the spec-conditioned GAN, the text-conditional GAN and the seed's DCGAN baseline, built from one
ModelConfig."""

from __future__ import annotations

import torch.nn as nn

from pixelchat.models import dcgan, specgan, textgan
from pixelchat.models.config import ARCHS, ModelConfig

_MODULES = {"specgan": specgan, "textgan": textgan, "dcgan": dcgan}


def build_generator(cfg: ModelConfig) -> nn.Module:
    return _MODULES[cfg.arch].Generator(cfg)


def build_discriminator(cfg: ModelConfig) -> nn.Module:
    return _MODULES[cfg.arch].Discriminator(cfg)


def build_attribute_classifier(cfg: ModelConfig) -> nn.Module | None:
    """The separate attribute classifier, where the config asks for one (text GAN only)."""
    if cfg.arch == "textgan" and cfg.attribute_heads and cfg.attribute_net == "classifier":
        return textgan.AttributeClassifier(cfg)
    return None


__all__ = ["ARCHS", "ModelConfig", "build_attribute_classifier", "build_discriminator", "build_generator"]
