"""veRL plug-ins against veRL's documented interfaces.

veRL needs Ray, vLLM/SGLang and a CUDA stack and cannot be installed here. The tests call
`compute_score` with the keyword arguments veRL's reward managers pass (NaiveRewardManager and
the Reward Loop's `run_single`, which also passes `reward_router_address` and
`reward_model_tokenizer`), and the reward manager with a batch shaped like veRL's
`DataProto`: `batch` holding `prompts` (left-padded), `responses` (right-padded) and
`attention_mask` over both; `non_tensor_batch` holding numpy object arrays `data_source`,
`reward_model` ({"ground_truth": ...}) and `extra_info`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from codeprm.integrations import verl
from codeprm.integrations.rewards import CodeRewards, RewardSettings, Sample
from services.trainer.rollout import decode_with_ends

APPS_TRUTH = json.dumps({"inputs": ["2 3\n", "10 -4\n"], "outputs": ["5\n", "6\n"]})
GOOD = "a, b = map(int, input().split())\nprint(a + b)\n"
BAD = "a, b = map(int, input().split())\n# add them\nprint(a - b)\n"


@pytest.mark.slow
async def test_compute_score_sync_and_async(reward_env: RewardSettings) -> None:
    verl._rewards.cache_clear()
    kwargs: dict[str, Any] = {"reward_router_address": None, "reward_model_tokenizer": None}
    good = verl.compute_score(
        data_source="apps",
        solution_str=f"Here it is:\n```python\n{GOOD}```",
        ground_truth=APPS_TRUTH,
        extra_info={"question": "Add two numbers."},
        **kwargs,
    )
    bad = await verl.compute_score_async(
        data_source="apps", solution_str=BAD, ground_truth=APPS_TRUTH, extra_info=None, **kwargs
    )
    assert good["passed"] == 1.0 and bad["passed"] == 0.0 and bad["pass_rate"] == 0.0
    assert good["score"] == pytest.approx(1.0 + 0.5 * good["prm"])
    assert bad["score"] == pytest.approx(0.5 * bad["prm"])


@dataclass
class FakeDataProto:
    """The parts of veRL's DataProto a reward manager reads (verl/protocol.py)."""

    batch: dict[str, torch.Tensor]
    non_tensor_batch: dict[str, np.ndarray[Any, Any]]
    meta_info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.batch["responses"].shape[0])


def _objects(values: list[Any]) -> np.ndarray[Any, Any]:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def make_batch(tokenizer: Any, prompts: list[str], responses: list[str]) -> FakeDataProto:
    pad = tokenizer.pad_token_id or 0
    p_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    r_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]
    p_len, r_len = max(map(len, p_ids)), max(map(len, r_ids)) + 3
    prompt_t = torch.full((len(prompts), p_len), pad)
    response_t = torch.full((len(prompts), r_len), pad)
    mask = torch.zeros((len(prompts), p_len + r_len), dtype=torch.long)
    for i, (p, r) in enumerate(zip(p_ids, r_ids, strict=True)):
        prompt_t[i, p_len - len(p) :] = torch.tensor(p)  # left padding, as veRL does
        response_t[i, : len(r)] = torch.tensor(r)
        mask[i, p_len - len(p) : p_len + len(r)] = 1
    return FakeDataProto(
        batch={"prompts": prompt_t, "responses": response_t, "attention_mask": mask},
        non_tensor_batch={
            "data_source": _objects(["apps"] * len(prompts)),
            "reward_model": _objects([{"ground_truth": APPS_TRUTH}] * len(prompts)),
            "extra_info": _objects([{"index": i} for i in range(len(prompts))]),
        },
    )


@pytest.mark.slow
def test_dense_reward_manager_puts_line_rewards_at_line_ends(
    reward_env: RewardSettings, tiny_prm_dir: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_prm_dir)  # any HF tokenizer will do
    prompts = ["# Add the two numbers on stdin.\n", "# Add.\n"]
    responses = [f"```python\n{GOOD}```", BAD]
    data = make_batch(tokenizer, prompts, responses)
    manager = verl.DenseRewardManager(
        tokenizer, num_examine=0, compute_score=None, lam_pass=2.0, lam_fail=1.0
    )
    out = manager(data, return_dict=True)
    reward, info = out["reward_tensor"], out["reward_extra_info"]
    assert reward.shape == data.batch["responses"].shape
    assert info["passed"] == [1.0, 0.0] and all(len(v) == 2 for v in info.values())

    # Independently: PSGPO's r_m = lam * s_m / T on the token holding line m's last
    # character, T the number of code lines; comments get nothing; the outcome goes last.
    judged = CodeRewards(reward_env.model_copy(update={"prm_weight": 0.0})).judge(
        [Sample(p, r, APPS_TRUTH) for p, r in zip(prompts, responses, strict=True)]
    )
    mask = data.batch["attention_mask"][:, data.batch["prompts"].shape[1] :]
    for i, (j, lam) in enumerate(zip(judged, (2.0, 1.0), strict=True)):
        length = int(mask[i].sum())
        text, ends = decode_with_ends(tokenizer, data.batch["responses"][i, :length].tolist())
        assert text == responses[i]
        code = [s for s in j.line_scores if s.kind == "code"]
        assert any(s.kind == "comment" for s in j.line_scores) == (i == 1)
        expected = [0.0] * length
        for line in code:
            assert line.score is not None
            last_char = j.code_start + line.end - 1
            token = next(t for t, end in enumerate(ends) if end > last_char)
            expected[token] += lam * line.score / len(code)
        expected[-1] += j.reward
        assert j.reward == (1.0 if i == 0 else 0.0)
        assert reward[i, :length].tolist() == pytest.approx(expected, abs=1e-6)
        assert not reward[i, length:].any()


def test_rm_scores_pass_through() -> None:
    scores = torch.rand(2, 5)
    data = FakeDataProto(
        batch={"rm_scores": scores, "responses": torch.zeros(2, 5)}, non_tensor_batch={}
    )
    manager = verl.DenseRewardManager(tokenizer=None)
    assert manager(data) is scores
