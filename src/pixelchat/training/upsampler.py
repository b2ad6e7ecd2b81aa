"""Training and scoring the upsampler (pixelchat.models.upsampler).

Pairs: a picture at the generator's size and the same picture drawn at 4× and 8× the size. For
`scenes` both come from the renderer (it draws 512 px pictures on a canvas twice as large, so the
targets are sharp, not interpolated); for a folder of pictures (``data`` a path the dataset readers
take) the small picture is the large one box-downscaled. The input is degraded at random (Gaussian
blur, Gaussian noise) so the network also takes what a generator draws, and a consistency term on
pictures a generator drew asks that an upscaled picture, box-downscaled again, is the picture it
came from: the upsampler sharpens, it does not change what a picture shows.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pixelchat.models.upsampler import Upsampler, UpsamplerConfig

TRAIN_SEED = 3_000_000  # first scene of the training renders (the generators train on seeds below 1,000,000)
TEST_SEED = 9_000_000  # first scene of the held-out renders the scores use


def render_pairs(n: int, first_seed: int, sizes: tuple[int, ...], progress: bool = True) -> dict[int, torch.Tensor]:
    """``n`` scenes rendered at each of ``sizes``: size → (n, 3, size, size) uint8."""
    import numpy as np
    from rich.progress import track

    from pixelchat.data.dataset import pil_to_uint8
    from pixelchat.data.scenes import render_scene, sample_attributes

    out = {s: torch.empty((n, 3, s, s), dtype=torch.uint8) for s in sizes}
    for i in track(range(n), description=f"rendering {n} scenes at {', '.join(map(str, sizes))} px",
                   transient=True, disable=not progress):
        seed = first_seed + i
        attrs = sample_attributes(np.random.default_rng([seed, 0]))
        for s in sizes:
            out[s][i] = pil_to_uint8(render_scene(attrs, s, seed))
    return out


def folder_pairs(source: str | Path, sizes: tuple[int, ...], limit: int | None = None) -> dict[int, torch.Tensor]:
    """Pictures a dataset reader takes (a folder, CIFAR, MNIST …) at the largest of ``sizes``, and the
    same pictures box-downscaled to the others."""
    from pixelchat.data.readers import read_dataset

    top = max(sizes)
    images = read_dataset(source, top, limit=limit).images  # (N, 3, top, top) uint8
    if len(images) < 2:
        raise ValueError(f"{source} holds {len(images)} picture(s); an upsampler needs at least 2")
    return {s: images if s == top else box_down(images.float(), top // s).round().to(torch.uint8) for s in sizes}


def box_down(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Box (area) downscaling by an integer factor, as the renderer makes its small pictures."""
    return x if factor == 1 else F.avg_pool2d(x, factor)


def degrade(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random half of (B, 3, h, w) in [-1, 1] blurred (σ up to 0.8 px), a random third noised (σ up to 0.04)."""
    import kornia

    b = len(x)
    sigma = torch.rand(b, generator=gen) * 0.8 * (torch.rand(b, generator=gen) < 0.5)
    blurred = kornia.filters.gaussian_blur2d(x, (5, 5), sigma.clamp(min=1e-3)[:, None].expand(b, 2).contiguous())
    x = torch.where(sigma[:, None, None, None] > 0.05, blurred, x)
    noise = torch.rand(b, generator=gen) * 0.04 * (torch.rand(b, generator=gen) < 1 / 3)
    return x + noise[:, None, None, None] * torch.randn(x.shape, generator=gen)


def generated_pool(model: str | Path, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` pictures a generator checkpoint draws from sample prompts, (n, 3, s, s) uint8."""
    from pixelchat.data.dataset import pil_to_uint8
    from pixelchat.engines import GenerateRequest, load_engine

    engine = load_engine(model)
    prompts = ["a landscape", "a lake at night", "mountains at sunset", "a boat on the sea", "a house in the hills",
               "snowy trees under pink clouds", "a desert at noon", "a plain under many clouds"]
    out = []
    for i in range(0, n, 64):
        k = min(64, n - i)
        req = GenerateRequest(prompt=prompts[(i // 64) % len(prompts)], n=k, seed=seed + i, size=engine.info.size)
        out += [pil_to_uint8(g.image) for g in engine.generate(req)]
    return torch.stack(out)


def _crops(images: dict[int, torch.Tensor], idx: torch.Tensor, in_size: int, patch: int,
           gen: torch.Generator) -> dict[int, torch.Tensor]:
    """Aligned random crops: ``patch`` px of the small picture and the same region of every larger one."""
    out = {s: [] for s in images}
    for i in idx.tolist():
        y, x = (torch.randint(in_size - patch + 1, (2,), generator=gen) if patch < in_size else torch.zeros(2, dtype=torch.long)).tolist()
        for s, t in images.items():
            k = s // in_size
            out[s].append(t[i, :, y * k:(y + patch) * k, x * k:(x + patch) * k])
    return {s: torch.stack(v).float() / 127.5 - 1 for s, v in out.items()}


def train_upsampler(out: str | Path, *, data: str | Path = "scenes", n_images: int = 3000, in_size: int = 64,
                    scales: tuple[int, ...] = (4, 8), features: int = 32, body: int = 8,
                    steps: int | None = None, minutes: float = 20.0, batch_size: int = 16, patch: int = 32,
                    lr: float = 1e-3, generator: str | Path | None = None, pool: int = 1024,
                    consistency_weight: float = 1.0, n_test: int = 100, seed: int = 0,
                    progress: bool = True) -> Path:
    """Train for ``minutes`` (or ``steps``, whichever comes first), score on held-out renders (scenes) or
    on the last tenth of the pictures (a folder), and save fp16 weights with the scores in the JSON."""
    from rich.progress import Progress

    from pixelchat.training.checkpoint import module_tensors, save_checkpoint

    if steps is None and not minutes > 0:
        raise ValueError("give a positive time budget or a step count")
    if steps is not None and steps < 1:
        raise ValueError("steps must be at least 1")
    if not 2 <= batch_size <= 1024 or not 8 <= patch <= in_size:
        raise ValueError(f"batch size must be 2–1024 and the patch 8–{in_size} px")
    cfg = UpsamplerConfig(in_size=in_size, scales=tuple(scales), features=features, body=body)
    torch.manual_seed(seed)
    sizes = (in_size, *cfg.sizes)
    if str(data) == "scenes":
        images = render_pairs(n_images, TRAIN_SEED, sizes, progress)
        test = render_pairs(n_test, TEST_SEED, sizes, progress)
    else:
        everything = folder_pairs(data, sizes, limit=n_images)
        n_hold = max(1, len(everything[in_size]) // 10)
        images = {s: t[:-n_hold] for s, t in everything.items()}
        test = {s: t[-n_hold:] for s, t in everything.items()}
    made = generated_pool(generator, pool, seed) if generator is not None and consistency_weight > 0 else None
    if made is not None and made.shape[-1] != in_size:
        raise ValueError(f"the generator draws {made.shape[-1]} px pictures; the upsampler takes {in_size} px")
    net = Upsampler(cfg).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(seed)
    n = len(images[in_size])
    t0, step, losses = time.time(), 0, []
    budget = minutes * 60 if minutes and minutes > 0 else math.inf
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("training the upsampler", total=steps)
        while time.time() - t0 < budget and (steps is None or step < steps):
            lr_now = lr * (0.5 * (1 + math.cos(math.pi * min(1.0, _progress(t0, budget, step, steps)))))
            for group in opt.param_groups:
                group["lr"] = max(lr_now, lr * 0.02)
            crops = _crops(images, torch.randint(n, (batch_size,), generator=gen), in_size, patch, gen)
            x = degrade(crops[in_size], gen).contiguous(memory_format=torch.channels_last)
            feats = net.features(x)
            loss = sum(F.l1_loss(net.upscale(x, s, feats), crops[in_size * s]) for s in cfg.scales) / len(cfg.scales)
            if made is not None:
                k = max(1, batch_size // 2)
                g = _crops({in_size: made}, torch.randint(len(made), (k,), generator=gen), in_size, patch, gen)[in_size]
                g = g.contiguous(memory_format=torch.channels_last)
                gf = net.features(g)
                cons = sum(F.l1_loss(box_down(net.upscale(g, s, gf), s), g) for s in cfg.scales) / len(cfg.scales)
                loss = loss + consistency_weight * cons
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(loss.item())
            bar.update(task, completed=step, description=f"training the upsampler (L1 {sum(losses[-50:]) / len(losses[-50:]):.4f})")
    net.eval()
    scores = score_upsampler(net, test)
    meta = {"kind": "upsampler", "upsampler": cfg.to_dict(),
            "training": {"data": str(data), "images": n, "steps": step, "minutes": round((time.time() - t0) / 60, 2),
                         "batch_size": batch_size, "patch": patch, "lr": lr, "seed": seed,
                         "generator": str(generator) if generator else None, "pool": 0 if made is None else len(made),
                         "consistency_weight": consistency_weight, "first_seed": TRAIN_SEED if str(data) == "scenes" else None,
                         "final_l1": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 5)},
            "test": {"data": "scenes" if str(data) == "scenes" else "held-out tenth", "n": len(test[in_size]),
                     "first_seed": TEST_SEED if str(data) == "scenes" else None, **scores}}
    path = save_checkpoint(out, module_tensors("upsampler", net, torch.float16), meta)
    if progress:
        print(json.dumps(meta["test"], indent=1))
    return path


def _progress(t0: float, budget: float, step: int, steps: int | None) -> float:
    by_time = (time.time() - t0) / budget if math.isfinite(budget) else 0.0
    return max(by_time, step / steps if steps else 0.0)


@torch.inference_mode()
def score_upsampler(net: Upsampler, test: dict[int, torch.Tensor], batch: int = 16) -> dict:
    """PSNR (dB) and SSIM of the upsampler and of bicubic interpolation against the large pictures, per scale."""
    import kornia

    in_size = net.cfg.in_size
    small = test[in_size].float() / 127.5 - 1
    out = {}
    for s in net.cfg.scales:
        big = test[in_size * s].float() / 255
        sums = {"psnr": 0.0, "ssim": 0.0, "psnr_bicubic": 0.0, "ssim_bicubic": 0.0}
        for i in range(0, len(small), batch):
            x = small[i:i + batch]
            ours = (net.upscale(x.contiguous(memory_format=torch.channels_last), s).float() + 1) / 2
            bic = ((F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False).clamp(-1, 1)) + 1) / 2
            y = big[i:i + batch]
            for name, pred in (("", ours), ("_bicubic", bic)):
                pred = (pred * 255).round() / 255  # scored as the 8-bit pictures users get
                mse = ((pred - y) ** 2).flatten(1).mean(1).clamp(min=1e-10)
                sums["psnr" + name] += float((10 * torch.log10(1 / mse)).sum())
                sums["ssim" + name] += float(kornia.metrics.ssim(pred, y, 11).flatten(1).mean(1).sum())
        out[f"x{s}"] = {k: round(v / len(small), 4) for k, v in sums.items()}
        out[f"x{s}"]["psnr_gain_db"] = round(out[f"x{s}"]["psnr"] - out[f"x{s}"]["psnr_bicubic"], 3)
    return out
