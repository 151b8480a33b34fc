"""pass@k, the length splits and the report of `codeprm eval`, without a model."""

from __future__ import annotations

import math

import pytest

from codeprm.datasets import Problem
from codeprm.services.trainer.evaluate import Sampled, pass_at_k, summarize
from codeprm.services.trainer.rollout import Rollout


def problem(pid: str, lines: int) -> Problem:
    body = "".join(f"    x{i} = {i}\n" for i in range(lines))
    return Problem.model_validate(
        {
            "problem_id": pid,
            "prompt": "def f():\n",
            "solution": body,
            "tests": {"kind": "assert", "code": "assert True"},
        }
    )


def sampled(p: Problem, passed: bool, tokens: int = 10) -> Sampled:
    rollout = Rollout(p, [1], list(range(tokens)), "    return 1\n", [(0, 1)] * tokens, True)
    return Sampled(rollout, passed)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [(4, 0, 1, 0.0), (4, 1, 1, 0.25), (4, 4, 4, 1.0), (4, 1, 4, 1.0), (5, 2, 2, 0.7)],
)
def test_pass_at_k_is_the_unbiased_estimate(n: int, c: int, k: int, expected: float) -> None:
    assert math.isclose(pass_at_k(n, c, k), expected)
    # the definition: the chance that k samples drawn without replacement hold a passing one
    assert math.isclose(pass_at_k(n, c, k), 1 - math.comb(n - c, k) / math.comb(n, k))


def test_pass_at_k_needs_k_samples() -> None:
    with pytest.raises(ValueError, match="pass@4"):
        pass_at_k(2, 1, 4)


def test_problems_are_bucketed_by_their_solution_lines_and_samples_by_tokens() -> None:
    short, long = problem("a", 2), problem("b", 12)
    results = [
        sampled(short, True),
        sampled(short, False),
        sampled(long, False, tokens=150),
        sampled(long, True, tokens=50),
    ]
    report = summarize(results, [short, long], model="m", dataset="d", temperature=1.0, ks=(1, 2))
    assert report.overall.pass_at_1 == 0.5
    assert report.overall.pass_at_k[2] == 1.0
    assert report.by_lines["1-5 lines"].problems == 1
    assert report.by_lines["6-10 lines"].problems == 0
    assert report.by_lines["6-10 lines"].pass_at_1 is None
    assert report.by_lines[">10 lines"].pass_at_1 == 0.5
    assert report.by_tokens[">100 tokens"].pass_at_1 == 0.0
    assert report.by_tokens["<=100 tokens"].samples == 3
    assert "pass@1 0.500" in report.summary()
