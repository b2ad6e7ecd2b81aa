"""Engines: one protocol (generate, edit, describe, vary). The built-in GAN engine serves our own
checkpoints; the diffusers engine (the `diffusers` extra) serves diffusion pipelines."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pixelchat.engines.base import Engine, GeneratedImage, GenerateRequest, ModelInfo, UnsupportedOperation
from pixelchat.engines.gan import GANEngine

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL = WEIGHTS_DIR / "pixelchat-spec64.safetensors"


ENGINES = ("gan", "diffusers")


def resolve_model(model: str | Path | None) -> Path:
    return Path(model).expanduser().resolve() if model else DEFAULT_MODEL


def engine_kind(model: str | Path | None, engine: str | None = None) -> str:
    """Which engine serves ``model``: ``engine`` when given, else "diffusers" for a pipeline folder
    (one with model_index.json) and "gan" for everything else."""
    if engine is not None:
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
        return engine
    if model and (Path(model).expanduser() / "model_index.json").is_file():
        return "diffusers"
    return "gan"


@lru_cache(maxsize=4)
def _load(path: Path, mtime: float, runtime: str) -> Engine:
    from pixelchat.training.checkpoint import checkpoint_arch

    if checkpoint_arch(path) == "specgan":
        from pixelchat.engines.spec import SpecEngine

        return SpecEngine(path, runtime=runtime)
    return GANEngine(path, runtime=runtime)


def load_engine(model: str | Path | Engine | None = None, engine: str | None = None, *, device: str | None = None,
                dtype: str | None = None, offload: bool = False, runtime: str | None = None) -> Engine:
    """The engine for ``model``: a checkpoint path (None: the shipped default), a diffusers pipeline
    (a folder or a hub id, with ``engine="diffusers"``), or an engine already loaded, returned as is.
    Loaded engines are cached per file version. device ("cuda", "cuda:N", "mps", "cpu"), dtype
    ("fp16", "bf16", "fp32") and offload (model CPU offload) place a diffusers pipeline (see
    `pixelchat.engines.diffusers.runtime`); the built-in engines refuse them. runtime: what runs the
    built-in networks (`pixelchat.engines.runtime`: eager, compile, onnx, openvino, int8; None:
    ``PIXELCHAT_RUNTIME`` or eager)."""
    if isinstance(model, Engine):
        if device is not None or dtype is not None or offload:
            raise ValueError("device, dtype and offload are given when an engine is loaded, not to one already loaded")
        return model
    if engine_kind(model, engine) == "diffusers":
        from pixelchat.engines.diffusers import load_diffusers_engine

        return load_diffusers_engine(model, device=device, dtype=dtype, offload=offload)
    if device is not None or dtype is not None or offload:
        raise UnsupportedOperation("device, dtype and offload apply to diffusion pipelines (--engine diffusers); "
                                   "the built-in models run on the CPU in float32")
    path = resolve_model(model)
    from pixelchat.training.checkpoint import checkpoint_files

    from pixelchat.engines.runtime import runtime_name

    weights, _ = checkpoint_files(path)
    return _load(path, weights.stat().st_mtime if weights.exists() else 0.0, runtime_name(runtime))


__all__ = ["DEFAULT_MODEL", "ENGINES", "Engine", "GANEngine", "GenerateRequest", "GeneratedImage", "ModelInfo",
           "UnsupportedOperation", "engine_kind", "load_engine", "resolve_model"]
