"""API key → user, remembered for a few seconds, so a request signed with a key seen a moment ago
needs no database lookup (nor a worker thread to make one).

Revoking a key or deleting a user through this process forgets them at once (`forget`, called by
`pixelchat.server.admin`); a change made by another process (`pixelchat keys revoke` from a shell,
a second server on the same database) takes effect within ``ttl_s``. A lookup that raced a revoke
is not remembered: every `forget` starts a new generation, and an answer read in an older one is
dropped instead of cached."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

from sqlalchemy.orm import make_transient_to_detached

from pixelchat.server.models import User

_CACHES: weakref.WeakSet[KeyCache] = weakref.WeakSet()  # every cache of this process, for `forget`


class KnownKey(NamedTuple):
    """What a request signed with the key needs: the key's row id and its user's columns."""

    key_id: int
    user_id: int
    user_name: str
    password_hash: str | None
    created: datetime | None

    @classmethod
    def of(cls, key_id: int, user: User) -> KnownKey:
        return cls(key_id, user.id, user.name, user.password_hash, user.created)

    def user(self) -> User:
        """A detached `User` of its own for one request (no query: its columns are all here)."""
        user = User(id=self.user_id, name=self.user_name, password_hash=self.password_hash, created=self.created)
        make_transient_to_detached(user)
        return user


class KeyCache:
    """Thread-safe; ``ttl_s`` 0 remembers nothing. Holds at most ``max_keys`` keys (the oldest go first)."""

    def __init__(self, ttl_s: float, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000):
        self.ttl_s, self.clock, self.max_keys = ttl_s, clock, max_keys
        self._entries: dict[str, tuple[float, KnownKey]] = {}  # key hash → (expires, what it signs in)
        self._lock = threading.Lock()
        self._generation = 0
        _CACHES.add(self)

    @property
    def generation(self) -> int:
        """Read before a database lookup and handed to `put` with its answer."""
        return self._generation

    def get(self, key_hash: str) -> KnownKey | None:
        with self._lock:
            entry = self._entries.get(key_hash)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._entries[key_hash]
                return None
            return entry[1]

    def put(self, key_hash: str, known: KnownKey, generation: int) -> None:
        """Remember ``known`` for ``key_hash``, unless something was forgotten since ``generation``."""
        if self.ttl_s <= 0:
            return
        with self._lock:
            if generation != self._generation:
                return
            if len(self._entries) >= self.max_keys and key_hash not in self._entries:
                del self._entries[next(iter(self._entries))]
            self._entries[key_hash] = (self.clock() + self.ttl_s, known)

    def drop(self, *, key_hash: str | None = None, user_id: int | None = None) -> None:
        with self._lock:
            self._generation += 1
            for h in [h for h, (_, k) in self._entries.items() if h == key_hash or k.user_id == user_id]:
                del self._entries[h]

    def __len__(self) -> int:
        return len(self._entries)


def forget(*, key_hash: str | None = None, user_id: int | None = None) -> None:
    """Forget a key (by its hash) or every key of a user, in every cache of this process."""
    for cache in list(_CACHES):
        cache.drop(key_hash=key_hash, user_id=user_id)
