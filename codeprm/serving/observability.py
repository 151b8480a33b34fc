"""`/healthz`, `/readyz`, `/metrics` and per-request logging/metrics, the same on every service.

Each app owns a private Prometheus registry (several apps can live in one test process) and a
readiness function returning `{check_name: None if fine else reason}`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import codeprm

log = logging.getLogger("codeprm.http")

ReadinessCheck = Callable[[], Awaitable[dict[str, str | None]]]
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    service: str
    version: str


class Readiness(BaseModel):
    ready: bool
    service: str
    checks: dict[str, str]
    """Each check's outcome: "ok", or why it is not ready."""
    warnings: list[str] = []
    """Ready, but running in a degraded or unsafe mode the operator must know about."""
    details: dict[str, int] = {}
    """Counts worth seeing beside readiness (the labeler: its live workers)."""


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )


class RequestLogMiddleware:
    """Tags each request with an id (X-Request-ID, kept if the caller sent one), logs it once,
    and records its latency. Plain ASGI: cheaper than BaseHTTPMiddleware on the hot path."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex[:16]
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            if scope["path"] not in PROBE_PATHS or status >= 400:
                log.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": method,
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))[:64]
    return None


def install_observability(
    app: FastAPI,
    *,
    service: str,
    registry: CollectorRegistry,
    readiness: ReadinessCheck,
    warnings: Callable[[], list[str]] = list,
    details: Callable[[], Awaitable[dict[str, int]]] | None = None,
) -> None:
    app.add_middleware(RequestLogMiddleware, metrics=RequestMetrics(registry))

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> Health:
        """Liveness: the process is up and its event loop answers."""
        return Health(service=service, version=codeprm.__version__)

    @app.get(
        "/readyz", response_model=Readiness, tags=["ops"], responses={503: {"model": Readiness}}
    )
    async def readyz() -> JSONResponse:
        """Readiness: every dependency of this service is usable. 503 lists what is not."""
        outcome = await readiness()
        body = Readiness(
            ready=all(reason is None for reason in outcome.values()),
            service=service,
            checks={name: reason or "ok" for name, reason in outcome.items()},
            warnings=warnings(),
            details=await details() if details is not None else {},
        )
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text exposition of this service's registry."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
