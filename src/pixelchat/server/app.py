"""The FastAPI application: `create_app(settings)` builds it; `pixelchat serve` runs it."""

from __future__ import annotations

import time

from fastapi import FastAPI

import pixelchat
from pixelchat.server import errors
from pixelchat.server.config import Settings
from pixelchat.server.db import migrate, session_factory
from pixelchat.server.routes import health, openai_images
from pixelchat.server.store import ImageStore


def create_app(settings: Settings | None = None, *, run_migrations: bool = True) -> FastAPI:
    settings = settings or Settings()
    if run_migrations:
        migrate(settings.database)
    app = FastAPI(title="pixelchat", version=pixelchat.__version__,
                  description="Conversational image creation: an OpenAI-compatible images API and our own.")
    app.state.settings = settings
    app.state.sessions = session_factory(settings.database)
    app.state.store = ImageStore(settings.images_dir)
    app.state.started = time.time()
    errors.install(app)
    app.include_router(health.router)
    app.include_router(openai_images.router)

    @app.middleware("http")
    async def _nosniff(request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    return app
