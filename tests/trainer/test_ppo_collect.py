"""On-policy PRM data: a step's failing rollouts become a binary_search run of the real labeler,
which a worker then labels with the policy."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from codeprm.api.labeler import BackendSpec
from codeprm.datasets import humaneval
from codeprm.services.trainer.ppo import _collect
from codeprm.services.trainer.ppo_config import CollectConfig, PpoConfig
from codeprm.services.trainer.reward_client import Judgement, Verdict
from codeprm.services.trainer.rollout import Rollout
from codeprm.stack import free_port
from codeprm.tiny import build_tiny_policy
from tests.contained import ContainedExecutor, require_isolation
from tests.labeler.test_runs import codeprm, labeler_env
from tests.servers import running_labeler_api

pytestmark = pytest.mark.slow


def test_failing_rollouts_are_submitted_and_labeled(
    contained_executor: ContainedExecutor, redis_namespace: str, tmp_path: Path
) -> None:
    require_isolation(contained_executor)
    policy = build_tiny_policy(tmp_path / "policy")
    problems = humaneval()[:2]
    rollouts = [
        Rollout(p, [1], [2, 3], text, [(0, 1), (1, len(text))], True)
        for p in problems
        for text in ("    x = 1\n    return None\n", p.solution or "")
    ]
    verdicts = [Verdict(passed=i % 2 == 1, pass_rate=0.0, line_scores=None) for i in range(4)]
    port = free_port()
    env = labeler_env(redis_namespace, contained_executor.url)
    config = PpoConfig(
        policy=policy,
        dataset="humaneval",
        out=tmp_path / "run",
        mode="outcome",
        collect=CollectConfig(
            every=1,
            labeler_url=f"http://127.0.0.1:{port}",
            shared_dir=tmp_path / "shared",
            policy=BackendSpec(kind="hf", model=str(policy)),
            k=2,
        ),
    )
    config.out.mkdir()
    with running_labeler_api(env, port=port, timeout_s=30):
        asyncio.run(_collect(config, 5, rollouts, Judgement(verdicts, 0.0, 0.0)))
        submitted = json.loads((config.out / "collect.jsonl").read_text())
        rows = [json.loads(r) for r in Path(submitted["problems"]).read_text().splitlines()]
        assert [r["candidates"] for r in rows] == [["    x = 1\n    return None\n"]] * 2
        codeprm("label", "worker", "--burst", env=env, timeout=600)
        info = httpx.get(f"http://127.0.0.1:{port}/v1/label/runs/{submitted['run_id']}").json()
    assert info["strategy"] == "binary_search" and info["total"] == 2
    assert info["done"] == 2 and info["samples"] == 2, info
