"""The API's routers, one per resource, and the types their response models share."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from typing import Literal

from fastapi import Path
from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

from pixelchat.engines.base import MAX_IMAGES, MAX_SEED
from pixelchat.vision.style import load_styles


def as_utc(value: datetime) -> datetime:
    """Every time the server stores is UTC, but SQLite keeps no offset: one read back is naive, and a
    client would take it for its own local time."""
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


Timestamp = Annotated[datetime, AfterValidator(as_utc)]  # a response's time, always with its offset

# The largest integer the databases store (SQLite's and PostgreSQL's 64-bit integers): a path id past
# it is a 400, not a database error.
MAX_ROW_ID = 2**63 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]

# What the request bodies take, stated in the schema as the server enforces it. Integers in bodies stay
# within what every JSON client reads exactly (JavaScript's Number.MAX_SAFE_INTEGER), which is also
# exact in the schema (FastAPI writes bounds there as floats) and well inside the engines' seeds.
MAX_JSON_INT = 2**53 - 1
assert MAX_JSON_INT <= MAX_SEED - MAX_IMAGES  # room for a batch's seeds after any seed (engines.base)
Seed = Annotated[int, Field(ge=0, le=MAX_JSON_INT)]


def _lower(value):
    return value.strip().lower() if isinstance(value, str) else value


# the shipped presets, any case ("none" is the picture as drawn); generations also take OpenAI's "natural"
STYLES = tuple(load_styles())
StyleName = Annotated[Literal[STYLES], BeforeValidator(_lower)]
ImageStyle = Annotated[Literal[(*STYLES, "natural")], BeforeValidator(_lower)]
Colour = Annotated[str, StringConstraints(pattern=r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")]
