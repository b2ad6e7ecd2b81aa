"""Live events: worker threads publish, event streams (server-sent events) subscribe.

Topics are strings: ``job:ID``, ``session:ID``, ``room:ID``. A subscriber that falls behind by more
than its buffer loses the oldest events, never blocks a publisher.

A stream holds no database connection while it lasts (its route gives its own back before the stream
starts), asks again before each event whether its caller may still see it, and counts against
`Streams`: a few per user, a bound for the server.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from pixelchat.server.errors import APIError

HEARTBEAT_S = 15.0
BUFFER = 256


class Streams:
    """The event streams open now, per user and in all; one past either bound is refused (429)."""

    def __init__(self, per_user: int, total: int):
        self.per_user, self.total = per_user, total
        self._open: Counter[int] = Counter()
        self._lock = threading.Lock()

    def open(self, user_id: int) -> Callable[[], None]:
        """Count a new stream of ``user_id``'s; returns what ends it (idempotent)."""
        with self._lock:
            if self._open[user_id] >= self.per_user:
                raise APIError(429, f"You have {self.per_user} live event streams open, the most allowed: close one "
                                    "first.", code="too_many_streams", headers={"Retry-After": "5"})
            if sum(self._open.values()) >= self.total:
                raise APIError(429, "The server holds as many live event streams as it may; try again in a moment.",
                               code="too_many_streams", headers={"Retry-After": "5"})
            self._open[user_id] += 1
        closed = False

        def close() -> None:
            nonlocal closed
            with self._lock:
                if not closed:
                    closed = True
                    self._open[user_id] -= 1
                    if self._open[user_id] <= 0:
                        del self._open[user_id]
        return close

    def count(self, user_id: int | None = None) -> int:
        with self._lock:
            return sum(self._open.values()) if user_id is None else self._open[user_id]


class Subscription:
    def __init__(self, broker: Broker, topics: tuple[str, ...]):
        self.broker, self.topics = broker, topics
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:  # subscribed from a route running in a worker thread
            if broker.loop is None:
                raise
            self.loop = broker.loop
        self.queue: asyncio.Queue[dict] = asyncio.Queue(BUFFER)

    def deliver(self, event: dict) -> None:  # on the event loop
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(event)

    async def get(self, timeout: float) -> dict | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def close(self) -> None:
        self.broker.unsubscribe(self)


class Broker:
    def __init__(self):
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's loop, set when it starts
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}

    def subscribe(self, *topics: str) -> Subscription:
        sub = Subscription(self, topics)
        with self._lock:
            for t in topics:
                self._subs.setdefault(t, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            for t in sub.topics:
                self._subs.get(t, set()).discard(sub)
                if not self._subs.get(t):
                    self._subs.pop(t, None)

    def publish(self, topic: str, event: dict) -> None:
        """Safe from any thread."""
        with self._lock:
            subs = list(self._subs.get(topic, ()))
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.deliver, {**event, "topic": topic})
            except RuntimeError:  # its loop has closed
                self.unsubscribe(sub)


class EventStreamResponse(StreamingResponse):
    """A streaming response that runs ``on_close`` however it ends: finished, failed, or cancelled
    before its body started (when the client left at once)."""

    def __init__(self, content, *, on_close: Callable[[], None], **kwargs):
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def event_stream(request: Request, sub: Subscription, first: list[dict] = (),
                 last: Callable[[dict], bool] = lambda e: False, *, slot: Callable[[], None] | None = None,
                 allowed: Callable[[], bool] | None = None) -> StreamingResponse:
    """A `text/event-stream` of ``first`` then the subscription's events, with a heartbeat comment
    every 15 s; it ends when the client goes or an event satisfies ``last`` (that event is sent).

    allowed: asked (on a worker thread) before every other event and heartbeat; once it says no,
    the stream ends without the event, so revoked access stops a stream at its next event.
    slot: what `Streams.open` returned; the stream ends it when it ends."""

    async def still_allowed() -> bool:
        return allowed is None or await run_in_threadpool(allowed)

    async def body() -> AsyncIterator[str]:
        for event in first:
            yield frame(event)
            if last(event):
                return
        while not await request.is_disconnected():
            event = await sub.get(HEARTBEAT_S)
            if event is not None and last(event):
                yield frame(event)
                return
            if not await still_allowed():
                return
            yield ": keep-alive\n\n" if event is None else frame(event)

    def close() -> None:
        sub.close()
        if slot is not None:
            slot()

    return EventStreamResponse(body(), on_close=close, media_type="text/event-stream",
                               headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def frame(event: dict) -> str:
    return f"event: {event.get('type', 'message')}\ndata: {json.dumps(event, default=str)}\n\n"
