"""One training loop for every architecture: precomputed text embeddings, a Rich progress bar,
a step or time budget, checkpoints (safetensors + JSON), resume, sample grids and stats.jsonl."""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pixelchat.data.dataset import CaptionedImages
from pixelchat.data.scenes import SCHEMA, observable
from pixelchat.models import ARCHS, ModelConfig, build_attribute_classifier, build_discriminator, build_generator
from pixelchat.training import losses
from pixelchat.training.augment import diff_augment, parse_policy
from pixelchat.training.checkpoint import (
    CheckpointError, checkpoint_files, load_checkpoint, load_module, load_optimizer, module_tensors, optimizer_tensors,
    save_checkpoint,
)
from pixelchat.training.ema import ema_decay_at, make_ema, update_ema

# Fixed prompts for the sample grids, so that snapshots are comparable across a run.
SAMPLE_PROMPTS = [
    "a pink cloud at sunset",
    "a beautiful mountain landscape",
    "mountains with tall peaks and rising clouds",
    "a starry night over a lake",
    "a house by the sea at noon",
    "a snowy hillside with a forest",
    "a desert with a few white clouds by day",
    "a boat on a lake under a full moon",
]


@dataclass
class TrainConfig:
    data: str = "scenes"
    steps: int | None = None
    time_budget: float | None = None  # minutes; stops at whichever of steps/time comes first
    batch_size: int = 64
    lr_g: float = 1e-4  # DF-GAN's two time-scale rates; the DCGAN preset uses 2e-4 for both
    lr_d: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.9
    loss: str = "hinge"  # hinge (text GAN) | bce (DCGAN)
    mismatch: bool = True  # real images with wrong captions as negatives
    ma_gp_weight: float = 2.0
    ma_gp_p: float = 6.0
    ma_gp_every: int = 4  # lazy regularisation: every k steps, weighted by k (Karras et al. 2020)
    diffaug: str = "translation,cutout"
    ema_decay: float = 0.999  # reached after a warm-up (see ema_decay_at)
    # Weight of the attribute heads' cross-entropy (real pictures' attributes for D, the caption's named
    # attributes for G); used when the data has known attributes (scenes), 0 turns them off.
    attribute_weight: float = 1.0
    bf16: bool = False
    channels_last: bool = True
    clock: str = "wall"  # what the time budget counts: "wall" seconds or this process's "cpu" seconds
    threads: int | None = None  # torch threads (None: torch's default)
    snapshot_minutes: float | None = None  # keep a generator snapshot every so many minutes (of `clock`)
    checkpoint_every: int = 1000
    sample_every: int = 500
    log_every: int = 20
    seed: int = 0
    scenes: int = 20000  # how many scenes to render when data == "scenes"
    captions_per_image: int = 2
    limit: int | None = None  # read at most this many images from a dataset folder
    text_encoder: str = "all-MiniLM-L6-v2"

    def __post_init__(self):
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', got {self.clock!r}")
        if self.attribute_weight < 0:
            raise ValueError("attribute_weight must be >= 0")
        if self.loss not in ("hinge", "bce"):
            raise ValueError(f"loss must be 'hinge' or 'bce', got {self.loss!r}")
        parse_policy(self.diffaug)
        if self.steps is None and self.time_budget is None:
            raise ValueError("give a step count or a time budget")
        if self.steps is not None and self.steps < 1:
            raise ValueError("steps must be at least 1")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError("the time budget must be positive")
        if self.batch_size < 2:
            raise ValueError("batch size must be at least 2 (mismatched captions need a second sample)")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def preset(arch: str) -> tuple[ModelConfig, TrainConfig]:
    """Sensible defaults per architecture; the DCGAN preset is the seed documents' recipe."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    if arch == "dcgan":
        return (ModelConfig(arch="dcgan", ngf=64, ndf=64, max_channels=512),
                TrainConfig(steps=1, lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, loss="bce", mismatch=False,
                            ma_gp_weight=0.0, diffaug="", ema_decay=0.999, attribute_weight=0.0))
    return ModelConfig(arch="textgan"), TrainConfig(steps=1)


def training_loop(model_cfg: ModelConfig, cfg: TrainConfig, out_dir: str | Path, *, data: CaptionedImages,
                  encoder, resume: str | Path | None = None, console: Console | None = None) -> Path:
    """Train on ``data`` and write checkpoints, samples and stats under ``out_dir``; returns the final
    generator checkpoint (``model.safetensors``)."""
    console = console or Console(stderr=True)
    out = Path(out_dir)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    # Text: every caption embedded once, up front (the encoder is frozen).
    flat = [c for caps in data.captions for c in caps]
    unique = sorted(set(flat) | set(SAMPLE_PROMPTS), key=len)
    table = embed_captions(encoder, unique, out / "text-embeddings", console)  # (U, D)
    index = {c: i for i, c in enumerate(unique)}
    caption_ids = [torch.tensor([index[c] for c in caps]) for caps in data.captions]
    n_caps = torch.tensor([len(c) for c in caption_ids])
    caption_ids = torch.nn.utils.rnn.pad_sequence(caption_ids, batch_first=True)  # (N, max captions)
    if table.shape[1] != model_cfg.text_dim:
        raise ValueError(f"the text encoder gives {table.shape[1]}-d embeddings, the model expects {model_cfg.text_dim}")
    if data.size != model_cfg.size:
        raise ValueError(f"data is {data.size} px but the model is configured for {model_cfg.size} px")

    # Attributes, where the data knows them: every picture's labels and each caption's named ones.
    heads = None
    if model_cfg.arch == "textgan" and cfg.attribute_weight > 0 and data.attributes and "mentioned" in data.extra:
        if model_cfg.attribute_heads is None:
            model_cfg = replace(model_cfg, attribute_heads={k: list(v) for k, v in SCHEMA.items()})
        heads = attribute_targets(data, model_cfg.attribute_heads, caption_ids.shape[1])

    # Networks, optimisers, EMA.
    G, D = build_generator(model_cfg), build_discriminator(model_cfg)
    G_ema = make_ema(G)
    C = build_attribute_classifier(model_cfg) if heads is not None else None  # None: heads on D, or none
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    opt_c = torch.optim.Adam(C.parameters(), lr=cfg.lr_d, betas=(0.9, 0.999)) if C is not None else None
    modules = {"G": G, "D": D, "G_ema": G_ema, **({"C": C} if C is not None else {})}
    optimizers = {"opt_g": opt_g, "opt_d": opt_d, **({"opt_c": opt_c} if C is not None else {})}
    step, elapsed_before, cpu_before = 0, 0.0, 0.0
    if resume:
        ckpt = load_checkpoint(resume)
        if ModelConfig.from_dict(ckpt.config.get("model") or {}).to_dict() != model_cfg.to_dict():  # new fields: defaults
            raise ValueError(f"cannot resume from {resume}: it was trained with a different model config")
        for name, module in modules.items():
            load_module(module, ckpt, name)
        for name, opt in optimizers.items():
            load_optimizer(opt, ckpt, name, ckpt.config["optimizers"][name])
        step, elapsed_before = ckpt.config["step"], ckpt.config.get("train_seconds", 0.0)
        cpu_before = ckpt.config.get("cpu_seconds", 0.0)
        gen.manual_seed(cfg.seed + step)
        console.log(f"resumed from {resume} at step {step}")
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    for module in modules.values():
        module.to(memory_format=fmt)
    augment = diff_augment(cfg.diffaug)
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16)  # noqa: E731
    text_fixed = table[[index[p] for p in SAMPLE_PROMPTS]].repeat_interleave(4, 0)  # (32, D)
    z_fixed = torch.randn(len(text_fixed), model_cfg.z_dim, generator=torch.Generator().manual_seed(1234))

    meta = {"model": model_cfg.to_dict(), "training": asdict(cfg),
            "text_encoder": {"name": encoder.name, "dim": encoder.dim, "sha256": encoder.weights_sha256},
            "data": {"source": data.source, "images": len(data)}}
    (out / "training_options.json").write_text(json.dumps(meta, indent=2) + "\n")

    def clock_info() -> dict:
        return {"step": step, "train_seconds": round(elapsed_before + time.time() - t_start, 1),
                "cpu_seconds": round(cpu_before + time.process_time() - cpu_start, 1)}

    def snapshot() -> Path:
        info = {**meta, **clock_info()}
        # the full training state, for resuming
        tensors = {k: v for name, module in modules.items() for k, v in module_tensors(name, module).items()}
        groups = {}
        for name, opt in optimizers.items():
            t, groups[name] = optimizer_tensors(name, opt)
            tensors |= t
        save_checkpoint(out / "checkpoint", tensors, {**info, "kind": "training", "optimizers": groups})
        # the EMA generator alone, in fp16, for generation
        return save_checkpoint(out / "model", module_tensors("G_ema", G_ema, torch.float16), {**info, "kind": "generator"})

    def keep_snapshot() -> Path:
        return save_checkpoint(out / "snapshots" / f"model-{step:07d}", module_tensors("G_ema", G_ema, torch.float16),
                               {**meta, **clock_info(), "kind": "generator"})

    def save_samples() -> None:
        with torch.no_grad():
            images = G_ema(z_fixed, text_fixed)
        save_grid(images, out / "samples" / f"step-{step:07d}.png", nrow=8)

    # The loop.
    stats_file = open(out / "stats.jsonl", "a")
    budget_s = cfg.time_budget * 60 if cfg.time_budget else math.inf
    t_start = last_log = time.time()
    cpu_start = time.process_time()
    # the budget's clock: seconds spent in this run (a resumed run gets the full budget again)
    spent = (lambda: time.process_time() - cpu_start) if cfg.clock == "cpu" else (lambda: time.time() - t_start)  # noqa: E731
    snapshot_s = cfg.snapshot_minutes * 60 if cfg.snapshot_minutes else math.inf
    next_snapshot = snapshot_s
    images_seen, last_images = 0, 0
    last_gp = 0.0  # the lazy penalty's latest value, for the log
    columns = [TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    G.train(), D.train()
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("train", total=cfg.steps, completed=step, rate="")
        while (cfg.steps is None or step < cfg.steps) and spent() < budget_s:
            # fetch a batch: random images, one of each image's captions
            idx = torch.randint(len(data), (cfg.batch_size,), generator=gen)
            which = (torch.rand(cfg.batch_size, generator=gen) * n_caps[idx]).long()
            text = table[caption_ids[idx, which]]  # (B, D)
            if heads is not None:
                labels, named = heads.labels[idx], heads.named[idx, which]  # (B, A) each
            real = (data.images[idx].float() / 127.5 - 1).contiguous(memory_format=fmt)  # (B, 3, H, W)
            z = torch.randn(cfg.batch_size, model_cfg.z_dim, generator=gen)

            # discriminator step: real/matched vs generated, plus mismatched captions
            with autocast():
                fake = G(z, text).detach()
                real_aug, fake_aug = augment(real), augment(fake)
                f_real = D.features(real_aug)
                d_real = D.logits(f_real, text)
                d_fake = D(fake_aug, text)
                if cfg.loss == "hinge":
                    d_mis = D.logits(f_real, text.roll(1, 0)) if cfg.mismatch else None
                    loss_d = losses.d_hinge_loss(d_real.float(), d_fake.float(), None if d_mis is None else d_mis.float())
                else:
                    loss_d = losses.d_bce_loss(d_real.float(), d_fake.float())
                loss_attr_d = torch.zeros(())
                if heads is not None and C is None:  # D learns to read attributes off real pictures
                    loss_attr_d = losses.attribute_loss(D.attribute_logits(f_real), labels, labels >= 0)
                    loss_d = loss_d + cfg.attribute_weight * loss_attr_d
            loss_gp = torch.zeros(())
            if cfg.ma_gp_weight > 0 and step % cfg.ma_gp_every == 0:
                with autocast():
                    loss_gp = losses.matching_aware_gp(D, real, text, weight=cfg.ma_gp_weight * cfg.ma_gp_every,
                                                       p=cfg.ma_gp_p)
                last_gp = loss_gp.item()
            opt_d.zero_grad(set_to_none=True)
            (loss_d + loss_gp).backward()
            opt_d.step()
            if C is not None:  # the separate classifier learns from real pictures only
                with autocast():
                    loss_attr_d = losses.attribute_loss(C.attribute_logits(real_aug), labels, labels >= 0)
                opt_c.zero_grad(set_to_none=True)
                loss_attr_d.backward()
                opt_c.step()

            # generator step
            with autocast():
                gen_aug = augment(G(z, text))
                f_gen = D.features(gen_aug)
                d_gen = D.logits(f_gen, text).float()
                loss_g = losses.g_hinge_loss(d_gen) if cfg.loss == "hinge" else losses.g_bce_loss(d_gen)
                loss_attr_g = torch.zeros(())
                if heads is not None:  # G shows what its caption names
                    read = C.attribute_logits(gen_aug) if C is not None else D.attribute_logits(f_gen)
                    loss_attr_g = losses.attribute_loss(read, labels, named)
                    loss_g = loss_g + cfg.attribute_weight * loss_attr_g
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()

            # update EMA
            update_ema(G_ema, G, ema_decay_at(step, cfg.ema_decay))
            step += 1
            images_seen += cfg.batch_size

            # log, snapshot
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.time()
                rate = (images_seen - last_images) / max(now - last_log, 1e-9)
                last_log, last_images = now, images_seen
                row = {"step": step, "time": round(elapsed_before + now - t_start, 2),
                       "cpu_time": round(cpu_before + time.process_time() - cpu_start, 2), "img_per_s": round(rate, 1),
                       "loss_d": round(loss_d.item(), 4), "loss_gp": round(last_gp, 4),
                       "loss_g": round(loss_g.item(), 4), "d_real": round(d_real.float().mean().item(), 3),
                       "d_fake": round(d_fake.float().mean().item(), 3)}
                if heads is not None:
                    row |= {"attr_d": round(loss_attr_d.item(), 4), "attr_g": round(loss_attr_g.item(), 4)}
                stats_file.write(json.dumps(row) + "\n")
                stats_file.flush()
                bar.update(task, completed=step, rate=f"{rate:.0f} img/s")
                if not console.is_terminal:
                    console.log(json.dumps(row))
                if not all(math.isfinite(v) for v in (row["loss_d"], row["loss_g"])):
                    raise FloatingPointError(f"training diverged at step {step}: {row}")
            if step % cfg.sample_every == 0:
                save_samples()
            if step % cfg.checkpoint_every == 0:
                snapshot()
            if spent() >= next_snapshot:
                keep_snapshot()
                next_snapshot += snapshot_s
    stats_file.close()
    save_samples()
    if cfg.snapshot_minutes:
        keep_snapshot()
    final = snapshot()
    console.log(f"trained {step} steps in {time.time() - t_start:.0f} s; generator at {final}")
    return final


def embed_captions(encoder, captions: list[str], cache: Path, console: Console) -> torch.Tensor:
    """Pooled embeddings of ``captions``, kept in the run folder (``cache``.safetensors + .json) so that a
    resumed run does not embed them again; reused only for the same encoder weights and captions."""
    key = {"encoder": encoder.name, "encoder_sha256": encoder.weights_sha256,
           "captions_sha256": hashlib.sha256("\n".join(captions).encode()).hexdigest(), "count": len(captions)}
    if checkpoint_files(cache)[0].exists():
        try:
            ckpt = load_checkpoint(cache)
            if ckpt.config.get("key") == key:
                return ckpt.tensors["pooled"].float()
        except CheckpointError as e:
            console.log(f"ignoring the caption cache: {e}")
    with console.status(f"embedding {len(captions)} captions with {encoder.name}"):
        table = encoder.encode(captions).pooled
    save_checkpoint(cache, {"pooled": table.contiguous()}, {"kind": "text-embeddings", "key": key})
    return table


@dataclass
class AttributeTargets:
    labels: torch.Tensor  # (N, A) value index per picture, -1 where the picture cannot show it
    named: torch.Tensor  # (N, max captions, A) whether each caption names the attribute


def attribute_targets(data: CaptionedImages, heads: dict[str, list[str]], max_captions: int) -> AttributeTargets:
    names = list(heads)
    labels = torch.full((len(data), len(names)), -1, dtype=torch.long)
    named = torch.zeros((len(data), max_captions, len(names)), dtype=torch.bool)
    for i, (attrs, mentions) in enumerate(zip(data.attributes, data.extra["mentioned"])):
        for name, value in observable(attrs).items():
            if name in heads:
                labels[i, names.index(name)] = heads[name].index(value)
        for j, mentioned in enumerate(mentions):
            for name in mentioned:
                if name in heads:
                    named[i, j, names.index(name)] = True
    return AttributeTargets(labels, named & (labels >= 0)[:, None, :])


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> Path:
    """Images in [-1, 1], (B, 3, H, W), as one PNG grid."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    b, _, h, w = x.shape
    rows = math.ceil(b / nrow)
    grid = torch.zeros((3, rows * h, nrow * w), dtype=torch.uint8)
    for i in range(b):
        r, c = divmod(i, nrow)
        grid[:, r * h:(r + 1) * h, c * w:(c + 1) * w] = x[i]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
    return path
