"""veRL plug-ins in the main venv, without veRL: `compute_score` with the keyword arguments
veRL 0.9's reward managers pass, and the dense line rewards on a policy's tokens. veRL's own
code drives them in tests/frameworks/verl (`make test-frameworks`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from codeprm.geometry import decode_with_ends
from codeprm.integrations import verl
from codeprm.integrations.rewards import CodeRewards, RewardSettings, Sample
from codeprm.stack import free_port
from codeprm.token_rewards import DenseReward

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


KEYS = {"score", "passed", "pass_rate", "prm", "infra_error", "skipped"}


@pytest.mark.slow
async def test_every_result_has_the_same_keys(
    reward_env: RewardSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """veRL stacks each key across the batch: an empty response (no PRM score) or an
    unreachable executor must not drop one."""
    verl._rewards.cache_clear()
    empty = await verl.compute_score_async("apps", "", APPS_TRUTH, None)
    full = await verl.compute_score_async("apps", GOOD, APPS_TRUTH, None)
    assert set(empty) == set(full) == KEYS
    assert empty["passed"] == 0.0 and empty["prm"] == 0.0
    monkeypatch.setenv("CODEPRM_REWARD_EXECUTOR_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CODEPRM_REWARD_RETRIES", "0")
    verl._rewards.cache_clear()
    down = verl.compute_score("apps", GOOD, APPS_TRUTH, None)
    assert set(down) == KEYS
    assert down["skipped"] == 1.0 and down["infra_error"] == 1.0 and down["score"] == 0.0
    verl._rewards.cache_clear()


@pytest.mark.slow
def test_dense_line_rewards_on_policy_tokens(
    reward_env: RewardSettings, tiny_prm_dir: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_prm_dir)  # any HF tokenizer will do
    responses = [f"```python\n{GOOD}```", BAD]
    judged = CodeRewards(reward_env.model_copy(update={"prm_weight": 0.0})).judge(
        [Sample("# Add.\n", r, APPS_TRUTH) for r in responses]
    )
    for i, (j, lam) in enumerate(zip(judged, (2.0, 1.0), strict=True)):
        ids = tokenizer(responses[i], add_special_tokens=False)["input_ids"]
        passed = bool(j.passed)
        shape = DenseReward(lam_pass=lam if passed else 9.0, lam_fail=9.0 if passed else lam)
        dense = verl.dense_line_rewards(tokenizer, ids, j, passed, shape)
        # Independently: PSGPO's r_m = lam * s_m / T on the token holding line m's last
        # character, T the number of code lines; comments get nothing.
        text, ends = decode_with_ends(tokenizer, ids)
        assert text == responses[i]
        code = [s for s in j.line_scores if s.kind == "code"]
        assert any(s.kind == "comment" for s in j.line_scores) == (i == 1)
        expected = [0.0] * len(ids)
        for line in code:
            assert line.score is not None
            last_char = j.code_start + line.end - 1
            token = next(t for t, end in enumerate(ends) if end > last_char)
            expected[token] += lam * line.score / len(code)
        assert dense == pytest.approx(expected, abs=1e-6)
        assert sum(1 for r in dense if r) == len(code)
    assert verl.dense_line_rewards(tokenizer, [], judged[0], True, DenseReward()) == []
