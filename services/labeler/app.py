"""Labeler HTTP API: submit labeling runs and follow them. Ready when its Redis answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from contracts.errors import install_error_handlers
from contracts.observability import install_observability
from services.labeler.queue import connect
from services.labeler.routes import router
from services.labeler.settings import LabelerSettings


def create_app(settings: LabelerSettings) -> FastAPI:
    registry = CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = await connect(settings)
        try:
            yield
        finally:
            await app.state.redis.aclose()

    app = FastAPI(title="codeprm labeler", lifespan=lifespan)
    app.state.settings = settings

    async def readiness() -> dict[str, str | None]:
        try:
            await app.state.redis.ping()
        except (RedisError, OSError) as exc:
            return {"redis": f"unreachable: {exc}"}
        return {"redis": None}

    install_error_handlers(app)
    install_observability(app, service="labeler", registry=registry, readiness=readiness)
    app.include_router(router)
    return app
