"""Evaluation prompt files (JSON lines) and the standard `scenes` suite built from held-out phrasings."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixelchat.data.captions import caption_scene
from pixelchat.data.scenes import SCHEMA, observable, sample_attributes

MAX_PROMPTS = 100_000


class PromptFileError(ValueError):
    """A prompt file that cannot be read; the message names the line."""


@dataclass
class EvalPrompt:
    prompt: str
    attributes: dict[str, str] = field(default_factory=dict)  # only the attributes the prompt names

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "attributes": self.attributes}


def consistent(attributes: dict[str, str]) -> bool:
    """Whether some complete scene has these (partial) attributes and can show them all."""
    try:
        full = complete_attributes(attributes, np.random.default_rng(0))
    except ValueError:
        return False
    return set(attributes) <= set(observable(full))


def complete_attributes(attributes: dict[str, str], rng: np.random.Generator, tries: int = 200) -> dict[str, str]:
    """A full scene that has ``attributes`` (the rest drawn at random, within the schema's rules)."""
    for _ in range(tries):
        try:
            full = sample_attributes(rng, fixed=attributes)
        except ValueError:
            continue
        if all(full[k] == v for k, v in attributes.items()):
            if "cloud_color" in attributes and full["clouds"] == "none":
                continue
            return full
    raise ValueError(f"no scene has {attributes}")


def parse_prompt_line(line: str, where: str) -> EvalPrompt:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise PromptFileError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise PromptFileError(f"{where}: expected a JSON object with a \"prompt\"")
    unknown = set(obj) - {"prompt", "attributes"}
    if unknown:
        raise PromptFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))} (expected prompt, attributes)")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptFileError(f"{where}: \"prompt\" must be a non-empty string")
    attributes = obj.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise PromptFileError(f"{where}: \"attributes\" must be an object of attribute → value")
    for name, value in attributes.items():
        if name not in SCHEMA:
            raise PromptFileError(f"{where}: unknown attribute {name!r} (known: {', '.join(SCHEMA)})")
        if value not in SCHEMA[name]:
            raise PromptFileError(f"{where}: {name}={value!r} is not a value of {name} ({', '.join(SCHEMA[name])})")
    if attributes and not consistent(attributes):
        raise PromptFileError(f"{where}: no scene can show {json.dumps(attributes)} (see the schema's rules)")
    return EvalPrompt(prompt.strip(), dict(attributes))


def read_prompts(path: str | Path) -> list[EvalPrompt]:
    """Read a prompt file: one JSON object per line, {"prompt": ..., "attributes": {...}}; blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"no prompt file at {path}")
    prompts = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                prompts.append(parse_prompt_line(line, f"{path}:{number}"))
            if len(prompts) > MAX_PROMPTS:
                raise PromptFileError(f"{path}: more than {MAX_PROMPTS} prompts")
    if not prompts:
        raise PromptFileError(f"{path}: no prompts")
    return prompts


def write_prompts(prompts: list[EvalPrompt], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in prompts), encoding="utf-8")
    return path


def scenes_suite(per_count: int = 54, max_named: int = 6, seed: int = 2026, split: str = "eval") -> list[EvalPrompt]:
    """``per_count`` prompts naming each number 1 … ``max_named`` of attributes, phrased only with the
    held-out phrasings; the first prompts of each count go through every (attribute, value) in turn."""
    rng = np.random.default_rng(seed)
    pairs = [(name, value) for name, values in SCHEMA.items() for value in values]
    prompts: list[EvalPrompt] = []
    for count in range(1, max_named + 1):
        for i in range(per_count):
            name, value = pairs[i % len(pairs)] if i < len(pairs) else pairs[int(rng.integers(len(pairs)))]
            if name == "cloud_color" and count == 1:
                name, value = "clouds", ("few", "many")[i % 2]
            fixed = {name: value}
            if name == "cloud_color":
                fixed["clouds"] = ("few", "many")[int(rng.integers(2))]
            if name == "boat":  # boats are named only where there is water
                fixed["water"] = ("lake", "sea")[int(rng.integers(2))]
            attrs = complete_attributes(fixed, rng)
            names = ["clouds", "cloud_color"] if name == "cloud_color" else [name]
            while len(names) < count:
                pool = [n for n in SCHEMA if n not in names and n != "cloud_color"
                        and not (n == "boat" and attrs["water"] == "none")]
                if "clouds" in names and attrs["clouds"] != "none" and "cloud_color" not in names:
                    pool.append("cloud_color")
                names.append(pool[int(rng.integers(len(pool)))])
            caption, named = caption_scene(attrs, rng, split, names)
            assert set(named) == set(names), (named, names)
            prompts.append(EvalPrompt(caption, {n: attrs[n] for n in named}))
    return prompts
