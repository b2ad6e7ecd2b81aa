"""Headers added to the server's responses by plain ASGI middleware: no task or body stream per
request, as an ``@app.middleware("http")`` function would cost."""

from __future__ import annotations

from collections.abc import Callable


class ResponseHeaders:
    """Adds ``headers(scope)`` (lower-case name → value, or None for none) to every HTTP response that
    does not set those names itself. ``headers`` is called when the response starts, so it may read
    what the request's handling left in the scope's state."""

    def __init__(self, app, headers: Callable[[dict], dict[str, str] | None]):
        self.app, self.headers = app, headers

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            extra = self.headers(scope) if message["type"] == "http.response.start" else None
            if extra:
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [(k.encode(), v.encode()) for k, v in extra.items() if k.encode() not in present]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
