"""Executor app: the lifespan starts the sandbox pool and proves isolation before readiness."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from codeprm.services.executor.cache import VerdictCache
from codeprm.services.executor.evaluation import Executor, ExecutorMetrics
from codeprm.services.executor.pool import IsolationUnavailable, Pool
from codeprm.services.executor.routes import router
from codeprm.services.executor.selftest import run_self_test
from codeprm.services.executor.settings import ExecutorSettings
from codeprm.serving.errors import install_error_handlers
from codeprm.serving.observability import install_observability

log = logging.getLogger(__name__)


def create_app(settings: ExecutorSettings) -> FastAPI:
    registry = CollectorRegistry()
    checks: dict[str, str | None] = {"sandbox": "starting"}

    async def start(app: FastAPI, pool: Pool) -> None:
        try:
            await start_sandbox(app, pool)
        except Exception as exc:  # reported by /readyz; the process stays up for inspection
            checks["sandbox"] = f"start-up failed: {exc!r}"
            log.exception("executor start-up failed")

    async def start_sandbox(app: FastAPI, pool: Pool) -> None:
        try:
            await pool.start()
        except IsolationUnavailable as exc:
            checks["sandbox"] = (
                f"isolation unavailable ({exc}); set "
                "CODEPRM_EXECUTOR_ALLOW_WEAK_ISOLATION=true to run without it"
            )
            log.error("sandbox unavailable", extra={"reason": str(exc)})
            return
        cache = (
            VerdictCache(settings.redis_url, settings.cache_ttl_s, settings.cache_prefix)
            if settings.redis_url
            else None
        )
        executor = Executor(settings, pool, ExecutorMetrics(registry, pool), cache)
        app.state.executor = executor
        if settings.self_test and pool.isolated:
            # The probes run through the executor and its pool, as requests do, but not over
            # HTTP: requests are refused (503) until the self-test has passed.
            checks.update(await run_self_test(executor, settings.port))
        checks["sandbox"] = None
        app.state.ready = all(v is None for v in checks.values())
        log.info(
            "executor ready" if app.state.ready else "executor NOT ready",
            extra={"workers": pool.size, "isolated": pool.isolated, "checks": checks},
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = Pool(settings)
        app.state.pool = pool
        starting = asyncio.create_task(start(app, pool))
        try:
            yield
        finally:
            starting.cancel()
            app.state.ready = False
            await pool.close()
            if app.state.executor is not None and app.state.executor.cache is not None:
                await app.state.executor.cache.close()

    async def readiness() -> dict[str, str | None]:
        outcome = dict(checks)
        if app.state.executor is not None:  # started: can the pool still serve?
            outcome["workers"] = app.state.pool.health()
        return outcome

    def warnings() -> list[str]:
        pool = getattr(app.state, "pool", None)
        found = []
        if pool is not None and pool.size and not pool.isolated:
            found.append(
                "WEAK ISOLATION: sandboxes run without namespaces "
                "(CODEPRM_EXECUTOR_ALLOW_WEAK_ISOLATION); do not run hostile code"
            )
        if app.state.executor is not None and pool is not None and pool.size < settings.workers:
            found.append(f"{pool.size} of {settings.workers} sandbox workers alive")
        return found

    app = FastAPI(title="codeprm executor", lifespan=lifespan)
    app.state.settings = settings
    app.state.executor = None
    app.state.ready = False
    install_error_handlers(app)
    install_observability(
        app, service="executor", registry=registry, readiness=readiness, warnings=warnings
    )
    app.include_router(router)
    return app
