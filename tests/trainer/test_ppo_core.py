"""PPO maths against straightforward reference computations, and rewards at the right tokens."""

from __future__ import annotations

import math

import pytest
import torch

from codeprm.api.prm import LineScore
from codeprm.datasets import Problem
from codeprm.geometry import decode_with_ends
from codeprm.lines import split_lines
from codeprm.services.trainer import ppo_core
from codeprm.services.trainer.rollout import Sampling, cut_response
from codeprm.tiny import build_tokenizer
from codeprm.token_rewards import DenseReward, outcome_reward, reshape_scores, token_rewards


def reference_gae(
    rewards: list[float], values: list[float], gamma: float, lam: float
) -> tuple[list[float], list[float]]:
    """GAE from its definition: A_t = sum_l (gamma lam)^l delta_{t+l}."""
    n = len(rewards)
    deltas = [
        rewards[t] + gamma * (values[t + 1] if t + 1 < n else 0.0) - values[t] for t in range(n)
    ]
    adv = [sum((gamma * lam) ** (k - t) * deltas[k] for k in range(t, n)) for t in range(n)]
    return adv, [a + v for a, v in zip(adv, values, strict=True)]


def test_gae_matches_its_definition_on_ragged_rows() -> None:
    torch.manual_seed(0)
    lengths = [5, 2, 7]
    rewards, values = torch.randn(3, 7), torch.randn(3, 7)
    mask = torch.zeros(3, 7)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    adv, ret = ppo_core.gae(rewards, values, mask, gamma=0.99, lam=0.9)
    for i, n in enumerate(lengths):
        want_adv, want_ret = reference_gae(
            rewards[i, :n].tolist(), values[i, :n].tolist(), 0.99, 0.9
        )
        assert adv[i, :n].tolist() == pytest.approx(want_adv, abs=1e-5)
        assert ret[i, :n].tolist() == pytest.approx(want_ret, abs=1e-5)
        assert adv[i, n:].abs().sum() == 0 and ret[i, n:].abs().sum() == 0


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value() -> None:
    rewards = torch.tensor([[0.0, 0.5, 0.0, 1.0]])
    values = torch.tensor([[0.3, 0.1, -0.2, 0.4]])
    adv, ret = ppo_core.gae(rewards, values, torch.ones(1, 4), gamma=1.0, lam=1.0)
    assert ret[0].tolist() == pytest.approx([1.5, 1.5, 1.0, 1.0])
    assert adv[0].tolist() == pytest.approx([1.2, 1.4, 1.2, 0.6])


def test_policy_loss_clips_as_the_paper_says() -> None:
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.7]]))  # ratios
    adv = torch.tensor([[1.0, -1.0, 2.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, clip_fraction, kl = ppo_core.policy_loss(new, old, adv, mask, clip=0.2)
    # per token: -min(r A, clip(r) A): 1.5*1 -> 1.2 (clipped), 0.5*-1 -> -0.8*-1... -min(-0.5,-0.8)
    expected = [-1.2, 0.8, -2.2]
    assert float(loss) == pytest.approx(sum(expected) / 3)
    assert float(clip_fraction) == pytest.approx(2 / 3)
    ratios = [1.5, 0.5, 1.1]
    assert float(kl) == pytest.approx(sum(r - 1 - math.log(r) for r in ratios) / 3, rel=1e-5)


def test_value_loss_takes_the_larger_error() -> None:
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[0.5, 0.1]])
    returns = torch.tensor([[1.0, -1.0]])
    loss, frac = ppo_core.value_loss(new, old, returns, torch.ones(1, 2), clip=0.2)
    # token 0: unclipped (0.5-1)^2=0.25, clipped (0.2-1)^2=0.64 -> 0.64; token 1: 1.21 both
    assert float(loss) == pytest.approx(0.5 * (0.64 + 1.21) / 2)
    assert float(frac) == pytest.approx(0.5)


def test_logprobs_and_entropy() -> None:
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0]]])
    logp, entropy = ppo_core.logprobs_and_entropy(logits, torch.tensor([[1, 0]]))
    assert logp[0].tolist() == pytest.approx([math.log(0.5), math.log(0.75)])
    assert entropy[0, 0] == pytest.approx(math.log(2))


def test_whiten() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = ppo_core.masked_whiten(x, mask)
    assert float(ppo_core.masked_mean(w, mask)) == pytest.approx(0, abs=1e-6)
    assert float(ppo_core.masked_mean(w**2, mask)) == pytest.approx(1, abs=1e-4)
    assert w[0, 3] == 0


def test_outcome_and_reshaped_scores() -> None:
    assert outcome_reward(True, 1.0, "pass_fail", 1.0, -1.0) == 1.0
    assert outcome_reward(False, 0.25, "pass_rate", 1.0, -1.0) == -0.5
    assert reshape_scores([0.9, 0.2, -0.5], "clip", 0.1) == pytest.approx([0.0, 0.0, -0.6])
    delta = reshape_scores([0.9, 0.2, -0.5], "delta", 0.0)
    assert delta == pytest.approx([0.7, 0.7, -0.5]) and sum(delta) == pytest.approx(0.9)


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return build_tokenizer()


@pytest.fixture(scope="module")
def gpt2_style():  # type: ignore[no-untyped-def]
    """GPT-2's byte-level pre-tokenizer: a newline and the indentation after it merge into
    one token, the hard case for placing a reward at a line's last token."""
    from tests.library.test_geometry import byte_level

    return byte_level()


def test_dense_rewards_sit_on_each_code_lines_last_token_despite_newline_indent_merges(
    gpt2_style,  # type: ignore[no-untyped-def]
) -> None:
    tokenizer = gpt2_style
    code = "    x = 1\n    # note\n    if x:\n        return x\n\nprint(x)\n"
    ids = tokenizer(code)["input_ids"]
    assert any(
        "\n" in t and t.strip(" \n") == "" and len(t) > 1
        for t in (tokenizer.decode([i]) for i in ids)
    )  # "\n    " merges exist here
    problem = Problem(
        problem_id="p", prompt="def f():\n", tests={"kind": "assert", "code": "assert True"}
    )
    rollout = cut_response(tokenizer, problem, [], ids, Sampling())
    assert (
        rollout.text == "    x = 1\n    # note\n    if x:\n        return x\n"
    )  # cut at "\nprint("
    lines = split_lines(rollout.text)
    scores = [
        LineScore(
            line=ln.index, start=ln.start, end=ln.end, score=0.5 * (ln.index + 1), kind=ln.kind
        )
        for ln in lines
    ]
    rewards = token_rewards(
        scores, rollout.offsets, passed=True, outcome=0.0, dense=DenseReward(lam_pass=2.0)
    )
    assert len(rewards) == len(rollout.response_ids)
    placed = {i: r for i, r in enumerate(rewards) if r}
    for line in lines:
        if line.kind != "code":
            continue
        token = next(
            t
            for t, r in placed.items()
            if rollout.offsets[t][0] < line.end <= rollout.offsets[t][1]
        )
        # lam * score / T with T = 3 code lines, at the token holding the line's last character
        assert placed[token] == pytest.approx(2.0 * 0.5 * (line.index + 1) / 3)
        assert "\n" not in rollout.text[rollout.offsets[token][0] : line.end]
    assert len(placed) == 3  # the comment line gets nothing


def test_decode_ends_match_prefix_decodes(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = "def f(s):\n    return s + 'héllo ✓ 😀'\n"
    ids = tokenizer(text)["input_ids"]
    decoded, ends = decode_with_ends(tokenizer, ids)
    assert decoded == text
    assert ends == [len(tokenizer.decode(ids[: k + 1])) for k in range(len(ids))]


def test_discounted_returns_sum_the_future_rewards_of_each_row() -> None:
    from codeprm.services.trainer.ppo_core import discounted_returns

    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, -1.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    returns = discounted_returns(rewards, mask, gamma=0.5)
    assert torch.allclose(returns, torch.tensor([[0.25, 0.5, 1.0], [0.0, -1.0, 0.0]]))


def test_calibrating_the_head_fits_the_returns_and_keeps_the_ranking(
    tokenizer,  # type: ignore[no-untyped-def]
) -> None:
    from transformers import AutoModelForTokenClassification

    from codeprm.services.trainer.ppo import _explained_variance, calibrate_head
    from codeprm.tiny import tiny_config

    torch.manual_seed(0)
    critic = AutoModelForTokenClassification.from_config(
        tiny_config(tokenizer, hidden=16, layers=1, heads=2)
    )
    critic.eval()  # no dropout: the same input reads the same value
    ids = torch.randint(0, 100, (4, 12))
    mask = torch.ones(4, 12)
    before = critic(input_ids=ids).logits[..., 0].detach()
    returns = 3.0 * before - 0.7  # what the readings should have been
    ev = _explained_variance(before, returns, mask)
    a, b = calibrate_head(critic, before, returns, mask)
    after = critic(input_ids=ids).logits[..., 0].detach()
    assert (a, b) == pytest.approx((3.0, -0.7), abs=1e-4)
    assert torch.allclose(after, returns, atol=1e-4)
    assert _explained_variance(after, returns, mask) == pytest.approx(1.0)
    assert ev < 1.0
