"""The web studio: one page, one script and one stylesheet shipped in the package, served by the same
app. The page signs in and then uses only the public API, so it can do nothing the API would not allow."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from pixelchat.server.errors import APIError

router = APIRouter(include_in_schema=False)

ASSETS = {"studio.js": "text/javascript; charset=utf-8", "studio.css": "text/css; charset=utf-8",
          "icon.svg": "image/svg+xml"}
# The page runs its own script and style only; pictures come from the API or are made in the page.
POLICY = ("default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; style-src 'self'; script-src 'self'; "
          "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": POLICY, "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"}


def asset(name: str) -> bytes:
    return resources.files("pixelchat.server").joinpath("studio", name).read_bytes()


@router.get("/")
def page() -> Response:
    return Response(asset("index.html"), media_type="text/html; charset=utf-8",
                    headers={**HEADERS, "Cache-Control": "no-cache"})


@router.get("/studio/{name}")
def studio_asset(name: str) -> Response:
    if name not in ASSETS:  # a fixed list: no path from the client reaches the file system
        raise APIError(404, "No such file.", code="not_found")
    return Response(asset(name), media_type=ASSETS[name], headers={**HEADERS, "Cache-Control": "no-cache"})
