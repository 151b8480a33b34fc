"""PRM server wire schemas (`/v1/score`, OpenRLHF's `/get_reward`) and the checkpoint's metadata.

Field names follow docs/design.md; they are relied on by external tools.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from codeprm.lines import LineKind

Aggregate = Literal["min", "mean", "last", "prod"]
METADATA_FILE = "codeprm_prm.json"


class PrmMetadata(BaseModel):
    """`codeprm_prm.json` next to the checkpoint: how its scores are to be read."""

    model_config = ConfigDict(extra="ignore")

    format_version: int = 1
    label_scheme: Literal["pm1_mse", "binary_bce", "trl_two_class"] = "pm1_mse"
    """pm1_mse: one regression output trained on +1/-1 (score in about [-1, 1]);
    binary_bce: one logit trained on 0/1 (score = sigmoid); trl_two_class: TRL's PRMTrainer,
    two labels (score = probability of the positive one)."""
    prompt_template: str = "{prompt}"
    """The text before the code: `{prompt}` is the item's prompt."""
    line_convention: str = "physical lines; comment-only and blank lines are neutral"
    max_tokens: int = 4096
    base_model: str | None = None


class ScoreItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = ""
    code: str


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ScoreItem] = Field(min_length=1)
    aggregate: Aggregate | None = Field(None, description="Default: the server's setting.")


class LineScore(BaseModel):
    line: int
    start: int
    end: int
    score: float | None
    """None when the line has no token (empty line, or past truncation)."""
    kind: LineKind


class ScoreResult(BaseModel):
    line_scores: list[LineScore]
    aggregate: float | None
    """Over code lines with a score; None when there is none."""
    num_tokens: int


class ScoreResponse(BaseModel):
    model: str
    results: list[ScoreResult]


class GetRewardRequest(BaseModel):
    """OpenRLHF's remote reward request: `query` is prompt + response, one per sample."""

    model_config = ConfigDict(extra="allow")

    query: list[str] = Field(default_factory=list)
    prompts: list[str] = Field(default_factory=list)
    labels: list[Any] = Field(default_factory=list)


class GetRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]
