"""The rewards of one rollout, per response token: PSGPO's dense line rewards and the outcome.

`token_rewards` is the one place they are computed; the trainer and every framework plug-in
call it (docs/design.md, "The methods"):

* Outcome, on the last response token: `pass_reward` / `fail_reward`, or with
  `outcome="pass_rate"` the fraction of test cases passed mapped linearly between the two
  (`outcome_reward`).
* Dense, at the last token of each code line m: `lam * s_m / T`, T the number of code lines
  (the 1/T stopped PSGPO's policy from adding lines to collect reward), `lam = lam_pass` or
  `lam_fail` by the rollout's verdict. Comment and blank lines are neutral (no reward), lines
  without a score get none, every other token gets 0. The scores s_m may first be reshaped:
  - `clip`: `min(s_m - eta, 0)`, so no line pays more than nothing and writing more lines
    never collects reward;
  - `delta`: `s_m - s_{m+1}` (the last line keeps s_T), so the rewards telescope to s_1 and
    their sum cannot grow with the number of lines.

The per-token KL penalty is added by the trainer on tensors. Token placement is
`codeprm/geometry.py`'s: the token holding a line's last character, for any tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from codeprm.api.prm import LineScore
from codeprm.geometry import line_end_tokens
from codeprm.lines import Line

Outcome = Literal["pass_fail", "pass_rate"]
DenseVariant = Literal["plain", "clip", "delta"]


@dataclass(frozen=True)
class DenseReward:
    """How line scores become dense rewards."""

    lam_pass: float = 1.0
    """lam for rollouts that passed their tests."""
    lam_fail: float = 1.0
    """lam for rollouts that did not."""
    variant: DenseVariant = "plain"
    eta: float = 0.0
    """The clip variant's threshold."""


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


def token_rewards(
    line_scores: Sequence[LineScore],
    offsets: Sequence[tuple[int, int]],
    *,
    passed: bool,
    outcome: float,
    dense: DenseReward | None,
    code_start: int = 0,
) -> list[float]:
    """Per response token: the dense line rewards (none if `dense` is None) plus `outcome` on
    the last token.

    `line_scores` are the PRM's scores of the program, their character spans relative to the
    program; `offsets` are the policy tokenizer's character spans of the response tokens in the
    response text, where the program starts at `code_start`.
    """
    rewards = [0.0] * len(offsets)
    if dense is not None:
        lam = dense.lam_pass if passed else dense.lam_fail
        total = sum(s.kind == "code" for s in line_scores)
        code = [s for s in line_scores if s.kind == "code" and s.score is not None]
        values = reshape_scores(
            [s.score for s in code if s.score is not None], dense.variant, dense.eta
        )
        lines = [Line(s.line, s.start, s.end, "", s.kind) for s in code]
        for value, token in zip(values, line_end_tokens(lines, offsets, code_start), strict=True):
            if token is not None:
                rewards[token] += lam * value / total
    if rewards:
        rewards[-1] += outcome
    return rewards
