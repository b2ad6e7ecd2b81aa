"""The first run on one's own machine: a server reached on loopback with no accounts offers a
one-click local account, so the studio opens with no CLI steps. Everything else signs in.

The account, ``local``, has no password; while it is the only account and still has none, a browser
on loopback may sign in as it with one click again (its login cookie ran out). Once an operator adds
an account or sets a password, the offer is gone. The request must name a loopback host (a DNS-
rebinding page cannot) and be JSON (a cross-site form cannot send it without the browser asking first)."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from pixelchat.server.deps import SESSION_COOKIE, SettingsDep
from pixelchat.server.errors import APIError, responses
from pixelchat.server.models import User
from pixelchat.server.origin import is_loopback
from pixelchat.server.routes.auth import LoginPublic, UserPublic, new_login


router = APIRouter(prefix="/api", tags=["auth"])
LOCAL = "local"


class LocalAccount(BaseModel):
    available: bool = Field(description="Whether this browser may take the one-click local account.")
    name: str = LOCAL


def on_loopback(request: Request) -> bool:
    """The client, the address it reached and the host it named are all this machine."""
    named = urlsplit(f"//{request.headers.get('host', '')}").hostname
    server = request.scope.get("server") or (None,)
    return (request.client is not None and is_loopback(request.client.host) and is_loopback(server[0])
            and is_loopback(named))


def local_user(sessions) -> User | None | bool:
    """The account a one-click sign-in takes: None to make it (no accounts), the passwordless local
    account when it is the only one, else False."""
    with sessions() as db:
        count = db.scalar(select(func.count()).select_from(User))
        if count == 0:
            return None
        user = db.scalar(select(User).where(User.name == LOCAL))
        return user if count == 1 and user is not None and user.password_hash is None else False


@router.get("/local-account", response_model=LocalAccount)
def local_account(request: Request) -> LocalAccount:
    """Whether the one-click local account is offered to this browser (no credentials needed)."""
    return LocalAccount(available=on_loopback(request) and local_user(request.app.state.sessions) is not False)


@router.post("/local-account", response_model=LoginPublic, responses=responses(403, 415))
async def take_local_account(request: Request, response: Response, settings: SettingsDep) -> LoginPublic:
    """Make the local account (first run) or sign in to it, and sign this browser in, as /api/login does."""
    from pixelchat.server.admin import create_user

    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise APIError(415, "Send this request as JSON.", code="unsupported_media_type")
    sessions = request.app.state.sessions
    user = local_user(sessions) if on_loopback(request) else False
    if user is False:
        raise APIError(403, "The one-click local account is offered only on this machine's own address, to a "
                            "server with no other accounts; sign in instead.", code="forbidden")
    if user is None:
        def make() -> User:
            with sessions() as db:
                return create_user(db, LOCAL)

        try:
            user = await run_in_threadpool(make)
        except ValueError:  # made by a click a moment ago
            user = local_user(sessions)
            if not user:
                raise APIError(403, "Another account was made meanwhile; sign in instead.", code="forbidden") from None
    token, csrf_token = await run_in_threadpool(new_login, sessions, user, settings.login_ttl_s)
    response.set_cookie(SESSION_COOKIE, token, max_age=settings.login_ttl_s, path="/", httponly=True,
                        samesite="lax", secure=settings.cookie_secure)
    return LoginPublic(user=UserPublic(id=user.id, name=user.name), csrf_token=csrf_token)
