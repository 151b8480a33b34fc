from __future__ import annotations

import pytest

from services.executor.verdicts import compare_stdout, values_equal


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        ("1 2\n", "1 2"),
        ("1  2  \r\n\n\n", "1 2\n"),
        ("0.3333333333\n", "0.333333333333"),
        ("1e-7\n", "0"),
        ("YES\n", "YES"),
    ],
)
def test_tolerant_comparison_accepts(actual: str, expected: str) -> None:
    assert compare_stdout(actual, expected, "tolerant", 1e-6) is None


@pytest.mark.parametrize(
    ("actual", "expected", "reason"),
    [
        ("1 2\n", "1 3", "line 1"),
        ("1\n2\n", "1", "expected 1 lines, got 2"),
        ("0.34\n", "0.33", "line 1"),
        ("yes\n", "YES", "line 1"),
        ("12\n", "1 2", "line 1"),
    ],
)
def test_tolerant_comparison_rejects(actual: str, expected: str, reason: str) -> None:
    assert reason in (compare_stdout(actual, expected, "tolerant", 1e-6) or "")


def test_exact_comparison_is_byte_for_byte() -> None:
    assert compare_stdout("1\n", "1\n", "exact", 0) is None
    assert compare_stdout("1\n", "1", "exact", 0) == "output differs"


@pytest.mark.parametrize(
    ("actual", "expected", "equal"),
    [
        ((1, 2), [1, 2], True),
        ([1.0000000001], [1.0], True),
        (1, 1.0, True),
        (True, 1, False),
        (1, True, False),
        ({"a": [1, (2,)]}, {"a": [1, [2]]}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ("1", 1, False),
        (None, None, True),
        ([1, 2], [2, 1], False),
    ],
)
def test_values_equal(actual: object, expected: object, equal: bool) -> None:
    assert values_equal(actual, expected, 1e-6) is equal
