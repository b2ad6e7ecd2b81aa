"""Rate limits: a token bucket per API key and per login, kept in memory, with OpenAI's headers.

A bucket holds up to ``burst`` requests and refills at ``per_minute / 60`` a second. `current_user`
takes one token after authenticating; the middleware puts the resulting headers on the response."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from pixelchat.server.errors import APIError

STATE_KEY = "ratelimit_headers"  # where `check` leaves the headers for the middleware


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float  # until the bucket is full again
    retry_after_s: float  # until the next request may pass (0 when this one did)

    def headers(self) -> dict[str, str]:
        return {"x-ratelimit-limit-requests": str(self.limit),
                "x-ratelimit-remaining-requests": str(self.remaining),
                "x-ratelimit-reset-requests": duration(self.reset_s)}


def duration(seconds: float) -> str:
    """OpenAI's reset format, in whole seconds rounded up: "0s", "45s", "6m0s", "1h2m3s"."""
    total = math.ceil(max(seconds, 0.0))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class RateLimiter:
    """Thread-safe token buckets keyed by whatever identifies the caller; ``clock`` is injectable."""

    def __init__(self, per_minute: int, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 max_buckets: int = 100_000):
        if per_minute <= 0 or burst <= 0:
            raise ValueError("per_minute and burst must be positive")
        self.rate, self.burst, self.clock, self.max_buckets = per_minute / 60.0, burst, clock, max_buckets
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, when counted)
        self._lock = threading.Lock()

    def take(self, key: Hashable) -> Decision:
        """Spend one request of ``key``'s bucket if it has one."""
        with self._lock:
            now = self.clock()
            tokens = self._level(key, now)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            if len(self._buckets) >= self.max_buckets and key not in self._buckets:
                self._forget_full(now)
            self._buckets[key] = (tokens, now)
        return Decision(allowed, self.burst, math.floor(tokens), (self.burst - tokens) / self.rate,
                        0.0 if allowed else (1.0 - tokens) / self.rate)

    def _level(self, key: Hashable, now: float) -> float:
        tokens, then = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + max(now - then, 0.0) * self.rate)

    def _forget_full(self, now: float) -> None:
        # a full bucket is the same as no bucket, so idle callers cost no memory
        for key in [k for k in self._buckets if self._level(k, now) >= self.burst]:
            del self._buckets[key]


def check(request, key: Hashable) -> None:
    """Spend one request for ``key`` (e.g. ``("key", 3)``); 429 with Retry-After when none is left."""
    limiter: RateLimiter | None = request.app.state.ratelimiter
    if limiter is None:
        return
    decision = limiter.take(key)
    if not decision.allowed:
        wait = max(1, math.ceil(decision.retry_after_s))
        raise APIError(429, f"Rate limit reached: {limiter.burst} requests at once, then "
                            f"{round(limiter.rate * 60)} a minute. Try again in {wait} s.",
                       code="rate_limit_exceeded", headers={"Retry-After": str(wait), **decision.headers()})
    setattr(request.state, STATE_KEY, decision.headers())


class RateLimitHeaders:
    """Copies the headers `check` left on ``request.state`` onto the response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            extra = scope.get("state", {}).get(STATE_KEY)
            if message["type"] == "http.response.start" and extra:
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [(k.encode(), v.encode()) for k, v in extra.items() if k.encode() not in present]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app, settings) -> None:
    """Give ``app`` its limiter (none when ``rate_limit_per_minute`` is 0) and the header middleware."""
    per_minute = settings.rate_limit_per_minute
    app.state.ratelimiter = RateLimiter(per_minute, settings.rate_limit_burst) if per_minute else None
    app.add_middleware(RateLimitHeaders)
