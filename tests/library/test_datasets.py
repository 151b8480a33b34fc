from __future__ import annotations

import json
from pathlib import Path

import pytest

from codeprm.datasets import DatasetError, load_problems


def test_humaneval_by_name() -> None:
    problems = load_problems("humaneval")
    assert len(problems) == 164
    first = problems[0]
    assert first.problem_id == "HumanEval/0"
    assert first.program(first.solution or "").startswith(first.prompt)
    assert first.tests.kind == "assert"


def test_jsonl_rows_of_every_test_kind(tmp_path: Path) -> None:
    rows = [
        {
            "problem_id": "a",
            "prompt": "add",
            "solution": "def f(a, b): return a + b",
            "tests": {"kind": "assert", "code": "assert f(1, 2) == 3"},
        },
        {
            "problem_id": "b",
            "prompt": "echo",
            "tests": {"kind": "stdio", "cases": [{"stdin": "1", "expected_stdout": "1"}]},
        },
        {
            "problem_id": "c",
            "prompt": "id",
            "tests": {"kind": "call", "entry_point": "f", "cases": [{"args": [1], "expected": 1}]},
        },
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert [p.problem_id for p in load_problems(str(path))] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('{"problem_id": "a", "prompt": "x"}', "p.jsonl:1: tests: Field required"),
        ('{"problem_id": "a", "prompt": "x", "tests": {"kind": "sql"}}', "p.jsonl:1: tests"),
        ("not json", "p.jsonl:1"),
        (
            '{"problem_id": "a", "prompt": "x", "tests": {"kind": "assert", "code": "assert 1"}, '
            '"extra": 1}',
            "extra: Extra inputs are not permitted",
        ),
    ],
)
def test_malformed_rows_say_where_and_why(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(row + "\n")
    with pytest.raises(DatasetError, match=message.replace("(", r"\(")):
        load_problems(str(path))


def test_unknown_dataset_and_duplicates(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="neither a known dataset"):
        load_problems("nope")
    row = '{"problem_id": "a", "prompt": "x", "tests": {"kind": "assert", "code": "assert 1"}}'
    path = tmp_path / "d.jsonl"
    path.write_text(row + "\n" + row + "\n")
    with pytest.raises(DatasetError, match="duplicate problem_id"):
        load_problems(str(path))
