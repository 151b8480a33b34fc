"""What a "line" is, for labels, PRM scores and dense rewards alike.

A step is one physical line of the program. Lines are split on "\\n" (a "\\r\\n" ending keeps
its "\\r" out of the line's text but inside its span), the last line may lack a newline, and a
trailing newline does not start an extra empty line. Comment-only and blank lines are
*neutral* (label 0): PSGPO added this after its policy learnt to pad answers with comments.
"""

from __future__ import annotations

import io
import tokenize
from dataclasses import dataclass
from typing import Literal

LineKind = Literal["code", "comment", "blank"]


@dataclass(frozen=True)
class Line:
    index: int
    start: int
    """Character offset of the line's first character in the code."""
    end: int
    """Character offset just past the line's last character (its newline excluded)."""
    text: str
    kind: LineKind


def split_lines(code: str) -> list[Line]:
    if not code:
        return []
    lines: list[Line] = []
    offset = 0
    raw_lines = code.split("\n")
    if raw_lines and raw_lines[-1] == "" and len(raw_lines) > 1:
        raw_lines.pop()  # "a\n" is one line, not two
    string_lines = _lines_inside_strings(code)
    for index, raw in enumerate(raw_lines):
        text = raw[:-1] if raw.endswith("\r") else raw
        kind: LineKind
        stripped = text.strip()
        if index in string_lines:
            kind = "code"  # a "#" or blank line inside a multi-line string is code
        elif not stripped:
            kind = "blank"
        elif stripped.startswith("#"):
            kind = "comment"
        else:
            kind = "code"
        lines.append(Line(index, offset, offset + len(text), text, kind))
        offset += len(raw) + 1
    return lines


def _lines_inside_strings(code: str) -> set[int]:
    """0-based indices of lines that continue a multi-line string (docstrings included)."""
    inside: set[int] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.type == tokenize.STRING and token.end[0] > token.start[0]:
                inside.update(range(token.start[0], token.end[0]))  # rows after the first
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # unparsable code: fall back to the per-line rule
    return inside
