"""The clients against httpx.MockTransport: retries, backoff, and errors at the boundary."""

from __future__ import annotations

import httpx
import pytest

from contracts.clients import ExecutorClient, ServiceRejected, ServiceUnavailable
from contracts.executor import EvaluateRequest, RunRequest

RUN_OK = {
    "status": "ok",
    "exit_code": 0,
    "stdout": "1\n",
    "stderr": "",
    "wall_time_s": 0.01,
    "cpu_time_s": 0.01,
    "peak_memory_mb": 10.0,
}


def client(handler: httpx.MockTransport) -> ExecutorClient:
    return ExecutorClient("http://executor", transport=handler, backoff_s=0.001, retries=3)


async def test_retries_503_then_succeeds() -> None:
    calls = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            return httpx.Response(503, json={"detail": "busy"}, headers={"Retry-After": "1"})
        return httpx.Response(200, json=RUN_OK)

    async with client(httpx.MockTransport(handle)) as c:
        result = await c.run(RunRequest(code="print(1)"))
    assert result.stdout == "1\n" and len(calls) == 3


async def test_gives_up_loudly() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async with client(httpx.MockTransport(down)) as c:
        with pytest.raises(ServiceUnavailable):
            await c.run(RunRequest(code="print(1)"))


async def test_4xx_is_not_retried() -> None:
    calls = []

    def reject(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(422, json={"detail": "timeout_s must be at most 60"})

    async with client(httpx.MockTransport(reject)) as c:
        with pytest.raises(ServiceRejected) as info:
            await c.evaluate(
                EvaluateRequest.model_validate(
                    {"code": "x", "tests": {"kind": "assert", "code": "assert True"}}
                )
            )
    assert info.value.status_code == 422 and len(calls) == 1
    assert "at most 60" in str(info.value)
