"""From scores to the response: per-line results and the per-program aggregate."""

from __future__ import annotations

import math

from codeprm.api.prm import Aggregate, LineScore, ScoreResult
from codeprm.geometry import EncodedLines


def result(encoded: EncodedLines, scores: list[float | None], aggregate: Aggregate) -> ScoreResult:
    line_scores = [
        LineScore(line=line.index, start=line.start, end=line.end, score=score, kind=line.kind)
        for line, score in zip(encoded.lines, scores, strict=True)
    ]
    judged = [s.score for s in line_scores if s.kind == "code" and s.score is not None]
    return ScoreResult(
        line_scores=line_scores,
        aggregate=aggregate_scores(judged, aggregate),
        num_tokens=len(encoded.input_ids),
    )


def aggregate_scores(scores: list[float], how: Aggregate) -> float | None:
    """One scalar per program, over its code lines (comment and blank lines are neutral)."""
    if not scores:
        return None
    if how == "min":
        return min(scores)
    if how == "mean":
        return sum(scores) / len(scores)
    if how == "last":
        return scores[-1]
    return math.prod(scores)
