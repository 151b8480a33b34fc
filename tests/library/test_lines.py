from __future__ import annotations

from codeprm.lines import split_lines


def kinds(code: str) -> list[str]:
    return [line.kind for line in split_lines(code)]


def test_spans_point_into_the_code() -> None:
    code = "def f(x):\r\n    # double it\n\n    return 2 * x"
    lines = split_lines(code)
    assert [line.text for line in lines] == ["def f(x):", "    # double it", "", "    return 2 * x"]
    for line in lines:
        assert code[line.start : line.end] == line.text
    assert kinds(code) == ["code", "comment", "blank", "code"]


def test_trailing_newline_makes_no_extra_line() -> None:
    assert len(split_lines("a = 1\n")) == 1
    assert len(split_lines("a = 1\n\n")) == 2
    assert split_lines("") == []


def test_lines_inside_strings_are_code() -> None:
    code = 'def f():\n    """Doc.\n\n    # not a comment\n    """\n    return 1\n'
    assert kinds(code) == ["code", "code", "code", "code", "code", "code"]


def test_unparsable_code_still_splits() -> None:
    assert kinds("def f(:\n  # c\n") == ["code", "comment"]
