"""`pixelchat.train(...)`: validate options, print and save them, call the one training loop.

`python -m pixelchat.train OPTIONS` is the `pixelchat train` command; it is what torchrun runs in each
process of a multi-process run (docs/distributed-training.md).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rich.console import Console

from pixelchat.models import ModelConfig
from pixelchat.training import distributed
from pixelchat.training.loop import TrainConfig, preset, training_loop


def configure(data: str = "scenes", *, arch: str = "textgan", size: int = 64, out: str | Path = "runs/train",
              steps: int | None = None, time_budget: float | None = None, resume: str | Path | None = None,
              model_options: dict | None = None, train_options: dict | None = None) -> tuple[ModelConfig, TrainConfig]:
    """The run's configs: the architecture's preset with the given overrides. Options that cannot run
    are refused here, before any data is read or anything written."""
    if steps is None and time_budget is None:
        raise ValueError("give --steps or --time-budget")
    model_cfg, train_cfg = preset(arch)
    model_cfg = ModelConfig.from_dict({**model_cfg.to_dict(), "size": size, **(model_options or {})})
    train_cfg = replace(train_cfg, data=data, steps=steps, time_budget=time_budget, **(train_options or {}))
    distributed.check_device(train_cfg.device, train_cfg.backend)
    if data not in ("scenes", "digits") and not Path(data).expanduser().exists():
        raise FileNotFoundError(f"no dataset at {data}: give 'scenes', 'digits' or a dataset folder")
    out = Path(out)
    if resume is None and (out / "checkpoint.safetensors").exists():
        raise ValueError(f"{out} already holds a training run; pass --resume {out} to continue it or choose another --out")
    return model_cfg, train_cfg


def train(data: str = "scenes", *, arch: str = "textgan", size: int = 64, out: str | Path = "runs/train",
          steps: int | None = None, time_budget: float | None = None, resume: str | Path | None = None,
          dry_run: bool = False, model_options: dict | None = None, train_options: dict | None = None,
          console: Console | None = None) -> Path | None:
    """Train a generator on ``data`` ("scenes" or a dataset directory) and return its checkpoint.

    ``model_options`` and ``train_options`` override fields of the architecture's preset
    (`ModelConfig`, `TrainConfig`). With ``dry_run`` the options are validated and printed, the
    data is read, and nothing is trained or written.

    Started by torchrun, the process joins its group and trains its share of every batch; only rank 0
    prints and writes, and the others return None.
    """
    model_cfg, train_cfg = configure(data, arch=arch, size=size, out=out, steps=steps, time_budget=time_budget,
                                     resume=resume, model_options=model_options, train_options=train_options)
    out = Path(out)
    with distributed.process_group(train_cfg.device, train_cfg.backend):
        main = distributed.rank() == 0
        console = (console or Console(stderr=True)) if main else Console(quiet=True)
        distributed.check_batch(train_cfg.batch_size, distributed.world_size())
        console.print({"model": model_cfg.to_dict(), "training": train_cfg.__dict__, "out": str(out),
                       "processes": distributed.world_size()})

        from pixelchat.data import load_captioned_images
        from pixelchat.text.encoder import load_text_encoder

        dataset = load_captioned_images(data, size, limit=train_cfg.limit, scenes=train_cfg.scenes,
                                        captions_per_image=train_cfg.captions_per_image, progress=main)
        console.print(f"data: {len(dataset)} images from {dataset.source or data}")
        if dry_run:
            return None
        if resume is not None and Path(resume).is_dir():
            resume = Path(resume) / "checkpoint.safetensors"
        # rank 0 embeds the captions (the spec GAN reads none: its text path is the prompt reader)
        encoder = load_text_encoder(train_cfg.text_encoder) if main and model_cfg.arch != "specgan" else None
        final = training_loop(model_cfg, train_cfg, out, data=dataset, encoder=encoder, resume=resume, console=console)
    return final if main else None


def main() -> None:
    """`python -m pixelchat.train OPTIONS`: the options of `pixelchat train`, defined once, in the CLI."""
    import typer

    from pixelchat.cli import app

    typer.main.get_command(app).commands["train"].main(prog_name="python -m pixelchat.train")


if __name__ == "__main__":
    main()
