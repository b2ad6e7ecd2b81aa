"""Output checkers: the registry, the blank-render check on real renders, the prompt re-check, and the optional
NudeNet checker (its missing-package message, and its logic on a stand-in detector)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelchat.data.scenes import render_scene, sample_attributes
from pixelchat.safety.checkers import (
    CHECKERS, BlankChecker, Checker, CheckerError, CheckResult, NudeNetChecker, OutputBlocked, PromptChecker,
    enforce_output, load_checkers, register_checker, run_checkers,
)


def flat(colour, size=64) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def test_registry_and_protocol():
    assert {"blank", "prompt", "nudenet"} <= set(CHECKERS)
    [blank] = load_checkers(["blank", " blank "])
    assert isinstance(blank, BlankChecker) and isinstance(blank, Checker) and blank.name == "blank"
    assert load_checkers([]) == []


def test_unknown_checker_is_a_clear_error():
    with pytest.raises(CheckerError, match=r"unknown output checker 'nsfw-ai'; available: .*blank.*nudenet") as e:
        load_checkers(["blank", "nsfw-ai"])
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("image", [flat((0, 0, 0)), flat((255, 255, 255)), flat((128, 130, 127)),
                                   flat((20, 40, 200), size=512)])
def test_blank_rejects_flat_pictures(image):
    result = BlankChecker().check(image, {})
    assert not result.ok and result.category == "failed_render" and result.score >= 0.95 and result.reason


def test_blank_rejects_a_failed_render_with_specks():
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[np.random.default_rng(0).random((64, 64)) < 0.02] = 255  # a black frame with a few stray pixels
    assert not BlankChecker().check(Image.fromarray(pixels), {}).ok


def test_blank_passes_real_renders_day_and_night():
    rng = np.random.default_rng(1)
    checker = BlankChecker()
    for i, time in enumerate(["day", "sunset", "night", "night", "night", "day"] * 4):
        attributes = sample_attributes(rng, {"time": time})
        result = checker.check(render_scene(attributes, 64, seed=i), {"prompt": "x"})
        assert result.ok, (attributes, result)
        assert result.score < 0.8


def test_run_checkers_returns_the_first_failure_and_enforce_raises():
    class Always:
        def __init__(self, name, ok):
            self.name, self.ok, self.calls = name, ok, 0

        def check(self, image, record):
            self.calls += 1
            return CheckResult(self.ok, None if self.ok else "test", 0.5, "" if self.ok else "not today")

    first, second, third = Always("first", True), Always("second", False), Always("third", False)
    result = run_checkers([first, second, third], flat((1, 2, 3)), {"prompt": "a lake"})
    assert result == CheckResult(False, "test", 0.5, "not today", "second") and third.calls == 0
    assert run_checkers([first], flat((1, 2, 3))) is None
    with pytest.raises(OutputBlocked, match="withheld by the 'second' output check: not today") as e:
        enforce_output([first, second], flat((1, 2, 3)), {})
    assert isinstance(e.value, ValueError) and e.value.result.category == "test"


def test_register_a_checker(monkeypatch):
    monkeypatch.setattr("pixelchat.safety.checkers.CHECKERS", dict(CHECKERS))

    @register_checker("small")
    class Small:
        name = "small"

        def check(self, image, record):
            ok = min(image.size) >= 32
            return CheckResult(ok, None if ok else "too_small", 0.0, "" if ok else "too small", self.name)

    [small] = load_checkers(["small"])
    assert not small.check(flat((0, 0, 0), 16), {}).ok and small.check(flat((0, 0, 0), 32), {}).ok


def test_prompt_checker_moderates_the_final_prompt():
    from pixelchat.safety.moderation import DEFAULT_POLICY, Moderator

    checker = PromptChecker(Moderator(DEFAULT_POLICY))
    image = flat((10, 20, 30))
    assert checker.check(image, {"prompt": "a lake at dawn"}).ok and checker.check(image, {}).ok
    result = checker.check(image, {"prompt": "a lake at dawn", "negative_prompt": "a gory decapitation"})
    assert not result.ok and result.category == "violence_gore" and result.checker == "prompt"


def test_nudenet_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "nudenet", None)  # as if it were not installed
    with pytest.raises(CheckerError, match=r"pip install 'pixelchat\[nudenet\]'") as e:
        load_checkers(["nudenet"])
    assert isinstance(e.value, ValueError)


def test_nudenet_checker_logic_on_a_stand_in_detector(monkeypatch):
    seen = []

    class NudeDetector:
        def detect(self, path):
            assert Path(path).is_file() and Image.open(path).size == (48, 40)
            seen.append(path)
            return DETECTIONS

    fake = types.ModuleType("nudenet")
    fake.NudeDetector = NudeDetector
    monkeypatch.setitem(sys.modules, "nudenet", fake)
    [checker] = load_checkers(["nudenet"])
    image = flat((200, 150, 120)).resize((48, 40))
    DETECTIONS = [{"class": "FACE_FEMALE", "score": 0.9, "box": [0, 0, 4, 4]},
                  {"class": "BELLY_EXPOSED", "score": 0.8, "box": [0, 0, 4, 4]}]
    assert checker.check(image, {}).ok
    DETECTIONS = [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.71, "box": [0, 0, 4, 4]}]
    result = checker.check(image, {})
    assert not result.ok and result.category == "sexual" and result.score == pytest.approx(0.71)
    assert isinstance(checker, NudeNetChecker) and not any(Path(p).exists() for p in seen)  # temporary files gone


def test_the_cli_runs_the_operators_checkers_before_writing(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELCHAT_")}
    cli = [sys.executable, "-m", "pixelchat.cli", "generate", "a lake at noon", "--seed", "1"]
    passed = subprocess.run([*cli, "--out", str(tmp_path / "a")], env={**env, "PIXELCHAT_OUTPUT_CHECKERS": "blank"},
                            capture_output=True, text=True)
    assert passed.returncode == 0, passed.stderr
    assert len(list((tmp_path / "a").glob("*.png"))) == 1
    unknown = subprocess.run([*cli, "--out", str(tmp_path / "b")], env={**env, "PIXELCHAT_OUTPUT_CHECKERS": "nope"},
                             capture_output=True, text=True)
    assert unknown.returncode == 2 and "nope" in unknown.stderr
    assert not list((tmp_path / "b").glob("*.png"))
