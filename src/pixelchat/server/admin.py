"""Administration used by `pixelchat users` / `pixelchat keys`: accounts and API keys."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from pixelchat.server.jobs import remove_uploads
from pixelchat.server.keycache import forget
from pixelchat.server.models import ApiKey, ImageRow, Job, Login, SessionRow, User, utcnow
from pixelchat.server.security import hash_password, hash_token, new_api_key

if TYPE_CHECKING:
    from pixelchat.server.store import ImageStore

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


@dataclass(frozen=True)
class UserDeleted:
    """What deleting an account removed."""

    name: str
    pictures: int  # picture records
    sessions: int  # conversations it started (in shared rooms too)
    files: int  # picture files removed from the store
    shared_files: int  # picture files kept: another account's picture is the same file
    uploads: int  # uploaded pictures of jobs that had not finished


def delete_user(db: Session, name: str, store: ImageStore, uploads: Path) -> UserDeleted:
    """Delete ``name``'s account with its keys, sign-ins, room memberships, pictures, conversations (those
    it started in shared rooms too), jobs, ratings and votes (the database cascades), then the files only
    they used: picture files no other record names (the store is content-addressed: another account's
    picture may be the same file) and the uploads of their unfinished jobs in the ``uploads`` folder.
    Other accounts' pictures in their conversations stay, without the conversation."""
    user = find_user(db, name)
    shas = set(db.scalars(select(ImageRow.sha256).where(ImageRow.user_id == user.id)))
    pictures = db.scalar(select(func.count()).select_from(ImageRow).where(ImageRow.user_id == user.id))
    session_ids = select(SessionRow.id).where(SessionRow.user_id == user.id)
    sessions = db.scalar(select(func.count()).select_from(session_ids.subquery()))
    # the jobs that go with the account: its own, and anyone's turns in its conversations
    jobs = list(db.scalars(select(Job.id).where(or_(Job.user_id == user.id, Job.session_id.in_(session_ids)))))
    db.delete(user)
    db.commit()  # the records go first: a file is removed only once nothing can point to it any more
    forget(user_id=user.id)  # its keys sign in nobody from now on, here at once
    files = drop_unused_files(db, store, shas)
    removed = sum(remove_uploads(uploads, job_id) for job_id in jobs)
    return UserDeleted(name=name, pictures=pictures, sessions=sessions, files=files, shared_files=len(shas) - files,
                       uploads=removed)


def drop_unused_files(db: Session, store: ImageStore, shas: set[str]) -> int:
    """Remove from ``store`` the picture files among ``shas`` that no picture record names; how many."""
    if not shas:
        return 0
    used = set(db.scalars(select(ImageRow.sha256).where(ImageRow.sha256.in_(shas)).distinct()))
    for sha in shas - used:
        store.delete(sha)
    return len(shas - used)


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
    forget(key_hash=row.key_hash)  # refused from now on, here at once (elsewhere within the cache's time)
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
