"""The text-conditional GAN: one forward pass from (z, text) to an image.

After DF-GAN (Tao et al., "DF-GAN: A Simple and Effective Baseline for Text-to-Image
Synthesis", CVPR 2022): the generator's every block is modulated by the text through affine
(FiLM) fusion whose scale and shift are predicted from the condition [z; sentence embedding];
the discriminator ends in a joint head that sees the image features and the sentence embedding
together, so it can reject real images paired with the wrong caption.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelchat.models.config import ModelConfig


class Affine(nn.Module):
    """FiLM: per-channel scale and shift predicted from the condition (DF-GAN, sec. 3.3)."""

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.gamma = nn.Sequential(nn.Linear(cond_dim, channels), nn.ReLU(inplace=True), nn.Linear(channels, channels))
        self.beta = nn.Sequential(nn.Linear(cond_dim, channels), nn.ReLU(inplace=True), nn.Linear(channels, channels))
        # start as the identity: scale 1, shift 0
        nn.init.zeros_(self.gamma[2].weight)
        nn.init.ones_(self.gamma[2].bias)
        nn.init.zeros_(self.beta[2].weight)
        nn.init.zeros_(self.beta[2].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.gamma(c)[..., None, None] * x + self.beta(c)[..., None, None]  # (B, C, H, W)


class GBlock(nn.Module):
    """Upsample ×2, then two (fuse text → LeakyReLU → 3×3 conv) stages, with a residual shortcut."""

    def __init__(self, cin: int, cout: int, cond_dim: int):
        super().__init__()
        self.fuse1, self.conv1 = Affine(cond_dim, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.fuse2, self.conv2 = Affine(cond_dim, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv1(F.leaky_relu(self.fuse1(x, c), 0.2))
        h = self.conv2(F.leaky_relu(self.fuse2(h, c), 0.2))
        return self.shortcut(x) + h


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        cond_dim = cfg.z_dim + cfg.text_dim
        c4 = cfg.channels(4, cfg.ngf)
        self.fc = nn.Linear(cfg.z_dim, c4 * 4 * 4)
        resolutions = [2 ** i for i in range(3, int(math.log2(cfg.size)) + 1)]  # 8 … size
        chans = [c4] + [cfg.channels(r, cfg.ngf) for r in resolutions]
        self.blocks = nn.ModuleList(GBlock(a, b, cond_dim) for a, b in zip(chans[:-1], chans[1:]))
        self.to_rgb = nn.Conv2d(chans[-1], 3, 3, padding=1)

    def forward(self, z: torch.Tensor, text: torch.Tensor, fine_text: torch.Tensor | None = None,
                coarse_blocks: int = 2) -> torch.Tensor:
        """z (B, z_dim), text (B, text_dim) → image (B, 3, size, size) in [-1, 1].

        With ``fine_text``, the first ``coarse_blocks`` blocks (8 and 16 px: layout) follow ``text``
        and the rest (detail) follow ``fine_text``: coarse/fine text mixing for local edits."""
        c = torch.cat([z, text * self.cfg.text_gain], dim=1)  # (B, cond_dim)
        c_fine = c if fine_text is None else torch.cat([z, fine_text * self.cfg.text_gain], dim=1)
        x = self.fc(z).view(z.shape[0], -1, 4, 4)  # (B, C4, 4, 4)
        for i, block in enumerate(self.blocks):
            x = block(x, c if i < coarse_blocks else c_fine)
        return torch.tanh(self.to_rgb(F.leaky_relu(x, 0.2)))


class DBlock(nn.Module):
    """Downsample ×2 with a residual 4×4-stride-2 → 3×3 branch and a pooled 1×1 shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.res = nn.Sequential(
            nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
        )
        self.shortcut = nn.Conv2d(cin, cout, 1)
        self.gamma = nn.Parameter(torch.zeros(1))  # DF-GAN: the residual branch is faded in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.shortcut(x), 2) + self.gamma * self.res(x)


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.from_rgb = nn.Conv2d(3, cfg.ndf, 3, 1, 1)
        resolutions = [2 ** i for i in range(int(math.log2(cfg.size)), 2, -1)]  # size … 8
        chans = [cfg.channels(r, cfg.ndf) for r in resolutions] + [cfg.channels(4, cfg.ndf)]
        self.blocks = nn.Sequential(*(DBlock(a, b) for a, b in zip(chans[:-1], chans[1:])))
        c4 = chans[-1]
        self.joint = nn.Sequential(  # image features ⊕ tiled sentence embedding → one logit
            nn.Conv2d(c4 + cfg.text_dim, c4 // 2, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c4 // 2, 1, 4, 1, 0),
        )
        heads = cfg.attribute_heads if cfg.attribute_net == "discriminator" else None
        self.head_sizes = [len(v) for v in (heads or {}).values()]
        self.classify = nn.Linear(c4 * 16, sum(self.head_sizes)) if heads else None

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.from_rgb(image))  # (B, C4, 4, 4)

    def logits(self, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        t = (text * self.cfg.text_gain)[..., None, None].expand(-1, -1, 4, 4)  # (B, text_dim, 4, 4)
        return self.joint(torch.cat([features, t], dim=1)).flatten()  # (B,)

    def attribute_logits(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Per attribute head, (B, values) logits from the image features alone."""
        if self.classify is None:
            raise ValueError("this discriminator has no attribute heads")
        return list(self.classify(features.flatten(1)).split(self.head_sizes, dim=1))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(image), text)


class AttributeClassifier(nn.Module):
    """A separate attribute reader for training: trained on real pictures only, it tells the
    generator which named attributes its pictures fail to show (cfg.attribute_net = "classifier")."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not cfg.attribute_heads:
            raise ValueError("an attribute classifier needs attribute heads")
        w = cfg.attribute_width
        layers: list[nn.Module] = [nn.Conv2d(3, w, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)]
        c, res = w, cfg.size
        while res > 4:
            cout = min(c * 2, 8 * w)
            layers += [nn.Conv2d(c, cout, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
                       nn.Conv2d(cout, cout, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)]
            c, res = cout, res // 2
        self.body = nn.Sequential(*layers)
        self.head_sizes = [len(v) for v in cfg.attribute_heads.values()]
        self.classify = nn.Linear(c * 16, sum(self.head_sizes))

    def attribute_logits(self, image: torch.Tensor) -> list[torch.Tensor]:
        return list(self.classify(self.body(image).flatten(1)).split(self.head_sizes, dim=1))
