"""The `pixelchat` command: each command is a thin shell over one public function."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Conversational image creation that runs offline on a CPU.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: export the procedural scenes set.")
app.add_typer(data_app, name="data")
err = Console(stderr=True)


@contextmanager
def user_errors():
    """Bad input becomes one line on stderr and exit code 2, never a traceback."""
    from pixelchat.engines import UnsupportedOperation
    from pixelchat.text.encoder import EncoderError
    from pixelchat.training.checkpoint import CheckpointError

    try:
        yield
    except (ValueError, CheckpointError, EncoderError, UnsupportedOperation, OSError) as e:
        message = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.strerror}: {e.filename}"
        err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True, markup=True, emoji=False)
        raise typer.Exit(2)


def writable_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".pixelchat-write-test"
    probe.touch()
    probe.unlink()
    return path


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="What to draw."),
    n: int = typer.Option(1, "--n", help="How many images (1-64)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the first image; image i uses seed + i."),
    out: Path = typer.Option(Path("out"), "--out", help="Folder for the PNG files."),
    model: Optional[Path] = typer.Option(None, "--model", help="A checkpoint; default: the shipped model."),
    truncation: Optional[float] = typer.Option(None, "--truncation", help="Truncate z to [-T, T]: less variety, more typical images."),
    size: Optional[int] = typer.Option(None, "--size", help="Image side; must match the model."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of paths."),
):
    """Draw images for a text prompt."""
    from pixelchat.generate import generate_records, save_generated

    with user_errors():
        writable_dir(out)
        results = generate_records(prompt, n, seed, model=model, truncation=truncation, size=size)
        paths = save_generated(results, out)
    if as_json:
        record = results[0].record
        typer.echo(json.dumps({"prompt": prompt, "files": [str(p) for p in paths], "seeds": [r.seed for r in results],
                               "model": record["model"]}))
    else:
        for p in paths:
            typer.echo(str(p))


@app.command()
def train(
    data: str = typer.Option("scenes", "--data", help="'scenes', 'digits', or a dataset folder (images + captions, MNIST, CIFAR)."),
    arch: str = typer.Option("textgan", "--arch", help="textgan | dcgan"),
    size: int = typer.Option(64, "--size", help="Image side in pixels."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Minutes of training."),
    out: Path = typer.Option(Path("runs/train"), "--out", help="Run folder: checkpoints, samples, stats."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="A run folder or training checkpoint to continue."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    ngf: Optional[int] = typer.Option(None, "--ngf", help="Generator width at full resolution."),
    ndf: Optional[int] = typer.Option(None, "--ndf", help="Discriminator width at full resolution."),
    scenes: Optional[int] = typer.Option(None, "--scenes", help="How many scenes to render (--data scenes)."),
    captions_per_image: Optional[int] = typer.Option(None, "--captions-per-image"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Read at most this many images."),
    unconditional: bool = typer.Option(False, "--unconditional", help="dcgan only: ignore the text."),
    bf16: bool = typer.Option(False, "--bf16/--fp32", help="bf16 autocast (pays off only on CPUs with bf16 instructions)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every"),
    sample_every: Optional[int] = typer.Option(None, "--sample-every"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the options, read the data, train nothing."),
):
    """Train a generator; the checkpoint it writes works as --model everywhere."""
    from pixelchat.train import train as train_fn

    model_options = {k: v for k, v in {"ngf": ngf, "ndf": ndf}.items() if v is not None}
    if unconditional:
        model_options["conditional"] = False
    train_options = {k: v for k, v in {
        "batch_size": batch_size, "scenes": scenes, "captions_per_image": captions_per_image, "limit": limit,
        "bf16": bf16, "seed": seed, "checkpoint_every": checkpoint_every, "sample_every": sample_every,
    }.items() if v is not None}
    with user_errors():
        final = train_fn(data, arch=arch, size=size, out=out, steps=steps, time_budget=time_budget, resume=resume,
                         dry_run=dry_run, model_options=model_options, train_options=train_options, console=err)
    if final is not None:
        typer.echo(str(final))


@data_app.command("export")
def data_export(
    name: str = typer.Argument(..., help="Dataset to export: scenes."),
    n: int = typer.Option(1000, "--n", help="How many samples."),
    size: int = typer.Option(64, "--size", help="Image side: 32, 64, 128 or 256."),
    out: Path = typer.Option(..., "--out", help="An empty folder."),
    split: str = typer.Option("train", "--split", help="Caption phrasings: train, heldout or all."),
    first_seed: int = typer.Option(0, "--first-seed", help="Seed of the first sample."),
):
    """Write a dataset as images + metadata.jsonl (the imagefolder layout)."""
    from pixelchat.data.export import export_scenes

    with user_errors():
        if name != "scenes":
            raise ValueError(f"unknown dataset {name!r}; available: scenes")
        meta = export_scenes(out, n, size, split=split, first_seed=first_seed, progress=err.is_terminal)
    typer.echo(str(meta))


def main() -> None:
    app(prog_name="pixelchat")


if __name__ == "__main__":
    sys.exit(main())
