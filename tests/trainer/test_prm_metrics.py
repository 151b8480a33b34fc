"""Held-out PRM metrics against brute-force definitions."""

from __future__ import annotations

import itertools
import random

import pytest

from codeprm.services.trainer.prm_metrics import auc, evaluate


def brute_auc(pairs: list[tuple[float, bool]]) -> float:
    good = [s for s, g in pairs if g]
    bad = [s for s, g in pairs if not g]
    wins = sum((g > b) + 0.5 * (g == b) for g, b in itertools.product(good, bad))
    return wins / (len(good) * len(bad))


def test_auc_matches_pairwise_counting_with_ties() -> None:
    rng = random.Random(0)
    for _ in range(50):
        pairs = [(float(rng.randint(0, 5)), rng.random() < 0.5) for _ in range(rng.randint(2, 30))]
        if all(g for _, g in pairs) or not any(g for _, g in pairs):
            assert auc(pairs) is None
        else:
            assert auc(pairs) == pytest.approx(brute_auc(pairs))


def test_evaluate_counts_only_judged_code_lines() -> None:
    scores = [
        [0.9, 0.5, None, -0.8, -0.2],  # None: a line without a token
        [0.4, -0.1, 0.7],
        [None, None],
    ]
    labels = [
        [1.0, 0.0, 1.0, -1.0, -1.0],  # 0.0: a neutral comment line
        [1.0, 1.0, 1.0],
        [1.0, -1.0],
    ]
    m = evaluate(scores, labels, threshold=0.0)
    assert m.lines == 6 and m.programs == 2
    assert m.line_accuracy == pytest.approx(5 / 6)  # 0.4 +1 ok, -0.1 +1 wrong
    # Program 1: first predicted bad = first labeled bad (the -0.8 line). Program 2: the
    # model calls line 2 bad, the labels say none is.
    assert m.first_error_accuracy == pytest.approx(1 / 2)
    assert m.auc == pytest.approx(
        brute_auc(
            [(0.9, True), (-0.8, False), (-0.2, False), (0.4, True), (-0.1, True), (0.7, True)]
        )
    )


def test_evaluate_without_judged_lines_is_an_error() -> None:
    with pytest.raises(ValueError, match="no judged lines"):
        evaluate([[None]], [[1.0]], threshold=0.0)
