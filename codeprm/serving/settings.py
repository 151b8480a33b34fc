"""The base class every service's settings derive from.

Each HTTP service has exactly one settings class with its own environment prefix
(`CODEPRM_EXECUTOR_`, `CODEPRM_PRM_`, `CODEPRM_LABELER_`); unknown `CODEPRM_<SERVICE>_*`
variables are ignored by pydantic-settings, unknown init kwargs are errors. The trainer is
configured by a YAML file and command-line options instead (`docs/trainer.md`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["debug", "info", "warning", "error"]


class ServiceSettings(BaseSettings):
    """Fields every HTTP service has. Subclasses set `model_config` with their env prefix."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to bind.")
    log_level: LogLevel = Field("info", description="Minimum level of the JSON log lines.")
    graceful_shutdown_s: float = Field(
        10.0, gt=0, description="How long in-flight requests may finish after SIGTERM."
    )
