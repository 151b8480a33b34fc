"""The clients against httpx.MockTransport: retries, backoff, and errors at the boundary."""

from __future__ import annotations

import json

import httpx
import pytest

from codeprm.api.executor import EvaluateRequest, RunRequest
from codeprm.api.labeler import LabelRunRequest
from codeprm.api.prm import ScoreItem
from codeprm.client import (
    MAX_RETRY_AFTER_S,
    AsyncExecutorClient,
    AsyncLabelerClient,
    ExecutorClient,
    LabelerClient,
    PrmClient,
    ServiceRejected,
    ServiceUnavailable,
)

RUN_OK = {
    "status": "ok",
    "exit_code": 0,
    "stdout": "1\n",
    "stderr": "",
    "wall_time_s": 0.01,
    "cpu_time_s": 0.01,
    "peak_memory_mb": 10.0,
}


def client(handler: httpx.MockTransport) -> AsyncExecutorClient:
    return AsyncExecutorClient("http://executor", transport=handler, backoff_s=0.001, retries=3)


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


# -- the sync flavour sends the same calls with the same retry policy ----------------------


def test_sync_client_retries_then_succeeds_and_sends_the_api_key() -> None:
    calls: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused")
        if len(calls) == 2:
            return httpx.Response(429, json={"detail": "slow down"})
        return httpx.Response(200, json=RUN_OK)

    with ExecutorClient(
        "http://executor",
        transport=httpx.MockTransport(handle),
        backoff_s=0.001,
        api_key="sekret",
    ) as c:
        result = c.run(RunRequest(code="print(1)"))
    assert result.exit_code == 0 and len(calls) == 3
    assert all(r.headers["Authorization"] == "Bearer sekret" for r in calls)
    assert calls[-1].url.path == "/v1/run"


def test_sync_client_raises_the_same_errors() -> None:
    def reject(request: httpx.Request) -> httpx.Response:
        return httpx.Response(413, json={"detail": "too many items"})

    with ExecutorClient("http://x", transport=httpx.MockTransport(reject)) as c:
        with pytest.raises(ServiceRejected) as info:
            c.evaluate_batch([])
    assert info.value.status_code == 413 and info.value.detail == "too many items"


def test_retry_after_is_honoured_and_capped() -> None:
    c = ExecutorClient("http://x", backoff_s=0.01)
    busy = httpx.Response(503, headers={"Retry-After": "2"})
    delays = [c._delay(0, busy) for _ in range(50)]
    assert 1.0 <= min(delays) and max(delays) <= 3.0
    forever = httpx.Response(503, headers={"Retry-After": "86400"})
    assert c._delay(0, forever) <= 1.5 * MAX_RETRY_AFTER_S
    plain = [c._delay(3, None) for _ in range(50)]
    assert 0.04 <= min(plain) and max(plain) <= 0.12  # 0.01 * 2**3, jittered by 0.5..1.5
    c.close()


def test_prm_client_score_and_get_reward() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/v1/score":
            assert body == {"items": [{"prompt": "p", "code": "x = 1"}], "aggregate": "mean"}
            line = {"line": 0, "start": 0, "end": 5, "score": 0.5, "kind": "code"}
            result = {"line_scores": [line], "aggregate": 0.5, "num_tokens": 4}
            return httpx.Response(200, json={"model": "m", "results": [result]})
        assert request.url.path == "/get_reward" and body["query"] == ["px = 1"]
        return httpx.Response(200, json={"rewards": [0.5], "scores": [0.5], "extra_logs": {}})

    with PrmClient("http://prm", transport=httpx.MockTransport(handle)) as c:
        scored = c.score([ScoreItem(prompt="p", code="x = 1")], aggregate="mean")
        reward = c.get_reward(["px = 1"], ["p"])
    assert scored.results[0].line_scores[0].score == 0.5 and reward.rewards == [0.5]


SAMPLE = {
    "prompt": "p",
    "completions": ["x = 1"],
    "labels": [True],
    "line_labels": [1.0],
    "problem_id": "P/0",
    "strategy": "mutation",
}
INFO = {
    "run_id": "r1",
    "strategy": "mutation",
    "dataset": "humaneval",
    "total": 2,
    "done": 0,
    "failed": 0,
    "remaining": 2,
    "samples": 0,
    "executions": 0,
    "created_at": 0.0,
    "finished": False,
}


def _labeler(polls: list[int]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/v1/label/runs":
            return httpx.Response(201, json=INFO)
        if path == "/v1/label/runs":
            limit = int(request.url.params["limit"])
            return httpx.Response(200, json=[INFO | {"run_id": f"r{i}"} for i in range(limit)])
        if path == "/v1/label/runs/r2/export" and request.url.params.get("partial") != "true":
            return httpx.Response(409, json={"detail": "run r2 is not finished: 2 of 2 units"})
        if path == "/v1/label/runs/r2/export":
            return httpx.Response(200, text="")
        if path == "/v1/label/runs/r1":
            polls.append(1)
            done = len(polls)
            return httpx.Response(200, json=INFO | {"done": done, "finished": done == 2})
        if path == "/v1/label/runs/r1/export":
            rows = json.dumps(SAMPLE) + "\n\n" + json.dumps(SAMPLE | {"problem_id": "P/1"})
            return httpx.Response(200, text=rows + "\n")
        return httpx.Response(404, json={"detail": f"no labeling run at {path}"})

    return httpx.MockTransport(handle)


def test_labeler_client_submit_wait_export() -> None:
    polls: list[int] = []
    seen: list[int] = []
    request = LabelRunRequest.model_validate({"strategy": "mutation", "dataset": "humaneval"})
    with LabelerClient("http://labeler", transport=_labeler(polls)) as c:
        info = c.submit(request)
        final = c.wait(info.run_id, poll_s=0.001, on_progress=lambda i: seen.append(i.done))
        samples = list(c.export(info.run_id))
        with pytest.raises(ServiceRejected) as missing:
            list(c.export("nope"))
    assert final.finished and seen == [1, 2]
    assert [s.problem_id for s in samples] == ["P/0", "P/1"]
    assert missing.value.status_code == 404


async def test_async_labeler_client_matches_the_sync_one() -> None:
    polls: list[int] = []
    request = LabelRunRequest.model_validate({"strategy": "mutation", "dataset": "humaneval"})
    async with AsyncLabelerClient("http://labeler", transport=_labeler(polls)) as c:
        info = await c.submit(request)
        final = await c.wait(info.run_id, poll_s=0.001)
        samples = [s async for s in c.export(info.run_id)]
    assert final.finished and len(samples) == 2


def test_labeler_client_lists_runs_and_asks_for_partial_exports() -> None:
    with LabelerClient("http://labeler", transport=_labeler([])) as c:
        assert [run.run_id for run in c.list_runs(limit=3)] == ["r0", "r1", "r2"]
        with pytest.raises(ServiceRejected) as unfinished:
            list(c.export("r2"))
        assert unfinished.value.status_code == 409 and "2 of 2" in unfinished.value.detail
        assert list(c.export("r2", partial=True)) == []  # the mock has no rows for it
