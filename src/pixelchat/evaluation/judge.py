"""The attribute judge: a multi-head CNN that reads every `scenes` attribute off a picture.

It is a measuring instrument. Nothing on the generation, editing or re-ranking path may load
it or its weights, so that what the product optimises is never what we measure with.
Images of any size are resized to the judge's input size (64 px) with an antialiased filter.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pixelchat.data.scenes import SCHEMA, observable, render_labelled
from pixelchat.training.augment import robustness_augment
from pixelchat.training.checkpoint import load_network, module_tensors, save_checkpoint

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_JUDGE = WEIGHTS / "judge-scenes.safetensors"
# Seeds the judge trains and is tested on: far from the generator's training seeds (0 …).
TRAIN_SEED = 50_000_000
TEST_SEED = 60_000_000


@dataclass
class JudgeConfig:
    size: int = 64
    width: int = 24  # channels of the first stage; doubled at each of the four stages
    schema: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in SCHEMA.items()})

    @property
    def feature_dim(self) -> int:
        return self.width * 8

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "JudgeConfig":
        return cls(size=int(d["size"]), width=int(d["width"]), schema={k: list(v) for k, v in d["schema"].items()})


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Judge(nn.Module):
    """64 px → four conv stages (64, 32, 16, 8 px) → pooled features → one linear head per attribute."""

    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.stages = nn.ModuleList([_stage(3, w), _stage(w, 2 * w), _stage(2 * w, 4 * w), _stage(4 * w, 8 * w)])
        self.heads = nn.ModuleDict({name: nn.Linear(8 * w, len(values)) for name, values in cfg.schema.items()})

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] at any square size → the judge's input size."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
        images = images.float()
        if images.shape[-1] != self.cfg.size or images.shape[-2] != self.cfg.size:
            images = F.interpolate(images, size=(self.cfg.size, self.cfg.size), mode="bilinear", antialias=True,
                                   align_corners=False)
        return images

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate features, (B, feature_dim): the space fidelity metrics are computed in."""
        x = self.prepare(images)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.stages) - 1:
                x = F.max_pool2d(x, 2)
        return x.mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(images)
        return {name: head(h) for name, head in self.heads.items()}


@dataclass
class Prediction:
    attributes: dict[str, str]
    confidence: dict[str, float]

    def to_dict(self) -> dict:
        return {"attributes": self.attributes, "confidence": {k: round(v, 4) for k, v in self.confidence.items()}}


def load_judge(path: str | Path | None = None) -> Judge:
    """The judge from a checkpoint (the shipped one by default), in eval mode."""
    return load_network(path or DEFAULT_JUDGE, "judge", lambda c: Judge(JudgeConfig.from_dict(c)))


def predict(judge: Judge, images: torch.Tensor, batch_size: int = 256) -> list[Prediction]:
    """Attributes with confidences (softmax probability of the chosen value) for (B, 3, H, W) images in [-1, 1].
    A cloud colour is reported only where the judge sees clouds."""
    return judge_images(judge, images, batch_size)[0]


@torch.inference_mode()
def judge_images(judge: Judge, images: torch.Tensor, batch_size: int = 256) -> tuple[list[Prediction], torch.Tensor]:
    """Predictions and penultimate features (B, D) in one pass; uint8 images or floats in [-1, 1]."""
    out: list[Prediction] = []
    feats = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        x = x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x
        h = judge.features(x.contiguous(memory_format=torch.channels_last))
        feats.append(h)
        probs = {name: head(h).softmax(-1) for name, head in judge.heads.items()}
        for j in range(len(images[i:i + batch_size])):
            attrs, conf = {}, {}
            for name, p in probs.items():
                k = int(p[j].argmax())
                attrs[name], conf[name] = judge.cfg.schema[name][k], float(p[j, k])
            shown = observable(attrs)
            out.append(Prediction(shown, {k: conf[k] for k in shown}))
    return out, torch.cat(feats) if feats else torch.zeros((0, judge.cfg.feature_dim))


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image → (3, H, W) float in [-1, 1], centre-cropped to a square."""
    from pixelchat.data.dataset import pil_to_uint8, to_square_rgb

    w, h = image.size
    return pil_to_uint8(to_square_rgb(image, min(w, h))).float() / 127.5 - 1


# --- training ----------------------------------------------------------------------------


def masked_ce(logits: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Mean over attributes of the cross-entropy where the label is known (-1 = unknown)."""
    losses = [F.cross_entropy(out, labels[:, k], ignore_index=-1) for k, out in enumerate(logits.values())
              if (labels[:, k] >= 0).any()]
    return torch.stack(losses).mean()


@torch.no_grad()
def accuracy(judge: Judge, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Per-attribute accuracy on uint8 images over the labels that can be seen."""
    judge.eval()
    correct = torch.zeros(labels.shape[1])
    count = torch.zeros(labels.shape[1])
    for i in range(0, len(images), 512):
        logits = judge(images[i:i + 512].float() / 127.5 - 1)
        y = labels[i:i + 512]
        for k, out in enumerate(logits.values()):
            known = y[:, k] >= 0
            correct[k] += (out.argmax(-1)[known] == y[known, k]).sum()
            count[k] += known.sum()
    return {name: float(correct[k] / count[k]) for k, name in enumerate(judge.cfg.schema)}


def train_judge(out: str | Path, *, n_train: int = 40_000, n_test: int = 4_000, minutes: float = 12.0,
                batch_size: int = 128, lr: float = 2e-3, cfg: JudgeConfig | None = None, seed: int = 0,
                progress: bool = True, console=None) -> Path:
    """Train the judge on fresh renders for a time budget (cosine schedule over it) and write
    ``out``.safetensors/.json with its held-out accuracy at 64 and 128 px in the config."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = console or Console(stderr=True)
    cfg = cfg or JudgeConfig()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images, labels = render_labelled(n_train, TRAIN_SEED, cfg.size, progress)
    judge = Judge(cfg).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    budget = minutes * 60
    t0, step, seen = time.time(), 0, 0
    columns = [TextColumn("[bold]training the judge"), BarColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=not (progress and console.is_terminal)) as bar:
        task = bar.add_task("judge", total=budget, info="")
        while (elapsed := time.time() - t0) < budget:
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(elapsed / budget, 1.0)))
            judge.train()
            idx = torch.randint(len(images), (batch_size,), generator=gen)
            x = robustness_augment(images[idx].float() / 127.5 - 1, gen).contiguous(memory_format=torch.channels_last)
            loss = masked_ce(judge(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step, seen = step + 1, seen + batch_size
            if step % 20 == 0:
                bar.update(task, completed=min(elapsed, budget), info=f"step {step} loss {loss.item():.3f}")
                if not console.is_terminal and step % 200 == 0:
                    console.log(f"step {step} loss {loss.item():.4f} {seen / elapsed:.0f} img/s")
    judge.eval()
    report = {}
    for size in (64, 128):
        test_images, test_labels = render_labelled(n_test, TEST_SEED, size, progress)
        report[str(size)] = {k: round(v, 4) for k, v in accuracy(judge, test_images, test_labels).items()}
    config = {"kind": "judge", "judge": cfg.to_dict(), "steps": step, "batch_size": batch_size,
              "train_seconds": round(time.time() - t0, 1), "train_images": n_train, "train_seeds": TRAIN_SEED,
              "test_images": n_test, "test_seeds": TEST_SEED, "test_accuracy": report}
    path = save_checkpoint(out, module_tensors("judge", judge, torch.float16), config)
    console.log(json.dumps(report))
    return path
