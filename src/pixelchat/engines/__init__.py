"""Engines: one protocol (generate, edit, describe, vary), implemented by the built-in GAN engine."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pixelchat.engines.base import Engine, GeneratedImage, GenerateRequest, ModelInfo, UnsupportedOperation
from pixelchat.engines.gan import GANEngine

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL = WEIGHTS_DIR / "pixelchat-scenes64.safetensors"


def resolve_model(model: str | Path | None) -> Path:
    return Path(model).expanduser().resolve() if model else DEFAULT_MODEL


@lru_cache(maxsize=4)
def _load(path: Path, mtime: float) -> Engine:
    return GANEngine(path)


def load_engine(model: str | Path | None = None) -> Engine:
    """The engine for ``model`` (a checkpoint path; None: the shipped default), cached per file version."""
    path = resolve_model(model)
    from pixelchat.training.checkpoint import checkpoint_files

    weights, _ = checkpoint_files(path)
    return _load(path, weights.stat().st_mtime if weights.exists() else 0.0)


__all__ = ["DEFAULT_MODEL", "Engine", "GANEngine", "GenerateRequest", "GeneratedImage", "ModelInfo",
           "UnsupportedOperation", "load_engine", "resolve_model"]
