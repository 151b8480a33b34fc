"""A rollout's per-token rewards (`token_rewards`, the one function the trainer and the plug-ins
call): dense line rewards on each code line's last token of the policy's own tokenizer, the
outcome on the last token."""

from __future__ import annotations

import pytest

from codeprm.api.prm import LineScore
from codeprm.lines import split_lines
from codeprm.tiny import build_tokenizer
from codeprm.token_rewards import DenseReward, token_rewards

RESPONSE = "def f(x):\n    # double it\n    y = x * 2\n\n    return y\n"


def scores(values: list[float | None], code: str = RESPONSE) -> list[LineScore]:
    return [
        LineScore(line=line.index, start=line.start, end=line.end, score=v, kind=line.kind)
        for line, v in zip(split_lines(code), values, strict=True)
    ]


def offsets_of(text: str) -> list[tuple[int, int]]:
    tokenizer = build_tokenizer(vocab_size=1024)
    return [tuple(o) for o in tokenizer(text, return_offsets_mapping=True)["offset_mapping"]]


def placed(text: str, offsets: list[tuple[int, int]], rewards: list[float]) -> dict[str, float]:
    return {text[slice(*offsets[t])]: r for t, r in enumerate(rewards) if r != 0}


def test_reward_is_lambda_score_over_lines_at_each_line_end() -> None:
    offsets = offsets_of(RESPONSE)
    rewards = token_rewards(
        scores([0.9, 0.5, -0.6, None, 0.3]),
        offsets,
        passed=True,
        outcome=0.0,
        dense=DenseReward(lam_pass=2.0, lam_fail=7.0),
    )
    assert len(rewards) == len(offsets)
    # three code lines: T = 3; the comment's score is ignored, the blank line has none
    assert placed(RESPONSE, offsets, rewards) == {
        "):\n": pytest.approx(2.0 * 0.9 / 3),  # Qwen2's regex keeps the newline with "):"
        "2": pytest.approx(2.0 * -0.6 / 3),
        " y": pytest.approx(2.0 * 0.3 / 3),
    }


def test_unscored_lines_get_nothing_but_still_count_in_t() -> None:
    offsets = offsets_of(RESPONSE)
    dense = DenseReward()
    rewards = token_rewards(
        scores([0.9, 0.0, None, None, None]), offsets, passed=True, outcome=0.0, dense=dense
    )
    assert sum(rewards) == pytest.approx(0.9 / 3)
    nothing = token_rewards(scores([None] * 5), offsets, passed=True, outcome=0.0, dense=dense)
    assert nothing == [0.0] * len(offsets)


def test_failing_rollouts_use_lam_fail_and_the_outcome_goes_on_the_last_token() -> None:
    offsets = offsets_of(RESPONSE)
    line_scores = scores([0.9, 0.5, -0.6, None, 0.3])
    dense = DenseReward(lam_pass=2.0, lam_fail=0.5)
    failed = token_rewards(line_scores, offsets, passed=False, outcome=-1.0, dense=dense)
    passed = token_rewards(line_scores, offsets, passed=True, outcome=0.0, dense=dense)
    # the last token is the final newline, after the last line's end: the outcome alone
    assert RESPONSE[slice(*offsets[-1])] == "\n" and failed[-1] == -1.0
    assert failed[:-1] == pytest.approx([r / 4 for r in passed[:-1]])
    assert sum(failed[:-1]) == pytest.approx(0.5 * (0.9 - 0.6 + 0.3) / 3)
    outcome_only = token_rewards(line_scores, offsets, passed=False, outcome=-1.0, dense=None)
    assert outcome_only == [0.0] * (len(offsets) - 1) + [-1.0]
    assert token_rewards(line_scores, [], passed=True, outcome=1.0, dense=dense) == []


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        # clip: min(s - eta, 0) with eta = 0.1
        ("clip", {"):\n": 0.0, "2": (-0.6 - 0.1) / 3, " y": 0.0}),
        # delta: s_m - s_{m+1} over the scored code lines, the last one keeps its score
        ("delta", {"):\n": (0.9 + 0.6) / 3, "2": (-0.6 - 0.3) / 3, " y": 0.3 / 3}),
    ],
)
def test_variants_reshape_the_scores_of_the_code_lines(
    variant: str, expected: dict[str, float]
) -> None:
    offsets = offsets_of(RESPONSE)
    dense = DenseReward(variant=variant, eta=0.1)  # type: ignore[arg-type]
    rewards = token_rewards(
        scores([0.9, 0.5, -0.6, None, 0.3]), offsets, passed=True, outcome=0.0, dense=dense
    )
    got = placed(RESPONSE, offsets, rewards)
    assert got == {k: pytest.approx(v) for k, v in expected.items() if v != 0.0}


def test_scores_of_a_program_inside_a_longer_response_land_at_code_start() -> None:
    """The plug-ins score the program extracted from a chat response: line spans are relative
    to the program, token offsets to the response."""
    prose = "Here it is:\n```python\n"
    response = prose + RESPONSE + "```\n"
    offsets = offsets_of(response)
    dense = DenseReward()
    line_scores = scores([0.9, 0.5, -0.6, None, 0.3])
    inside = token_rewards(
        line_scores, offsets, passed=True, outcome=0.0, dense=dense, code_start=len(prose)
    )
    alone = token_rewards(line_scores, offsets_of(RESPONSE), passed=True, outcome=0.0, dense=dense)
    assert sorted(placed(response, offsets, inside).values()) == pytest.approx(
        sorted(placed(RESPONSE, offsets_of(RESPONSE), alone).values())
    )
    assert sum(inside) == pytest.approx((0.9 - 0.6 + 0.3) / 3)
