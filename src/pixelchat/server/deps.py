"""Dependencies the routes declare: settings, a database session, the signed-in user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from pixelchat.server.config import Settings
from pixelchat.server.errors import APIError
from pixelchat.server.models import ApiKey, User
from pixelchat.server.security import hash_api_key


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as db:
        yield db


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_db)]


def current_user(request: Request, db: SessionDep) -> User:
    auth = request.headers.get("authorization", "")
    scheme, _, key = auth.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise APIError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' "
                            "(create one with 'pixelchat keys create USER').", code="invalid_api_key")
    row = db.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key.strip())))
    if row is None or row.revoked is not None:
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
    user = row.user
    db.commit()  # hand the connection back to the pool while the request waits for the engine
    return user


CurrentUser = Annotated[User, Depends(current_user)]
