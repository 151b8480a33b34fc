"""Line scores -> per-token dense rewards, for any policy tokenizer (PSGPO's dense reward).

At the last token of line m of the response: `r_m = lam * score_m / T`, T the number of code
lines (the 1/T stopped PSGPO's policy from adding lines to collect reward). Comment and blank
lines are neutral (no reward), lines without a score get none, every other token gets 0. Use a
different `lam` for passing and failing rollouts (docs/design.md); the unit-test reward goes on the
final token and the KL penalty on every token, both outside this function.

`offsets` are the policy tokenizer's character spans of the *response* tokens, relative to the
response text the scores were computed on.
"""

from __future__ import annotations

from collections.abc import Sequence

from contracts.geometry import line_end_tokens
from contracts.lines import Line
from contracts.prm import LineScore


def dense_rewards(
    line_scores: Sequence[LineScore],
    offsets: Sequence[tuple[int, int]],
    lam: float,
) -> list[float]:
    rewards = [0.0] * len(offsets)
    total = sum(s.kind == "code" for s in line_scores)
    code = [s for s in line_scores if s.kind == "code" and s.score is not None]
    lines = [Line(s.line, s.start, s.end, "", s.kind) for s in code]
    for scored, token in zip(code, line_end_tokens(lines, offsets, 0), strict=True):
        if token is not None:
            assert scored.score is not None
            rewards[token] += lam * scored.score / total
    return rewards
