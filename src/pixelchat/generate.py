"""`pixelchat.generate(...)`: text to images with the shipped model or any checkpoint."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from pixelchat.engines import GeneratedImage, GenerateRequest, load_engine
from pixelchat.engines.base import check_pipeline_settings
from pixelchat.imagefiles import save_png


def generate(prompt: str, n: int = 1, seed: int | None = None, *, model: str | Path | None = None,
             truncation: float | None = None, size: int | None = None,
             negative_prompt: str | None = None, engine: str | None = None, steps: int | None = None,
             guidance: float | None = None, scheduler: str | None = None, attempts: int | None = None) -> list[Image.Image]:
    """``n`` images for ``prompt``. Image i uses seed ``seed + i``: the same prompt, seed and model
    give identical pixels. Each image's ``info["pixelchat"]`` holds its generation record.
    engine: "gan" or "diffusers" (default: inferred from ``model``, see `pixelchat.engines.engine_kind`).
    steps, guidance, scheduler (a name such as "euler", "dpm++", "ddim"): a diffusion pipeline's
    settings for this call (default: the engine's); the built-in models refuse them. attempts: a spec
    model (the shipped one) reads each new picture back with its checker and draws a picture that
    misses something the prompt said again, up to this many draws in all (default 4; 1: no check)."""
    results = generate_records(prompt, n, seed, model=model, truncation=truncation, size=size,
                               negative_prompt=negative_prompt, engine=engine, steps=steps, guidance=guidance,
                               scheduler=scheduler, attempts=attempts)
    for r in results:
        r.image.info["pixelchat"] = r.record
    return [r.image for r in results]


def generate_records(prompt: str, n: int = 1, seed: int | None = None, *, model: str | Path | None = None,
                     truncation: float | None = None, size: int | None = None,
                     negative_prompt: str | None = None, engine: str | None = None, steps: int | None = None,
                     guidance: float | None = None, scheduler: str | None = None,
                     attempts: int | None = None) -> list[GeneratedImage]:
    """As `generate`, returning each image with its seed and full record."""
    request = GenerateRequest(prompt=prompt, n=n, seed=seed, truncation=truncation, size=size,
                              negative_prompt=negative_prompt, steps=steps, guidance=guidance, scheduler=scheduler,
                              attempts=attempts)
    served = load_engine(model, engine)
    check_pipeline_settings(served, steps=steps, guidance=guidance, scheduler=scheduler)
    return served.generate(request)


def save_generated(results: list[GeneratedImage], out_dir: str | Path, stem: str = "image") -> list[Path]:
    """Write PNGs with their records into ``out_dir``, never overwriting an existing file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in results:
        path = out / f"{stem}-{r.seed}.png"
        k = 1
        while path.exists():
            path = out / f"{stem}-{r.seed}-{k}.png"
            k += 1
        paths.append(save_png(r.image, path, r.record))
    return paths
