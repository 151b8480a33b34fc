"""The program inside a policy's response, for `/get_reward` (chat models wrap code in prose).

Rule: the first fenced block (```) whose language tag is python, py, python3 or empty; else
the first fenced block of any language; a block left open at the end of the response (the
model was cut off) runs to the end; a response without fences is code as it is. Leading and
trailing blank lines of the result are dropped.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.M | re.S)
_PYTHON = {"python", "py", "python3", ""}


def extract_code(response: str) -> str:
    blocks = [(m[1].lower(), m[2]) for m in _FENCE.finditer(response)]
    if not blocks:
        return response.strip("\n")
    for language, body in blocks:
        if language in _PYTHON:
            return body.strip("\n")
    return blocks[0][1].strip("\n")
