"""Reading PRM training rows: the labeler's export and TRL's stepwise format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codeprm.lines import split_lines
from codeprm.services.trainer.prm_data import (
    PrmDataError,
    parse_row,
    read_examples,
    split_by_problem,
)
from tests.trainer.synthetic import synthetic_rows, write_rows


def test_labeler_export_keeps_line_labels_and_neutralises_comments() -> None:
    row = {
        "prompt": "def f(x):\n",
        "completions": ["    # start", "    y = x + 1", "    return y / 0"],
        "labels": [False, True, False],
        "line_labels": [0.0, 1.0, -1.0],
        "problem_id": "p1",
        "strategy": "binary_search",
    }
    example = parse_row(row)
    assert example.code == "    # start\n    y = x + 1\n    return y / 0\n"
    assert example.labels == [0.0, 1.0, -1.0]
    assert example.problem_id == "p1"
    assert [line.text for line in split_lines(example.code)] == row["completions"]


def test_monte_carlo_pass_fractions_map_to_the_pm1_scale() -> None:
    row = {
        "prompt": "",
        "completions": ["a = 1", "b = a", "# note"],
        "labels": [True, True, False],
        "line_labels": [1.0, 0.25, 0.0],
        "problem_id": "p",
        "strategy": "monte_carlo",
    }
    assert parse_row(row).labels == [1.0, -0.5, 0.0]


def test_trl_rows_put_each_step_label_on_its_last_line() -> None:
    row = {
        "prompt": "Q: ",
        "completions": ["a = 1", "if a:\n    b = 2", "# done"],
        "labels": [True, False, True],
    }
    example = parse_row(row, default_id="row-3")
    # TRL's PRMTrainer appends "\n" after every step.
    assert example.code == "a = 1\nif a:\n    b = 2\n# done\n"
    assert example.labels == [1.0, None, -1.0, 0.0]
    assert example.problem_id == "row-3"


@pytest.mark.parametrize(
    "row",
    [
        {"prompt": "p", "completions": [], "labels": []},
        {"prompt": "p", "completions": ["a"], "labels": [True, False]},
        {"prompt": 3, "completions": ["a"], "labels": [True]},
        {"prompt": "p", "completions": ["a", "b"], "labels": [True, True], "line_labels": [1.0]},
    ],
)
def test_malformed_rows_are_refused(row: dict[str, object]) -> None:
    with pytest.raises(PrmDataError):
        parse_row(row)


def test_read_examples_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(synthetic_rows(2)[0]) + "\n\n{not json\n")
    with pytest.raises(PrmDataError, match=r"d\.jsonl:3"):
        read_examples(path)


def test_both_formats_of_the_same_programs_read_alike(tmp_path: Path) -> None:
    ours = read_examples(write_rows(tmp_path / "a.jsonl", synthetic_rows(20, seed=3)))
    trl = read_examples(write_rows(tmp_path / "b.jsonl", synthetic_rows(20, seed=3, trl=True)))
    assert [e.code for e in ours] == [e.code for e in trl]
    assert [e.labels for e in ours] == [e.labels for e in trl]


def test_held_out_problems_are_disjoint_from_training_problems(tmp_path: Path) -> None:
    examples = read_examples(write_rows(tmp_path / "d.jsonl", synthetic_rows(200)))
    train, held = split_by_problem(examples, 0.2, seed=1)
    assert len(train) + len(held) == 200
    assert not {e.problem_id for e in train} & {e.problem_id for e in held}
    assert 0.1 < len(held) / 200 < 0.3
    assert split_by_problem(examples, 0.0, seed=1) == (examples, [])


def test_a_labeler_row_of_steps_reads_like_one_of_lines() -> None:
    lines = ["    # start", "    y = x + 1", "", "    return y / 0"]
    by_line = {
        "prompt": "def f(x):\n",
        "completions": lines,
        "labels": [False, True, False, False],
        "line_labels": [0.0, 1.0, 0.0, -1.0],
        "strategy": "binary_search",
    }
    by_step = by_line | {
        "completions": ["    # start\n    y = x + 1", "\n    return y / 0"],
        "labels": [True, False],
    }
    assert parse_row(by_step) == parse_row(by_line)
