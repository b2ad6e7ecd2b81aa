"""The text-conditional GAN: one forward pass from (z, text) to an image.

After DF-GAN (Tao et al., "DF-GAN: A Simple and Effective Baseline for Text-to-Image
Synthesis", CVPR 2022): the generator's every block is modulated by the text through affine
(FiLM) fusion whose scale and shift are predicted from the condition [z; sentence embedding];
the discriminator ends in a joint head that sees the image features and the sentence embedding
together, so it can reject real images paired with the wrong caption.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelchat.models import prepack
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


class FiLMBank:
    """The (scale, shift) pairs of many `Affine`s for one condition, computed together: the first layers of
    all of them as one matrix product, the second layers grouped by width as batched products. The same
    function as calling each affine's MLPs, in 5 products instead of 32 small ones (a one-picture draw
    spent a good part of its time calling them). The joined weights are kept while no gradient is needed,
    and joined again when a weight changes (`prepack.derived`)."""

    def __init__(self, affines: list[Affine]):
        self.mlps = [m for a in affines for m in (a.gamma, a.beta)]
        self._linears = [layer for m in self.mlps for layer in (m[0], m[2])]
        self.widths = [m[0].out_features for m in self.mlps]
        self.groups: dict[int, list[int]] = {}
        for i, w in enumerate(self.widths):
            self.groups.setdefault(w, []).append(i)

    def _params(self) -> list[torch.Tensor]:
        # from the layers' parameter dicts: 128 reads through nn.Module.__getattr__ were a visible part of a draw
        return [p for layer in self._linears for p in (layer._parameters["weight"], layer._parameters["bias"])]

    def _joined(self):
        first_w = torch.cat([m[0].weight for m in self.mlps])  # (sum widths, cond)
        first_b = torch.cat([m[0].bias for m in self.mlps])
        second = {w: (torch.stack([self.mlps[i][2].weight for i in idx]).transpose(1, 2),  # (G, w, w), x @ W^T
                      torch.stack([self.mlps[i][2].bias for i in idx])[:, None, :])  # (G, 1, w)
                  for w, idx in self.groups.items()}
        return first_w, first_b, second

    def __call__(self, c: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per affine, (scale, shift), each (B, C)."""
        first_w, first_b, second = prepack.derived(self, "joined", self._params(), self._joined)
        hidden = torch.relu(prepack.linear(self, "first", c, first_w, first_b)).split(self.widths, dim=1)
        out: list[torch.Tensor | None] = [None] * len(self.mlps)
        for w, idx in self.groups.items():
            wt, b = second[w]
            rows = torch.baddbmm(b, torch.stack([hidden[i] for i in idx]), wt)  # (G, B, w)
            for j, i in enumerate(idx):
                out[i] = rows[j]
        return [(out[k], out[k + 1]) for k in range(0, len(out), 2)]


_written_out = threading.local()


@contextmanager
def written_out_upsampling():
    """Within it (this thread), generator blocks compute their upsampling as written, before 3×3 convolutions,
    instead of folding it into transposed ones: the form that int8 quantization handles best (ONNX Runtime's
    int8 graph of this form ran faster than its int8 graph of the folded one)."""
    before = getattr(_written_out, "on", False)
    _written_out.on = True
    try:
        yield
    finally:
        _written_out.on = before


def _fold_taps(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """M (4, 3): tap k of a stride-2 4-tap transposed convolution = Σ_j M[k, j] · tap j of a 3-tap convolution
    applied after nearest ×2 upsampling (padding 1 both). Output row 2i takes input rows i-1 (tap 0) and
    i (taps 1 and 2); row 2i+1 takes rows i (taps 0 and 1) and i+1 (tap 2)."""
    return torch.tensor([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=dtype, device=device)


def upsampled_conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """A 3×3 convolution's weight (out, in, 3, 3), padding 1, applied to a nearest ×2 upsampled input, as the
    weight (in, out, 4, 4) of one stride-2, padding-1 transposed convolution of the input itself: the same
    function with 16 instead of 36 multiply-adds per input pixel and channel pair, and no upsampled copy."""
    m = _fold_taps(weight.dtype, weight.device)
    return torch.einsum("ka,lb,oiab->iokl", m, m, weight)


class GBlock(nn.Module):
    """Upsample ×2, then two (fuse text → LeakyReLU → 3×3 conv) stages, with a residual shortcut.

    Computed cheaper than written: the first fusion and LeakyReLU are per pixel, so they commute with
    nearest upsampling and run before it; the upsampling then folds into conv1 as a stride-2 transposed
    convolution (`upsampled_conv_weight`); the 1×1 shortcut commutes with it too and runs on the small
    input before it. A few pictures at a time run with prepacked weights (`pixelchat.models.prepack`).
    Same function, float rounding aside."""

    def __init__(self, cin: int, cout: int, cond_dim: int):
        super().__init__()
        self.fuse1, self.conv1 = Affine(cond_dim, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.fuse2, self.conv2 = Affine(cond_dim, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def _folded(self) -> torch.Tensor:
        """conv1 as a stride-2 transposed convolution's weight (`upsampled_conv_weight`)."""
        return prepack.derived(self, "folded", [self.conv1.weight],
                               lambda: upsampled_conv_weight(self.conv1.weight))

    def forward(self, x: torch.Tensor, c: torch.Tensor,
                film: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """x (B, cin, n, n), c (B, cond) → (B, cout, 2n, 2n). ``film``: the two affines' (scale, shift) for c,
        when computed beforehand (`FiLMBank`)."""
        (g1, b1), (g2, b2) = film if film is not None else ((self.fuse1.gamma(c), self.fuse1.beta(c)),
                                                              (self.fuse2.gamma(c), self.fuse2.beta(c)))
        a = F.leaky_relu(torch.addcmul(b1[..., None, None], g1[..., None, None], x), 0.2)
        if getattr(_written_out, "on", False):
            h = self.conv1(F.interpolate(a, scale_factor=2, mode="nearest"))
            short = self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))
        else:
            h = prepack.conv_transpose2d(self, "conv1", a, self._folded(), self.conv1.bias, stride=2, padding=1)
            if isinstance(self.shortcut, nn.Conv2d):
                x = prepack.conv2d(self, "shortcut", x, self.shortcut.weight, self.shortcut.bias)
            short = F.interpolate(x, scale_factor=2, mode="nearest")
        h = F.leaky_relu(torch.addcmul(b2[..., None, None], g2[..., None, None], h), 0.2)
        return prepack.conv2d(self, "conv2", h, self.conv2.weight, self.conv2.bias, padding=1) + short


def rgb(to_rgb: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The generators' last step: LeakyReLU, the 3×3 convolution to RGB, tanh."""
    return torch.tanh(prepack.conv2d(to_rgb, "weight", F.leaky_relu(x, 0.2), to_rgb.weight, to_rgb.bias, padding=1))


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
        self.films = FiLMBank([f for b in self.blocks for f in (b.fuse1, b.fuse2)])

    def forward(self, z: torch.Tensor, text: torch.Tensor, fine_text: torch.Tensor | None = None,
                coarse_blocks: int = 2) -> torch.Tensor:
        """z (B, z_dim), text (B, text_dim) → image (B, 3, size, size) in [-1, 1].

        With ``fine_text``, the first ``coarse_blocks`` blocks (8 and 16 px: layout) follow ``text``
        and the rest (detail) follow ``fine_text``: coarse/fine text mixing for local edits."""
        c = torch.cat([z, text * self.cfg.text_gain], dim=1)  # (B, cond_dim)
        films = self.films(c)
        if fine_text is not None:
            fine = self.films(torch.cat([z, fine_text * self.cfg.text_gain], dim=1))
            films = films[:2 * coarse_blocks] + fine[2 * coarse_blocks:]
        x = prepack.linear(self.fc, "weight", z, self.fc.weight, self.fc.bias).view(z.shape[0], -1, 4, 4)
        for i, block in enumerate(self.blocks):
            x = block(x, c, (films[2 * i], films[2 * i + 1]))
        return rgb(self.to_rgb, x)


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
