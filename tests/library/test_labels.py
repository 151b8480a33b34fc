"""The labeler's rows as TRL steps: a neutral line is never a step of its own."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from codeprm.api.labels import LabeledSample, trl_steps

PROGRAM = [
    "    # count the evens",
    "    n = 0",
    "",
    "    for x in xs:",
    "        # only even ones",
    "        if x % 2 == 0:",
    "            n += 1",
    "    return n",
    "    # done",
]
LABELS = [0.0, 1.0, 0.0, 1.0, 0.0, -1.0, -1.0, -1.0, 0.0]


def test_neutral_lines_join_the_next_code_line_and_are_never_negatives() -> None:
    steps, labels = trl_steps(PROGRAM, LABELS)
    assert steps == [
        "    # count the evens\n    n = 0",
        "\n    for x in xs:",
        "        # only even ones\n        if x % 2 == 0:",
        "            n += 1",
        "    return n\n    # done",  # after the last code line: joins the last step
    ]
    assert labels == [True, True, False, False, False]  # one per code line, in order
    assert "\n".join(steps).split("\n") == PROGRAM


def test_soft_labels_of_code_lines_keep_the_rule() -> None:
    assert trl_steps(["a = 1", "# c", "b = a"], [0.75, 0.0, 0.0]) == (
        ["a = 1", "# c\nb = a"],
        [True, False],
    )


def test_a_program_without_code_lines_is_one_step() -> None:
    assert trl_steps(["# only a comment", ""], [0.0, 0.0]) == (["# only a comment\n"], [False])


def test_a_sample_checks_steps_against_lines() -> None:
    steps, labels = trl_steps(PROGRAM, LABELS)
    fields = {"prompt": "", "problem_id": "p", "strategy": "mutation"}
    sample = LabeledSample(completions=steps, labels=labels, line_labels=LABELS, **fields)
    assert sample.lines == PROGRAM
    with pytest.raises(ValidationError, match="one entry per line"):
        LabeledSample(completions=steps, labels=labels, line_labels=LABELS[:-1], **fields)
    with pytest.raises(ValidationError, match="one entry per step"):
        LabeledSample(completions=steps, labels=labels[:-1], line_labels=LABELS, **fields)
