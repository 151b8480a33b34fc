"""Dense rewards land on each code line's last token of the policy's own tokenizer."""

from __future__ import annotations

import pytest

from codeprm.tiny import build_tokenizer
from contracts.dense import dense_rewards
from contracts.lines import split_lines
from contracts.prm import LineScore

RESPONSE = "def f(x):\n    # double it\n    y = x * 2\n\n    return y\n"


def scores(values: list[float | None]) -> list[LineScore]:
    return [
        LineScore(line=line.index, start=line.start, end=line.end, score=v, kind=line.kind)
        for line, v in zip(split_lines(RESPONSE), values, strict=True)
    ]


def test_reward_is_lambda_score_over_lines_at_each_line_end() -> None:
    tokenizer = build_tokenizer(vocab_size=1024)
    offsets = tokenizer(RESPONSE, return_offsets_mapping=True)["offset_mapping"]
    rewards = dense_rewards(scores([0.9, 0.5, -0.6, None, 0.3]), offsets, lam=2.0)
    assert len(rewards) == len(offsets)
    placed = {RESPONSE[slice(*offsets[t])]: r for t, r in enumerate(rewards) if r != 0}
    # three code lines: T = 3; the comment's score is ignored, the blank line has none
    assert placed == {
        "):\n": pytest.approx(2.0 * 0.9 / 3),  # Qwen2's regex keeps the newline with "):"
        "2": pytest.approx(2.0 * -0.6 / 3),
        " y": pytest.approx(2.0 * 0.3 / 3),
    }


def test_unscored_lines_get_nothing_but_still_count_in_t() -> None:
    tokenizer = build_tokenizer(vocab_size=1024)
    offsets = tokenizer(RESPONSE, return_offsets_mapping=True)["offset_mapping"]
    rewards = dense_rewards(scores([0.9, 0.0, None, None, None]), offsets, lam=1.0)
    assert sum(rewards) == pytest.approx(0.9 / 3)
    assert dense_rewards(scores([None] * 5), offsets, lam=1.0) == [0.0] * len(offsets)
