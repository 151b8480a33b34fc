"""TRL plug-in: an async reward function for `GRPOTrainer(reward_funcs=[...])`.

TRL calls it as `await f(prompts=..., completions=..., completion_ids=..., **columns)`, where
`columns` are the dataset's other columns, one value per completion (the tests live in one of
them, `tests` by default), and expects one float per completion, or None where the reward
does not apply: no tests and no PRM server, or an infrastructure error (a `sandbox_error`, an
unreachable service) under `infra_errors="skip"`. TRL leaves a None out of the reward (its
NaN-aware group statistics skip it) instead of teaching the policy that the program was wrong.
Prompts and completions are strings, or message lists for conversational datasets. Tested
with TRL 1.16 (docs/integrations.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from codeprm.integrations.rewards import CodeRewards, RewardSettings, Sample

RewardFunc = Callable[..., Awaitable[list[float | None]]]


def reward_function(
    tests_column: str = "tests", settings: RewardSettings | None = None
) -> RewardFunc:
    """An async GRPO reward function reading each completion's tests from `tests_column`."""
    rewards = CodeRewards(settings)

    async def codeprm_reward(
        prompts: list[Any], completions: list[Any], **columns: Any
    ) -> list[float | None]:
        tests = columns.get(tests_column) or [None] * len(completions)
        samples = [
            Sample(prompt=_text(prompt, "user"), response=_text(completion), tests=test)
            for prompt, completion, test in zip(prompts, completions, tests, strict=True)
        ]
        judged = await rewards.ajudge(samples)
        return [
            None if j.skipped or (j.passed is None and j.prm is None) else j.reward for j in judged
        ]

    return codeprm_reward


def _text(value: Any, role: str | None = None) -> str:
    """A plain string, or the content of a conversational message list (the last message,
    or the last one of `role`)."""
    if isinstance(value, str):
        return value
    messages = [m for m in value if role is None or m.get("role") == role] or list(value)
    return str(messages[-1]["content"]) if messages else ""
