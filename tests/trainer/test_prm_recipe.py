"""The PRM recipe's parts that do not need a model: on-policy metrics, the last-line fix,
balance."""

from __future__ import annotations

import pytest

from codeprm.services.trainer.prm_data import PrmExample, drop_after_first_error, parse_row
from codeprm.services.trainer.prm_metrics import on_policy


def test_on_policy_auc_ranks_programs_by_their_lowest_line() -> None:
    scores = [[0.9, 0.8], [0.9, -0.5], [0.7, 0.6], [-0.2, -0.9]]
    labels = [[1.0, 1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]]
    passed = [True, False, True, False]
    metrics = on_policy(scores, labels, passed, threshold=0.0)
    assert metrics.auc == 1.0
    assert metrics.first_error_accuracy == 1.0
    assert metrics.passing_last_line_flagged == 0.0
    assert (metrics.programs, metrics.passing) == (4, 2)


def test_on_policy_metrics_see_a_prm_that_flags_every_last_line() -> None:
    # What a PRM trained on binary-search rows alone learns: the last line is bad.
    scores = [[0.9, -0.1], [0.9, -0.5], [0.8, -0.3], [-0.2, -0.9]]
    labels = [[1.0, 1.0], [1.0, -1.0], [1.0, 1.0], [1.0, -1.0]]
    metrics = on_policy(scores, labels, [True, False, True, False], threshold=0.0)
    assert metrics.passing_last_line_flagged == 1.0
    assert metrics.first_error_accuracy == 0.5  # the last program's first line is flagged
    assert metrics.auc == 1.0  # the ranking alone does not show it


def test_lines_after_the_first_error_are_left_out() -> None:
    example = PrmExample("p", "", "a\nb\nc\nd\n", [1.0, -1.0, -1.0, -1.0])
    assert drop_after_first_error(example).labels == [1.0, -1.0, None, None]
    passing = PrmExample("p", "", "a\nb\n", [1.0, 1.0])
    assert drop_after_first_error(passing) == passing


@pytest.mark.parametrize(
    ("provenance", "labels", "passed"),
    [({"passed": True}, [1, 1], True), ({"passed": False}, [1, 1], False), (None, [1, -1], False)],
)
def test_a_rows_verdict_comes_from_provenance_else_from_its_labels(
    provenance: dict[str, bool] | None, labels: list[int], passed: bool
) -> None:
    row = {
        "prompt": "p",
        "completions": ["x = 1", "return x"],
        "labels": [v > 0 for v in labels],
        "line_labels": labels,
        "strategy": "binary_search",
        "provenance": provenance,
    }
    example = parse_row(row)
    assert example.passed is passed
    assert example.strategy == "binary_search"
