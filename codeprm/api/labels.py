"""One labeled sample: a row of the labeler's JSONL export.

Compatible with TRL's stepwise-supervision format (`prompt`, `completions` one entry per
step, `labels` one bool per step), plus codeprm's `line_labels` (one per physical line: +1 / 0 /
-1, 0 for comment and blank lines), the problem, the strategy and the sample's provenance.

A TRL step is one code line together with the neutral (comment, blank) lines just before it,
labelled by that code line: TRL's `PRMTrainer` has no neutral label, so a neutral line as a
step of its own would be trained as a wrong step. Neutral lines after the last code line join
the last step. Joined with "\n", the steps are the program's lines again.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from codeprm.lines import split_lines

Strategy = Literal["binary_search", "mutation", "monte_carlo"]


class LabeledSample(BaseModel):
    prompt: str
    completions: list[str] = Field(
        description="TRL steps: each code line with the neutral lines before it ('\\n'-joined)."
    )
    labels: list[bool] = Field(description="TRL: per step, True where its code line's label > 0.")
    line_labels: list[float] = Field(
        description="Per physical line: +1 good, -1 bad, 0 neutral (comment/blank); soft in "
        "[0, 1] for monte_carlo"
    )
    problem_id: str
    strategy: Strategy
    provenance: dict[str, Any] = Field(default_factory=dict)
    """How the sample was made: model, mutation, completions and executions used, ..."""

    @model_validator(mode="after")
    def _aligned(self) -> LabeledSample:
        if len(self.completions) != len(self.labels):
            raise ValueError("labels must have one entry per step of completions")
        if sum(step.count("\n") + 1 for step in self.completions) != len(self.line_labels):
            raise ValueError("line_labels must have one entry per line of the program")
        return self

    @property
    def lines(self) -> list[str]:
        """The program's physical lines (what `line_labels` label)."""
        return "\n".join(self.completions).split("\n")


def trl_steps(lines: list[str], line_labels: list[float]) -> tuple[list[str], list[bool]]:
    """The program's lines grouped into TRL steps (module docstring), and each step's label."""
    kinds = [line.kind for line in split_lines("".join(text + "\n" for text in lines))]
    steps: list[str] = []
    labels: list[bool] = []
    pending: list[str] = []
    for text, kind, value in zip(lines, kinds, line_labels, strict=True):
        pending.append(text)
        if kind == "code":
            steps.append("\n".join(pending))
            labels.append(value > 0)
            pending = []
    if pending and steps:
        steps[-1] = "\n".join([steps[-1], *pending])
    elif pending:  # no code line at all: one step, labelled like its lines
        steps.append("\n".join(pending))
        labels.append(line_labels[-1] > 0)
    return steps, labels
