"""Administration used by `pixelchat users` / `pixelchat keys`: accounts and API keys."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from pixelchat.server.models import ApiKey, User
from pixelchat.server.security import hash_api_key, hash_password, new_api_key

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def create_user(db: Session, name: str, password: str | None = None) -> User:
    if not NAME.match(name):
        raise ValueError("a user name is 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if db.scalar(select(User).where(User.name == name)):
        raise ValueError(f"user {name!r} exists already")
    user = User(name=name, password_hash=hash_password(password) if password else None)
    db.add(user)
    db.commit()
    return user


def create_key(db: Session, user_name: str, key_name: str = "default") -> str:
    """A new API key for ``user_name``; returns the key, which is shown once and stored only as a hash."""
    user = db.scalar(select(User).where(User.name == user_name))
    if user is None:
        raise ValueError(f"there is no user {user_name!r}; create one with 'pixelchat users create {user_name}'")
    key = new_api_key()
    db.add(ApiKey(user_id=user.id, name=key_name[:64], prefix=key[:10], key_hash=hash_api_key(key)))
    db.commit()
    return key
