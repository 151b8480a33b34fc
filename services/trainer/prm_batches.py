"""Which programs each PRM training step and micro-batch holds: shuffled, bucketed by length.

A micro-batch is padded to its longest program, so mixing a 100-token program with a
2,000-token one wastes 95% of the first row. The epoch's order is therefore shuffled, sorted
by length within windows of `window` steps, cut into steps, and the steps shuffled again:
each step holds programs of similar length, and which step sees which programs stays random.
Everything is a pure function of (lengths, seed, epoch), so resuming at any step is exact, and
of the global batch only, so it does not depend on how many processes share a step.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

WINDOW_STEPS = 32
"""Steps' worth of programs sorted together: wide enough for little padding, narrow enough
that an epoch's first steps are not all short programs."""


def epoch_steps(
    lengths: Sequence[int], group: int, seed: int, epoch: int, window: int = WINDOW_STEPS
) -> list[list[int]]:
    """The epoch's steps, each a list of `group` program indices (the last may be shorter)."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = group * window
    bucketed: list[int] = []
    for start in range(0, len(order), span):
        bucketed += sorted(order[start : start + span], key=lambda i: lengths[i])
    steps = [bucketed[start : start + group] for start in range(0, len(bucketed), group)]
    rng.shuffle(steps)
    return steps


def split_step(step: Sequence[int], lengths: Sequence[int], parts: int) -> list[list[int]]:
    """A step's programs sorted by length and cut into `parts` runs of near-equal size
    (sizes differ by at most one; a run is empty only when the step has fewer programs than
    `parts`). Part k goes to process k % world size as its (k // world size)-th micro-batch,
    so the parts, and the numbers they produce, are the same for any split of
    `parts` = processes x accumulation steps."""
    ordered = sorted(step, key=lambda i: lengths[i])
    n = len(ordered)
    return [ordered[k * n // parts : (k + 1) * n // parts] for k in range(parts)]
