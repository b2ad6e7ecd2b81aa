"""The seed documents' DCGAN baseline (Radford et al., "Unsupervised Representation Learning
with Deep Convolutional GANs", 2016): z ∈ R^100, transposed convolutions with batch norm and
ReLU in the generator, strided convolutions with LeakyReLU in the discriminator, BCE loss,
Adam 2e-4, β = (0.5, 0.999). Text conditioning, when on, is plain concatenation: the sentence
embedding is appended to z, and tiled onto the discriminator's last 4×4 features.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from pixelchat.models.config import ModelConfig


def _init_weights(m: nn.Module) -> None:
    # DCGAN paper, sec. 4: weights from N(0, 0.02); batch-norm scales from N(1, 0.02)
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        in_dim = cfg.z_dim + (cfg.text_dim if cfg.conditional else 0)
        n_up = int(math.log2(cfg.size)) - 2  # 4×4 → size
        chans = [cfg.channels(4 * 2 ** i, cfg.ngf) for i in range(n_up)]
        layers: list[nn.Module] = [nn.ConvTranspose2d(in_dim, chans[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(chans[0]), nn.ReLU(True)]
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(chans[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, z: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        if self.cfg.conditional:
            z = torch.cat([z, text * self.cfg.text_gain], dim=1)
        return self.net(z[..., None, None])  # (B, 3, size, size)


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        n_down = int(math.log2(cfg.size)) - 2  # size → 4×4
        chans = [cfg.channels(cfg.size // 2 ** (i + 1), cfg.ndf) for i in range(n_down)]
        layers: list[nn.Module] = [nn.Conv2d(3, chans[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, True)]
        self.body = nn.Sequential(*layers)
        text_dim = cfg.text_dim if cfg.conditional else 0
        self.head = nn.Conv2d(chans[-1] + text_dim, 1, 4, 1, 0, bias=False)
        self.apply(_init_weights)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.body(image)  # (B, C, 4, 4)

    def logits(self, features: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
        if self.cfg.conditional:
            features = torch.cat([features, (text * self.cfg.text_gain)[..., None, None].expand(-1, -1, 4, 4)], dim=1)
        return self.head(features).flatten()  # (B,)

    def forward(self, image: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits(self.features(image), text)
