"""PPO steps against the real executor and PRM server on loopback, with tiny models: rewards
come over HTTP, a service that goes down mid-step fails the step with a clear error, and the
run resumes from its checkpoint."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from codeprm.services.trainer.ppo import train_ppo
from codeprm.services.trainer.ppo_config import PpoConfig
from codeprm.services.trainer.reward_client import Judgement, RewardClient, RewardUnavailable
from codeprm.services.trainer.rollout import Rollout
from codeprm.tiny import build_tiny_policy, build_tiny_prm
from tests.contained import ContainedExecutor, require_isolation
from tests.servers import start_prm_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    return build_tiny_policy(root / "policy"), build_tiny_prm(root / "prm")


def config(policy: Path, prm: Path, executor: str, prm_url: str, out: Path) -> PpoConfig:
    return PpoConfig(
        policy=policy,
        value_init=prm,
        mode="dense+value_init",
        dataset="humaneval",
        limit_problems=8,
        out=out,
        executor_url=executor,
        prm_url=prm_url,
        service_retries=1,
        steps=3,
        save_every=1,
        prompts_per_step=2,
        samples_per_prompt=2,
        max_new_tokens=24,
        temperature=1.0,
        device="cpu",
    )


def test_ppo_steps_with_executor_and_prm_rewards(
    models: tuple[Path, Path], contained_executor: ContainedExecutor, tmp_path: Path
) -> None:
    require_isolation(contained_executor)
    policy, prm = models
    proc, prm_url = start_prm_server(prm)
    try:
        cfg = config(policy, prm, contained_executor.url, prm_url, tmp_path / "run")
        cfg = cfg.model_copy(update={"steps": 2})
        result = train_ppo(cfg)
    finally:
        proc.terminate()
        proc.wait(30)
    assert [row["step"] for row in result.history] == [1, 2]
    for row in result.history:
        assert row["time/executor_s"] > 0 and row["time/prm_s"] > 0
        assert row["reward/dense"] != 0  # PRM line rewards arrived
        assert row["reward/pass_rate"] == 0  # a random policy passes nothing
        assert row["reward/outcome"] == -1.0
    samples = [json.loads(line) for line in (cfg.out / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["line_scores"] is not None for s in samples)


@dataclass
class KillsPrmOnSecondStep:
    """The real service judge; before the second step's calls, the PRM server is stopped."""

    inner: RewardClient
    prm: object
    calls: int = 0

    async def judge(self, rollouts: Sequence[Rollout]) -> Judgement:
        self.calls += 1
        if self.calls == 2:
            self.prm.terminate()  # type: ignore[attr-defined]
            self.prm.wait(30)  # type: ignore[attr-defined]
        return await self.inner.judge(rollouts)


def test_a_service_going_down_fails_the_step_and_the_run_resumes(
    models: tuple[Path, Path], contained_executor: ContainedExecutor, tmp_path: Path
) -> None:
    require_isolation(contained_executor)
    policy, prm = models
    proc, prm_url = start_prm_server(prm)
    cfg = config(policy, prm, contained_executor.url, prm_url, tmp_path / "run")
    judge = KillsPrmOnSecondStep(RewardClient(cfg.executor_url, cfg.prm_url, retries=1), proc)
    try:
        with pytest.raises(RewardUnavailable, match="PRM server"):
            train_ppo(cfg, judge=judge)
    finally:
        proc.kill()
        proc.wait(30)
    assert (cfg.out / "checkpoint" / "state.pt").is_file()
    steps = [json.loads(r)["step"] for r in (cfg.out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1]

    proc, prm_url = start_prm_server(prm)  # back, on another port
    try:
        result = train_ppo(cfg.model_copy(update={"prm_url": prm_url}))
    finally:
        proc.terminate()
        proc.wait(30)
    assert [row["step"] for row in result.history] == [1, 2, 3]
    assert not (cfg.out / "checkpoint").exists()
