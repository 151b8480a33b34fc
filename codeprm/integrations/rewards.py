"""What every RL-framework plug-in computes: a response's unit-test outcome from the executor,
its per-line PRM scores from the PRM server, and the scalar reward that combines them.

    reward = outcome + prm_weight * PRM aggregate (min over code lines by default)

where the outcome is pass_reward / fail_reward (or, with `outcome="pass_rate"`, the fraction
of test cases passed between the two). The executor and the PRM server are called once per
batch, concurrently in the async flavour. Settings come from `CODEPRM_REWARD_*` environment
variables, which is how a framework that loads a reward file by path can be configured.

Infrastructure errors are not failures: a sample whose run ended in `sandbox_error`, or whose
batch could not reach the executor or the PRM server, is marked `infra_error`. With
`infra_errors="skip"` (the default) it is `skipped`: each plug-in then says "no reward for
this sample" the way its framework allows (TRL: None; veRL and OpenRLHF: a flag and a logged
count, docs/integrations.md). With `infra_errors="fail"` it gets the fail outcome, as a
program that did not pass.

Tests (a dataset's label / ground truth) may be given as:
* an executor `tests` object: `{"kind": "assert" | "stdio" | "call", ...}` (docs/executor.md),
  or a row holding one under `"tests"` (codeprm's problem format, with `program_prefix`);
* a HumanEval-style row: `{"test": "<code with check(candidate)>", "entry_point": "f"}`;
* APPS/TACO-style input/output lists, as veRL's code datasets carry them:
  `{"inputs": [...], "outputs": [...]}` (stdin/stdout) or with `"fn_name"` (call-based: each
  input the argument list, or, in veRL's SandboxFusion shape, a string with one JSON value per
  line);
* plain test code (a string that is not JSON): assert-style tests.
Any of these may come as a JSON string.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, TypeAdapter
from pydantic_settings import BaseSettings, SettingsConfigDict

from codeprm.api.executor import EvaluateRequest, EvaluateResponse, Tests
from codeprm.api.prm import Aggregate, LineScore, ScoreItem, ScoreResult
from codeprm.client import (
    AsyncExecutorClient,
    AsyncPrmClient,
    ExecutorClient,
    PrmClient,
    ServiceUnavailable,
)
from codeprm.extract import code_span
from codeprm.token_rewards import Outcome, outcome_reward

_TESTS: TypeAdapter[Tests] = TypeAdapter(Tests)
log = logging.getLogger(__name__)

InfraErrors = Literal["skip", "fail"]


class RewardSettings(BaseSettings):
    """Settings of the plug-ins, from `CODEPRM_REWARD_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="CODEPRM_REWARD_", extra="forbid")

    executor_url: str = Field("http://127.0.0.1:8100", description="The codeprm executor.")
    prm_url: str | None = Field(None, description="The PRM server; unset: outcome only.")
    prm_api_key: str | None = None
    prm_weight: float = Field(0.5, description="Weight of the PRM aggregate in the reward.")
    aggregate: Aggregate = "min"
    outcome: Outcome = "pass_fail"
    pass_reward: float = 1.0
    fail_reward: float = 0.0
    timeout_s: float = Field(10.0, gt=0, le=60, description="Per test run in the sandbox.")
    memory_mb: int | None = Field(None, gt=0)
    request_timeout_s: float = Field(600.0, gt=0, description="Per HTTP request (a batch).")
    retries: int = Field(4, ge=0)
    infra_errors: InfraErrors = Field(
        "skip",
        description="A sandbox_error or an unreachable service: skip the sample (no reward) "
        "or score it as a failed run.",
    )


@dataclass(frozen=True)
class Sample:
    """One response to judge: its prompt (for the PRM), the text and its tests."""

    prompt: str
    response: str
    tests: Any = None


@dataclass(frozen=True)
class Judged:
    reward: float
    """0.0 for a skipped sample (the plug-ins do not hand it to the framework as a reward)."""
    passed: bool | None
    """None when the sample had no tests, or was skipped."""
    pass_rate: float | None
    status: str | None
    prm: float | None
    """The PRM aggregate; None without a PRM server or without a scored code line."""
    line_scores: list[LineScore]
    code_start: int
    """Where the scored program starts in the response (line offsets are relative to it)."""
    infra_error: bool = False
    """The sandbox or a service failed on this sample: its outcome says nothing about it."""
    skipped: bool = False
    """An infrastructure error under `infra_errors="skip"`: the sample gets no reward."""

    def log(self) -> dict[str, float]:
        """Plain numbers for a framework's logs: always the same keys (frameworks such as veRL
        stack them into one array per key across the batch), 0.0 for a missing value."""
        return {
            "reward": self.reward,
            "passed": float(bool(self.passed)),
            "pass_rate": self.pass_rate or 0.0,
            "prm": self.prm if self.prm is not None else 0.0,
            "infra_error": float(self.infra_error),
            "skipped": float(self.skipped),
        }


def parse_tests(label: Any) -> tuple[Tests, str] | None:
    """(tests, program prefix) from a dataset label in any of the forms above; None if empty."""
    if label is None or label == "":
        return None
    if isinstance(label, str):
        try:
            label = json.loads(label)
        except ValueError:
            return _TESTS.validate_python({"kind": "assert", "code": label}), ""
    if not isinstance(label, dict):
        raise ValueError(f"cannot read tests from a {type(label).__name__}")
    if "kind" in label:
        return _TESTS.validate_python(label), ""
    if "tests" in label:
        inner = parse_tests(label["tests"])
        return None if inner is None else (inner[0], str(label.get("program_prefix", "")))
    if "test" in label:
        spec = {"kind": "assert", "code": label["test"], "entry_point": label.get("entry_point")}
        return _TESTS.validate_python(spec), ""
    if "inputs" in label and "outputs" in label:
        return _io_tests(label), ""
    raise ValueError(f"no tests found in a label with keys {sorted(label)}")


def _io_tests(label: dict[str, Any]) -> Tests:
    pairs = list(zip(label["inputs"], label["outputs"], strict=True))
    if label.get("fn_name"):
        cases = [_call_case(args, expected) for args, expected in pairs]
        return _TESTS.validate_python(
            {"kind": "call", "entry_point": label["fn_name"], "cases": cases}
        )
    cases = [{"stdin": _text(i), "expected_stdout": _text(o)} for i, o in pairs]
    return _TESTS.validate_python({"kind": "stdio", "cases": cases})


def _call_case(args: Any, expected: Any) -> dict[str, Any]:
    """One call-based case: APPS/TACO give the argument list; veRL's SandboxFusion datasets
    give a string with one JSON value per line (an argument each) and the printed result."""
    if isinstance(args, str):
        return {
            "args": [json.loads(line) for line in args.splitlines() if line.strip()],
            "expected": _json_or_text(expected),
        }
    return {"args": args if isinstance(args, list) else [args], "expected": expected}


def _json_or_text(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _text(value: Any) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


@dataclass(frozen=True)
class Unreachable:
    """A service that stayed unreachable after the client's retries, for one batch."""

    service: str
    error: ServiceUnavailable


class CodeRewards:
    """Judge batches of responses with the executor and the PRM server (sync or async)."""

    def __init__(self, settings: RewardSettings | None = None) -> None:
        self.settings = settings or RewardSettings()

    # -- async -----------------------------------------------------------------------------

    async def ajudge(self, samples: Sequence[Sample]) -> list[Judged]:
        plan = _Plan(self.settings, samples)
        verdicts, scores = await asyncio.gather(self._aevaluate(plan), self._ascore(plan))
        return plan.combine(verdicts, scores)

    async def _aevaluate(self, plan: _Plan) -> list[EvaluateResponse] | Unreachable:
        if not plan.requests:
            return []
        s = self.settings
        try:
            async with AsyncExecutorClient(
                s.executor_url, timeout_s=s.request_timeout_s, retries=s.retries
            ) as executor:
                return await executor.evaluate_batch(plan.requests)
        except ServiceUnavailable as error:
            return Unreachable("executor", error)

    async def _ascore(self, plan: _Plan) -> list[ScoreResult] | Unreachable | None:
        s = self.settings
        if s.prm_url is None or not plan.items:
            return None
        try:
            async with AsyncPrmClient(
                s.prm_url, timeout_s=s.request_timeout_s, retries=s.retries, api_key=s.prm_api_key
            ) as prm:
                return (await prm.score(plan.items, s.aggregate)).results
        except ServiceUnavailable as error:
            return Unreachable("PRM server", error)

    # -- sync ------------------------------------------------------------------------------

    def judge(self, samples: Sequence[Sample]) -> list[Judged]:
        plan = _Plan(self.settings, samples)
        s = self.settings
        verdicts: list[EvaluateResponse] | Unreachable = []
        if plan.requests:
            try:
                with ExecutorClient(
                    s.executor_url, timeout_s=s.request_timeout_s, retries=s.retries
                ) as executor:
                    verdicts = executor.evaluate_batch(plan.requests)
            except ServiceUnavailable as error:
                verdicts = Unreachable("executor", error)
        scores: list[ScoreResult] | Unreachable | None = None
        if s.prm_url is not None and plan.items:
            try:
                with PrmClient(
                    s.prm_url,
                    timeout_s=s.request_timeout_s,
                    retries=s.retries,
                    api_key=s.prm_api_key,
                ) as prm:
                    scores = prm.score(plan.items, s.aggregate).results
            except ServiceUnavailable as error:
                scores = Unreachable("PRM server", error)
        return plan.combine(verdicts, scores)


class _Plan:
    """The requests a batch of samples needs, and how to put the answers back together."""

    def __init__(self, settings: RewardSettings, samples: Sequence[Sample]) -> None:
        self.settings = settings
        self.samples = list(samples)
        self.spans = [code_span(s.response) for s in self.samples]
        self.codes = [s.response[a:b] for s, (a, b) in zip(self.samples, self.spans, strict=True)]
        self.requests: list[EvaluateRequest] = []
        self.request_of: dict[int, int] = {}  # sample -> its executor request
        self.tested: list[bool] = []  # whether the sample has tests, i.e. an outcome
        for i, (sample, code) in enumerate(zip(self.samples, self.codes, strict=True)):
            parsed = parse_tests(sample.tests)
            self.tested.append(parsed is not None)
            if parsed is None or not code.strip():
                continue  # no tests: no outcome; no code: fails without running
            tests, prefix = parsed
            self.request_of[i] = len(self.requests)
            self.requests.append(
                EvaluateRequest(
                    code=prefix + code,
                    tests=tests,
                    timeout_s=settings.timeout_s,
                    memory_mb=settings.memory_mb,
                )
            )
        # Only programs with code go to the PRM: an empty one has no line to score.
        self.item_of = {
            i: n for n, i in enumerate(i for i, c in enumerate(self.codes) if c.strip())
        }
        self.items = [
            ScoreItem(prompt=self.samples[i].prompt, code=self.codes[i]) for i in self.item_of
        ]

    def combine(
        self,
        verdicts: list[EvaluateResponse] | Unreachable,
        scores: list[ScoreResult] | Unreachable | None,
    ) -> list[Judged]:
        s = self.settings
        for answer in (verdicts, scores):
            if isinstance(answer, Unreachable):
                log.warning(
                    "%s unreachable: %d samples have an infrastructure error (%s)",
                    answer.service,
                    len(self.samples),
                    answer.error,
                )
        judged = [self._judge(i, verdicts, scores) for i in range(len(self.samples))]
        errors = sum(j.infra_error for j in judged)
        if errors:
            log.warning(
                "%d of %d samples hit an infrastructure error (%s)",
                errors,
                len(judged),
                "skipped: no reward" if s.infra_errors == "skip" else "scored as failed",
                extra={"infra_errors": errors, "samples": len(judged)},
            )
        return judged

    def _judge(
        self,
        i: int,
        verdicts: list[EvaluateResponse] | Unreachable,
        scores: list[ScoreResult] | Unreachable | None,
    ) -> Judged:
        s = self.settings
        passed: bool | None = None
        pass_rate: float | None = None
        status: str | None = None
        infra_error = isinstance(scores, Unreachable) and i in self.item_of
        if i in self.request_of:
            if isinstance(verdicts, Unreachable):
                infra_error, status = True, "unreachable"
            else:
                verdict = verdicts[self.request_of[i]]
                passed, pass_rate, status = verdict.passed, verdict.pass_rate, verdict.status
                infra_error |= verdict.status == "sandbox_error" or any(
                    case.status == "sandbox_error" for case in verdict.cases
                )
        elif self.tested[i]:
            passed, pass_rate, status = False, 0.0, "runtime_error"  # empty program
        if infra_error and s.infra_errors == "skip":
            return Judged(
                reward=0.0,
                passed=None,
                pass_rate=None,
                status=status,
                prm=None,
                line_scores=[],
                code_start=self.spans[i][0],
                infra_error=True,
                skipped=True,
            )
        if infra_error and self.tested[i]:
            passed, pass_rate = False, 0.0  # infra_errors="fail": a run that did not pass
        outcome = 0.0
        if passed is not None and pass_rate is not None:
            outcome = outcome_reward(passed, pass_rate, s.outcome, s.pass_reward, s.fail_reward)
        result = scores[self.item_of[i]] if isinstance(scores, list) and i in self.item_of else None
        prm = result.aggregate if result is not None else None
        return Judged(
            reward=outcome + (s.prm_weight * prm if prm is not None else 0.0),
            passed=passed,
            pass_rate=pass_rate,
            status=status,
            prm=prm,
            line_scores=result.line_scores if result is not None else [],
            code_start=self.spans[i][0],
            infra_error=infra_error,
        )
