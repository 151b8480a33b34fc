"""The program inside a policy's response (chat models wrap code in prose and fences).

Rule: the first fenced block (```) whose language tag is python, py, python3 or empty; else
the first fenced block of any language; a block left open at the end of the response (the
model was cut off) runs to the end; a response without fences is code as it is. Leading and
trailing blank lines of the result are dropped. Used by the PRM server's `/get_reward` and by
the RL framework plug-ins (`codeprm/integrations/`).
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.M | re.S)
_PYTHON = {"python", "py", "python3", ""}
# Chat-template markers a framework may leave in decoded text (`<|im_end|>`, `<|eot_id|>`,
# `</s>`, ...), when it decodes without skipping special tokens.
_SPECIAL = re.compile(r"(?:<\|[\w.-]{1,40}\|>|</?s>|<eos>|<pad>)")
_SPECIAL_AT_END = re.compile(f"(?:{_SPECIAL.pattern})\\s*$")


def code_span(response: str) -> tuple[int, int]:
    """Where the program lies in `response`, as [start, end) character offsets."""
    blocks = [(m[1].lower(), m.start(2), m.end(2)) for m in _FENCE.finditer(response)]
    if blocks:
        start, end = next(((s, e) for lang, s, e in blocks if lang in _PYTHON), blocks[0][1:])
    else:
        start, end = 0, len(response)
    while start < end and response[start] == "\n":
        start += 1
    while end > start and response[end - 1] == "\n":
        end -= 1
    return start, end


def extract_code(response: str) -> str:
    start, end = code_span(response)
    return response[start:end]


def strip_special_tokens(text: str) -> str:
    """`text` without chat-template markers at its ends (padding, end-of-turn, BOS/EOS)."""
    while True:
        head = _SPECIAL.match(text)
        if head is not None:
            text = text[head.end() :]
            continue
        tail = _SPECIAL_AT_END.search(text)
        if tail is None:
            return text
        text = text[: tail.start()]


def response_of(query: str, prompt: str) -> str:
    """The policy's response in a `query` that is prompt + response (OpenRLHF's convention)."""
    query = strip_special_tokens(query)
    prompt = strip_special_tokens(prompt)
    if prompt and query.startswith(prompt):
        return query[len(prompt) :]
    return query
