"""OpenRLHF reward-function file: `--remote_rm_url <path of this file>`.

OpenRLHF loads this file by path and calls `reward_func(queries, prompts, labels)` (in a thread,
a few samples at a time): `queries` are prompt + response as decoded by the policy's tokenizer,
`labels` the dataset column named by `--label_key`, here the tests (any form that
`codeprm.integrations.rewards.parse_tests` reads, usually a JSON string). It returns
OpenRLHF's dict of tensors: `rewards` (used for the advantage), `scores` (used for dynamic
filtering: the outcome in [0, 1]) and `extra_logs` (logged to wandb/tensorboard).

Configuration: `CODEPRM_REWARD_*` environment variables (set them in Ray's runtime env), e.g.
CODEPRM_REWARD_EXECUTOR_URL and CODEPRM_REWARD_PRM_URL.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from codeprm.integrations.rewards import CodeRewards, Judged, Sample
from contracts.extract import response_of


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
        },
    }


def _score(judged: Judged) -> float:
    # OpenRLHF's dynamic filtering keeps prompts whose mean score lies in a range: the test
    # outcome is the right quantity for that, not the PRM-shaped reward.
    if judged.pass_rate is None:
        return judged.reward
    return float(bool(judged.passed))
