from __future__ import annotations

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from codeprm.serving.errors import BadInput, Overloaded, install_error_handlers
from codeprm.serving.observability import install_observability


def make_app(checks: dict[str, str | None], warnings: list[str] | None = None) -> FastAPI:
    app = FastAPI()

    async def readiness() -> dict[str, str | None]:
        return checks

    install_error_handlers(app)
    install_observability(
        app,
        service="demo",
        registry=CollectorRegistry(),
        readiness=readiness,
        warnings=lambda: list(warnings or []),
    )

    @app.get("/bad")
    async def bad() -> None:
        raise BadInput("code must not be empty")

    @app.get("/busy")
    async def busy() -> None:
        raise Overloaded("queue full", retry_after_s=2)

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("secret internals")

    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def test_ready_and_not_ready() -> None:
    async with client(make_app({"db": None})) as c:
        r = await c.get("/readyz")
        assert r.status_code == 200 and r.json()["checks"] == {"db": "ok"}
    async with client(make_app({"db": None, "model": "loading"})) as c:
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {
            "ready": False,
            "service": "demo",
            "checks": {"db": "ok", "model": "loading"},
            "warnings": [],
            "details": {},
        }
        assert (await c.get("/healthz")).json()["status"] == "ok"


async def test_degraded_modes_are_ready_but_say_so() -> None:
    async with client(make_app({"sandbox": None}, ["WEAK ISOLATION"])) as c:
        r = await c.get("/readyz")
        assert r.status_code == 200
        assert r.json()["warnings"] == ["WEAK ISOLATION"]


async def test_metrics_count_requests_and_request_ids_echo() -> None:
    async with client(make_app({})) as c:
        r = await c.get("/healthz", headers={"X-Request-ID": "req-42"})
        assert r.headers["x-request-id"] == "req-42"
        assert len((await c.get("/readyz")).headers["x-request-id"]) == 16
        text = (await c.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
    assert "http_request_duration_seconds_bucket" in text


async def test_errors_are_json_with_the_right_codes() -> None:
    async with client(make_app({})) as c:
        r = await c.get("/bad")
        assert (r.status_code, r.json()) == (422, {"detail": "code must not be empty"})
        r = await c.get("/busy")
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        r = await c.get("/crash")
        assert r.status_code == 500 and "secret" not in r.text
