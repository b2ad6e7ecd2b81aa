"""Passwords (argon2id), API keys (random, shown once, stored as a SHA-256 hash) and browser logins
(a random cookie token, also stored as its hash, with a CSRF token)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

KEY_PREFIX = "pc-"
_hasher = PasswordHasher()


@lru_cache(maxsize=1)
def dummy_hash(hasher: PasswordHasher = _hasher) -> str:
    """Checked when there is no real hash: made by the same hasher, so it has the same parameters and a
    missing account (or one without a password) costs the same time and memory as a wrong password."""
    return hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; never without a hash (no such user, or no password)."""
    try:
        return _hasher.verify(password_hash or dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # Keys and login tokens have 256 random bits, so a plain hash suffices (no salt or slow hash needed
    # to resist guessing).
    return hashlib.sha256(token.encode()).hexdigest()


hash_api_key = hash_token


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def sign(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def signature_ok(key: bytes, message: str, signature: str) -> bool:
    return hmac.compare_digest(sign(key, message), signature)
