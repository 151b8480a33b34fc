"""Strict JSON: what every reader of untrusted JSON refuses, in one place.

Python's `json` reads more than JSON peers can carry back: the constants NaN and Infinity,
numbers that overflow a float to inf, and strings with lone surrogates (which no UTF-8 encoder
writes). Readers that pass such values on refuse them here, the same way: the services' request
bodies (`codeprm/serving/errors.py`) and the executor's replies from judged programs
(`services/executor/replies.py`). No FastAPI here: the executor's sandboxed workers import it.
"""

from __future__ import annotations

import math
from typing import Any, NoReturn


class Unrepresentable(ValueError):
    """A value JSON cannot carry (NaN, an infinite number, a duplicated key)."""


def refuse_constant(name: str) -> NoReturn:
    """`json`'s `parse_constant`: NaN, Infinity and -Infinity are not JSON numbers."""
    raise Unrepresentable(f"{name} is not a JSON number")


def finite_float(text: str) -> float:
    """`json`'s `parse_float`: a number that overflows a float would be read as inf."""
    value = float(text)
    if not math.isfinite(value):
        raise Unrepresentable(f"the number {text[:40]} overflows a float")
    return value


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json`'s `object_pairs_hook`: a key that appears twice would silently keep its last value."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise Unrepresentable("a key appears twice")
    return result


def printable(text: str) -> str:
    """`text` with any lone surrogate written as an escape (`\\udXXX`): JSON encoders refuse
    them. Returns `text` itself when it has none (callers test `is` to find them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
