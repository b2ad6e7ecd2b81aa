"""The engine protocol: every engine serves generate, edit, describe and vary.

Requests and results are plain dataclasses so that the services above (conversation, server)
never touch tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from PIL import Image

from pixelchat import __version__

if TYPE_CHECKING:
    from pixelchat.vision.describer import Description

MAX_PROMPT_CHARS = 1000
MAX_IMAGES = 64
MAX_SEED = 2**63 - 1


class UnsupportedOperation(NotImplementedError):
    """The engine cannot do this (yet)."""


def check_prompt(prompt: str, negative_prompt: str | None = None, *, empty_ok: bool = False) -> None:
    """The limits every engine puts on prompts (ValueError)."""
    if not isinstance(prompt, str) or (not prompt.strip() and not empty_ok):
        raise ValueError("the prompt is empty")
    for what, text in (("prompt", prompt), ("negative prompt", negative_prompt or "")):
        if len(text) > MAX_PROMPT_CHARS:
            raise ValueError(f"the {what} is {len(text)} characters long; the limit is {MAX_PROMPT_CHARS}")


def check_seed(seed: int | None) -> None:
    """A seed leaves room for the seeds of a whole batch after it (image i gets seed + i)."""
    if seed is not None and not 0 <= seed <= MAX_SEED - MAX_IMAGES:
        raise ValueError(f"seed must be between 0 and {MAX_SEED - MAX_IMAGES}")


PIPELINE_SETTINGS = ("steps", "guidance", "scheduler")
PLACEMENT = ("device", "dtype", "offload")


def check_pipeline_settings(engine, **settings) -> None:
    """Refuse (UnsupportedOperation) the settings of diffusion pipelines (steps, guidance, scheduler,
    device, dtype, offload) given to an engine that has none: the built-in models draw in one pass."""
    given = [k for k, v in settings.items() if v not in (None, False)]
    if given and not getattr(engine, "pipeline_settings", False):
        info = getattr(engine, "info", None)
        which = f"{info.id} ({info.engine} engine)" if info is not None else "this engine"
        raise UnsupportedOperation(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to diffusion "
                                   f"pipelines (--engine diffusers); {which} draws in one pass and takes none")


@dataclass
class GenerateRequest:
    prompt: str
    n: int = 1
    seed: int | None = None  # image i gets seed + i; None draws a random seed
    truncation: float | None = None  # draw z from N(0, 1) truncated to [-t, t]
    size: int | None = None  # the side in pixels; None: the model's default size (ModelInfo.default_size)
    negative_prompt: str | None = None
    spec: dict[str, str] | None = None  # spec-conditioned models: values given directly, over what the prompt says
    # spec-conditioned scenes models: at most this many draws of a picture while the checker finds
    # something the prompt said missing (another latent each time); None: the engine's default, 1: no check
    attempts: int | None = None
    # diffusion pipelines only (None: the engine's default): denoising steps, classifier-free
    # guidance scale, scheduler by name (engines.diffusers.SCHEDULERS)
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None


@dataclass
class GeneratedImage:
    image: Image.Image
    prompt: str
    seed: int
    record: dict = field(default_factory=dict)  # the generation record written into the file


@dataclass
class ModelInfo:
    id: str
    sha256: str
    engine: str
    arch: str
    size: int
    text_encoder: str
    path: str
    # The sides it draws (the generator's own and what its upsampler adds); empty: ``size`` only.
    sizes: tuple[int, ...] = ()
    upsampler: dict | None = None  # {"id", "sha256"} of the upsampler behind the larger sizes

    @property
    def default_size(self) -> int:
        """What a request that names no size gets: 256 where the model draws it, else its own size."""
        return 256 if 256 in self.sizes else self.size

    def made_by(self, created: str) -> dict:
        """The part of every image's record that names the model and engine that made it, and when."""
        return {"model": {"id": self.id, "sha256": self.sha256, "arch": self.arch, "text_encoder": self.text_encoder},
                "engine": self.engine, "pixelchat_version": __version__, "created": created}


@runtime_checkable
class Engine(Protocol):
    info: ModelInfo

    def check_inputs(self, request: GenerateRequest) -> None:
        """Raise ValueError (or UnsupportedOperation) for a request `generate` would refuse."""

    def generate(self, request: GenerateRequest) -> list[GeneratedImage]: ...

    def generate_batch(self, requests: list[GenerateRequest]) -> list[list[GeneratedImage]]:
        """Several requests at once (what the server's dynamic batching calls); the same pictures as
        one `generate` call per request."""

    def edit(self, image: Image.Image, prompt: str, **options) -> list[GeneratedImage]:
        """Redraw ``image`` under ``prompt`` (the whole desired picture), keeping what it does not change."""

    def describe(self, image: Image.Image) -> Description: ...

    def vary(self, image: Image.Image, **options) -> list[GeneratedImage]: ...
