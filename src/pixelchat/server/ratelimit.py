"""Rate limits: a token bucket per user (all their keys and logins together), kept in memory, with
OpenAI's headers; sign-in attempts have buckets of their own, per account name and per client address.

A bucket holds up to ``burst`` requests and refills at ``per_minute / 60`` a second. `current_user`
takes one token after authenticating; the middleware puts the resulting headers on the response.
`Gate` bounds how many costly steps (password checks, picture decodes) run at once."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from pixelchat.server.errors import APIError
from pixelchat.server.headers import ResponseHeaders

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


def client_address(request) -> str:
    """The caller's address (behind a proxy: the one the proxy reports, when uvicorn trusts it)."""
    return request.client.host if request.client is not None else "unknown"


def check_login(request, name: str) -> None:
    """Spend one sign-in attempt of the client's address, then of the account ``name`` (named or not,
    existing or not); 429 with Retry-After, before any password is hashed, when either is used up."""
    limiter: RateLimiter | None = request.app.state.login_limiter
    if limiter is None:
        return
    for key in (("address", client_address(request)), ("name", name)):
        decision = limiter.take(key)
        if not decision.allowed:
            wait = max(1, math.ceil(decision.retry_after_s))
            raise APIError(429, f"Too many sign-in attempts: {limiter.burst} at once, then {round(limiter.rate * 60)} "
                                f"a minute for each account and each address. Try again in {wait} s.",
                           code="rate_limit_exceeded", headers={"Retry-After": str(wait)})


class Gate:
    """At most ``size`` holders at once (e.g. password checks, each 64 MiB); up to ``queue`` more wait
    for a turn without holding a thread; past that a request is refused at once (503)."""

    def __init__(self, size: int, queue: int, what: str):
        self.size, self.queue, self.what = size, queue, what
        self.waiting = self.holding = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None

    def semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a semaphore belongs to one event loop (a test may start several)
            self._loop, self._semaphore = loop, asyncio.Semaphore(self.size)
        return self._semaphore

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        semaphore = self.semaphore()
        if semaphore.locked() and self.waiting >= self.queue:
            raise APIError(503, f"The server is busy with {self.what}; try again in a moment.", code="server_busy",
                           headers={"Retry-After": "1"})
        self.waiting += 1
        try:
            await semaphore.acquire()
        finally:
            self.waiting -= 1
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
            semaphore.release()


def install(app, settings) -> None:
    """Give ``app`` its limiters (none where the rate is 0), its gates and the header middleware."""
    per_minute = settings.rate_limit_per_minute
    app.state.ratelimiter = RateLimiter(per_minute, settings.rate_limit_burst) if per_minute else None
    attempts = settings.login_attempts_per_minute
    app.state.login_limiter = RateLimiter(attempts, settings.login_attempts_burst) if attempts else None
    app.state.password_checks = Gate(settings.login_concurrency, 8 * settings.login_concurrency, "sign-ins")
    app.state.decodes = Gate(settings.upload_decodes, settings.queue_size, "uploads")
    # the headers `check` left on the request's state, on its response
    app.add_middleware(ResponseHeaders, headers=lambda scope: scope.get("state", {}).get(STATE_KEY))
