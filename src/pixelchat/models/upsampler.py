"""The upsampler: the second stage of the cascade, a small network that turns the generator's 64 px
pictures into 256 px (×4) and 512 px (×8) ones.

A compact super-resolution design in the manner of Real-ESRGAN's SRVGGNetCompact (Wang et al.,
ICCVW 2021): plain 3×3 convolutions with PReLU at the input's resolution, then one convolution
per output scale that predicts scale² sub-pixels per channel, rearranged by pixel shuffle (Shi et
al., CVPR 2016) and added to the bicubic upscale of the input, so the network only learns what
bicubic interpolation misses. Both scales share the body; all the work happens at the input's
resolution, so ×8 costs little more than ×4.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_UPSAMPLER = Path(__file__).resolve().parent.parent / "weights" / "upsampler-scenes64"


@dataclass
class UpsamplerConfig:
    in_size: int = 64  # the side of the pictures it takes (the generator's size)
    scales: tuple[int, ...] = (4, 8)
    features: int = 32
    body: int = 8  # 3×3 convolutions after the first

    def __post_init__(self):
        self.scales = tuple(int(s) for s in self.scales)
        if not self.scales or any(s not in (2, 4, 8) for s in self.scales) or len(set(self.scales)) != len(self.scales):
            raise ValueError(f"scales must be distinct values of 2, 4 and 8, got {self.scales}")
        if self.in_size < 8 or self.features < 4 or not 1 <= self.body <= 64:
            raise ValueError("in_size must be >= 8, features >= 4 and body between 1 and 64")

    @property
    def sizes(self) -> tuple[int, ...]:
        """The output sides it draws, smallest first."""
        return tuple(sorted(self.in_size * s for s in self.scales))

    def to_dict(self) -> dict:
        return {**asdict(self), "scales": list(self.scales)}

    @classmethod
    def from_dict(cls, d: dict) -> "UpsamplerConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class Upsampler(nn.Module):
    def __init__(self, cfg: UpsamplerConfig):
        super().__init__()
        self.cfg = cfg
        f = cfg.features
        layers: list[nn.Module] = [nn.Conv2d(3, f, 3, padding=1), nn.PReLU(f)]
        for _ in range(cfg.body):
            layers += [nn.Conv2d(f, f, 3, padding=1), nn.PReLU(f)]
        self.body = nn.Sequential(*layers)
        self.tails = nn.ModuleDict({str(s): nn.Conv2d(f, 3 * s * s, 3, padding=1) for s in cfg.scales})
        for s in cfg.scales:  # fixed weights, not in the checkpoint
            self.register_buffer(f"bicubic{s}", bicubic_kernel(s, 3), persistent=False)
        for tail in self.tails.values():  # start as bicubic interpolation
            nn.init.zeros_(tail.weight)
            nn.init.zeros_(tail.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def upscale(self, x: torch.Tensor, scale: int, features: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, h, w) in [-1, 1] → (B, 3, h·scale, w·scale) in [-1, 1]."""
        if str(scale) not in self.tails:
            raise ValueError(f"this upsampler scales by {', '.join(map(str, self.cfg.scales))}, not {scale}")
        f = self.features(x) if features is None else features
        # bicubic upscaling as a convolution whose outputs are sub-pixels (see `bicubic_kernel`), so that it
        # joins the tail's in one pixel shuffle: equal to F.interpolate's bicubic to float rounding, in half its time
        base = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), getattr(self, f"bicubic{scale}"), groups=3)
        return F.pixel_shuffle(self.tails[str(scale)](f) + base, scale).clamp(-1, 1)

    def forward(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        return self.upscale(x, scale)


def _cubic(t: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel with torch's (and OpenCV's) a = -0.75."""
    t = abs(t)
    if t <= 1:
        return ((a + 2) * t - (a + 3)) * t * t + 1
    if t < 2:
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return 0.0


def bicubic_kernel(scale: int, channels: int) -> torch.Tensor:
    """(channels · scale², 1, 5, 5): bicubic upscaling by ``scale`` as a convolution. Per channel, the
    weights that each of the scale² sub-pixels of an input pixel gives the 5×5 input pixels around it
    (a 5×5 window holds every sub-pixel's 4×4 taps). Sub-pixel centres as align_corners=False; the
    caller pads by replicating the border, as torch's bicubic clamps its indices."""
    taps = torch.zeros(scale, 5, dtype=torch.float64)
    for i in range(scale):
        src = (i + 0.5) / scale - 0.5  # where sub-pixel i sits in input pixels, from its pixel's centre
        first = math.floor(src) - 1
        for t in range(4):
            taps[i, first + t + 2] += _cubic(src - (first + t))
    kernel = torch.einsum("ia,jb->ijab", taps, taps).reshape(scale * scale, 1, 5, 5)
    return kernel.repeat(channels, 1, 1, 1).float()


def load_upsampler(path) -> Upsampler:
    """An upsampler checkpoint (safetensors + JSON, kind "upsampler"), in eval mode without gradients."""
    from pixelchat.training.checkpoint import load_network

    net = load_network(path, "upsampler", lambda c: Upsampler(UpsamplerConfig.from_dict(c)))
    net.requires_grad_(False)
    return net


def read_upsampler_config(path) -> tuple[UpsamplerConfig, str, str]:
    """An upsampler checkpoint's config, the sha256 of its weights and its name, from the JSON alone (the
    weights load, and are checked against the sha256, on first use)."""
    import json

    from pixelchat.training.checkpoint import CheckpointError, checkpoint_files

    weights, meta = checkpoint_files(path)
    if not weights.is_file() or not meta.is_file():
        raise CheckpointError(f"no upsampler at {path}: {weights.name} and {meta.name} are both needed")
    try:
        config = json.loads(meta.read_text())
        if config.get("kind") != "upsampler":
            raise CheckpointError(f"{meta} is not an upsampler checkpoint (kind={config.get('kind')!r})")
        return UpsamplerConfig.from_dict(config["upsampler"]), str(config.get("sha256", "")), config.get("name") or weights.stem
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{meta} has an invalid upsampler config: {e}") from e
