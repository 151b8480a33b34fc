"""The reward core the plug-ins share: reading tests, judging against the real services."""

from __future__ import annotations

import json

import pytest

from codeprm.api.executor import CaseResult, EvaluateResponse
from codeprm.client import ServiceUnavailable
from codeprm.integrations.rewards import (
    CodeRewards,
    RewardSettings,
    Sample,
    Unreachable,
    _Plan,
    parse_tests,
)
from codeprm.stack import free_port

ADD = "def add(a, b):\n    return a + b\n"
HUMANEVAL_ROW = {
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    "entry_point": "add",
}


def test_parse_tests_reads_every_documented_form() -> None:
    assert parse_tests(None) is None and parse_tests("") is None
    plain, _ = parse_tests("assert add(1, 1) == 2") or (None, "")
    assert plain is not None and plain.kind == "assert"
    humaneval, _ = parse_tests(json.dumps(HUMANEVAL_ROW)) or (None, "")
    assert humaneval is not None and humaneval.kind == "assert"
    assert humaneval.entry_point == "add"
    stdio, _ = parse_tests({"inputs": ["1 2\n", ["3", "4"]], "outputs": ["3\n", "7"]}) or (None, "")
    assert stdio is not None and stdio.kind == "stdio"
    assert [c.stdin for c in stdio.cases] == ["1 2\n", "3\n4"]
    call, _ = parse_tests({"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]}) or (None, "")
    assert call is not None and call.kind == "call" and call.cases[0].args == [1, 2]
    own = {"tests": {"kind": "assert", "code": "assert f() == 1"}, "program_prefix": "import os\n"}
    parsed = parse_tests(json.dumps(own))
    assert parsed is not None and parsed[1] == "import os\n"
    with pytest.raises(ValueError, match="no tests"):
        parse_tests({"answer": 3})


@pytest.mark.slow
async def test_sync_and_async_judge_agree(reward_env: RewardSettings) -> None:
    samples = [
        Sample("Write add.", f"```python\n{ADD}```", HUMANEVAL_ROW),
        Sample("Write add.", "def add(a, b):\n    return a - b\n", HUMANEVAL_ROW),
        Sample("Write add.", "", HUMANEVAL_ROW),  # nothing written: fails without running
        Sample("Write add.", ADD, None),  # no tests: PRM only
    ]
    rewards = CodeRewards(reward_env)
    judged = await rewards.ajudge(samples)
    assert [j.passed for j in judged] == [True, False, False, None]
    assert judged[0].code_start == len("```python\n")
    for j in judged[:2] + judged[3:]:
        assert j.prm is not None and j.line_scores
        expected = (1.0 if j.passed else 0.0) + 0.5 * j.prm
        assert j.reward == pytest.approx(expected)
    assert rewards.judge(samples) == judged


@pytest.mark.slow
async def test_outcome_only_without_a_prm_server(reward_env: RewardSettings) -> None:
    settings = reward_env.model_copy(update={"prm_url": None, "outcome": "pass_rate"})
    judged = await CodeRewards(settings).ajudge([Sample("", ADD, HUMANEVAL_ROW)])
    assert judged[0].reward == 1.0 and judged[0].prm is None and not judged[0].line_scores


def test_parse_tests_reads_verl_sandbox_fusion_call_shape() -> None:
    """veRL's SandboxFusion datasets: one JSON value per stdin line, the printed result."""
    label = {"fn_name": "f", "inputs": ["[1, 2]\n3", '"x"'], "outputs": ["[1, 2, 3]", "x!"]}
    parsed = parse_tests(json.dumps(label))
    assert parsed is not None
    call = parsed[0]
    assert call.kind == "call" and call.entry_point == "f"
    assert [c.args for c in call.cases] == [[[1, 2], 3], ["x"]]
    assert [c.expected for c in call.cases] == [[1, 2, 3], "x!"]


def verdict(status: str, *case_statuses: str) -> EvaluateResponse:
    cases = [CaseResult(passed=s == "ok", status=s) for s in case_statuses]  # type: ignore[arg-type]
    return EvaluateResponse(
        passed=all(c.passed for c in cases),
        pass_rate=sum(c.passed for c in cases) / len(cases),
        status=status,  # type: ignore[arg-type]
        cases=cases,
        wall_time_s=0.0,
        cpu_time_s=0.0,
        peak_memory_mb=0.0,
    )


@pytest.mark.parametrize("mode", ["skip", "fail"])
def test_sandbox_error_is_an_infrastructure_error(mode: str) -> None:
    settings = RewardSettings(prm_url=None, infra_errors=mode)  # type: ignore[arg-type]
    samples = [Sample("", ADD, HUMANEVAL_ROW)] * 4
    plan = _Plan(settings, samples)
    answers = [
        verdict("ok", "ok", "ok"),
        verdict("sandbox_error", "sandbox_error"),
        verdict("runtime_error", "runtime_error", "sandbox_error"),  # a case lost to the sandbox
        verdict("runtime_error", "ok", "runtime_error"),  # a real failure
    ]
    judged = plan.combine(answers, None)
    assert [j.infra_error for j in judged] == [False, True, True, False]
    assert [j.skipped for j in judged] == [False, mode == "skip", mode == "skip", False]
    assert judged[0].reward == 1.0 and judged[3].reward == 0.0 and not judged[3].passed
    for j in judged[1:3]:
        assert j.reward == 0.0
        assert j.passed is (None if mode == "skip" else False)


@pytest.mark.parametrize("mode", ["skip", "fail"])
async def test_unreachable_executor_is_an_infrastructure_error(mode: str) -> None:
    settings = RewardSettings(
        executor_url=f"http://127.0.0.1:{free_port()}",  # nothing listens
        prm_url=None,
        retries=0,
        infra_errors=mode,  # type: ignore[arg-type]
    )
    samples = [Sample("", ADD, HUMANEVAL_ROW), Sample("", "", HUMANEVAL_ROW), Sample("", ADD)]
    for judged in (
        await CodeRewards(settings).ajudge(samples),
        CodeRewards(settings).judge(samples),
    ):
        assert [j.infra_error for j in judged] == [True, False, False]
        assert judged[0].skipped is (mode == "skip")
        assert judged[0].passed is (None if mode == "skip" else False)
        assert judged[1].passed is False  # empty: fails without the executor
        assert judged[2].passed is None  # no tests: nothing to run


def test_unreachable_names_the_service() -> None:
    plan = _Plan(RewardSettings(prm_url=None), [Sample("", ADD, HUMANEVAL_ROW)])
    (judged,) = plan.combine(Unreachable("executor", ServiceUnavailable("down")), None)
    assert judged.infra_error and judged.status == "unreachable" and judged.log()["skipped"] == 1.0
