"""The FastAPI application factory: `create_app(settings)` wires settings, state, routers, errors.

Heavy objects load in the lifespan, in a thread, so the server answers `/health` (503) while they
load. This module owns only the wiring; every endpoint lives in `service/routes/`.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.errors import install_error_handlers
from service.limits import BodySizeLimit
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.routes import (
    chat,
    compare,
    completions,
    documents,
    embeddings,
    health,
    index_jobs,
    models,
    page,
    retrieve,
    tokenizer,
)
from service.settings import Settings
from service.state import ServiceState


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state: ServiceState = app.state.service
        loading = asyncio.create_task(asyncio.to_thread(state.load))
        try:
            yield
        finally:
            await asyncio.shield(loading)  # a thread cannot be interrupted; let it finish first
            state.close()

    app = FastAPI(title="retro", version="0.1.0", lifespan=lifespan)
    app.state.settings, app.state.metrics = settings, metrics
    app.state.service = ServiceState(settings, metrics)  # "loading" until the lifespan has loaded it
    install_error_handlers(app)
    routers = (completions, chat, embeddings, tokenizer, models, retrieve, compare, documents, index_jobs)
    for module in (*routers, health, page):
        app.include_router(module.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
