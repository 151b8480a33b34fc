"""Length-bucketed steps and micro-batches of PRM training (pure functions)."""

from __future__ import annotations

import random

from codeprm.services.trainer.prm_batches import epoch_steps, split_step


def padding(steps: list[list[int]], lengths: list[int]) -> float:
    padded = sum(max(lengths[i] for i in s) * len(s) for s in steps)
    return 1 - sum(lengths) / padded


def test_every_program_once_per_epoch_in_steps_of_the_global_batch() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(10, 2000) for _ in range(1003)]
    steps = epoch_steps(lengths, group=16, seed=3, epoch=0)
    assert sorted(i for s in steps for i in s) == list(range(1003))
    assert sorted(len(s) for s in steps) == [11] + [16] * 62  # ceil(1003 / 16) steps
    assert steps == epoch_steps(lengths, group=16, seed=3, epoch=0)  # a function of its args
    assert steps != epoch_steps(lengths, group=16, seed=3, epoch=1)


def test_bucketing_cuts_padding_against_a_plain_shuffle() -> None:
    rng = random.Random(2)
    lengths = [rng.choice([50, 400, 1500]) + i % 7 for i in range(640)]
    order = list(range(640))
    random.Random(0).shuffle(order)
    shuffled = [order[k : k + 8] for k in range(0, 640, 8)]
    bucketed = epoch_steps(lengths, group=8, seed=0, epoch=0)
    assert padding(bucketed, lengths) < 0.05 < 0.4 < padding(shuffled, lengths)


def test_a_step_splits_into_parts_by_length_whatever_the_world_size() -> None:
    lengths = [5, 1, 4, 2, 3, 9, 7]
    parts = split_step([0, 1, 2, 3, 4, 5, 6], lengths, 3)
    assert parts == [[1, 3], [4, 2], [0, 6, 5]]  # sorted by length, sizes 2, 2, 3
    assert split_step([0, 1], lengths, 3) == [[], [1], [0]]  # fewer programs than parts
