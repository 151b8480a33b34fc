"""One labeled sample: a row of the labeler's JSONL export.

Compatible with TRL's stepwise-supervision format (`prompt`, `completions` one entry per
line, `labels` one bool per line), plus codeprm's `line_labels` (+1 / 0 / -1, 0 for comment
and blank lines), the problem, the strategy and the sample's provenance.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

Strategy = Literal["binary_search", "mutation", "monte_carlo"]


class LabeledSample(BaseModel):
    prompt: str
    completions: list[str] = Field(description="The program, one entry per line.")
    labels: list[bool] = Field(description="TRL: True where line_labels > 0.")
    line_labels: list[float] = Field(
        description="+1 good, -1 bad, 0 neutral (comment/blank); soft in [0, 1] for monte_carlo"
    )
    problem_id: str
    strategy: Strategy
    provenance: dict[str, Any] = Field(default_factory=dict)
    """How the sample was made: model, mutation, completions and executions used, ..."""

    @model_validator(mode="after")
    def _aligned(self) -> LabeledSample:
        if not len(self.completions) == len(self.labels) == len(self.line_labels):
            raise ValueError("completions, labels and line_labels must have one entry per line")
        return self
