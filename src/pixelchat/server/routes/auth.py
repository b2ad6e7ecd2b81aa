"""Signing in from a browser (a login cookie plus a CSRF token), who am I, and the caller's API keys."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select
from starlette.concurrency import run_in_threadpool

from pixelchat.server import ratelimit
from pixelchat.server.admin import add_key, keys_of, revoke
from pixelchat.server.deps import SESSION_COOKIE, CurrentUser, SessionDep, SettingsDep
from pixelchat.server.errors import APIError, ErrorBody, responses
from pixelchat.server.models import ApiKey, Login, User, utcnow
from pixelchat.server.routes import RowId, Timestamp
from pixelchat.server.security import hash_token, new_csrf_token, new_login_token, verify_password

router = APIRouter(prefix="/api", tags=["auth"])


class LoginRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserPublic(BaseModel):
    id: int
    name: str


class LoginPublic(BaseModel):
    user: UserPublic
    csrf_token: str = Field(description="Send it back as the X-CSRF-Token header on every request that changes something.")


class Me(BaseModel):
    id: int
    name: str
    via: Literal["key", "cookie"]
    csrf_token: str | None = Field(description="The login's CSRF token; null when signed in with an API key.")


class KeyCreate(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str = Field("default", min_length=1, max_length=64)


class KeyPublic(BaseModel):
    id: int
    name: str
    prefix: str
    created: Timestamp
    revoked: Timestamp | None


class KeyCreated(BaseModel):
    id: int
    name: str
    prefix: str
    key: str = Field(description="The key itself: shown this once, stored only as a hash.")


def checked_user(sessions, name: str, password: str) -> User | None:
    """The account if ``password`` is its password; one argon2 check either way (no such account, no
    password, wrong password), so the answer's time does not tell which."""
    with sessions() as db:
        user = db.scalar(select(User).where(User.name == name))
    return user if verify_password(user.password_hash if user else None, password) else None


def new_login(sessions, user: User, ttl_s: int) -> tuple[str, str]:
    """A login for ``user``: the cookie's token and the CSRF token."""
    token, now = new_login_token(), utcnow()
    with sessions() as db:
        db.execute(delete(Login).where(Login.expires <= now))  # forget logins that ran out
        row = Login(user_id=user.id, token_hash=hash_token(token), csrf_token=new_csrf_token(), created=now,
                    expires=now + timedelta(seconds=ttl_s))
        db.add(row)
        db.commit()
        return token, row.csrf_token


@router.post("/login", response_model=LoginPublic,
             responses={401: {"model": ErrorBody, "description": "Wrong name or password."}, **responses(429, 503)})
async def login(body: LoginRequest, request: Request, response: Response, settings: SettingsDep) -> LoginPublic:
    """Sign in with name and password: sets the `pixelchat_session` cookie and returns the CSRF token.
    Attempts are limited per account name and per client address (429 with Retry-After)."""
    ratelimit.check_login(request, body.name)
    sessions = request.app.state.sessions
    # each check takes 64 MiB and a core for a moment: a few at once, the others wait here, holding no thread
    async with request.app.state.password_checks():
        user = await run_in_threadpool(checked_user, sessions, body.name, body.password)
    if user is None:
        raise APIError(401, "Incorrect name or password.", code="invalid_credentials")
    token, csrf_token = await run_in_threadpool(new_login, sessions, user, settings.login_ttl_s)
    response.set_cookie(SESSION_COOKIE, token, max_age=settings.login_ttl_s, path="/", httponly=True,
                        samesite="lax", secure=settings.cookie_secure)
    return LoginPublic(user=UserPublic(id=user.id, name=user.name), csrf_token=csrf_token)


@router.post("/logout", status_code=204, response_class=Response)
def logout(request: Request, user: CurrentUser, db: SessionDep, settings: SettingsDep) -> Response:
    """End this browser's login and clear its cookie (with an API key: nothing to end)."""
    response = Response(status_code=204)
    if request.state.auth.kind == "login":
        db.execute(delete(Login).where(Login.id == request.state.auth.id))
        db.commit()
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=settings.cookie_secure)
    return response


@router.get("/me", response_model=Me)
def me(request: Request, user: CurrentUser) -> Me:
    credential = request.state.auth
    return Me(id=user.id, name=user.name, via="key" if credential.kind == "key" else "cookie",
              csrf_token=credential.csrf_token)


@router.get("/keys", response_model=list[KeyPublic])
def list_keys(user: CurrentUser, db: SessionDep) -> list[KeyPublic]:
    """The caller's API keys, revoked ones included (never the keys themselves)."""
    return [KeyPublic.model_validate(row, from_attributes=True) for row in keys_of(db, user)]


@router.post("/keys", status_code=201, response_model=KeyCreated, responses=responses(409))
def create_key(body: KeyCreate, user: CurrentUser, db: SessionDep, settings: SettingsDep) -> KeyCreated:
    """A new API key for the caller; the key is in this response only. A user holds at most
    `PIXELCHAT_KEYS_PER_USER` keys that are not revoked (409 past that: revoke one first)."""
    active = sum(1 for row in keys_of(db, user) if row.revoked is None)
    if active >= settings.keys_per_user:
        raise APIError(409, f"You have {active} API keys, the most allowed: revoke one first (DELETE /api/keys/ID).",
                       code="too_many_keys")
    row, key = add_key(db, user, body.name)
    return KeyCreated(id=row.id, name=row.name, prefix=row.prefix, key=key)


@router.delete("/keys/{key_id}", status_code=204, response_class=Response, responses=responses(404))
def revoke_key(key_id: RowId, user: CurrentUser, db: SessionDep) -> Response:
    """Revoke one of the caller's keys; from then on it gets 401."""
    row = db.get(ApiKey, key_id)
    if row is None or row.user_id != user.id:
        raise APIError(404, f"No API key {key_id}.", param="key_id", code="not_found")
    revoke(db, row)
    return Response(status_code=204)
