"""PRM server app: the model loads in the background so /healthz answers at once; /readyz
turns 200 only when the model is loaded and a warm-up forward pass has run. A model that
fails to load is reported to `on_load_failure` (`codeprm prm serve` then stops, saying why)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Gauge

from codeprm.api.prm import ScoreItem
from codeprm.prm_model import encode, forward, load_prm
from codeprm.services.prm_server.errors import ContainUnexpectedErrors
from codeprm.services.prm_server.routes import router
from codeprm.services.prm_server.settings import PrmSettings
from codeprm.services.prm_server.state import Scorer, start_scorer
from codeprm.services.prm_server.ui import router as viewer_router
from codeprm.serving.errors import install_error_handlers
from codeprm.serving.observability import install_observability

log = logging.getLogger(__name__)

WARM_UP = ScoreItem(prompt="# warm-up\n", code="def f(x):\n    return x\n")


def create_app(
    settings: PrmSettings, *, on_load_failure: Callable[[str], None] | None = None
) -> FastAPI:
    registry = CollectorRegistry()
    problem: dict[str, str] = {}

    async def load(app: FastAPI) -> None:
        assert settings.model is not None
        try:
            prm = await asyncio.to_thread(load_prm, settings.model, settings.device, settings.dtype)
            # The first forward pass compiles kernels and allocates; pay it before traffic.
            await asyncio.to_thread(forward, prm, [encode(prm, WARM_UP, settings.max_tokens)])
        except Exception as exc:
            # A server that can never score must not sit answering 503 (which clients
            # retry): whoever runs it is told, and stops it.
            log.error("model load failed", extra={"error": repr(exc)})  # the reason is enough
            problem["model"] = f"load failed: {exc}"
            if on_load_failure is not None:
                on_load_failure(f"cannot load the PRM from {settings.model}: {exc}")
            return
        app.state.scorer = start_scorer(prm, settings, registry)
        log.info("ready to score", extra={"model": prm.name})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(load(app)) if settings.model is not None else None
        yield
        if task is not None and not task.done():
            task.cancel()
        scorer: Scorer | None = app.state.scorer
        if scorer is not None:
            await scorer.batcher.stop()

    async def readiness() -> dict[str, str | None]:
        if settings.model is None:
            return {"model": "no model configured (CODEPRM_PRM_MODEL / --model)"}
        if "model" in problem:
            return {"model": problem["model"]}
        if app.state.scorer is None:
            return {"model": "loading"}
        return {"model": None}

    app = FastAPI(title="codeprm PRM server", lifespan=lifespan)
    app.state.settings = settings
    app.state.scorer = None
    _gauges(app, registry)
    install_error_handlers(app)
    # Inside the request log (added after it is outer), so the log still sees the 500.
    app.add_middleware(ContainUnexpectedErrors)
    install_observability(app, service="prm_server", registry=registry, readiness=readiness)
    app.include_router(router)
    app.include_router(viewer_router)
    return app


def _gauges(app: FastAPI, registry: CollectorRegistry) -> None:
    pending = Gauge("prm_pending_items", "Items waiting for a forward pass.", registry=registry)
    pending.set_function(lambda: app.state.scorer.batcher.pending if app.state.scorer else 0)
    memory = Gauge("prm_gpu_memory_bytes", "GPU memory allocated by torch.", registry=registry)
    memory.set_function(lambda: torch.cuda.memory_allocated() if torch.cuda.is_available() else 0)
