"""Administration used by `pixelchat users` / `pixelchat keys`: accounts and API keys."""

from __future__ import annotations

import re

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from pixelchat.server.models import ApiKey, ImageRow, Login, SessionRow, User, utcnow
from pixelchat.server.security import hash_password, hash_token, new_api_key

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


def find_user(db: Session, name: str) -> User:
    user = db.scalar(select(User).where(User.name == name))
    if user is None:
        raise ValueError(f"there is no user {name!r}; create one with 'pixelchat users create {name}'")
    return user


def list_users(db: Session) -> list[dict]:
    """Every account, oldest first, with what it holds: whether it has a password, its active keys,
    its pictures and conversations."""
    def counts(model, *where) -> dict[int, int]:
        return dict(db.execute(select(model.user_id, func.count()).where(*where).group_by(model.user_id)).all())

    keys = counts(ApiKey, ApiKey.revoked.is_(None))
    images, sessions = counts(ImageRow), counts(SessionRow)
    return [{"name": u.name, "created": u.created.isoformat(), "password": u.password_hash is not None,
             "keys": keys.get(u.id, 0), "images": images.get(u.id, 0), "sessions": sessions.get(u.id, 0)}
            for u in db.scalars(select(User).order_by(User.id))]


def delete_user(db: Session, name: str) -> User:
    """Delete ``name``'s account with its keys, sign-ins, room memberships, pictures, conversations (those
    it started in shared rooms too), ratings and votes: the database cascades. The picture files stay in
    the content-addressed store, where another account's picture may be the same file."""
    user = find_user(db, name)
    db.delete(user)
    db.commit()
    return user


def set_password(db: Session, name: str, password: str) -> User:
    """Give ``name`` a new password and sign out every browser signed in as them (their API keys stay)."""
    user = find_user(db, name)
    user.password_hash = hash_password(password)  # refuses a password under 8 characters
    db.execute(delete(Login).where(Login.user_id == user.id))
    db.commit()
    return user


def add_key(db: Session, user: User, key_name: str = "default") -> tuple[ApiKey, str]:
    """A new API key for ``user``: its row and the key, which is shown once and stored only as a hash."""
    key = new_api_key()
    row = ApiKey(user_id=user.id, name=key_name[:64], prefix=key[:10], key_hash=hash_token(key))
    db.add(row)
    db.commit()
    return row, key


def create_key(db: Session, user_name: str, key_name: str = "default") -> str:
    """A new API key for ``user_name``; returns the key, which is shown once and stored only as a hash."""
    return add_key(db, find_user(db, user_name), key_name)[1]


def keys_of(db: Session, user: User) -> list[ApiKey]:
    return list(db.scalars(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.id)))


def list_keys(db: Session, user_name: str) -> list[ApiKey]:
    """``user_name``'s keys, revoked ones included, oldest first."""
    return keys_of(db, find_user(db, user_name))


def revoke(db: Session, row: ApiKey) -> ApiKey:
    """Revoke the key (kept, marked with the time; revoking twice keeps the first time)."""
    if row.revoked is None:
        row.revoked = utcnow()
        db.commit()
    return row


def revoke_key(db: Session, user_name: str, ref: str) -> ApiKey:
    """Revoke one of ``user_name``'s keys, named by its id, its prefix or the key itself."""
    user = find_user(db, user_name)
    ref = ref.strip()
    found = [k for k in keys_of(db, user) if ref in (str(k.id), k.prefix) or hash_token(ref) == k.key_hash]
    if not found:
        raise ValueError(f"user {user_name!r} has no key {ref!r}; see 'pixelchat keys list {user_name}'")
    if len(found) > 1:
        raise ValueError(f"{ref!r} matches {len(found)} keys of {user_name!r}; give the key's id")
    return revoke(db, found[0])
