"""The FastAPI application: `create_app(settings)` builds it; `pixelchat serve` runs it."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

import pixelchat
from pixelchat.safety.checkers import load_checkers
from pixelchat.safety.moderation import Moderator
from pixelchat.server import errors
from pixelchat.server.config import Settings
from pixelchat.server.db import migrate, session_factory
from pixelchat.server.events import Broker, Streams
from pixelchat.server.headers import ResponseHeaders
from pixelchat.server.jobs import JobQueue
from pixelchat.server.keycache import KeyCache
from pixelchat.server import ratelimit
from pixelchat.server.origin import PublicUrlNotice
from pixelchat.server.routes import (auth, docs, health, images, jobs, local, openai_images, preview, ratings, rooms,
                                     studio)
from pixelchat.server.routes import sessions as conversations
from pixelchat.server.store import ImageStore


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413 before it is buffered: at once from its
    Content-Length, or as soon as a streamed (chunked) body passes the limit. Then the app reads an
    end of the body (a disconnect), and whatever it answers to that is not sent: the 413 went first.
    (An error raised from ``receive`` would reach FastAPI wrapped by the middleware's task groups, and
    it answers any error while reading a body with 400.)"""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self.refuse(send)
        received, started, refused = 0, False, False

        async def limited_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    if not started:
                        await self.refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message):
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, tracking_send)

    async def refuse(self, send):
        body = json.dumps(errors.error_body(413, f"The request is larger than {self.limit} bytes.", None,
                                            "too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


NOSNIFF = {"x-content-type-options": "nosniff"}  # on every response that does not set it


def create_app(settings: Settings | None = None, *, run_migrations: bool = True) -> FastAPI:
    settings = settings or Settings()
    if run_migrations:
        migrate(settings.database)
    store = ImageStore(settings.store_url or settings.images_dir)
    sessions, events = session_factory(settings.database), Broker()
    queue = JobQueue(settings, sessions, store, events)
    moderation = settings.moderation()
    queue.checkers = load_checkers(moderation.output_checkers)  # a bad name or missing extra stops the start

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from pixelchat.safety.provenance import configured_signer
        from pixelchat.server.handlers import engine_of, warm_up

        engine = await run_in_threadpool(engine_of, queue)  # the first request should not wait for it
        await run_in_threadpool(warm_up, engine)  # nor for its runtime's preparation
        # nor for the moderator's text encoder: loaded lazily, a burst of first prompts would each load one
        await run_in_threadpool(app.state.moderator.check, "a lake at sunset")
        await run_in_threadpool(configured_signer)  # bad Content Credentials settings stop the start, not a request
        events.loop = asyncio.get_running_loop()
        queue.start(settings.workers)
        yield
        await run_in_threadpool(queue.stop)  # the jobs being run finish; queued ones wait for the next start

    app = FastAPI(title="pixelchat", version=pixelchat.__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Conversational image creation: an OpenAI-compatible images API and our own.")
    app.state.settings, app.state.sessions, app.state.store, app.state.events = settings, sessions, store, events
    app.state.streams = Streams(settings.streams_per_user, settings.streams_total)
    app.state.jobs = queue
    app.state.moderator = Moderator.from_settings(moderation)
    app.state.signing_key = settings.signing_key()
    app.state.keys = KeyCache(settings.auth_cache_s)
    app.state.started = time.time()
    errors.install(app)
    app.include_router(health.router)
    app.include_router(openai_images.router)
    app.include_router(images.router)
    app.include_router(images.describe_router)
    app.include_router(auth.router)
    app.include_router(local.router)
    app.include_router(conversations.router)
    app.include_router(conversations.styles_router)
    app.include_router(jobs.router)
    app.include_router(rooms.router)
    app.include_router(ratings.router)
    app.include_router(preview.router)
    app.include_router(studio.router)
    app.include_router(docs.router)
    ratelimit.install(app, settings)

    app.add_middleware(ResponseHeaders, headers=lambda scope: NOSNIFF)
    # two pictures (image and mask) at the upload cap, plus the form's other fields
    app.add_middleware(BodyLimit, limit=2 * settings.max_upload_bytes + 64 * 1024)
    app.add_middleware(PublicUrlNotice, settings=settings)
    return app
