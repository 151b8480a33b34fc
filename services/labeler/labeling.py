"""What every labeling strategy returns, and the helpers they share."""

from __future__ import annotations

from dataclasses import dataclass, field

from codeprm.api.labels import LabeledSample, Strategy, trl_steps
from codeprm.datasets import Problem
from codeprm.lines import Line


class LabelingError(RuntimeError):
    """This problem cannot be labeled by this strategy (recorded with the reason)."""


@dataclass
class Labeled:
    samples: list[LabeledSample]
    executions: int
    completions: int = 0
    stats: dict[str, int] = field(default_factory=dict)


def make_sample(
    problem: Problem,
    lines: list[str],
    labels: list[float],
    strategy: Strategy,
    provenance: dict[str, object],
) -> LabeledSample:
    steps, step_labels = trl_steps(lines, labels)
    return LabeledSample(
        prompt=problem.prompt,
        completions=steps,
        labels=step_labels,
        line_labels=labels,
        problem_id=problem.problem_id,
        strategy=strategy,
        provenance=provenance,
    )


def code_or_neutral(line: Line, value: float) -> float:
    """`value` for a code line; 0 for comment and blank lines, which are never judged."""
    return value if line.kind == "code" else 0.0
