"""Typed async HTTP clients for codeprm's services: the one client the labeler and trainer use.

ServiceUnavailable        the service could not be reached or stayed overloaded
└── (raised from the httpx error, or after the last retry on 429/503)
ServiceRejected           the service answered 4xx: the request itself is wrong
"""

from __future__ import annotations

import asyncio
import random
from types import TracebackType
from typing import Any, Self

import httpx

from contracts.executor import (
    BatchRequest,
    BatchResponse,
    EvaluateRequest,
    EvaluateResponse,
    RunRequest,
    RunResponse,
)
from contracts.prm import ScoreItem, ScoreRequest, ScoreResponse, ScoreResult

RETRY_STATUS = frozenset({429, 502, 503, 504})


class ServiceUnavailable(RuntimeError):
    pass


class ServiceRejected(RuntimeError):
    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class ServiceClient:
    """Base: JSON POST/GET with bounded retries and exponential backoff with jitter."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 120.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 64,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retries = retries
        self.backoff_s = backoff_s
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout_s,
            headers=headers,
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def post(self, path: str, body: Any) -> Any:
        """POST JSON, return the decoded JSON answer (retried as described above)."""
        return await self._request("POST", path, body)

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        for attempt in range(self.retries + 1):
            try:
                response = await self._http.request(method, path, json=body)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise ServiceUnavailable(f"{method} {path}: {exc!r}") from exc
            else:
                if response.status_code < 400:
                    return response.json()
                if response.status_code not in RETRY_STATUS:
                    raise ServiceRejected(response.status_code, _detail(response))
                if attempt == self.retries:
                    raise ServiceUnavailable(
                        f"{method} {path}: {response.status_code} after {attempt + 1} tries"
                    )
            delay = self.backoff_s * 2**attempt
            await asyncio.sleep(delay * (0.5 + random.random()))
        raise AssertionError("unreachable")


def _detail(response: httpx.Response) -> Any:
    try:
        return response.json().get("detail")
    except ValueError:
        return response.text[:500]


class ExecutorClient(ServiceClient):
    async def run(self, request: RunRequest) -> RunResponse:
        body = await self._request("POST", "/v1/run", request.model_dump(exclude_none=True))
        return RunResponse.model_validate(body)

    async def evaluate(self, request: EvaluateRequest) -> EvaluateResponse:
        body = await self._request("POST", "/v1/evaluate", request.model_dump(exclude_none=True))
        return EvaluateResponse.model_validate(body)

    async def evaluate_batch(self, requests: list[EvaluateRequest]) -> list[EvaluateResponse]:
        payload = BatchRequest(items=requests).model_dump(exclude_none=True)
        body = await self._request("POST", "/v1/evaluate/batch", payload)
        return BatchResponse.model_validate(body).results


class PrmClient(ServiceClient):
    async def score(self, items: list[ScoreItem]) -> list[ScoreResult]:
        body = await self._request("POST", "/v1/score", ScoreRequest(items=items).model_dump())
        return ScoreResponse.model_validate(body).results
