"""Comparing a program's answers with the expected ones.

One rule for numbers everywhere: **a tolerance applies only when the expected value is a
float.** An expected integer is compared exactly, whatever the program prints or returns, so
`1000000000` never passes for `1000000007` (answers modulo 1e9+7 are everyday tests).

stdio, `tolerant` (the default): both outputs are split into lines (trailing whitespace on a
line, `\\r\\n` and trailing empty lines are ignored), each line into whitespace-separated
tokens, and each expected token decides how its counterpart is compared:

* written as an integer (`[+-]?[0-9]+`): the program's token must be an integer of the same
  value (`-0` is `0`, `007` is `7`; `7.0` and `7e0` are not integers);
* written as a float, with a `.` or an exponent (`2.5`, `1e-9`, `3.`): the program's token
  must be a number (integer or float) within `float_tolerance` of it, absolute or relative;
* `nan`, `inf`, `infinity` (any case, optional sign): the program's token must name the same
  value (any nan, an infinity of the same sign);
* anything else: the same characters.

call: the returned value must equal the expected JSON value: lists and tuples are the same
sequence, dicts have the same keys, booleans are not numbers; an expected integer is equal
to an int or float of exactly its value (JSON writers print `2.0` as `2`); an expected float
is within the tolerance of an int or float.

Written rules for the special floats, in both: nan equals only nan; an infinity equals only
the infinity of the same sign (an expected float that overflows, like `1e999`, is one); the
sign of zero does not matter (`-0.0` equals `0.0`). Nothing here raises, whatever the values:
an int too large for a float is simply not close to any float.
"""

from __future__ import annotations

import math
import re
from typing import Any

_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SPECIAL = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


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
            tokens_equal(a, b, tolerance) for a, b in zip(gt, wt, strict=True)
        ):
            return f"line {number}: expected {w[:200]!r}, got {g[:200]!r}"
    return None


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def tokens_equal(actual: str, expected: str, tolerance: float) -> bool:
    """One stdio token against the expected one (module docstring)."""
    if actual == expected:
        return True
    if _INTEGER.fullmatch(expected):
        return _INTEGER.fullmatch(actual) is not None and _same_integer(actual, expected)
    if _NUMBER.fullmatch(expected) or _SPECIAL.fullmatch(expected):
        if not (_NUMBER.fullmatch(actual) or _SPECIAL.fullmatch(actual)):
            return False
        # Both are float literals of our own grammar here: float() never raises on them
        # (too large is inf), and it is not bound by the int str-digits limit.
        x, y = float(actual), float(expected)
        if _SPECIAL.fullmatch(expected):
            return _SPECIAL.fullmatch(actual) is not None and _close(x, y, 0.0)
        return _close(x, y, tolerance)
    return False


def _same_integer(a: str, b: str) -> bool:
    # Compared as digit strings: int() refuses more than 4300 digits, and big-number
    # problems print more.
    return _canonical_integer(a) == _canonical_integer(b)


def _canonical_integer(token: str) -> str:
    negative = token.startswith("-")
    digits = token.lstrip("+-").lstrip("0") or "0"
    return f"-{digits}" if negative and digits != "0" else digits


def _close(x: float, y: float, tolerance: float) -> bool:
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    return math.isclose(x, y, rel_tol=tolerance, abs_tol=tolerance)


def values_equal(actual: Any, expected: Any, tolerance: float) -> bool:
    """A call's returned value (decoded plain data) against the expected JSON value."""
    if type(expected) is bool or type(actual) is bool:
        return type(actual) is type(expected) and actual == expected
    if type(expected) is int:
        # Python compares int with float exactly (no rounding, no overflow).
        return type(actual) in (int, float) and actual == expected
    if type(expected) is float:
        if type(actual) is int:
            return _close_int(actual, expected, tolerance)
        return type(actual) is float and _close(actual, expected, tolerance)
    if type(expected) is list:
        return (
            type(actual) in (list, tuple)
            and len(actual) == len(expected)
            and all(values_equal(a, e, tolerance) for a, e in zip(actual, expected, strict=True))
        )
    if type(expected) is dict:
        return (
            type(actual) is dict
            and actual.keys() == expected.keys()
            and all(values_equal(actual[k], expected[k], tolerance) for k in expected)
        )
    return type(actual) is type(expected) and bool(actual == expected)


def _close_int(actual: int, expected: float, tolerance: float) -> bool:
    try:
        x = float(actual)
    except OverflowError:  # beyond any finite float, so far from every one
        return False
    return _close(x, expected, tolerance)
