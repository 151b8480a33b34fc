"""Rerunning `train ppo` follows `train prm`'s rule: an unfinished run resumes, a finished one
is refused and left as it was (policy/, critic/, metrics.jsonl)."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeprm.services.trainer.ppo import train_ppo
from codeprm.services.trainer.ppo_config import PpoConfig
from codeprm.tiny import build_tiny_policy
from tests.trainer.test_ppo_learns import TokenFractionJudge

pytestmark = pytest.mark.slow


def test_a_finished_run_is_refused_and_kept(tmp_path: Path) -> None:
    config = PpoConfig(
        policy=build_tiny_policy(tmp_path / "policy"),
        dataset="humaneval",
        limit_problems=4,
        out=tmp_path / "run",
        mode="outcome",
        steps=2,
        prompts_per_step=2,
        samples_per_prompt=2,
        max_new_tokens=8,
        stop=[],
        minibatch_size=4,
        ppo_epochs=1,
        device="cpu",
    )
    train_ppo(config, judge=TokenFractionJudge())
    kept = {p: p.read_bytes() for p in config.out.rglob("*") if p.is_file()}
    assert config.out / "metrics.jsonl" in kept
    assert config.out / "policy" / "model.safetensors" in kept
    with pytest.raises(FileExistsError, match="already holds a finished PPO run"):
        train_ppo(config, judge=TokenFractionJudge())
    assert {p: p.read_bytes() for p in config.out.rglob("*") if p.is_file()} == kept
    assert not list(config.out.glob(".*"))  # no temporary left behind
