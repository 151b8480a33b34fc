"""`codeprm train ppo --config ppo.yaml`: every field, its default and what it does.

policy: /ckpt/policy          # the only required fields: policy, dataset, out
dataset: humaneval
out: runs/ppo-1
mode: dense+value_init
value_init: /ckpt/prm
prm_url: http://prm:8101
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from codeprm.api.labeler import BackendSpec
from codeprm.services.trainer.rollout import DEFAULT_STOP
from codeprm.token_rewards import DenseReward, DenseVariant, Outcome

Mode = Literal["outcome", "dense", "value_init", "dense+value_init"]


class CollectConfig(BaseModel):
    """On-policy PRM data: every `every` steps, the step's failing rollouts go to the labeler as
    a `binary_search` run (the paper collects PRM data from checkpoints of a baseline run)."""

    model_config = ConfigDict(extra="forbid")

    every: int = Field(..., ge=1, description="Steps between submissions.")
    labeler_url: str = Field(..., description="The labeler API, e.g. http://labeler:8102.")
    shared_dir: Path = Field(
        ...,
        description="A directory the labeler's workers read too: the problems file with the "
        "failing rollouts as candidates is written there.",
    )
    policy: BackendSpec = Field(
        ..., description="The policy as the labeler's workers reach it (a server or a directory)."
    )
    k: int = Field(4, ge=1, description="Continuations per prefix.")


class PpoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # -- what to train, on what, where to
    policy: Path = Field(description="Causal LM directory: the starting policy.")
    dataset: str = Field(description="'humaneval' or a problems JSONL (codeprm/datasets.py).")
    out: Path = Field(description="Run directory: metrics, samples, checkpoints, final policy.")
    limit_problems: int | None = Field(None, ge=1, description="Train on the first N only.")
    mode: Mode = Field(
        "dense+value_init",
        description="outcome: unit-test reward only (the baseline); dense: + PRM line rewards; "
        "value_init: critic starts from the PRM; dense+value_init: both.",
    )
    value_init: Path | None = Field(None, description="PRM checkpoint for the critic's start.")

    # -- services
    executor_url: str = "http://127.0.0.1:8100"
    prm_url: str = "http://127.0.0.1:8101"
    prm_api_key: str | None = None
    service_retries: int = Field(4, ge=0, description="Retries per call before the step fails.")
    execution_timeout_s: float = Field(10.0, gt=0)

    # -- rollouts
    steps: int = Field(100, ge=1, description="PPO steps (one batch of rollouts each).")
    prompts_per_step: int = Field(8, ge=1)
    samples_per_prompt: int = Field(4, ge=1, description="K rollouts per prompt.")
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: list[str] = Field(default_factory=lambda: list(DEFAULT_STOP))

    # -- rewards
    outcome: Outcome = "pass_fail"
    pass_reward: float = 1.0
    fail_reward: float = -1.0
    lam_pass: float = Field(0.2, description="Dense reward weight on passing rollouts.")
    lam_fail: float = Field(0.5, description="Dense reward weight on failing rollouts.")
    dense_variant: DenseVariant = "plain"
    clip_eta: float = Field(0.0, description="`clip` variant: min(score - eta, 0).")
    kl_coef: float = Field(0.05, ge=0, description="Per-token KL penalty to the reference.")

    # -- PPO
    gamma: float = Field(1.0, ge=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    ppo_epochs: int = Field(2, ge=1)
    minibatch_size: int = Field(8, ge=1, description="Rollouts per gradient step.")
    clip_ratio: float = Field(0.2, gt=0)
    value_clip: float = Field(0.2, gt=0)
    entropy_coef: float = Field(0.0, ge=0)
    policy_lr: float = Field(1e-6, gt=0)
    critic_lr: float = Field(5e-6, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)
    whiten_advantages: bool = True
    critic_warmup_steps: int = Field(
        0, ge=0, description="The first N steps update the critic only (the policy waits)."
    )
    value_calibration: bool = Field(
        True,
        description="value_init: at the first step, rescale the PRM's head so its readings "
        "fit the returns of that step's rollouts (a * score + b, least squares). A PRM says "
        "whether a prefix can still pass (+1/-1); the value is the expected return, which at a "
        "20% pass rate is far below +1.",
    )

    # -- held-out evaluation during training (the learning curve)
    eval_dataset: str | None = Field(
        None, description="Problems evaluated at step 0, every `eval_every` steps and at the end."
    )
    eval_every: int = Field(10, ge=1)
    eval_limit: int | None = Field(None, ge=1, description="Evaluate the first N only.")
    eval_samples: int = Field(4, ge=1, description="Programs sampled per problem.")
    eval_temperature: float = Field(1.0, ge=0, description="0: greedy.")
    eval_line_edges: list[int] = Field(
        default_factory=lambda: [5, 10], description="Buckets of problems by code lines."
    )

    # -- bookkeeping
    seed: int = 0
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    save_every: int = Field(10, ge=1, description="Steps between checkpoints.")
    samples_logged: int = Field(4, ge=0, description="Rollouts per step written to samples.jsonl.")
    collect: CollectConfig | None = None

    @property
    def dense(self) -> bool:
        return self.mode in ("dense", "dense+value_init")

    def dense_reward(self) -> DenseReward | None:
        """The dense rewards' shape, or None in the modes without them."""
        if not self.dense:
            return None
        return DenseReward(self.lam_pass, self.lam_fail, self.dense_variant, self.clip_eta)

    @property
    def prm_value_init(self) -> bool:
        return self.mode in ("value_init", "dense+value_init")

    @model_validator(mode="after")
    def _consistent(self) -> PpoConfig:
        if self.prm_value_init and self.value_init is None:
            raise ValueError(f"mode {self.mode!r} needs `value_init`: a PRM checkpoint")
        return self


def load_config(path: Path, **overrides: object) -> PpoConfig:
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of fields")
    return PpoConfig.model_validate(raw | {k: v for k, v in overrides.items() if v is not None})
