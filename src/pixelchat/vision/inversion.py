"""GAN inversion: find the latent z from which the generator redraws a given picture.

An encoder trained on (z, text, G(z, text)) triples gives a starting latent in one pass
(as in "In-Domain GAN Inversion", Zhu et al. 2020, whose encoder is trained to reconstruct
through the generator); a few dozen Adam steps on z then lower the pixel error further.
An inverter belongs to one generator: its config records the generator's sha256.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pixelchat.training.checkpoint import load_network, module_tensors, save_checkpoint

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_INVERTER = WEIGHTS / "inverter-scenes64.safetensors"


@dataclass
class InverterConfig:
    size: int = 64
    z_dim: int = 100
    text_dim: int = 384
    width: int = 24
    generator_sha256: str = ""  # the generator whose latents it predicts

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "InverterConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown inverter config field(s): {', '.join(sorted(unknown))}")
        return cls(**d)


class Inverter(nn.Module):
    """(image, sentence embedding) → z: a conv encoder to 4×4, flattened, joined with the text."""

    def __init__(self, cfg: InverterConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = [nn.Conv2d(3, cfg.width, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)]
        c, res = cfg.width, cfg.size
        while res > 4:
            cout = min(2 * c, 8 * cfg.width)
            layers += [nn.Conv2d(c, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
            c, res = cout, res // 2
        self.body = nn.Sequential(*layers)
        self.text = nn.Linear(cfg.text_dim, 128)
        self.head = nn.Sequential(nn.Linear(c * 16 + 128, 512), nn.LeakyReLU(0.2, inplace=True), nn.Linear(512, cfg.z_dim))

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """images (B, 3, size, size) in [-1, 1], text (B, text_dim) unit sentence embeddings → (B, z_dim)."""
        h = self.body(images.contiguous(memory_format=torch.channels_last)).flatten(1)
        t = self.text(text * math.sqrt(self.cfg.text_dim))
        return self.head(torch.cat([h, t], dim=1))


def load_inverter(path: str | Path | None = None) -> Inverter:
    return load_network(path or DEFAULT_INVERTER, "inverter", lambda c: Inverter(InverterConfig.from_dict(c)))


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(4.0 / mse)


@dataclass
class Inversion:
    z: torch.Tensor  # (B, z_dim)
    start_psnr: list[float]  # of the starting latent's redraw
    psnr: list[float]  # after refinement

    def to_dict(self) -> dict:
        return {"start_psnr": [round(p, 2) for p in self.start_psnr], "psnr": [round(p, 2) for p in self.psnr]}


def invert(generator: nn.Module, images: torch.Tensor, text: torch.Tensor, *, inverter: Inverter | None = None,
           steps: int = 40, lr: float = 0.05, restarts: int = 32, seed: int = 0) -> Inversion:
    """Latents that redraw ``images`` (B, 3, S, S) in [-1, 1] at the generator's size, given the
    sentence embeddings ``text`` (B, D). Without an inverter, the start is the best of ``restarts``
    random latents."""
    generator.eval()
    with torch.no_grad():
        if inverter is not None:
            z0 = inverter(images, text)
        else:
            gen = torch.Generator().manual_seed(seed)
            z_dim = generator.cfg.z_dim
            starts = torch.randn((restarts, z_dim), generator=gen)
            z0 = torch.empty((len(images), z_dim))
            for i in range(len(images)):
                err = (generator(starts, text[i:i + 1].expand(restarts, -1)) - images[i:i + 1]).pow(2).flatten(1).mean(1)
                z0[i] = starts[int(err.argmin())]
        start = psnr(generator(z0, text), images)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        x = generator(z, text)
        loss = F.mse_loss(x, images) + 1e-3 * (z.pow(2).mean(1) - 1).pow(2).mean()  # stay near the prior's shell
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        z = z.detach()
        end = psnr(generator(z, text), images)
    return Inversion(z, start.tolist(), end.tolist())


def caption_bank(n: int, seed: int = 0) -> list[str]:
    """Prompts the inverter learns under: half full descriptions (what `describe` hands back), half
    training-style captions naming a few attributes."""
    from pixelchat.data.captions import caption_scene, scene_prompt
    from pixelchat.data.scenes import observable, sample_attributes

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = sample_attributes(rng)
        if i % 2:
            shown = observable(a)
            if shown["water"] == "none":
                shown.pop("boat")
            out.append(scene_prompt(shown))
        else:
            out.append(caption_scene(a, rng, "train")[0])
    return out


def train_inverter(generator_path: str | Path, out: str | Path, *, minutes: float = 20.0, batch_size: int = 64,
                   lr: float = 1e-3, n_captions: int = 3000, n_test: int = 256, recon_weight: float = 1.0, width: int = 24,
                   seed: int = 0, progress: bool = True, console=None) -> Path:
    """Train an inverter for the generator at ``generator_path`` on fresh (z, text, G(z, text))
    triples for a wall-clock budget; write ``out``.safetensors/.json with held-out figures."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from pixelchat.text.encoder import load_text_encoder
    from pixelchat.training.checkpoint import CheckpointError, load_generator

    console = console or Console(stderr=True)
    G, mc, ckpt = load_generator(generator_path)
    if mc.arch != "textgan":
        raise CheckpointError("inverters are trained for the text GAN; a spec-conditioned model inverts from "
                              "random starts under the describer's spec")
    G = G.float()
    encoder = load_text_encoder(ckpt.config["text_encoder"]["name"])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    console.log(f"embedding {n_captions} prompts")
    bank = encoder.embed(caption_bank(n_captions, seed))
    test_bank = encoder.embed(caption_bank(n_test, seed + 1))
    cfg = InverterConfig(size=mc.size, z_dim=mc.z_dim, text_dim=mc.text_dim, width=width,
                         generator_sha256=ckpt.sha256)
    model = Inverter(cfg).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    budget, t0, step = minutes * 60, time.time(), 0
    columns = [TextColumn("[bold]training the inverter"), BarColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=not (progress and console.is_terminal)) as bar:
        task = bar.add_task("inverter", total=budget, info="")
        while (elapsed := time.time() - t0) < budget:
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(elapsed / budget, 1.0)))
            model.train()
            z = torch.randn((batch_size, cfg.z_dim), generator=gen)
            t = bank[torch.randint(len(bank), (batch_size,), generator=gen)]
            with torch.no_grad():
                x = G(z, t)
            z_hat = model(x, t)
            latent_loss = F.mse_loss(z_hat, z)
            recon = F.l1_loss(G(z_hat, t), x) if recon_weight else torch.zeros(())
            loss = latent_loss + recon_weight * recon
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 10 == 0:
                info = f"step {step} latent {latent_loss.item():.3f} pixels {recon.item():.3f}"
                bar.update(task, completed=min(elapsed, budget), info=info)
                if not console.is_terminal and step % 100 == 0:
                    console.log(info)
    model.eval()
    tensors = module_tensors("inverter", model, torch.float16)
    config = {"kind": "inverter", "inverter": cfg.to_dict(), "generator": str(ckpt.path), "steps": step,
              "batch_size": batch_size, "recon_weight": recon_weight, "train_seconds": round(time.time() - t0, 1)}
    path = save_checkpoint(out, tensors, config)
    # held out: fresh latents and prompts the inverter never saw
    model = load_inverter(path)
    gen = torch.Generator().manual_seed(seed + 12345)
    z = torch.randn((n_test, cfg.z_dim), generator=gen)
    with torch.no_grad():
        x = G(z, test_bank)
    inv = invert(G, x, test_bank, inverter=model, steps=40)
    config["test"] = {"latents": n_test, "start_psnr": round(float(np.mean(inv.start_psnr)), 2),
                      "refined_psnr": round(float(np.mean(inv.psnr)), 2)}
    path = save_checkpoint(out, tensors, config)
    console.log(config["test"])
    return path
