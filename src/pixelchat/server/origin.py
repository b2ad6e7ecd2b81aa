"""Where the server is reached from, and what follows when that is not loopback: image links are built
from the request's Host header unless `PIXELCHAT_PUBLIC_URL` is set (said once in the log), and the API
browser at /docs, whose scripts come from a CDN, is off (`PIXELCHAT_DOCS`)."""

from __future__ import annotations

import ipaddress
import logging

log = logging.getLogger("pixelchat.server")


def is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address((host or "").strip("[]")).is_loopback
    except ValueError:
        return False


def public_url_notice(settings, host: str | None) -> str | None:
    """What to tell the operator of a server listening on ``host``, or None when all is well."""
    if settings.public_url or is_loopback(host):
        return None
    return (f"PIXELCHAT_PUBLIC_URL is not set and the server is reached on {host}: image links are built from "
            "each request's Host header, which any client may set. Set PIXELCHAT_PUBLIC_URL to the address "
            "clients use (e.g. https://images.example.org).")


class PublicUrlNotice:
    """Logs `public_url_notice` once, at the first request that reaches the server other than on loopback
    (the app cannot know the address it listens on before then)."""

    def __init__(self, app, settings):
        self.app, self.settings, self.told = app, settings, settings.public_url is not None

    async def __call__(self, scope, receive, send):
        if not self.told and scope["type"] == "http" and scope.get("server"):
            notice = public_url_notice(self.settings, scope["server"][0])
            if notice is not None:
                log.warning(notice)
                self.told = True
        await self.app(scope, receive, send)


def docs_allowed(settings, request) -> bool:
    """`PIXELCHAT_DOCS` when set; by default only for a client on a loopback address."""
    if settings.docs is not None:
        return settings.docs
    return request.client is not None and is_loopback(request.client.host)
