"""The rewards' inputs for a batch of rollouts, from the executor and the PRM server over HTTP.

Both services are called at once for the whole batch. Transient failures (connection errors,
429/5xx) are retried with backoff by the clients; what still fails raises `RewardUnavailable`
and the step fails loudly: a reward silently replaced by zero would train the policy on a lie.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from codeprm.api.executor import EvaluateRequest, EvaluateResponse
from codeprm.api.prm import LineScore, ScoreItem, ScoreResult
from codeprm.client import (
    AsyncExecutorClient,
    AsyncPrmClient,
    ServiceRejected,
    ServiceUnavailable,
)
from codeprm.services.trainer.rollout import Rollout

T = TypeVar("T")


class RewardUnavailable(RuntimeError):
    """A reward service failed after its retries; the step cannot be rewarded."""


@dataclass(frozen=True)
class Verdict:
    passed: bool
    pass_rate: float
    line_scores: list[LineScore] | None
    """The PRM's scores of the response's lines (None when the run has no dense rewards)."""


@dataclass(frozen=True)
class Judgement:
    verdicts: list[Verdict]
    executor_s: float
    prm_s: float


class RewardSource(Protocol):
    async def judge(self, rollouts: Sequence[Rollout]) -> Judgement: ...


@dataclass
class RewardClient:
    executor_url: str
    prm_url: str | None
    """None: no PRM calls (outcome and value_init modes)."""
    prm_api_key: str | None = None
    retries: int = 4
    execution_timeout_s: float = 10.0
    timeout_s: float = 600.0
    """Per HTTP call to either service: a service that hangs fails the step after this."""

    async def judge(self, rollouts: Sequence[Rollout]) -> Judgement:
        requests = [
            EvaluateRequest(
                code=r.problem.program(r.text),
                tests=r.problem.tests,
                timeout_s=self.execution_timeout_s,
            )
            for r in rollouts
        ]
        items = [ScoreItem(prompt=r.problem.prompt, code=r.text) for r in rollouts]
        (verdicts, executor_s), (scores, prm_s) = await asyncio.gather(
            _timed("executor", self._evaluate(requests)),
            _timed("PRM server", self._score(items)),
        )
        return Judgement(_verdicts(verdicts, scores), executor_s, prm_s)

    async def _evaluate(self, requests: list[EvaluateRequest]) -> list[EvaluateResponse]:
        async with AsyncExecutorClient(
            self.executor_url, retries=self.retries, timeout_s=self.timeout_s
        ) as ex:
            return _all_answered(await ex.evaluate_batch(requests), len(requests))

    async def _score(self, items: list[ScoreItem]) -> list[ScoreResult] | None:
        if self.prm_url is None:
            return None
        async with AsyncPrmClient(
            self.prm_url, retries=self.retries, api_key=self.prm_api_key, timeout_s=self.timeout_s
        ) as prm:
            return _all_answered((await prm.score(items)).results, len(items))


def _all_answered(results: list[T], expected: int) -> list[T]:
    if len(results) != expected:
        raise ValueError(f"{len(results)} answers to {expected} questions")
    return results


def _verdicts(results: list[EvaluateResponse], scores: list[ScoreResult] | None) -> list[Verdict]:
    return [
        Verdict(
            passed=result.passed,
            pass_rate=result.pass_rate,
            line_scores=None if scores is None else scores[i].line_scores,
        )
        for i, result in enumerate(results)
    ]


async def _timed(service: str, call: Awaitable[T]) -> tuple[T, float]:
    start = time.perf_counter()
    try:
        value = await call
    except (ServiceUnavailable, ServiceRejected) as exc:
        raise RewardUnavailable(f"{service}: {exc}") from exc
    except ValueError as exc:  # an answer that is not what the service's contract says
        raise RewardUnavailable(f"{service} answered something unreadable: {exc}") from exc
    return value, time.perf_counter() - start
