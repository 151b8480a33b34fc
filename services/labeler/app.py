"""Labeler HTTP API: submit labeling runs and follow them. Ready when its Redis answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from codeprm.services.labeler.queue import connect
from codeprm.services.labeler.routes import router
from codeprm.services.labeler.runs import RunStore
from codeprm.services.labeler.settings import LabelerSettings
from codeprm.serving.errors import install_error_handlers
from codeprm.serving.observability import install_observability


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

    async def workers() -> dict[str, int]:
        # Not a readiness check: the API takes runs with no worker running (workers may be
        # scaled from zero on the queue's length); a run then says why it does not move.
        try:
            return {"workers": await RunStore(app.state.redis, settings.key_prefix).live_workers()}
        except (RedisError, OSError):
            return {}

    install_error_handlers(app)
    app.add_exception_handler(RedisError, _redis_unavailable)
    install_observability(
        app, service="labeler", registry=registry, readiness=readiness, details=workers
    )
    app.include_router(router)
    return app


async def _redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # Redis restarting or failing over: a moment's wait, not a bug of ours (no 500).
    return JSONResponse(
        {"detail": f"the labeler's Redis is unavailable: {exc}"},
        status_code=503,
        headers={"Retry-After": "2"},
    )
