"""Per-token rewards of one rollout: the unit-test outcome and the PRM's dense line rewards.

* Outcome, on the last response token: `pass_reward` / `fail_reward`, or with
  `outcome="pass_rate"` the fraction of test cases passed mapped linearly between the two.
* Dense (PSGPO), at the last token of each code line m: `lam * s_m / T`, T the number of code
  lines, `lam = lam_pass` or `lam_fail` by the rollout's verdict, comment and blank lines
  neutral (`contracts/dense.py`). The line scores s_m may first be reshaped:
  - `clip`: `min(s_m - eta, 0)`, so no line pays more than nothing and writing more lines
    never collects reward;
  - `delta`: `s_m - s_{m+1}` (the last line keeps s_T), so the rewards telescope to s_1 and
    their sum cannot grow with the number of lines.
The per-token KL penalty is added by the trainer on tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from contracts.dense import dense_rewards
from contracts.prm import LineScore

Outcome = Literal["pass_fail", "pass_rate"]
DenseVariant = Literal["plain", "clip", "delta"]


def outcome_reward(
    passed: bool, pass_rate: float, how: Outcome, pass_reward: float, fail_reward: float
) -> float:
    if how == "pass_rate":
        return fail_reward + (pass_reward - fail_reward) * pass_rate
    return pass_reward if passed else fail_reward


def reshape_scores(scores: Sequence[float], variant: DenseVariant, eta: float) -> list[float]:
    if variant == "clip":
        return [min(s - eta, 0.0) for s in scores]
    if variant == "delta":
        return [s - nxt for s, nxt in zip(scores, scores[1:], strict=False)] + list(scores[-1:])
    return list(scores)


def line_rewards(
    line_scores: Sequence[LineScore],
    offsets: Sequence[tuple[int, int]],
    lam: float,
    variant: DenseVariant,
    eta: float,
) -> list[float]:
    """Dense rewards per response token for one rollout (0 where no line ends)."""
    judged = [s for s in line_scores if s.kind == "code" and s.score is not None]
    values = reshape_scores([s.score for s in judged if s.score is not None], variant, eta)
    shaped = {s.line: value for s, value in zip(judged, values, strict=True)}
    reshaped = [
        s.model_copy(update={"score": shaped[s.line]}) if s.line in shaped else s
        for s in line_scores
    ]
    return dense_rewards(reshaped, offsets, lam)
