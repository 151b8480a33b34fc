"""Tests that expect the solution to raise: an exception the test code catches is a pass."""

from __future__ import annotations

import textwrap

import httpx
import pytest

from tests.contained import ContainedExecutor

pytestmark = pytest.mark.slow

RAISES = textwrap.dedent(
    """\
    def f(x):
        if x < 0:
            raise ValueError("negative")
        if x == 0:
            return {}[x]
        return 10 // (x - 1)
    """
)
NEVER_RAISES = "def f(x):\n    return 10 // (x - 1) if x > 1 else 0\n"

# Each catches what a correct f raises, the way test suites written by people do.
CATCHING_TESTS = [
    # HumanEval style: check(candidate) with try/except/else
    """\
def check(candidate):
    try:
        candidate(-1)
    except ValueError:
        pass
    else:
        assert False, "expected ValueError"
    assert candidate(3) == 5
""",
    # MBPP style: bare statements at module level, a flag
    """\
raised = False
try:
    f(0)
except KeyError:
    raised = True
assert raised
assert f(2) == 10
""",
    # several exceptions, caught by a common base class, one after another
    """\
def check(candidate):
    for bad in (-5, 0, 1):
        try:
            candidate(bad)
        except (ValueError, LookupError, ArithmeticError):
            continue
        raise AssertionError(f"no exception for {bad}")
""",
    # the exception's message is part of the test
    """\
def check(candidate):
    try:
        candidate(-2)
    except Exception as exc:
        assert "negative" in str(exc)
    else:
        assert False
""",
]


def _evaluate(executor: ContainedExecutor, code: str, tests: str) -> dict[str, object]:
    body = {"code": code, "tests": {"kind": "assert", "entry_point": "f", "code": tests}}
    response = httpx.post(f"{executor.url}/v1/evaluate", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.parametrize("tests", CATCHING_TESTS)
def test_an_exception_the_tests_expect_and_catch_passes(
    contained_executor: ContainedExecutor, tests: str
) -> None:
    result = _evaluate(contained_executor, RAISES, tests)
    assert result["passed"] is True, result
    assert result["status"] == "ok"


@pytest.mark.parametrize("tests", CATCHING_TESTS)
def test_a_solution_that_does_not_raise_fails_the_same_tests(
    contained_executor: ContainedExecutor, tests: str
) -> None:
    result = _evaluate(contained_executor, NEVER_RAISES, tests)
    assert result["passed"] is False, result


def test_an_exception_the_tests_do_not_catch_is_a_runtime_error(
    contained_executor: ContainedExecutor,
) -> None:
    tests = "def check(candidate):\n    assert candidate(-1) == 0\n"
    result = _evaluate(contained_executor, RAISES, tests)
    assert result["passed"] is False
    assert result["status"] == "runtime_error"
    # caught as the wrong type: it still ends the tests
    tests = (
        "def check(candidate):\n"
        "    try:\n        candidate(-1)\n    except KeyError:\n        pass\n"
    )
    result = _evaluate(contained_executor, RAISES, tests)
    assert result["passed"] is False
    assert result["status"] == "runtime_error"
