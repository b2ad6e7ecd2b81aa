"""The spec-conditioned GAN: the image path of the dual-path model, one forward pass from (z, spec).

A scene spec is one value index per attribute of the data's schema. Each value has a learned
embedding; the embeddings of a spec, concatenated with z, modulate every generator block
through affine (FiLM) fusion, as in DF-GAN (Tao et al., CVPR 2022) with the sentence vector
replaced by the structured spec. The discriminator is a plain strided-convolution network
with a projection term on the spec (Miyato & Koyama, "cGANs with Projection Discriminator",
ICLR 2018, eq. 3) and attribute heads, so it can reject a real picture shown with another
picture's spec and tell the generator which attributes its picture fails to show.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from pixelchat.models import prepack
from pixelchat.models.config import ModelConfig
from pixelchat.models.textgan import FiLMBank, GBlock, rgb


class SpecEmbedding(nn.Module):
    """(B, A) value indices → (B, A·dim): one learned vector per (attribute, value), concatenated."""

    def __init__(self, schema: dict[str, list[str]] | None, dim: int):
        super().__init__()
        if not schema:
            raise ValueError("a spec-conditioned network needs the data's schema (attribute → values)")
        sizes = [len(v) for v in schema.values()]
        self.register_buffer("offsets", torch.tensor([0] + sizes[:-1]).cumsum(0), persistent=False)  # (A,)
        self.table = nn.Embedding(sum(sizes), dim)
        nn.init.normal_(self.table.weight, std=1.0)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.table(spec + self.offsets).flatten(1)  # (B, A·dim)


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = SpecEmbedding(cfg.schema, cfg.embed_dim)
        cond_dim = cfg.z_dim + len(cfg.schema) * cfg.embed_dim
        c4 = cfg.channels(4, cfg.ngf)
        self.fc = nn.Linear(cond_dim, c4 * 4 * 4)
        resolutions = [2 ** i for i in range(3, int(math.log2(cfg.size)) + 1)]  # 8 … size
        chans = [c4] + [cfg.channels(r, cfg.ngf) for r in resolutions]
        self.blocks = nn.ModuleList(GBlock(a, b, cond_dim) for a, b in zip(chans[:-1], chans[1:]))
        self.to_rgb = nn.Conv2d(chans[-1], 3, 3, padding=1)
        self.films = FiLMBank([f for b in self.blocks for f in (b.fuse1, b.fuse2)])

    def forward(self, z: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        """z (B, z_dim), spec (B, A) value indices → image (B, 3, size, size) in [-1, 1]."""
        c = torch.cat([z, self.embed(spec)], dim=1)  # (B, cond_dim)
        films = self.films(c)
        x = prepack.linear(self.fc, "weight", c, self.fc.weight, self.fc.bias).view(z.shape[0], -1, 4, 4)
        for i, block in enumerate(self.blocks):
            x = block(x, c, (films[2 * i], films[2 * i + 1]))
        return rgb(self.to_rgb, x)


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = [nn.Conv2d(3, cfg.ndf, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)]
        res, c = cfg.size, cfg.ndf
        while res > 4:
            cout = cfg.channels(res // 2, cfg.ndf)
            layers += [nn.Conv2d(c, cout, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
                       nn.Conv2d(cout, cout, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)]
            res, c = res // 2, cout
        self.body = nn.Sequential(*layers)
        self.hidden = nn.Sequential(nn.Linear(c * 16, c), nn.LeakyReLU(0.2, inplace=True))
        self.out = nn.Linear(c, 1)
        self.project = SpecEmbedding(cfg.schema, c)  # per attribute, a vector to take the inner product with
        nn.init.normal_(self.project.table.weight, std=0.02)
        self.head_sizes = [len(v) for v in cfg.schema.values()]
        self.classify = nn.Linear(c, sum(self.head_sizes))

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.body(image).flatten(1))  # (B, C)

    def logits(self, features: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        proj = self.project(spec).view(len(spec), -1, features.shape[1])  # (B, A, C)
        return self.out(features).flatten() + torch.einsum("bac,bc->b", proj, features)  # (B,)

    def attribute_logits(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Per attribute, (B, values) logits from the image features alone."""
        return list(self.classify(features).split(self.head_sizes, dim=1))

    def forward(self, image: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(image), spec)
