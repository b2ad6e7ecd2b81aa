"""One training loop for every architecture: precomputed text embeddings, a Rich progress bar,
a step or time budget, checkpoints (safetensors + JSON), resume, sample grids and stats.jsonl;
in one process, or in several with DistributedDataParallel (see `pixelchat.training.distributed`)."""

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
from pixelchat.data.spec import complete_spec, dataset_schema, dataset_specs
from pixelchat.models import ARCHS, ModelConfig, build_attribute_classifier, build_discriminator, build_generator
from pixelchat.training import distributed, losses
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
    threads: int | None = None  # torch threads (None: torch's default, or the cores shared among this machine's processes)
    device: str = "cpu"  # cpu | cuda (under torchrun, the GPU of the process's local rank)
    backend: str | None = None  # process group under torchrun: gloo | nccl (None: nccl on cuda, gloo on cpu)
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
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.backend is not None and self.backend not in distributed.BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(distributed.BACKENDS)}, got {self.backend!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def preset(arch: str) -> tuple[ModelConfig, TrainConfig]:
    """Sensible defaults per architecture; the DCGAN preset is the seed documents' recipe."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    if arch == "specgan":  # the schema comes from the data (see training_loop)
        # widths chosen by measured cost: G at ngf 32 / max 256 costs twice as much per step (RESULTS.md)
        return (ModelConfig(arch="specgan", ngf=24, ndf=24, max_channels=192),
                TrainConfig(steps=1, batch_size=32, ma_gp_weight=0.0, diffaug="translation"))
    if arch == "dcgan":
        return (ModelConfig(arch="dcgan", ngf=64, ndf=64, max_channels=512),
                TrainConfig(steps=1, lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, loss="bce", mismatch=False,
                            ma_gp_weight=0.0, diffaug="", ema_decay=0.999, attribute_weight=0.0))
    return ModelConfig(arch="textgan"), TrainConfig(steps=1)


def training_loop(model_cfg: ModelConfig, cfg: TrainConfig, out_dir: str | Path, *, data: CaptionedImages,
                  encoder, resume: str | Path | None = None, console: Console | None = None) -> Path:
    """Train on ``data`` and write checkpoints, samples and stats under ``out_dir``; returns the final
    generator checkpoint (``model.safetensors``).

    In a process group (torchrun), every process calls this with the same arguments, except that the
    processes other than rank 0 may pass ``encoder=None``: rank 0 sends them the caption embeddings.
    All draw the same global batch and each trains on its share; DistributedDataParallel averages the
    gradients, so the run follows the single-process run with the same batch size. Only rank 0 writes."""
    rank, world = distributed.rank(), distributed.world_size()
    main = rank == 0
    console = (console or Console(stderr=True)) if main else Console(quiet=True)
    distributed.check_batch(cfg.batch_size, world)
    mine = slice(rank * cfg.batch_size // world, (rank + 1) * cfg.batch_size // world)  # this process's share
    device = torch.device("cuda", distributed.local_rank()) if cfg.device == "cuda" else torch.device("cpu")
    out = Path(out_dir)
    if main:
        (out / "samples").mkdir(parents=True, exist_ok=True)
    threads = cfg.threads or distributed.default_threads()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    if data.size != model_cfg.size:
        raise ValueError(f"data is {data.size} px but the model is configured for {model_cfg.size} px")
    # The condition of every picture: a row of ``table`` picked by ``caption_ids[i, k]`` for the picture's
    # k-th caption. For the spec GAN, the picture's spec (value indices); for the text GAN, a caption's
    # embedding, computed once up front (the encoder is frozen) by rank 0, which keeps the embeddings in
    # the run folder and hands them to the other processes.
    heads = None
    if model_cfg.arch == "specgan":
        schema = dataset_schema(data)
        if schema is None:
            raise ValueError("this dataset has no schema (attributes or classes): train the text GAN "
                             "(--arch textgan) on free captions")
        if cfg.ma_gp_weight > 0:
            raise ValueError("the spec GAN has no gradient penalty on its discrete condition; set ma_gp_weight to 0")
        if model_cfg.schema is None:
            model_cfg = replace(model_cfg, schema=schema)
        if model_cfg.schema != schema:
            raise ValueError(f"the model's schema ({', '.join(model_cfg.schema)}) differs from the data's "
                             f"({', '.join(schema)})")
        table, labels = dataset_specs(data, schema)  # (N, A) each
        caption_ids, n_caps = torch.arange(len(data))[:, None], torch.ones(len(data), dtype=torch.long)
        sample_cond = sample_specs(schema)
        if cfg.attribute_weight > 0:  # D reads, and G must show, every attribute a picture can show
            heads = AttributeTargets(labels, (labels >= 0)[:, None, :])
    else:
        flat = [c for caps in data.captions for c in caps]
        unique = sorted(set(flat) | set(SAMPLE_PROMPTS), key=lambda c: (len(c), c))  # the same order in every process
        table = embed_captions(encoder, unique, out / "text-embeddings", console) if main else None
        table = distributed.from_rank0(table, device)  # (U, D)
        index = {c: i for i, c in enumerate(unique)}
        caption_ids = [torch.tensor([index[c] for c in caps]) for caps in data.captions]
        n_caps = torch.tensor([len(c) for c in caption_ids])
        caption_ids = torch.nn.utils.rnn.pad_sequence(caption_ids, batch_first=True)  # (N, max captions)
        if table.shape[1] != model_cfg.text_dim:
            raise ValueError(f"the text encoder gives {table.shape[1]}-d embeddings, the model expects {model_cfg.text_dim}")
        sample_cond = table[[index[p] for p in SAMPLE_PROMPTS]]

    # Attributes, where the data knows them: every picture's labels and each caption's named ones.
    if model_cfg.arch == "textgan" and cfg.attribute_weight > 0 and data.attributes and "mentioned" in data.extra:
        if model_cfg.attribute_heads is None:
            model_cfg = replace(model_cfg, attribute_heads={k: list(v) for k, v in SCHEMA.items()})
        heads = attribute_targets(data, model_cfg.attribute_heads, caption_ids.shape[1])

    # Networks, optimisers, EMA.
    G, D = build_generator(model_cfg).to(device), build_discriminator(model_cfg).to(device)
    G_ema = make_ema(G)
    C = build_attribute_classifier(model_cfg) if heads is not None else None  # None: heads on D, or none
    if C is not None:
        C.to(device)
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
        before = (ckpt.config.get("distributed") or {}).get("world_size", 1)
        console.log(f"resumed from {resume} at step {step}"
                    + (f" (world size {before} → {world})" if before != world else ""))
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    for module in modules.values():
        module.to(memory_format=fmt)
    augment = diff_augment(cfg.diffaug)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)  # noqa: E731
    text_fixed = sample_cond.repeat_interleave(4, 0).to(device)  # (32, D), or (32, A) specs
    z_fixed = torch.randn(len(text_fixed), model_cfg.z_dim, generator=torch.Generator().manual_seed(1234)).to(device)
    zero = torch.zeros((), device=device)

    def attribute_loss(logits: list[torch.Tensor], labels: torch.Tensor, mask: torch.Tensor,
                       count: torch.Tensor) -> torch.Tensor:
        """The attribute loss over this share, as its part of the mean over the global batch's ``count``
        selected pairs: DDP averages the processes' gradients, hence × world size."""
        loss = losses.attribute_loss(logits, labels, mask)
        if world > 1:
            loss = loss * mask.sum().clamp(min=1) / count.clamp(min=1) * world
        return loss

    def d_objective(D, real_aug, fake_aug, text, text_mis, real, labels, known, penalty: bool):
        """D's step: real/matched vs generated, plus mismatched captions, attributes and the lazy penalty."""
        with autocast():
            f_real = D.features(real_aug)
            d_real = D.logits(f_real, text)
            d_fake = D(fake_aug, text)
            if cfg.loss == "hinge":
                d_mis = D.logits(f_real, text_mis) if cfg.mismatch else None
                loss_d = losses.d_hinge_loss(d_real.float(), d_fake.float(), None if d_mis is None else d_mis.float())
            else:
                loss_d = losses.d_bce_loss(d_real.float(), d_fake.float())
            loss_attr_d = zero
            if heads is not None and C is None:  # D learns to read attributes off real pictures
                loss_attr_d = attribute_loss(D.attribute_logits(f_real), labels, labels >= 0, known)
                loss_d = loss_d + cfg.attribute_weight * loss_attr_d
        loss_gp = zero
        if penalty:
            with autocast():
                loss_gp = losses.matching_aware_gp(D, real, text, weight=cfg.ma_gp_weight * cfg.ma_gp_every,
                                                   p=cfg.ma_gp_p)
        return loss_d, loss_gp, loss_attr_d, d_real, d_fake

    def c_objective(C, real_aug, labels, known):
        with autocast():
            return attribute_loss(C.attribute_logits(real_aug), labels, labels >= 0, known)

    # Under DDP: G's forward, and D's and C's whole steps (see distributed.Objective). An attribute head
    # that nothing trains (heads configured, data without attributes) is a parameter DDP must skip.
    G_step = distributed.wrap(G, device)
    D_step = distributed.wrap(distributed.Objective(D, d_objective), device,
                              find_unused_parameters=getattr(D, "classify", None) is not None and heads is None)
    C_step = distributed.wrap(distributed.Objective(C, c_objective), device) if C is not None else None
    if rank > 0:  # each process draws its own augmentations; rank 0 those of a single-process run
        torch.manual_seed(cfg.seed + rank)

    if main:
        meta = {"model": model_cfg.to_dict(), "training": asdict(cfg),
                "text_encoder": None if encoder is None else
                {"name": encoder.name, "dim": encoder.dim, "sha256": encoder.weights_sha256},
                "data": {"source": data.source, "images": len(data)},
                "distributed": {"world_size": world, "backend": distributed.backend()}}
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
    stats_file = open(out / "stats.jsonl", "a") if main else None
    budget_s = cfg.time_budget * 60 if cfg.time_budget else math.inf
    t_start = last_log = time.time()
    cpu_start = time.process_time()
    # the budget's clock: seconds spent in this run (a resumed run gets the full budget again)
    spent = (lambda: time.process_time() - cpu_start) if cfg.clock == "cpu" else (lambda: time.time() - t_start)  # noqa: E731
    snapshot_s = cfg.snapshot_minutes * 60 if cfg.snapshot_minutes else math.inf
    next_snapshot = snapshot_s
    images_seen, last_images = 0, 0
    last_gp = zero  # the lazy penalty's latest value, for the log

    def keep_going() -> bool:
        going = (cfg.steps is None or step < cfg.steps) and spent() < budget_s
        return distributed.agree(going, device) if math.isfinite(budget_s) else going  # rank 0's clock decides

    columns = [TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    G.train(), D.train()
    with Progress(*columns, console=console, disable=not main or not console.is_terminal) as bar:
        task = bar.add_task("train", total=cfg.steps, completed=step, rate="")
        while keep_going():
            # fetch a batch: the global batch's draws, the same in every process, and this process's share
            idx = torch.randint(len(data), (cfg.batch_size,), generator=gen)
            which = (torch.rand(cfg.batch_size, generator=gen) * n_caps[idx]).long()
            text_all = table[caption_ids[idx, which]]  # (B, D)
            text, text_mis = text_all[mine].to(device), text_all.roll(1, 0)[mine].to(device)  # (b, D) each
            labels = named = known = named_count = None
            if heads is not None:
                labels_all, named_all = heads.labels[idx], heads.named[idx, which]  # (B, A) each
                labels, named = labels_all[mine].to(device), named_all[mine].to(device)
                known, named_count = (labels_all >= 0).sum().to(device), named_all.sum().to(device)
            real = (data.images[idx[mine]].to(device).float() / 127.5 - 1).contiguous(memory_format=fmt)  # (b, 3, H, W)
            z = torch.randn(cfg.batch_size, model_cfg.z_dim, generator=gen)[mine].to(device)

            # discriminator step: real/matched vs generated, plus mismatched captions
            with autocast():
                fake = G(z, text).detach()
                real_aug, fake_aug = augment(real), augment(fake)
            penalty = cfg.ma_gp_weight > 0 and step % cfg.ma_gp_every == 0
            loss_d, loss_gp, loss_attr_d, d_real, d_fake = D_step(real_aug, fake_aug, text, text_mis, real, labels,
                                                                  known, penalty)
            if penalty:
                last_gp = loss_gp.detach()
            opt_d.zero_grad(set_to_none=True)
            (loss_d + loss_gp).backward()
            opt_d.step()
            if C is not None:  # the separate classifier learns from real pictures only
                loss_attr_d = C_step(real_aug, labels, known)
                opt_c.zero_grad(set_to_none=True)
                loss_attr_d.backward()
                opt_c.step()

            # generator step
            with autocast():
                gen_aug = augment(G_step(z, text))
                f_gen = D.features(gen_aug)
                d_gen = D.logits(f_gen, text).float()
                loss_g = losses.g_hinge_loss(d_gen) if cfg.loss == "hinge" else losses.g_bce_loss(d_gen)
                loss_attr_g = zero
                if heads is not None:  # G shows what its caption names
                    read = C.attribute_logits(gen_aug) if C is not None else D.attribute_logits(f_gen)
                    loss_attr_g = attribute_loss(read, labels, named, named_count)
                    loss_g = loss_g + cfg.attribute_weight * loss_attr_g
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()

            # update EMA
            update_ema(G_ema, G, ema_decay_at(step, cfg.ema_decay))
            step += 1
            images_seen += cfg.batch_size

            # log (the global batch's figures: each process's averaged), snapshot
            if step % cfg.log_every == 0 or step == cfg.steps:
                figures = distributed.average(torch.stack([
                    loss_d, last_gp, loss_g, d_real.float().mean(), d_fake.float().mean(), loss_attr_d, loss_attr_g,
                ]).detach().float()).tolist()
                now = time.time()
                rate = (images_seen - last_images) / max(now - last_log, 1e-9)
                last_log, last_images = now, images_seen
                row = {"step": step, "time": round(elapsed_before + now - t_start, 2),
                       "cpu_time": round(cpu_before + time.process_time() - cpu_start, 2), "img_per_s": round(rate, 1),
                       "loss_d": round(figures[0], 4), "loss_gp": round(figures[1], 4),
                       "loss_g": round(figures[2], 4), "d_real": round(figures[3], 3), "d_fake": round(figures[4], 3)}
                if heads is not None:
                    row |= {"attr_d": round(figures[5], 4), "attr_g": round(figures[6], 4)}
                if main:
                    stats_file.write(json.dumps(row) + "\n")
                    stats_file.flush()
                    bar.update(task, completed=step, rate=f"{rate:.0f} img/s")
                    if not console.is_terminal:
                        console.log(json.dumps(row))
                if not all(math.isfinite(v) for v in (row["loss_d"], row["loss_g"])):
                    raise FloatingPointError(f"training diverged at step {step}: {row}")
            if main and step % cfg.sample_every == 0:
                save_samples()
            if main and step % cfg.checkpoint_every == 0:
                snapshot()
            if main and spent() >= next_snapshot:
                keep_snapshot()
                next_snapshot += snapshot_s
    final = out / "model.safetensors"
    if main:
        stats_file.close()
        save_samples()
        if cfg.snapshot_minutes:
            keep_snapshot()
        final = snapshot()
        console.log(f"trained {step} steps in {time.time() - t_start:.0f} s; generator at {final}")
    distributed.barrier()  # the others return once rank 0 has written
    return final


def sample_specs(schema: dict[str, list[str]]) -> torch.Tensor:
    """The sample grids' specs (8, A): the sample prompts read by the pattern reader and completed from
    fixed seeds (scenes), or the first eight classes."""
    from pixelchat.data.spec import is_scenes
    from pixelchat.text.instructions import read_attributes

    if is_scenes(schema):
        specs = [complete_spec(read_attributes(p), schema, seed=i) for i, p in enumerate(SAMPLE_PROMPTS)]
        return torch.tensor([s.indices(schema) for s in specs])
    values = next(iter(schema.values()))
    return torch.tensor([[i % len(values)] for i in range(len(SAMPLE_PROMPTS))])


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
