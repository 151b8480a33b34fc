from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from contracts.settings import ServiceSettings


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
