"""Finding the program in a response: fences, cut-off blocks, chat markers."""

from __future__ import annotations

import pytest

from codeprm.extract import code_span, extract_code, response_of, strip_special_tokens


@pytest.mark.parametrize(
    ("response", "code"),
    [
        ("x = 1\n", "x = 1"),
        ("Sure:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1"),
        ("```js\nvar x;\n```\n```py\ny = 2\n```", "y = 2"),
        ("```js\nvar x;\n```", "var x;"),
        ("```python\n\nx = 1\n", "x = 1"),  # cut off: the open block runs to the end
    ],
)
def test_extract_code(response: str, code: str) -> None:
    assert extract_code(response) == code
    start, end = code_span(response)
    assert response[start:end] == code


def test_special_tokens_go_only_at_the_ends() -> None:
    assert strip_special_tokens("<|im_start|>a <|x|> b<|im_end|><|endoftext|>\n") == "a <|x|> b"
    assert strip_special_tokens("</s>print('<pad>')</s>") == "print('<pad>')"


def test_response_of_removes_the_prompt() -> None:
    assert response_of("<s>Q: add\nA: x = 1</s>", "<s>Q: add\nA: ") == "x = 1"
    assert response_of("unrelated", "Q: ") == "unrelated"
