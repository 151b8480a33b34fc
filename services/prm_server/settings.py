from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from codeprm.api.prm import Aggregate
from codeprm.serving.settings import ServiceSettings


class PrmSettings(ServiceSettings):
    """PRM server settings, from `CODEPRM_PRM_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="CODEPRM_PRM_", extra="forbid")

    port: int = Field(8101, ge=0, le=65535)
    model: Path | None = Field(None, description="Directory of the PRM checkpoint to serve.")
    device: str = Field(
        "auto", description="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:N'."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="'auto' = bfloat16 on CUDA, float32 on CPU."
    )
    api_key: str | None = Field(
        None,
        validation_alias=AliasChoices("CODEPRM_PRM_API_KEY", "CODEPRM_API_KEY", "api_key"),
        description="When set, scoring endpoints require `Authorization: Bearer <key>`.",
    )
    aggregate: Aggregate = Field("min", description="Default per-program scalar.")
    max_items: int = Field(1024, ge=1, description="Items per request (413 above).")
    max_chars: int = Field(200_000, ge=1, description="Characters per item (413 above).")
    max_tokens: int = Field(4096, ge=8, description="Tokens per item, prompt included (413).")
    token_budget: int | None = Field(
        None,
        ge=64,
        description="Padded tokens per forward pass (batch size x longest item). Default: "
        "32768 on CUDA, where big batches are nearly free, 4096 on CPU, where they are not.",
    )
    max_batch_items: int = Field(256, ge=1, description="Items per forward pass.")
    max_wait_ms: float = Field(
        5.0, ge=0, description="How long the first item of a batch waits for company."
    )
    max_pending: int = Field(8192, ge=1, description="Items waiting before 503 Overloaded.")
