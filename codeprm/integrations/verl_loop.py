"""veRL's dense-reward hook: PSGPO's line rewards in veRL's `token_level_rewards` (veRL 0.9).

veRL 0.9 scores each trajectory in its agent loop and writes that one number on the last
response token (`rm_scores`), which its trainer copies to `token_level_scores`, then
`token_level_rewards`, then hands to `compute_advantage` (GAE with the critic's values). No
reward function can return per-token rewards, but veRL loads its agent-loop manager from
config (`actor_rollout_ref.rollout.agent.agent_loop_manager_class=<module>.<class>`), so
`CodePrmAgentLoopManager` takes the batch veRL's own manager produced and, in one PRM call:

* adds `lam * s_m / T` on the last token of every code line m (T code lines, `lam` by the
  verdict veRL's reward loop wrote as `passed`; comments and blank lines get nothing) to
  `rm_scores`, next to the outcome already on the last token;
* takes samples without a reward out of training: `skipped` ones (an infrastructure error,
  `rewards.RewardSettings.infra_errors="skip"`) get `response_mask` 0 and no reward, so neither
  the policy loss, nor the critic loss, nor GAE sees them; their number is logged per batch.

The outcome comes from `codeprm.integrations.verl.compute_score` (set
`CODEPRM_REWARD_PRM_WEIGHT=0` so the PRM is not counted twice). Settings: `CODEPRM_DENSE_*`
environment variables (`DenseSettings`). This module imports veRL: load it only inside veRL.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import numpy as np
import torch
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from verl import DataProto
from verl.experimental.agent_loop import AgentLoopManager
from verl.utils import hf_tokenizer
from verl.utils.fs import copy_to_local
from verl.utils.ray_utils import auto_await

from codeprm.integrations.rewards import CodeRewards, Sample
from codeprm.integrations.verl import dense_line_rewards, problem_of
from codeprm.token_rewards import DenseReward, DenseVariant

log = logging.getLogger(__name__)


class DenseSettings(BaseSettings):
    """The hook's settings, from `CODEPRM_DENSE_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="CODEPRM_DENSE_", extra="forbid")

    enabled: bool = Field(True, description="Add line rewards; off: only mask skipped samples.")
    lam_pass: float = Field(1.0, description="lam for rollouts that passed their tests.")
    lam_fail: float = Field(1.0, description="lam for rollouts that failed.")
    variant: DenseVariant = "plain"
    eta: float = Field(0.0, description="The clip variant's threshold.")

    def reward(self) -> DenseReward:
        return DenseReward(self.lam_pass, self.lam_fail, self.variant, self.eta)


def add_line_rewards(
    output: DataProto,
    extra_info: Any,
    tokenizer: Any,
    rewards: CodeRewards,
    settings: DenseSettings,
) -> DataProto:
    """Add the line rewards to `output.batch["rm_scores"]` and mask skipped samples, in place.

    `output` is the batch veRL's agent loop returned (left-padded `prompts`, right-padded
    `responses`, `attention_mask`, `response_mask`, `rm_scores`, and the reward function's
    extra info as arrays); `extra_info` the dataset's `extra_info` per sample, or None.
    """
    batch, info = output.batch, output.non_tensor_batch
    n = len(output)
    if "passed" not in info:
        raise ValueError(
            "no `passed` in the batch: the reward function must be codeprm's "
            "(reward.custom_reward_function.path=codeprm/integrations/verl.py)"
        )
    if settings.enabled and rewards.settings.prm_url is None:
        raise ValueError(
            "dense rewards need the PRM server: set CODEPRM_REWARD_PRM_URL "
            "(or CODEPRM_DENSE_ENABLED=false to only mask skipped samples)"
        )
    passed = np.asarray(info["passed"], dtype=float) > 0
    skipped = np.asarray(info.get("skipped", np.zeros(n)), dtype=float) > 0
    prompt_width = batch["prompts"].shape[1]
    lengths = batch["attention_mask"][:, prompt_width:].sum(-1).tolist()
    responses = [batch["responses"][i, : lengths[i]].tolist() for i in range(n)]
    if settings.enabled:
        shape = settings.reward()
        samples = [
            Sample(
                prompt=problem_of(extra_info[i] if extra_info is not None else None),
                response=tokenizer.decode(ids, skip_special_tokens=True),
            )
            for i, ids in enumerate(responses)
        ]
        for i, judged in enumerate(rewards.judge(samples)):
            if judged.skipped:  # the PRM server could not be reached
                skipped[i] = True
                continue
            dense = dense_line_rewards(tokenizer, responses[i], judged, bool(passed[i]), shape)
            batch["rm_scores"][i, : len(dense)] += torch.tensor(dense, dtype=torch.float32)
    if skipped.any():
        rows = torch.from_numpy(np.flatnonzero(skipped))
        batch["response_mask"][rows] = 0
        batch["rm_scores"][rows] = 0.0
        log.warning(
            "codeprm: %d of %d samples have no reward (infrastructure errors): masked out",
            int(skipped.sum()),
            n,
        )
    info["skipped"] = skipped.astype(float)
    return output


class CodePrmAgentLoopManager(AgentLoopManager):  # type: ignore[misc]
    """veRL's agent-loop manager, plus codeprm's line rewards and masking of skipped samples."""

    @auto_await  # type: ignore[untyped-decorator]
    async def generate_sequences(self, prompts: DataProto) -> DataProto:
        output = super().generate_sequences(prompts)
        if inspect.isawaitable(output):  # veRL's auto_await hands back the coroutine when awaited
            output = await output
        extra_info = prompts.non_tensor_batch.get("extra_info")
        tokenizer = self._codeprm_tokenizer()
        return await asyncio.to_thread(  # blocking HTTP and decoding, off veRL's event loop
            add_line_rewards, output, extra_info, tokenizer, CodeRewards(), DenseSettings()
        )

    def _codeprm_tokenizer(self) -> Any:
        tokenizer = getattr(self, "_codeprm_tok", None)
        if tokenizer is None:
            model = self.config.actor_rollout_ref.model
            path = copy_to_local(model.get("tokenizer_path") or model.path)
            tokenizer = hf_tokenizer(path, trust_remote_code=model.get("trust_remote_code", False))
            self._codeprm_tok = tokenizer
        return tokenizer
