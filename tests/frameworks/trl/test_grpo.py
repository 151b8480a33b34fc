"""TRL 1.16's GRPOTrainer, for real, with codeprm's reward function: it trains, and a sample
whose executor cannot be reached gets None (no reward), which TRL leaves out of its group
statistics instead of scoring the program as wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "trl", minversion="1.14", reason="TRL 1.16 runs in its own venv: make test-frameworks"
)

from datasets import Dataset  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from codeprm.datasets import humaneval  # noqa: E402
from codeprm.integrations.trl import reward_function  # noqa: E402
from codeprm.stack import free_port  # noqa: E402
from codeprm.tiny import build_tiny_policy  # noqa: E402
from tests.contained import ContainedExecutor, require_isolation  # noqa: E402
from tests.frameworks.doc_examples import example, run, swap  # noqa: E402

pytestmark = pytest.mark.slow


def train(policy: Path, out: Path, calls: list[dict[str, Any]]) -> GRPOTrainer:
    """Two GRPO steps on two HumanEval problems, recording every reward call."""
    dataset = Dataset.from_list(
        [
            {"prompt": p.prompt, "tests": json.dumps(p.model_dump()["tests"] | {"kind": "assert"})}
            for p in humaneval()[:2]
        ]
    )
    inner = reward_function()

    async def codeprm_reward(prompts: list[Any], completions: list[Any], **kw: Any) -> Any:
        rewards = await inner(prompts=prompts, completions=completions, **kw)
        calls.append({"n": len(completions), "keys": set(kw), "rewards": rewards})
        return rewards

    args = GRPOConfig(
        output_dir=str(out),
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=16,
        learning_rate=1e-4,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_steps=1,
    )
    trainer = GRPOTrainer(
        model=str(policy),
        reward_funcs=[codeprm_reward],
        args=args,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(policy),
    )
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_policy(tmp_path_factory.mktemp("policy") / "policy")


def test_grpo_trainer_trains_with_our_reward(
    contained_executor: ContainedExecutor,
    policy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_isolation(contained_executor)
    monkeypatch.setenv("CODEPRM_REWARD_EXECUTOR_URL", contained_executor.url)
    calls: list[dict[str, Any]] = []
    trainer = train(policy, tmp_path / "grpo", calls)
    assert calls and all(c["n"] == 4 for c in calls)
    assert {"tests", "completion_ids", "trainer_state"} <= calls[0]["keys"]
    # random-weight completions fail their tests: a real 0.0 outcome, never None
    assert all(r == 0.0 for c in calls for r in c["rewards"])
    logged = [row for row in trainer.state.log_history if "reward" in row]
    assert logged and all(row["reward"] == 0.0 for row in logged)


def test_unreachable_executor_gives_no_reward(
    policy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEPRM_REWARD_EXECUTOR_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CODEPRM_REWARD_RETRIES", "0")
    calls: list[dict[str, Any]] = []
    trainer = train(policy, tmp_path / "grpo", calls)
    assert calls and all(r is None for c in calls for r in c["rewards"])
    # TRL trained on: no sample was scored, so none moved the policy as a "wrong" program.
    assert trainer.state.global_step == 2


def test_the_grpo_example_in_the_docs_runs_on_cpu(
    contained_executor: ContainedExecutor,
    policy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/integrations.md's GRPO example as written, on this CPU, with a local policy for
    the hub model and one step instead of three epochs."""
    require_isolation(contained_executor)
    monkeypatch.setenv("CODEPRM_REWARD_EXECUTOR_URL", contained_executor.url)
    monkeypatch.chdir(tmp_path)
    code = example("GRPOTrainer(")
    code = swap(code, '"Qwen/Qwen2.5-Coder-0.5B-Instruct"', repr(str(policy)))
    code = swap(code, "max_completion_length=64,", "max_completion_length=64, max_steps=1,")
    trainer = run(code)["trainer"]
    assert isinstance(trainer, GRPOTrainer)
    assert trainer.state.global_step == 1
    assert [row["reward"] for row in trainer.state.log_history if "reward" in row] == [0.0]
