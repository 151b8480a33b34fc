"""Learning sanity: on a toy reward the policy's mean reward rises within a few dozen steps.

The reward is judged in-process (no services): the fraction of response tokens drawn from a
fixed tenth of the vocabulary. A random tiny policy starts near 0.1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from codeprm.services.trainer.ppo import train_ppo
from codeprm.services.trainer.ppo_config import PpoConfig
from codeprm.services.trainer.reward_client import Judgement, Verdict
from codeprm.services.trainer.rollout import Rollout
from codeprm.tiny import build_tiny_policy

pytestmark = pytest.mark.slow


class TokenFractionJudge:
    async def judge(self, rollouts: Sequence[Rollout]) -> Judgement:
        verdicts = []
        for r in rollouts:
            share = sum(t % 10 == 0 for t in r.response_ids) / len(r.response_ids)
            verdicts.append(Verdict(passed=share > 0.5, pass_rate=share, line_scores=None))
        return Judgement(verdicts, executor_s=0.0, prm_s=0.0)


def test_mean_reward_rises_on_a_toy_reward(tmp_path: Path) -> None:
    policy = build_tiny_policy(tmp_path / "policy")
    config = PpoConfig(
        policy=policy,
        dataset="humaneval",
        limit_problems=16,
        out=tmp_path / "run",
        mode="outcome",
        outcome="pass_rate",
        pass_reward=1.0,
        fail_reward=0.0,
        steps=30,
        prompts_per_step=4,
        samples_per_prompt=4,
        max_new_tokens=16,
        stop=[],
        kl_coef=0.0,
        policy_lr=2e-3,
        critic_lr=2e-3,
        minibatch_size=8,
        ppo_epochs=2,
        device="cpu",
    )
    result = train_ppo(config, judge=TokenFractionJudge())
    rewards = [row["reward/outcome"] for row in result.history]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert first < 0.25, rewards
    assert last > first + 0.3, rewards
    assert (config.out / "curves.png").is_file()
    assert (config.out / "policy" / "model.safetensors").is_file()
