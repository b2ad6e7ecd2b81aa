"""The API's routers, one per resource, and the types their response models share."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from pydantic import AfterValidator


def as_utc(value: datetime) -> datetime:
    """Every time the server stores is UTC, but SQLite keeps no offset: one read back is naive, and a
    client would take it for its own local time."""
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


Timestamp = Annotated[datetime, AfterValidator(as_utc)]  # a response's time, always with its offset
