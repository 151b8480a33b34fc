"""Comparing a program's answers with the expected ones, outside the sandbox.

stdio, `tolerant` (the default): both outputs are split into lines, trailing whitespace on
each line and trailing empty lines are ignored, and each line is split on whitespace into
tokens; tokens must be equal, except that two tokens which both parse as numbers are equal
when they are within `float_tolerance` (absolute or relative). `exact`: byte-for-byte.

call: the returned value must equal the expected JSON value: lists and tuples are the same
sequence, floats are equal within the tolerance, booleans are not numbers.
"""

from __future__ import annotations

import math
from typing import Any


def compare_stdout(actual: str, expected: str, mode: str, tolerance: float) -> str | None:
    """None when the output is accepted, else a short reason."""
    if mode == "exact":
        return None if actual == expected else "output differs"
    got, want = _lines(actual), _lines(expected)
    if len(got) != len(want):
        return f"expected {len(want)} lines, got {len(got)}"
    for number, (g, w) in enumerate(zip(got, want, strict=True), start=1):
        gt, wt = g.split(), w.split()
        if len(gt) != len(wt) or not all(
            _tokens_equal(a, b, tolerance) for a, b in zip(gt, wt, strict=True)
        ):
            return f"line {number}: expected {w[:200]!r}, got {g[:200]!r}"
    return None


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _tokens_equal(a: str, b: str, tolerance: float) -> bool:
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return _close(x, y, tolerance)


def _close(x: float, y: float, tolerance: float) -> bool:
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return math.isclose(x, y, rel_tol=tolerance, abs_tol=tolerance)


def values_equal(actual: Any, expected: Any, tolerance: float) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        if isinstance(expected, int) and isinstance(actual, int):
            return actual == expected
        return _close(float(actual), float(expected), tolerance)
    if isinstance(expected, list | tuple) and isinstance(actual, list | tuple):
        return len(actual) == len(expected) and all(
            values_equal(a, e, tolerance) for a, e in zip(actual, expected, strict=True)
        )
    if isinstance(expected, dict) and isinstance(actual, dict):
        return actual.keys() == expected.keys() and all(
            values_equal(actual[k], expected[k], tolerance) for k in expected
        )
    return type(actual) is type(expected) and bool(actual == expected)
