"""Live events: worker threads publish, event streams (server-sent events) subscribe.

Topics are strings: ``job:ID``, ``session:ID``, ``room:ID``. A subscriber that falls behind by more
than its buffer loses the oldest events, never blocks a publisher.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

HEARTBEAT_S = 15.0
BUFFER = 256


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


def event_stream(request: Request, sub: Subscription, first: list[dict] = (),
                 last: Callable[[dict], bool] = lambda e: False) -> StreamingResponse:
    """A `text/event-stream` of ``first`` then the subscription's events, with a heartbeat comment
    every 15 s; it ends when the client goes or an event satisfies ``last``."""

    async def body() -> AsyncIterator[str]:
        try:
            for event in first:
                yield frame(event)
                if last(event):
                    return
            while not await request.is_disconnected():
                event = await sub.get(HEARTBEAT_S)
                if event is None:
                    yield ": keep-alive\n\n"
                    continue
                yield frame(event)
                if last(event):
                    return
        finally:
            sub.close()

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def frame(event: dict) -> str:
    return f"event: {event.get('type', 'message')}\ndata: {json.dumps(event, default=str)}\n\n"
