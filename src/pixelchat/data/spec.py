"""The scene spec: what a picture shows, one value per attribute of a schema.

It is the object the dual path passes around: the prompt reader writes a partial spec, the
rest is filled in from the data's prior (reproducibly, from the picture's seed), the
generator draws the full spec, the describer reads one back, and an edit changes one.

A schema is ``{attribute: [values]}``: the ten attributes of ``scenes``, or one attribute,
``class``, for a class folder, CIFAR, MNIST or the digits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pixelchat.data.scenes import SCHEMA as SCENES_SCHEMA
from pixelchat.data.scenes import sample_attributes, validate_attributes

# How a value came to be in a spec.
SAID, FILLED, SEEN = "said", "filled", "seen"
SOURCES = (SAID, FILLED, SEEN)


class SpecError(ValueError):
    """A spec the schema cannot hold: an unknown attribute or value, or an impossible combination."""


def is_scenes(schema: dict[str, list[str]] | dict[str, tuple[str, ...]]) -> bool:
    return {k: list(v) for k, v in schema.items()} == {k: list(v) for k, v in SCENES_SCHEMA.items()}


def check_values(values: dict[str, str], schema: dict[str, list[str]], *, complete: bool = False) -> None:
    """Names and values against the schema (and, for a full scenes spec, its constraints)."""
    if not isinstance(values, dict):
        raise SpecError("a spec is a mapping of attribute → value")
    unknown = sorted(set(values) - set(schema))
    if unknown:
        raise SpecError(f"unknown attribute(s) {', '.join(unknown)}: this model knows {', '.join(schema)}")
    for name, value in values.items():
        if value not in schema[name]:
            raise SpecError(f"{name}={value!r}: expected one of {', '.join(schema[name])}")
    if complete:
        missing = sorted(set(schema) - set(values))
        if missing:
            raise SpecError(f"the spec lacks {', '.join(missing)}")
        if is_scenes(schema):
            try:
                validate_attributes(values)
            except ValueError as e:
                raise SpecError(str(e)) from None
    elif is_scenes(schema):
        check_compatible(values)


def incompatible(values: dict[str, str]) -> list[tuple[str, str, str]]:
    """The pairs of values in a partial scenes spec that no full one can complete (a boat with no water,
    the moon by day): (attribute, attribute, why) each."""
    v, out = values, []
    if v.get("boat") == "yes" and v.get("water") == "none":
        out.append(("boat", "water", "a boat needs water (lake or sea)"))
    if v.get("celestial") == "sun" and v.get("time") == "night":
        out.append(("celestial", "time", "the sun is only in the sky by day or at sunset"))
    if v.get("celestial") == "moon" and v.get("time") not in (None, "night"):
        out.append(("celestial", "time", "the moon is only in the sky at night"))
    return out


def check_compatible(values: dict[str, str]) -> None:
    """A partial scenes spec that no full one can complete is a SpecError saying why."""
    for _, _, why in incompatible(values)[:1]:
        raise SpecError(why)


@dataclass
class SceneSpec:
    """Every attribute's value, whether the user said it, it was filled in or it was seen, and how sure
    the reader was (1.0 for what was filled in: it is a choice, not a reading)."""

    values: dict[str, str]
    source: dict[str, str] = field(default_factory=dict)  # attribute → said | filled | seen
    confidence: dict[str, float] = field(default_factory=dict)

    @property
    def said(self) -> dict[str, str]:
        return {k: v for k, v in self.values.items() if self.source.get(k) == SAID}

    @property
    def filled(self) -> dict[str, str]:
        return {k: v for k, v in self.values.items() if self.source.get(k) == FILLED}

    def indices(self, schema: dict[str, list[str]]) -> list[int]:
        return [list(schema[name]).index(self.values[name]) for name in schema]

    def with_values(self, changes: dict[str, str], source: str = SAID) -> "SceneSpec":
        """A copy with ``changes`` applied (marked ``source``); everything else kept as it was."""
        values, src, conf = dict(self.values), dict(self.source), dict(self.confidence)
        for k, v in changes.items():
            values[k], src[k], conf[k] = v, source, 1.0
        return SceneSpec(values, src, conf)

    def to_dict(self) -> dict:
        return {"values": dict(self.values), "source": dict(self.source),
                "confidence": {k: round(float(c), 3) for k, c in self.confidence.items()}}

    @classmethod
    def from_dict(cls, d: dict, schema: dict[str, list[str]] | None = None) -> "SceneSpec":
        if not isinstance(d, dict) or not isinstance(d.get("values"), dict):
            raise SpecError("a spec record needs a 'values' mapping")
        spec = cls(dict(d["values"]), dict(d.get("source") or {}), {k: float(c) for k, c in (d.get("confidence") or {}).items()})
        if any(s not in SOURCES for s in spec.source.values()):
            raise SpecError(f"a spec value's source is one of {', '.join(SOURCES)}")
        if schema is not None:
            check_values(spec.values, schema, complete=True)
        return spec


def complete_spec(partial: dict[str, str], schema: dict[str, list[str]], seed: int,
                  confidence: dict[str, float] | None = None) -> SceneSpec:
    """``partial`` (what was said) completed from the data's prior, reproducibly from ``seed``.

    For scenes the prior is the renderer's own (`sample_attributes` with the said values pinned, drawn
    again while a constraint fails, or while a cloud colour said falls on a cloudless sky), so every
    constraint holds and open attributes follow the data's frequencies; for any other schema every
    value is equally likely."""
    check_values(partial, schema)
    rng = np.random.default_rng([seed, 0x5EC])
    if is_scenes(schema):
        # a cloud colour said asks for clouds: a draw of a cloudless sky for it counts as breaking a constraint
        wants_clouds = "cloud_color" in partial and "clouds" not in partial
        for _ in range(1000):  # what was said is pinned; a draw that breaks a constraint is drawn again
            try:
                values = sample_attributes(rng, partial)
            except ValueError:
                continue
            if not (wants_clouds and values["clouds"] == "none"):
                break
        else:  # pragma: no cover - check_compatible refuses what cannot be completed
            raise SpecError(f"no scene has {partial}")
    else:
        values = {name: partial.get(name) or vals[int(rng.integers(len(vals)))] for name, vals in schema.items()}
    confidence = confidence or {}
    return SceneSpec(values, {k: SAID if k in partial else FILLED for k in schema},
                     {k: float(confidence.get(k, 1.0)) for k in schema})


# --- datasets ------------------------------------------------------------------------------------


def dataset_schema(data) -> dict[str, list[str]] | None:
    """The schema a dataset's pictures are labelled with: the scenes' attributes, or one attribute
    ``class`` for labelled data (class folders, CIFAR, MNIST, digits); None for free captions only."""
    if data.attributes:
        names = [k for k in SCENES_SCHEMA if all(k in a for a in data.attributes)]
        if names == list(SCENES_SCHEMA):
            return {k: list(v) for k, v in SCENES_SCHEMA.items()}
    if "labels" in data.extra and data.extra.get("class_names"):
        return {"class": [str(c) for c in data.extra["class_names"]]}
    return None


def dataset_specs(data, schema: dict[str, list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per picture, the full spec it was made from (N, A) and the labels a picture can show (N, A),
    -1 where it cannot (a cloud colour with no clouds), both as value indices in schema order."""
    from pixelchat.data.scenes import observable

    names = list(schema)
    if names == ["class"] and "labels" in data.extra:
        specs = torch.tensor(data.extra["labels"], dtype=torch.long)[:, None]
        if (specs < 0).any() or (specs >= len(schema["class"])).any():
            raise SpecError("a label lies outside the dataset's class names")
        return specs, specs.clone()
    if data.attributes is None:
        raise SpecError("this dataset has no attributes for a spec")
    specs = torch.empty((len(data), len(names)), dtype=torch.long)
    labels = torch.full((len(data), len(names)), -1, dtype=torch.long)
    for i, attrs in enumerate(data.attributes):
        check_values(attrs, schema, complete=True)
        seen = observable(attrs) if is_scenes(schema) else attrs
        for k, name in enumerate(names):
            specs[i, k] = schema[name].index(attrs[name])
            if name in seen:
                labels[i, k] = specs[i, k]
    return specs, labels
