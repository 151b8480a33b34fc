"""Held-out PRM metrics, computed the same way on training evaluations and on served scores.

A line is judged when it is a code line with a label (+1/-1 scale, neutral 0 excluded) and a
score. `threshold` splits scores into predicted good / bad: 0 for +1/-1 regression, 0.5 for
probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Scores = Sequence[float | None]
Labels = Sequence[float | None]


@dataclass(frozen=True)
class PrmMetrics:
    line_accuracy: float
    auc: float | None
    """None when the held-out lines are all of one class."""
    first_error_accuracy: float
    """Programs whose first predicted bad line is the first labeled bad line (or where both
    say there is none)."""
    lines: int
    programs: int


def evaluate(scores: Sequence[Scores], labels: Sequence[Labels], threshold: float) -> PrmMetrics:
    pairs: list[tuple[float, bool]] = []
    first_right = programs = 0
    for program_scores, program_labels in zip(scores, labels, strict=True):
        judged = [
            (s, v > 0)
            for s, v in zip(program_scores, program_labels, strict=True)
            if s is not None and v is not None and v != 0
        ]
        if not judged:
            continue
        programs += 1
        pairs += judged
        predicted = next((i for i, (s, _) in enumerate(judged) if s <= threshold), None)
        actual = next((i for i, (_, good) in enumerate(judged) if not good), None)
        first_right += predicted == actual
    if not pairs:
        raise ValueError("no judged lines: no code line has both a label and a score")
    correct = sum((s > threshold) == good for s, good in pairs)
    return PrmMetrics(
        line_accuracy=correct / len(pairs),
        auc=auc(pairs),
        first_error_accuracy=first_right / programs,
        lines=len(pairs),
        programs=programs,
    )


def auc(pairs: Sequence[tuple[float, bool]]) -> float | None:
    """Area under the ROC curve: the chance that a random good line outscores a random bad one
    (ties count half), from average ranks (Mann-Whitney U)."""
    positives = sum(good for _, good in pairs)
    negatives = len(pairs) - positives
    if positives == 0 or negatives == 0:
        return None
    order = sorted(range(len(pairs)), key=lambda i: pairs[i][0])
    ranks = [0.0] * len(pairs)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and pairs[order[end + 1]][0] == pairs[order[start]][0]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    rank_sum = sum(r for r, (_, good) in zip(ranks, pairs, strict=True) if good)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


@dataclass(frozen=True)
class OnPolicyMetrics:
    """How a PRM reads the programs of the policy it will reward (the labeler's binary-search
    export of that policy's samples on held-out problems)."""

    programs: int
    passing: int
    auc: float | None
    """Passing vs failing programs ranked by their lowest code-line score (None when all
    programs share a verdict)."""
    first_error_accuracy: float | None
    """Failing programs whose first predicted bad line is the labeled first bad line."""
    passing_last_line_flagged: float | None
    """Passing programs whose last code line scores bad: the last-line artefact."""


def on_policy(
    scores: Sequence[Scores],
    labels: Sequence[Labels],
    passed: Sequence[bool],
    threshold: float,
) -> OnPolicyMetrics:
    ranked: list[tuple[float, bool]] = []
    first_right = failing = flagged = passing = 0
    for program_scores, program_labels, ok in zip(scores, labels, passed, strict=True):
        judged = [
            (s, v)
            for s, v in zip(program_scores, program_labels, strict=True)
            if s is not None and v is not None and v != 0
        ]
        if not judged:
            continue
        ranked.append((min(s for s, _ in judged), ok))
        predicted = next((i for i, (s, _) in enumerate(judged) if s <= threshold), None)
        if ok:
            passing += 1
            flagged += judged[-1][0] <= threshold
        else:
            actual = next((i for i, (_, v) in enumerate(judged) if v < 0), None)
            if actual is not None:
                failing += 1
                first_right += predicted == actual
    return OnPolicyMetrics(
        programs=len(ranked),
        passing=passing,
        auc=auc(ranked),
        first_error_accuracy=first_right / failing if failing else None,
        passing_last_line_flagged=flagged / passing if passing else None,
    )
