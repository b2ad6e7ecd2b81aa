"""The API browser: FastAPI's Swagger UI and ReDoc pages. Their scripts come from a CDN and would run on
the login cookie's origin, so they are served only where `origin.docs_allowed` says (by default: to
clients on a loopback address); elsewhere they are 404. The schema itself is always at /openapi.json."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from pixelchat.server.errors import APIError
from pixelchat.server.origin import docs_allowed

router = APIRouter(include_in_schema=False)


def check(request: Request) -> None:
    if not docs_allowed(request.app.state.settings, request):
        raise APIError(404, "The API browser is served only on loopback (PIXELCHAT_DOCS=true serves it to all); "
                            "the schema is at /openapi.json.", code="not_found")


@router.get("/docs")
def swagger(request: Request) -> HTMLResponse:
    check(request)
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} - Swagger UI")


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    check(request)
    return get_redoc_html(openapi_url="/openapi.json", title=f"{request.app.title} - ReDoc")
