"""codeprm's client SDK: typed HTTP clients for the executor, the PRM server and the labeler.

Each service has a sync client (`ExecutorClient`, `PrmClient`, `LabelerClient`) and an async
one (`AsyncExecutorClient`, ...), like httpx's `Client` and `AsyncClient`. The labeler and the
trainer use these clients themselves. Every endpoint is described once (`_Call`: method,
path, body, how to read the answer) and both flavours send the same description, so they
cannot drift apart.

Retries: connection errors and 429/502/503/504 are retried with exponential backoff and
jitter, honouring the server's `Retry-After` (the executor sends one when its queue is full).
Other 4xx answers are the request's fault and are raised at once.

ServiceUnavailable        the service could not be reached or stayed overloaded
ServiceRejected           the service answered 4xx: the request itself is wrong
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import httpx

from codeprm.api.executor import (
    BatchRequest,
    BatchResponse,
    EvaluateRequest,
    EvaluateResponse,
    RunRequest,
    RunResponse,
)
from codeprm.api.labeler import LabelRunInfo, LabelRunRequest
from codeprm.api.labels import LabeledSample
from codeprm.api.prm import (
    Aggregate,
    GetRewardRequest,
    GetRewardResponse,
    ScoreItem,
    ScoreRequest,
    ScoreResponse,
)

RETRY_STATUS = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_S = 30.0
T = TypeVar("T")


class ServiceUnavailable(RuntimeError):
    pass


class ServiceRejected(RuntimeError):
    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One endpoint call, independent of sync or async sending."""

    method: str
    path: str
    body: Any
    parse: Callable[[Any], T]


def _json(body: Any) -> Any:
    return body


# -- the endpoints -------------------------------------------------------------------------


def _run(request: RunRequest) -> _Call[RunResponse]:
    return _Call(
        "POST", "/v1/run", request.model_dump(exclude_none=True), RunResponse.model_validate
    )


def _evaluate(request: EvaluateRequest) -> _Call[EvaluateResponse]:
    body = request.model_dump(exclude_none=True)
    return _Call("POST", "/v1/evaluate", body, EvaluateResponse.model_validate)


def _evaluate_batch(requests: list[EvaluateRequest]) -> _Call[list[EvaluateResponse]]:
    body = BatchRequest(items=requests).model_dump(exclude_none=True)
    return _Call(
        "POST",
        "/v1/evaluate/batch",
        body,
        lambda answer: BatchResponse.model_validate(answer).results,
    )


def _ping() -> _Call[Any]:
    return _Call("GET", "/v1/ping", None, _json)


def _score(items: list[ScoreItem], aggregate: Aggregate | None) -> _Call[ScoreResponse]:
    body = ScoreRequest(items=items, aggregate=aggregate).model_dump(exclude_none=True)
    return _Call("POST", "/v1/score", body, ScoreResponse.model_validate)


def _get_reward(query: list[str], prompts: list[str]) -> _Call[GetRewardResponse]:
    body = GetRewardRequest(query=query, prompts=prompts).model_dump()
    return _Call("POST", "/get_reward", body, GetRewardResponse.model_validate)


def _submit(request: LabelRunRequest) -> _Call[LabelRunInfo]:
    body = request.model_dump(exclude_none=True)
    return _Call("POST", "/v1/label/runs", body, LabelRunInfo.model_validate)


def _status(run_id: str) -> _Call[LabelRunInfo]:
    return _Call("GET", f"/v1/label/runs/{run_id}", None, LabelRunInfo.model_validate)


def _list_runs(limit: int) -> _Call[list[LabelRunInfo]]:
    return _Call(
        "GET",
        f"/v1/label/runs?limit={limit}",
        None,
        lambda answer: [LabelRunInfo.model_validate(run) for run in answer],
    )


def _export_path(run_id: str, partial: bool) -> str:
    return f"/v1/label/runs/{run_id}/export" + ("?partial=true" if partial else "")


# -- transport: one retry policy for both flavours -----------------------------------------


class _Base:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        api_key: str | None,
        max_connections: int,
    ) -> None:
        self.base_url = base_url
        self.retries = retries
        self.backoff_s = backoff_s
        # What both flavours hand to httpx (besides their own transport type).
        self._http_options: dict[str, Any] = {
            "base_url": base_url,
            "timeout": timeout_s,
            "headers": {"Authorization": f"Bearer {api_key}"} if api_key else {},
            "limits": httpx.Limits(max_connections=max_connections),
        }

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        retry_after = response.headers.get("Retry-After") if response is not None else None
        if retry_after is not None:
            try:
                wait = min(float(retry_after), MAX_RETRY_AFTER_S)
                return wait * (0.5 + random.random())
            except ValueError:  # an HTTP date: not worth parsing, back off as usual
                pass
        return self.backoff_s * 2.0**attempt * (0.5 + random.random())

    def _retry_delay(
        self, call: _Call[Any], attempt: int, failure: httpx.Response | httpx.TransportError
    ) -> float:
        """How long to wait before the next try; raises when there is none to make."""
        where = f"{call.method} {self.base_url}{call.path}"
        if isinstance(failure, httpx.TransportError):
            if attempt == self.retries:
                raise ServiceUnavailable(f"{where}: {failure!r}") from failure
            return self._delay(attempt, None)
        if failure.status_code not in RETRY_STATUS:
            raise ServiceRejected(failure.status_code, _detail(failure))
        if attempt == self.retries:
            raise ServiceUnavailable(f"{where}: {failure.status_code} after {attempt + 1} tries")
        return self._delay(attempt, failure)


def _detail(response: httpx.Response) -> Any:
    try:
        return response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:500]


class ServiceClient(_Base):
    """Sync base: JSON calls with the retry policy above."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 120.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 64,
    ) -> None:
        super().__init__(
            base_url,
            timeout_s=timeout_s,
            retries=retries,
            backoff_s=backoff_s,
            api_key=api_key,
            max_connections=max_connections,
        )
        self._http = httpx.Client(transport=transport, **self._http_options)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, call: _Call[T]) -> T:
        for attempt in range(self.retries + 1):
            answer: httpx.Response | httpx.TransportError
            try:
                answer = self._http.request(call.method, call.path, json=call.body)
            except httpx.TransportError as exc:
                answer = exc
            if isinstance(answer, httpx.Response) and answer.status_code < 400:
                return call.parse(answer.json())
            time.sleep(self._retry_delay(call, attempt, answer))
        raise AssertionError("unreachable")

    def post(self, path: str, body: Any) -> Any:
        """POST JSON to any path, return the decoded JSON answer (retried as above)."""
        return self.call(_Call("POST", path, body, _json))

    def get(self, path: str) -> Any:
        return self.call(_Call("GET", path, None, _json))


class AsyncServiceClient(_Base):
    """Async base: JSON calls with the retry policy above."""

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
        super().__init__(
            base_url,
            timeout_s=timeout_s,
            retries=retries,
            backoff_s=backoff_s,
            api_key=api_key,
            max_connections=max_connections,
        )
        self._http = httpx.AsyncClient(transport=transport, **self._http_options)

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

    async def call(self, call: _Call[T]) -> T:
        for attempt in range(self.retries + 1):
            answer: httpx.Response | httpx.TransportError
            try:
                answer = await self._http.request(call.method, call.path, json=call.body)
            except httpx.TransportError as exc:
                answer = exc
            if isinstance(answer, httpx.Response) and answer.status_code < 400:
                return call.parse(answer.json())
            await asyncio.sleep(self._retry_delay(call, attempt, answer))
        raise AssertionError("unreachable")

    async def post(self, path: str, body: Any) -> Any:
        """POST JSON to any path, return the decoded JSON answer (retried as above)."""
        return await self.call(_Call("POST", path, body, _json))

    async def get(self, path: str) -> Any:
        return await self.call(_Call("GET", path, None, _json))


# -- the services --------------------------------------------------------------------------


class ExecutorClient(ServiceClient):
    def run(self, request: RunRequest) -> RunResponse:
        return self.call(_run(request))

    def evaluate(self, request: EvaluateRequest) -> EvaluateResponse:
        return self.call(_evaluate(request))

    def evaluate_batch(self, requests: list[EvaluateRequest]) -> list[EvaluateResponse]:
        return self.call(_evaluate_batch(requests))

    def ping(self) -> Any:
        return self.call(_ping())


class AsyncExecutorClient(AsyncServiceClient):
    async def run(self, request: RunRequest) -> RunResponse:
        return await self.call(_run(request))

    async def evaluate(self, request: EvaluateRequest) -> EvaluateResponse:
        return await self.call(_evaluate(request))

    async def evaluate_batch(self, requests: list[EvaluateRequest]) -> list[EvaluateResponse]:
        return await self.call(_evaluate_batch(requests))

    async def ping(self) -> Any:
        return await self.call(_ping())


class PrmClient(ServiceClient):
    def score(self, items: list[ScoreItem], aggregate: Aggregate | None = None) -> ScoreResponse:
        return self.call(_score(items, aggregate))

    def get_reward(self, query: list[str], prompts: list[str]) -> GetRewardResponse:
        """OpenRLHF's remote reward protocol (`query` = prompt + response)."""
        return self.call(_get_reward(query, prompts))


class AsyncPrmClient(AsyncServiceClient):
    async def score(
        self, items: list[ScoreItem], aggregate: Aggregate | None = None
    ) -> ScoreResponse:
        return await self.call(_score(items, aggregate))

    async def get_reward(self, query: list[str], prompts: list[str]) -> GetRewardResponse:
        """OpenRLHF's remote reward protocol (`query` = prompt + response)."""
        return await self.call(_get_reward(query, prompts))


class LabelerClient(ServiceClient):
    def submit(self, request: LabelRunRequest) -> LabelRunInfo:
        return self.call(_submit(request))

    def status(self, run_id: str) -> LabelRunInfo:
        return self.call(_status(run_id))

    def list_runs(self, limit: int = 50) -> list[LabelRunInfo]:
        """The newest runs first."""
        return self.call(_list_runs(limit))

    def wait(
        self,
        run_id: str,
        poll_s: float = 1.0,
        on_progress: Callable[[LabelRunInfo], None] | None = None,
    ) -> LabelRunInfo:
        """Poll until the run has finished; `on_progress` sees every status (progress bars)."""
        while True:
            info = self.status(run_id)
            if on_progress is not None:
                on_progress(info)
            if info.finished:
                return info
            time.sleep(poll_s)

    def export(self, run_id: str, *, partial: bool = False) -> Iterator[LabeledSample]:
        """The run's samples, streamed (not retried once the stream has started). A run not
        finished yet is refused (`ServiceRejected`, 409) unless `partial`."""
        with self._http.stream("GET", _export_path(run_id, partial)) as response:
            if response.status_code >= 400:
                response.read()
                raise ServiceRejected(response.status_code, _detail(response))
            for line in response.iter_lines():
                if line.strip():
                    yield LabeledSample.model_validate(json.loads(line))


class AsyncLabelerClient(AsyncServiceClient):
    async def submit(self, request: LabelRunRequest) -> LabelRunInfo:
        return await self.call(_submit(request))

    async def status(self, run_id: str) -> LabelRunInfo:
        return await self.call(_status(run_id))

    async def list_runs(self, limit: int = 50) -> list[LabelRunInfo]:
        """The newest runs first."""
        return await self.call(_list_runs(limit))

    async def wait(
        self,
        run_id: str,
        poll_s: float = 1.0,
        on_progress: Callable[[LabelRunInfo], None] | None = None,
    ) -> LabelRunInfo:
        """Poll until the run has finished; `on_progress` sees every status (progress bars)."""
        while True:
            info = await self.status(run_id)
            if on_progress is not None:
                on_progress(info)
            if info.finished:
                return info
            await asyncio.sleep(poll_s)

    async def export(self, run_id: str, *, partial: bool = False) -> AsyncIterator[LabeledSample]:
        """The run's samples, streamed (not retried once the stream has started). A run not
        finished yet is refused (`ServiceRejected`, 409) unless `partial`."""
        async with self._http.stream("GET", _export_path(run_id, partial)) as response:
            if response.status_code >= 400:
                await response.aread()
                raise ServiceRejected(response.status_code, _detail(response))
            async for line in response.aiter_lines():
                if line.strip():
                    yield LabeledSample.model_validate(json.loads(line))
