"""veRL plug-ins (veRL 0.9): a custom reward function, and the maths of the dense-reward hook.

* `compute_score` / `compute_score_async`: veRL's custom reward function
  (`reward.custom_reward_function.path=<this file>`, `reward.custom_reward_function.name=
  compute_score` or `compute_score_async`), called by veRL's reward loop (`NaiveRewardManager`,
  `DAPORewardManager`, the Ray `RewardLoopManager`) once per sample. `ground_truth` holds the
  tests (`rewards.parse_tests`); the PRM sees `extra_info["prompt"]` (or `"question"`) when the
  dataset puts the problem there. Returns a dict whose `score` is the reward; the other keys are
  veRL's reward extra info, and every result carries the same keys, because veRL stacks them
  into one array per key across the batch.
* `dense_line_rewards`: PSGPO's line rewards `lam * s_m / T` for one response, on the policy's
  own tokens (`codeprm.token_rewards.token_rewards`, as the trainer computes them).
  `codeprm.integrations.verl_loop.CodePrmAgentLoopManager` (the veRL-importing part) adds
  them to veRL's `rm_scores`, which veRL's trainer turns into `token_level_rewards` and hands
  to its GAE (docs/integrations.md).

A sample with an infrastructure error (`infra_errors="skip"`) gets `score` 0.0 and
`skipped` 1.0: veRL needs a float for every sample, and only the agent-loop hook can take a
sample out of training (it zeroes its `response_mask`).

veRL is not imported here: the functions are called by veRL with plain values.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from codeprm.geometry import decode_with_ends, token_spans
from codeprm.integrations.rewards import CodeRewards, Judged, Sample
from codeprm.token_rewards import DenseReward, token_rewards


@functools.cache
def _rewards() -> CodeRewards:
    return CodeRewards()


def problem_of(extra_info: dict[str, Any] | None) -> str:
    """The problem statement, where veRL datasets put it (else "": the PRM sees no prompt)."""
    info = extra_info or {}
    return str(info.get("prompt") or info.get("question") or "")


def _sample(solution_str: str, ground_truth: Any, extra_info: dict[str, Any] | None) -> Sample:
    return Sample(prompt=problem_of(extra_info), response=solution_str, tests=ground_truth)


def _as_score(judged: Judged) -> dict[str, float]:
    row = judged.log()
    row["score"] = row.pop("reward")
    return row


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    (judged,) = _rewards().judge([_sample(solution_str, ground_truth, extra_info)])
    return _as_score(judged)


async def compute_score_async(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    (judged,) = await _rewards().ajudge([_sample(solution_str, ground_truth, extra_info)])
    return _as_score(judged)


def dense_line_rewards(
    tokenizer: Any, response_ids: Sequence[int], judged: Judged, passed: bool, dense: DenseReward
) -> list[float]:
    """Per response token: `lam * s_m / T` on the token holding the last character of code
    line m (T code lines), 0 elsewhere. `judged` scored the decoded response text; the outcome
    is not added here (veRL's reward function already put it on the last token)."""
    _, ends = decode_with_ends(tokenizer, list(response_ids))
    return token_rewards(
        judged.line_scores,
        token_spans(ends),
        passed=passed,
        outcome=0.0,
        dense=dense,
        code_start=judged.code_start,
    )
