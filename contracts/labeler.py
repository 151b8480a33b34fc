"""Labeler wire schemas: submitting a labeling run and following it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MutationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variants_per_line: int = Field(4, ge=1, le=32)
    timeout_s: float = Field(10.0, gt=0, le=60)


class LabelRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: Literal["mutation"] = Field(
        description="Labeling strategy (binary_search and monte_carlo are not built yet)."
    )
    dataset: str = Field(min_length=1, description="'humaneval' or a JSONL path on the server.")
    limit: int | None = Field(None, ge=1, description="Label only the first N problems.")
    mutation: MutationOptions = Field(default_factory=MutationOptions)


class LabelRunInfo(BaseModel):
    run_id: str
    strategy: str
    dataset: str
    total: int
    done: int
    failed: int
    remaining: int
    samples: int
    executions: int
    created_at: float
    finished: bool
    failures: dict[str, str] = Field(default_factory=dict)
    """Up to 20 failed units: problem id -> reason."""
