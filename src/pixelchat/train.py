"""`pixelchat.train(...)`: validate options, print and save them, call the one training loop."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rich.console import Console

from pixelchat.models import ModelConfig
from pixelchat.training.loop import preset, training_loop


def train(data: str = "scenes", *, arch: str = "textgan", size: int = 64, out: str | Path = "runs/train",
          steps: int | None = None, time_budget: float | None = None, resume: str | Path | None = None,
          dry_run: bool = False, model_options: dict | None = None, train_options: dict | None = None,
          console: Console | None = None) -> Path | None:
    """Train a generator on ``data`` ("scenes" or a dataset directory) and return its checkpoint.

    ``model_options`` and ``train_options`` override fields of the architecture's preset
    (`ModelConfig`, `TrainConfig`). With ``dry_run`` the options are validated and printed, the
    data is read, and nothing is trained or written.
    """
    console = console or Console(stderr=True)
    if steps is None and time_budget is None:
        raise ValueError("give --steps or --time-budget")
    model_cfg, train_cfg = preset(arch)
    model_cfg = ModelConfig.from_dict({**model_cfg.to_dict(), "size": size, **(model_options or {})})
    train_cfg = replace(train_cfg, data=data, steps=steps, time_budget=time_budget, **(train_options or {}))
    if data not in ("scenes", "digits") and not Path(data).expanduser().exists():
        raise FileNotFoundError(f"no dataset at {data}: give 'scenes', 'digits' or a dataset folder")
    out = Path(out)
    if resume is None and (out / "checkpoint.safetensors").exists():
        raise ValueError(f"{out} already holds a training run; pass --resume {out} to continue it or choose another --out")

    console.print({"model": model_cfg.to_dict(), "training": train_cfg.__dict__, "out": str(out)})

    from pixelchat.data import load_captioned_images
    from pixelchat.text.encoder import load_text_encoder

    dataset = load_captioned_images(data, size, limit=train_cfg.limit, scenes=train_cfg.scenes,
                                    captions_per_image=train_cfg.captions_per_image)
    console.print(f"data: {len(dataset)} images from {dataset.source or data}")
    if dry_run:
        return None
    if resume is not None and Path(resume).is_dir():
        resume = Path(resume) / "checkpoint.safetensors"
    encoder = load_text_encoder(train_cfg.text_encoder)
    return training_loop(model_cfg, train_cfg, out, data=dataset, encoder=encoder, resume=resume, console=console)
