"""PRM server app: the model loads in the background so /healthz answers at once and /readyz
turns 200 only when the model is loaded."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from contracts.errors import install_error_handlers
from contracts.observability import install_observability
from services.prm_server.model import LoadedPrm, load_prm
from services.prm_server.settings import PrmSettings

log = logging.getLogger(__name__)


def create_app(settings: PrmSettings) -> FastAPI:
    registry = CollectorRegistry()
    state: dict[str, LoadedPrm | BaseException | None] = {"model": None}

    async def load() -> None:
        assert settings.model is not None
        try:
            state["model"] = await asyncio.to_thread(
                load_prm, settings.model, settings.device, settings.dtype
            )
        except Exception as exc:  # reported by /readyz; the process stays up for inspection
            log.exception("model load failed")
            state["model"] = exc

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(load()) if settings.model is not None else None
        yield
        if task is not None and not task.done():
            task.cancel()

    async def readiness() -> dict[str, str | None]:
        model = state["model"]
        if settings.model is None:
            return {"model": "no model configured (CODEPRM_PRM_MODEL / --model)"}
        if model is None:
            return {"model": "loading"}
        if isinstance(model, BaseException):
            return {"model": f"load failed: {model}"}
        return {"model": None}

    app = FastAPI(title="codeprm PRM server", lifespan=lifespan)
    app.state.settings = settings
    app.state.prm = state
    install_error_handlers(app)
    install_observability(app, service="prm_server", registry=registry, readiness=readiness)
    return app
