"""The reward core the plug-ins share: reading tests, judging against the real services."""

from __future__ import annotations

import json

import pytest

from codeprm.integrations.rewards import CodeRewards, RewardSettings, Sample, parse_tests

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
