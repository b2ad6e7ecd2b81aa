"""The engine protocol: every engine serves generate, edit, describe and vary.

Requests and results are plain dataclasses so that the services above (conversation, server)
never touch tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from PIL import Image

if TYPE_CHECKING:
    from pixelchat.vision.describer import Description

MAX_PROMPT_CHARS = 1000
MAX_IMAGES = 64


class UnsupportedOperation(NotImplementedError):
    """The engine cannot do this (yet)."""


@dataclass
class GenerateRequest:
    prompt: str
    n: int = 1
    seed: int | None = None  # image i gets seed + i; None draws a random seed
    truncation: float | None = None  # draw z from N(0, 1) truncated to [-t, t]
    size: int | None = None  # None: the model's native size
    negative_prompt: str | None = None


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
