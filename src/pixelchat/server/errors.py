"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with its status codes,
so OpenAI clients raise their usual exception classes."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
         404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
         415: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}
REASONS = {400: "The request is invalid: a field is missing, malformed or out of range.",
           401: "No valid API key or sign-in.",
           403: "Not allowed: your role in the room is too low, or (signed in from a browser) the X-CSRF-Token "
                "header is missing or wrong.",
           404: "Not found, or not yours to see.",
           409: "Conflicts with the current state, or the Idempotency-Key was used with another request.",
           413: "An upload is too large or has too many pixels.",
           415: "An upload is not a PNG, JPEG or WebP picture.",
           429: "Rate limit, queue share or stream limit reached: wait for Retry-After seconds.",
           503: "The job queue is full, the server is busy or stopping: try again after Retry-After seconds."}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """OpenAI's error shape."""

    error: ErrorDetail


def responses(*statuses: int) -> dict[int, dict]:
    """The OpenAPI ``responses`` of these error statuses, for a route's ``responses=``."""
    return {status: {"model": ErrorBody, "description": REASONS[status]} for status in statuses}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}


def allowed_methods(request: Request) -> list[str]:
    """The methods the app takes at the request's path, for a 405's Allow header (Starlette's names
    only those of the first route whose path matched, e.g. GET where DELETE works too)."""
    routes = request.app.router.routes
    return [method for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)]


def document(schema: dict) -> dict:
    """Put in FastAPI's OpenAPI ``schema`` the errors every route may answer without declaring them:
    400, not 422, for an invalid request (see ``_validation`` below), and 401 and 429 on every
    operation that needs credentials (403 too where a browser's CSRF token is checked)."""
    from pixelchat.server.deps import SAFE_METHODS

    _, defs = models_json_schema([(ErrorBody, "serialization")], ref_template="#/components/schemas/{model}")
    schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            codes = operation.setdefault("responses", {})
            added = [400] if codes.pop("422", None) is not None else []
            if operation.get("security"):
                added += [401, 429] + ([] if method.upper() in SAFE_METHODS else [403])
            for status in added:
                codes.setdefault(str(status), {"description": REASONS[status], "content": body})
    return schema


def install(app: FastAPI) -> None:
    make_schema = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = document(make_schema())
        return app.openapi_schema

    app.openapi = openapi

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return JSONResponse(error_body(exc.status, exc.message, exc.param, exc.code), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "form")]
        param = ".".join(loc) or None
        message = f"{param + ': ' if param else ''}{first.get('msg', 'invalid request')}"
        return JSONResponse(error_body(400, message, param, "invalid_value"), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status_code)
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return JSONResponse(error_body(exc.status_code, str(exc.detail), None, code), exc.status_code, headers=headers)
