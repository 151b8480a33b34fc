"""veRL plug-ins: a custom reward function and a dense reward manager.

* `compute_score` / `compute_score_async`: veRL's custom reward function signature
  (`custom_reward_function.path=<this file>`, `.name=compute_score` or
  `compute_score_async`). `ground_truth` holds the tests (`rewards.parse_tests`); the PRM sees
  `extra_info["prompt"]` (or `"question"`) when the dataset puts the problem there. Returns a
  dict whose `score` is the reward; the other keys are logged by veRL as reward extra info.
* `DenseRewardManager`: veRL's reward-manager interface (`__init__(tokenizer, num_examine,
  compute_score, reward_fn_key, **reward_kwargs)`, `__call__(data, return_dict)` returning a
  [batch, response_length] reward tensor). It writes the unit-test outcome at the last
  response token and the PRM's line rewards `lam * s_m / T` at the last token of every code
  line (PSGPO's dense reward), for the `gae` advantage estimator. Load it with
  `reward_manager.source=importlib`, `reward_manager.module.path=<this file>`,
  `reward_manager.name=DenseRewardManager` (docs/integrations.md).

veRL is not imported here: both are called by veRL with its own objects (`DataProto`: `batch`
tensors `prompts`, `responses`, `attention_mask`; `non_tensor_batch` arrays `reward_model`
(with `ground_truth`), `data_source`, `extra_info`).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import Any

import torch

from codeprm.integrations.rewards import CodeRewards, Judged, RewardSettings, Sample
from services.trainer.ppo_rewards import DenseVariant, line_rewards
from services.trainer.rollout import decode_with_ends


@functools.cache
def _rewards() -> CodeRewards:
    return CodeRewards()


def _problem(extra_info: dict[str, Any] | None) -> str:
    """The problem statement, where veRL datasets put it (else "": the PRM sees no prompt)."""
    info = extra_info or {}
    return str(info.get("prompt") or info.get("question") or "")


def _sample(solution_str: str, ground_truth: Any, extra_info: dict[str, Any] | None) -> Sample:
    return Sample(prompt=_problem(extra_info), response=solution_str, tests=ground_truth)


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


class DenseRewardManager:
    """Outcome at the last response token + PRM line rewards at line ends (one batch call)."""

    def __init__(
        self,
        tokenizer: Any,
        num_examine: int = 0,
        compute_score: Any = None,
        reward_fn_key: str = "data_source",
        *,
        lam_pass: float = 1.0,
        lam_fail: float = 1.0,
        variant: DenseVariant = "plain",
        eta: float = 0.0,
        **settings: Any,
    ) -> None:
        # compute_score is veRL's scalar function; this manager computes its own rewards.
        self.tokenizer = tokenizer
        self.num_examine = num_examine
        self.reward_fn_key = reward_fn_key
        self.lam_pass, self.lam_fail, self.variant, self.eta = lam_pass, lam_fail, variant, eta
        # The scalar reward is the outcome alone: the PRM's part goes on the line ends.
        self.rewards = CodeRewards(RewardSettings(**{"prm_weight": 0.0, **settings}))
        self._examined = 0

    def __call__(self, data: Any, return_dict: bool = False) -> Any:
        if "rm_scores" in data.batch.keys():  # rewards already computed by a reward model
            tensor = data.batch["rm_scores"]
            return {"reward_tensor": tensor, "reward_extra_info": {}} if return_dict else tensor
        prompts, responses = data.batch["prompts"], data.batch["responses"]
        mask = data.batch["attention_mask"]
        prompt_length = prompts.shape[-1]
        extra = data.non_tensor_batch.get("extra_info")
        samples, ends, lengths = [], [], []
        for i in range(len(data)):
            valid_prompt = prompts[i][mask[i, :prompt_length].bool()].tolist()
            length = int(mask[i, prompt_length:].sum())
            text, token_ends = decode_with_ends(self.tokenizer, responses[i, :length].tolist())
            truth = data.non_tensor_batch["reward_model"][i]["ground_truth"]
            prompt = _problem(extra[i] if extra is not None else None) or self.tokenizer.decode(
                valid_prompt, skip_special_tokens=True
            )
            samples.append(Sample(prompt=prompt, response=text, tests=truth))
            ends.append(token_ends)
            lengths.append(length)
        judged = self.rewards.judge(samples)
        reward = torch.zeros_like(responses, dtype=torch.float32)
        extra_info: dict[str, list[float]] = defaultdict(list)
        for i, (j, token_ends, length) in enumerate(zip(judged, ends, lengths, strict=True)):
            dense: list[float] = []
            if length > 0:
                starts = [0, *token_ends[:-1]]
                offsets = [
                    (a - j.code_start, b - j.code_start)
                    for a, b in zip(starts, token_ends, strict=True)
                ]
                lam = self.lam_pass if j.passed else self.lam_fail
                dense = line_rewards(j.line_scores, offsets, lam, self.variant, self.eta)
                reward[i, :length] += torch.tensor(dense, dtype=torch.float32)
                reward[i, length - 1] += j.reward
            # One value per sample for every key: veRL keeps these lists aligned with the batch.
            extra_info["outcome_reward"].append(j.reward)
            extra_info["dense_reward"].append(sum(dense))
            extra_info["passed"].append(float(bool(j.passed)))
            extra_info["pass_rate"].append(j.pass_rate or 0.0)
            extra_info["prm"].append(j.prm if j.prm is not None else 0.0)
            self._examine(samples[i], j)
        if return_dict:
            return {"reward_tensor": reward, "reward_extra_info": dict(extra_info)}
        return reward

    def _examine(self, sample: Sample, judged: Judged) -> None:
        if self._examined < self.num_examine:
            self._examined += 1
            print("[response]", sample.response)
            print("[codeprm]", judged.log())
