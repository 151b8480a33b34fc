"""veRL 0.9's own code from the reward to the advantages, with codeprm's plug-ins:

config (veRL's Hydra config, the documented keys) -> `AgentLoopManager` subclass
(`CodePrmAgentLoopManager`) -> veRL's `AgentLoopWorker` and single-turn agent loop -> veRL's
`RewardLoopWorker` -> `NaiveRewardManager` -> our `compute_score_async` -> the batch veRL
assembles (`rm_scores`, reward extra info stacked per key) -> our line rewards ->
`extract_reward` -> `token_level_rewards` -> `compute_advantage` (GAE).

Replaced: vLLM (a policy that writes fixed responses) and Ray's transport (actor handles
whose `.remote()` calls the local object); everything else is the installed veRL."""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "verl", minversion="0.9", reason="veRL runs in its own venv: make test-frameworks"
)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import verl  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.experimental.agent_loop.agent_loop import AgentLoopWorker  # noqa: E402
from verl.experimental.reward_loop import RewardLoopWorker  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.ppo.reward import extract_reward, get_custom_reward_fn  # noqa: E402
from verl.utils.import_utils import load_class_from_fqn  # noqa: E402
from verl.workers.rollout.replica import TokenOutput  # noqa: E402

import codeprm.integrations.verl as plugin  # noqa: E402
from codeprm.api.prm import ScoreItem  # noqa: E402
from codeprm.client import PrmClient  # noqa: E402
from codeprm.extract import code_span  # noqa: E402
from codeprm.geometry import decode_with_ends  # noqa: E402
from codeprm.integrations.rewards import RewardSettings  # noqa: E402
from codeprm.stack import free_port  # noqa: E402
from codeprm.tiny import build_tiny_policy  # noqa: E402

pytestmark = pytest.mark.slow

MANAGER = "codeprm.integrations.verl_loop.CodePrmAgentLoopManager"
APPS_TRUTH = json.dumps({"inputs": ["2 3\n", "10 -4\n"], "outputs": ["5\n", "6\n"]})
GOOD = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
BAD = "a, b = map(int, input().split())\n# add them\nprint(a - b)\n"
EMPTY = ""
# The tiny policy is a Qwen2 model: veRL's agent loop builds its prompts with Qwen's chat
# markers, so its tokenizer gets them (and Qwen's template).
CHAT = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = build_tiny_policy(tmp_path_factory.mktemp("policy") / "policy")
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHAT
    tokenizer.save_pretrained(path)
    return path


def verl_config(policy: Path, *extra: str) -> Any:
    """veRL's own `ppo_trainer` config with the keys docs/integrations.md gives."""
    config_dir = Path(verl.__file__).parent / "trainer" / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(
            config_name="ppo_trainer",
            overrides=[
                f"actor_rollout_ref.model.path={policy}",
                "actor_rollout_ref.rollout.name=vllm",
                "actor_rollout_ref.rollout.prompt_length=64",
                "actor_rollout_ref.rollout.response_length=48",
                "algorithm.adv_estimator=gae",
                f"reward.custom_reward_function.path={plugin.__file__}",
                "reward.custom_reward_function.name=compute_score_async",
                f"+actor_rollout_ref.rollout.agent.agent_loop_manager_class={MANAGER}",
                *extra,
            ],
        )


def test_documented_keys_load_our_function_and_the_old_ones_do_not(policy: Path) -> None:
    config = verl_config(policy)
    assert get_custom_reward_fn(config) is not None
    # The keys our docs used to give sit in veRL's legacy section, which main_ppo ignores.
    legacy = verl_config(
        policy,
        "reward.custom_reward_function.path=null",
        f"custom_reward_function.path={plugin.__file__}",
        "custom_reward_function.name=compute_score",
    )
    assert get_custom_reward_fn(legacy) is None


class ScriptedLLM:
    """vLLM's server as veRL's agent loop calls it; it writes the response given per prompt.
    (A plain class: Hydra would turn a dataclass into a config node.)"""

    def __init__(self, tokenizer: Any, responses: dict[str, str]) -> None:
        self.tokenizer, self.responses = tokenizer, responses
        self.seen: list[str] = []

    async def generate(self, *, prompt_ids: list[int], **kwargs: Any) -> TokenOutput:
        prompt = self.tokenizer.decode(prompt_ids)
        text = next(r for key, r in self.responses.items() if key in prompt)
        self.seen.append(prompt)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        return TokenOutput(token_ids=ids + [end], log_probs=None)


class LocalActor:
    """Ray's actor-handle call shape (`await handle.method.remote(...)`) on a local object."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)

        class Remote:
            @staticmethod
            def remote(*args: Any, **kwargs: Any) -> Any:
                result = method(*args, **kwargs)
                if inspect.isawaitable(result):
                    return result
                future = asyncio.get_running_loop().create_future()
                future.set_result(result)
                return future

        return Remote


def _objects(values: list[Any]) -> np.ndarray[Any, Any]:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


PROBLEMS = {  # the problem text the policy sees -> what it writes
    "Add the two numbers (1).": GOOD,
    "Add the two numbers (2).": BAD,
    "Add the two numbers (3).": EMPTY,
}


def prompts_batch() -> DataProto:
    """A batch as veRL's trainer hands it to the rollout (dataset columns, no tensors)."""
    problems = list(PROBLEMS)
    return DataProto.from_dict(
        non_tensors={
            "raw_prompt": _objects([[{"role": "user", "content": p}] for p in problems]),
            "data_source": _objects(["apps"] * len(problems)),
            "reward_model": _objects([{"ground_truth": APPS_TRUTH}] * len(problems)),
            "extra_info": _objects([{"question": p, "index": i} for i, p in enumerate(problems)]),
            "index": np.arange(len(problems)),
        }
    )


async def rollout(config: Any, policy: Path) -> DataProto:
    """veRL's rollout with its reward loop, through our manager subclass."""
    manager_cls = load_class_from_fqn(MANAGER, "AgentLoopManager")  # veRL's own loader
    tokenizer = AutoTokenizer.from_pretrained(policy)
    llm = ScriptedLLM(tokenizer, PROBLEMS)
    rewards = [LocalActor(RewardLoopWorker(config))]
    manager = manager_cls(config, llm, None, rewards)
    manager.agent_loop_workers = [LocalActor(AgentLoopWorker(config, llm, None, rewards))]
    output = await manager.generate_sequences(prompts_batch())
    assert len(llm.seen) == len(PROBLEMS)
    return output


def expected_rewards(
    tokenizer: Any, prm_url: str, problem: str, response_ids: list[int], outcome: float, lam: float
) -> list[float]:
    """Independently: outcome on the last token, lam * s_m / T on each code line's last token."""
    text, ends = decode_with_ends(tokenizer, response_ids)
    start, stop = code_span(text)
    expected = [0.0] * len(response_ids)
    if text[start:stop].strip():
        with PrmClient(prm_url) as prm:
            result = prm.score([ScoreItem(prompt=problem, code=text[start:stop])]).results[0]
        code = [s for s in result.line_scores if s.kind == "code"]
        for line in code:
            assert line.score is not None
            last_char = start + line.end - 1
            token = next(t for t, end in enumerate(ends) if end > last_char)
            expected[token] += lam * line.score / len(code)
    expected[-1] += outcome
    return expected


async def test_dense_rewards_from_verl_reward_loop_to_gae(
    policy: Path, reward_env: RewardSettings, prm_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEPRM_REWARD_PRM_WEIGHT", "0")  # the PRM goes on line ends instead
    monkeypatch.setenv("CODEPRM_DENSE_LAM_PASS", "2.0")
    monkeypatch.setenv("CODEPRM_DENSE_LAM_FAIL", "1.0")
    plugin._rewards.cache_clear()
    config = verl_config(policy)
    batch = await rollout(config, policy)

    # The reward extra info veRL stacked per key: one value per sample for every key, the
    # empty response included (it has no PRM score).
    assert list(batch.non_tensor_batch["passed"]) == [1.0, 0.0, 0.0]
    for key in ("score", "prm", "pass_rate", "infra_error", "skipped"):
        assert len(batch.non_tensor_batch[key]) == 3

    # veRL's trainer: rm_scores -> token_level_scores -> token_level_rewards (no KL in reward).
    reward_tensor, _ = extract_reward(batch)
    batch.batch["token_level_scores"] = reward_tensor
    batch.batch["token_level_rewards"] = batch.batch["token_level_scores"]
    tokenizer = AutoTokenizer.from_pretrained(policy)
    mask = batch.batch["response_mask"]
    for i, (problem, outcome, lam) in enumerate(
        zip(PROBLEMS, (1.0, 0.0, 0.0), (2.0, 1.0, 1.0), strict=True)
    ):
        length = int(mask[i].sum())
        ids = batch.batch["responses"][i, :length].tolist()
        expected = expected_rewards(tokenizer, prm_url, problem, ids, outcome, lam)
        assert reward_tensor[i, :length].tolist() == pytest.approx(expected, abs=1e-6)
        assert not reward_tensor[i, length:].any()
    assert (reward_tensor[0] != 0).sum() >= 2  # line rewards besides the outcome

    # veRL's GAE on those rewards and a critic's values.
    torch.manual_seed(0)
    values = torch.randn(mask.shape) * mask
    batch.batch["values"] = values
    from verl.trainer.ppo.ray_trainer import compute_advantage

    algorithm = config.algorithm  # as the trainer calls it (adv_estimator=gae, from the config)
    batch = compute_advantage(
        batch, adv_estimator=algorithm.adv_estimator, gamma=1.0, lam=0.95, config=algorithm
    )
    # Independently: returns_t = sum_l (gamma*lam)^l delta_{t+l} + V_t.
    for i in range(3):
        length = int(mask[i].sum())
        r, v = reward_tensor[i, :length].tolist(), values[i, :length].tolist()
        returns, running = [0.0] * length, 0.0
        for t in reversed(range(length)):
            nxt = v[t + 1] if t + 1 < length else 0.0
            running = r[t] + nxt - v[t] + 0.95 * running
            returns[t] = running + v[t]
        assert batch.batch["returns"][i, :length].tolist() == pytest.approx(returns, abs=1e-5)
    raw = (batch.batch["returns"] - values) * mask
    whitened = core_algos.verl_F.masked_whiten(raw, mask) * mask
    assert torch.allclose(batch.batch["advantages"] * mask, whitened, atol=1e-5)


async def test_infrastructure_errors_are_masked_out(
    policy: Path, reward_env: RewardSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEPRM_REWARD_EXECUTOR_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CODEPRM_REWARD_RETRIES", "0")
    plugin._rewards.cache_clear()
    batch = await rollout(verl_config(policy), policy)
    skipped = batch.non_tensor_batch["skipped"].tolist()
    # The two responses with code could not be run: no reward, out of training. The empty
    # one never needs the executor: it fails, as before.
    assert skipped == [1.0, 1.0, 0.0]
    assert list(batch.non_tensor_batch["infra_error"]) == [1.0, 1.0, 0.0]
    assert not batch.batch["response_mask"][:2].any() and batch.batch["response_mask"][2].any()
    assert not batch.batch["rm_scores"][:2].any()
    # veRL's loss aggregation then ignores them whatever their per-token losses are.
    loss_mat = torch.rand(batch.batch["response_mask"].shape)
    noisy = loss_mat.clone()
    noisy[:2] += 100.0
    mask = batch.batch["response_mask"]
    assert core_algos.agg_loss(loss_mat, mask, "token-mean") == pytest.approx(
        float(core_algos.agg_loss(noisy, mask, "token-mean"))
    )
