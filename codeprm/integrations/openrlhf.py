"""OpenRLHF reward-function file: `--reward.remote_url <path of this file>` (OpenRLHF 0.11).

OpenRLHF's `SingleTurnAgentExecutor` loads this file by path and calls
`reward_func(queries, prompts, labels)` in a thread, one sample per call: `queries` are
prompt + response as decoded by the policy's tokenizer, `labels` the dataset column named by
`--data.label_key`, here the tests (any form that `codeprm.integrations.rewards.parse_tests`
reads, usually a JSON string). It returns OpenRLHF's dict of tensors: `rewards` (used for the
advantage), `scores` (used for dynamic filtering: the outcome in [0, 1]) and `extra_logs`
(logged to wandb/tensorboard).

A sample with an infrastructure error (`infra_errors="skip"`) has no reward. OpenRLHF needs a
number for every sample, so it gets `rewards` 0.0 and `scores` NaN: with dynamic filtering
(`--algo.dynamic_filtering_enable`) the NaN puts its prompt group outside any range, so the
group is dropped and a fresh prompt drawn in its place; `extra_logs.codeprm_infra_error`
counts such samples either way.

Configuration: `CODEPRM_REWARD_*` environment variables (set them in Ray's runtime env), e.g.
CODEPRM_REWARD_EXECUTOR_URL and CODEPRM_REWARD_PRM_URL.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from codeprm.extract import response_of
from codeprm.integrations.rewards import CodeRewards, Judged, Sample


@functools.cache
def _rewards() -> CodeRewards:
    return CodeRewards()


def reward_func(
    queries: list[str], prompts: list[str], labels: list[Any] | None = None, **kwargs: Any
) -> dict[str, Any]:
    labels = list(labels) if labels is not None else [None] * len(queries)
    samples = [
        Sample(prompt=prompt, response=response_of(query, prompt), tests=label)
        for query, prompt, label in zip(queries, prompts, labels, strict=True)
    ]
    judged = _rewards().judge(samples)
    return {
        "rewards": torch.tensor([j.reward for j in judged], dtype=torch.float32),
        "scores": torch.tensor([_score(j) for j in judged], dtype=torch.float32),
        "extra_logs": {
            "codeprm_pass": torch.tensor([float(bool(j.passed)) for j in judged]),
            "codeprm_prm": torch.tensor([j.prm if j.prm is not None else 0.0 for j in judged]),
            "codeprm_infra_error": torch.tensor([float(j.infra_error) for j in judged]),
        },
    }


def _score(judged: Judged) -> float:
    # OpenRLHF's dynamic filtering keeps prompts whose mean score lies in a range: the test
    # outcome is the right quantity for that, not the PRM-shaped reward. NaN is outside every
    # range, so a skipped sample takes its prompt group out of the batch.
    if judged.skipped:
        return math.nan
    if judged.pass_rate is None:
        return judged.reward
    return float(bool(judged.passed))
