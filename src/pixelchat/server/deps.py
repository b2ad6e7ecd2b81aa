"""Dependencies the routes declare: settings, a database session, the signed-in user."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from typing import Annotated, Literal, NamedTuple

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyCookie, HTTPBearer
from starlette.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from pixelchat.server import ratelimit
from pixelchat.server.config import Settings
from pixelchat.server.errors import APIError
from pixelchat.server.keycache import KnownKey
from pixelchat.server.models import ApiKey, Login, User, utcnow
from pixelchat.server.security import hash_token

SESSION_COOKIE = "pixelchat_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# How to sign in, as OpenAPI security schemes (so the schema marks which operations need it); the
# credentials themselves are read by `authenticate`.
API_KEY = HTTPBearer(scheme_name="apiKey", auto_error=False,
                     description="An API key (`pixelchat keys create USER`) as 'Authorization: Bearer KEY'.")
LOGIN = APIKeyCookie(name=SESSION_COOKIE, scheme_name="login", auto_error=False,
                     description=f"A browser sign-in (POST /api/login); changes also need the {CSRF_HEADER} header.")


class Credential(NamedTuple):
    """How the caller signed in: an API key or a browser login (with that login's CSRF token)."""

    kind: Literal["key", "login"]
    id: int
    csrf_token: str | None = None


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as db:
        yield db


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_db)]


def bearer_key(request: Request) -> str | None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


def authenticate(request: Request, db: Session) -> tuple[User, Credential]:
    """The caller from ``Authorization: Bearer KEY`` or, failing that, the login cookie."""
    key = bearer_key(request)
    if key is not None:
        row = db.scalar(select(ApiKey).options(joinedload(ApiKey.user)).where(ApiKey.key_hash == hash_token(key)))
        if row is None or row.revoked is not None:
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
        return row.user, Credential("key", row.id)
    token = request.cookies.get(SESSION_COOKIE)
    if token is None:
        raise APIError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' "
                            "(create one with 'pixelchat keys create USER').", code="invalid_api_key")
    login = db.scalar(select(Login).options(joinedload(Login.user)).where(Login.token_hash == hash_token(token), Login.expires > utcnow()))
    if login is None:
        raise APIError(401, "Your sign-in has expired or ended; sign in again.", code="invalid_session")
    if request.method not in SAFE_METHODS and not hmac.compare_digest(
            request.headers.get(CSRF_HEADER, "").encode(), login.csrf_token.encode()):
        raise APIError(403, f"Missing or wrong {CSRF_HEADER} header: send the csrf_token from sign-in "
                            "(GET /api/me returns it).", code="csrf_failed")
    return login.user, Credential("login", login.id, login.csrf_token)


async def current_user(request: Request, _key=Security(API_KEY), _login=Security(LOGIN)) -> User:
    """The caller, then one request from their rate limit. A key seen a moment ago is known without a
    database lookup (`pixelchat.server.keycache`); anything else is looked up on a worker thread."""
    key = bearer_key(request)
    known = request.app.state.keys.get(hash_token(key)) if key is not None else None
    if known is not None:
        user, credential = known.user(), Credential("key", known.key_id)
    else:
        user, credential = await run_in_threadpool(signed_in, request)
    request.state.auth = credential
    # one bucket per user, whichever key or login: more keys must not mean more requests
    ratelimit.check(request, ("user", user.id))
    return user


def signed_in(request: Request) -> tuple[User, Credential]:
    """`authenticate` in a session of its own (closed before the request waits for the engine); a key's
    answer is remembered for the next requests signed with it."""
    cache = request.app.state.keys
    generation = cache.generation  # read first: a revoke from here on keeps this answer out of the cache
    with request.app.state.sessions() as db:
        user, credential = authenticate(request, db)
    if credential.kind == "key":
        cache.put(hash_token(bearer_key(request)), KnownKey.of(credential.id, user), generation)
    return user, credential


def credential_user(db: Session, credential: Credential) -> User | None:
    """The user ``credential`` still signs in, or None: its key was revoked, its login ended or expired."""
    if credential.kind == "key":
        row = db.get(ApiKey, credential.id)
        return row.user if row is not None and row.revoked is None else None
    login = db.scalar(select(Login).options(joinedload(Login.user))
                      .where(Login.id == credential.id, Login.expires > utcnow()))
    return login.user if login is not None else None


def still_allowed(request: Request, check: Callable[[Session, User], object]) -> Callable[[], bool]:
    """For a stream that outlives its request: a function telling whether the caller's key or login
    still signs in and ``check(db, user)`` still passes (it raises APIError when not). Each call takes
    a connection for its queries only."""
    sessions, credential = request.app.state.sessions, request.state.auth

    def allowed() -> bool:
        with sessions() as db:
            user = credential_user(db, credential)
            if user is None:
                return False
            try:
                check(db, user)
            except APIError:
                return False
            return True

    return allowed


CurrentUser = Annotated[User, Depends(current_user)]
