"""Output checks: each looks at a finished picture (and the record of how it was made) and may withhold it.

A checker has a ``name`` and ``check(image, record) -> CheckResult``. Checkers are found by name
in a registry, so an operator lists the ones to run (``PIXELCHAT_OUTPUT_CHECKERS=blank,prompt``);
``run_checkers`` returns the first failure. Shipped:

- ``blank``: a near-uniform picture (one flat colour): a failed render, not an image to hand over;
- ``prompt``: moderates the prompt in the record again; after a conversation turn or a language
  model's rewrite that prompt is not what the user typed, so it is worth a second look;
- ``nudenet``: the NudeNet detector (optional: ``pip install 'pixelchat[nudenet]'``; AGPL-3.0;
  off unless named) withholds pictures with exposed breasts, genitals or buttocks.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    category: str | None = None  # what kind of problem: "failed_render", "sexual", ...
    score: float = 0.0  # the checker's own measure; higher is worse
    reason: str = ""  # a sentence for the user
    checker: str = ""  # which checker said so


@runtime_checkable
class Checker(Protocol):
    name: str

    def check(self, image: Image.Image, record: dict | None) -> CheckResult: ...


class CheckerError(ValueError):
    """A checker that cannot be loaded: an unknown name or a missing optional package."""


class OutputBlocked(ValueError):
    """A picture an output checker withheld; ``result`` says which and why."""

    def __init__(self, result: CheckResult):
        super().__init__(f"the picture was withheld by the {result.checker!r} output check: {result.reason}")
        self.result = result


CHECKERS: dict[str, Callable[[], Checker]] = {}


def register_checker(name: str):
    """Class decorator: make a checker loadable by ``name``."""

    def wrap(factory):
        CHECKERS[name] = factory
        return factory

    return wrap


def load_checkers(names: Sequence[str]) -> list[Checker]:
    """The checkers called ``names``, in that order; every name is checked before any is built."""
    names = [n.strip() for n in names if n and n.strip()]
    unknown = [n for n in names if n not in CHECKERS]
    if unknown:
        raise CheckerError(f"unknown output checker{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                           f"available: {', '.join(sorted(CHECKERS))}")
    return [CHECKERS[n]() for n in dict.fromkeys(names)]


def run_checkers(checkers: Sequence[Checker], image: Image.Image, record: dict | None = None) -> CheckResult | None:
    """The first failed check, or None when every checker passes the picture."""
    for checker in checkers:
        result = checker.check(image, record or {})
        if not result.ok:
            return result if result.checker else CheckResult(False, result.category, result.score, result.reason,
                                                             checker.name)
    return None


def enforce_output(checkers: Sequence[Checker], image: Image.Image, record: dict | None = None) -> None:
    """``run_checkers`` that raises ``OutputBlocked`` on a failure."""
    failed = run_checkers(checkers, image, record)
    if failed is not None:
        raise OutputBlocked(failed)


@register_checker("blank")
class BlankChecker:
    """Withholds a near-uniform picture. Measured on the shipped model and 300 scenes renders (all
    times of day): at least 17 levels of standard deviation and at most 59% of the pixels near the
    median colour; a black, white or flat-grey failure is at 0 and 100%."""

    name = "blank"

    def __init__(self, *, tolerance: int = 10, max_flat: float = 0.95, min_std: float = 4.0):
        self.tolerance = tolerance  # how close to the median colour a pixel must be to count as flat (0-255)
        self.max_flat = max_flat  # the share of flat pixels at which the picture is blank
        self.min_std = min_std  # below this standard deviation (in every channel) the picture is blank

    def check(self, image: Image.Image, record: dict | None = None) -> CheckResult:
        pixels = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32)
        flat = pixels.reshape(-1, 3)  # (N, 3)
        share = float((np.abs(flat - np.median(flat, axis=0)).max(axis=1) <= self.tolerance).mean())
        std = float(flat.std(axis=0).max())
        if share >= self.max_flat or std < self.min_std:
            return CheckResult(False, "failed_render", share,
                               f"the picture is a single flat colour ({share:.0%} of it), a failed render", self.name)
        return CheckResult(True, None, share, "", self.name)


@register_checker("prompt")
class PromptChecker:
    """Moderates the record's final prompt (and negative prompt) with the default moderator."""

    name = "prompt"

    def __init__(self, moderator=None):
        self.moderator = moderator

    def check(self, image: Image.Image, record: dict | None = None) -> CheckResult:
        from pixelchat.safety.moderation import default_moderator

        moderator = self.moderator or default_moderator()
        for key in ("prompt", "negative_prompt"):
            text = (record or {}).get(key)
            if isinstance(text, str) and text.strip():
                decision = moderator.check(text)
                if not decision.allowed:
                    return CheckResult(False, decision.category, decision.score, decision.reason, self.name)
        return CheckResult(True, None, 0.0, "", self.name)


NUDENET_EXPOSED = ("FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "BUTTOCKS_EXPOSED",
                   "ANUS_EXPOSED")


@register_checker("nudenet")
class NudeNetChecker:
    """NudeNet's detector (https://github.com/notAI-tech/NudeNet, AGPL-3.0): withholds a picture where it
    finds an exposed breast, genitals, buttocks or anus with at least ``threshold`` confidence. The
    package is imported when the checker is built (a clear error if it is missing); the detector's
    model is loaded on the first picture."""

    name = "nudenet"

    def __init__(self, *, threshold: float = 0.5):
        try:
            importlib.import_module("nudenet")
        except ImportError as e:
            raise CheckerError("the 'nudenet' output checker needs the nudenet package: "
                               "pip install 'pixelchat[nudenet]' (AGPL-3.0 licensed)") from e
        self.threshold = threshold
        self._detector = None

    def detections(self, image: Image.Image) -> list[dict]:
        if self._detector is None:
            from nudenet import NudeDetector

            self._detector = NudeDetector()
        # NudeNet 3 reads a file path in every version; a temporary PNG keeps us independent of its array handling
        fd, path = tempfile.mkstemp(suffix=".png")
        try:
            with os.fdopen(fd, "wb") as f:
                image.convert("RGB").save(f, format="PNG")
            return list(self._detector.detect(path))
        finally:
            os.unlink(path)

    def check(self, image: Image.Image, record: dict | None = None) -> CheckResult:
        found = [d for d in self.detections(image) if d.get("class") in NUDENET_EXPOSED]
        score = max((float(d.get("score", 0.0)) for d in found), default=0.0)
        if score >= self.threshold:
            return CheckResult(False, "sexual", score, "the picture shows nudity, which this service does not hand out",
                               self.name)
        return CheckResult(True, None, score, "", self.name)
