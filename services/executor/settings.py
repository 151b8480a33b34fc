from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from codeprm.serving.settings import ServiceSettings


def _default_workers() -> int:
    # Two per CPU: a worker waits briefly between hand-offs to its sandboxes, and with judges
    # pinned (`pin_judges`) each CPU then has another judged execution to run meanwhile.
    return 2 * len(os.sched_getaffinity(0))


class ExecutorSettings(ServiceSettings):
    """Executor settings, from `CODEPRM_EXECUTOR_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="CODEPRM_EXECUTOR_", extra="forbid")

    port: int = Field(8100, ge=0, le=65535)
    workers: int = Field(
        default_factory=_default_workers,
        ge=1,
        le=512,
        description="Sandbox worker processes (concurrent executions).",
    )
    pin_judges: bool = Field(
        True,
        description="Pin each worker's judge to one of the service's CPUs (round-robin); a "
        "judged candidate moves to its judge's CPU, so that the two hand calls to each other "
        "on one core instead of waking one another across cores.",
    )
    max_queue: int = Field(4096, ge=1, description="Executions waiting for a worker before 503.")
    default_timeout_s: float = Field(10.0, gt=0)
    max_timeout_s: float = Field(60.0, gt=0)
    default_memory_mb: int = Field(512, ge=32)
    min_memory_mb: int = Field(64, ge=32)
    max_memory_mb: int = Field(4096, ge=32)
    output_limit_bytes: int = Field(1 << 20, ge=1024, description="Per stream (stdout, stderr).")
    max_code_bytes: int = Field(1 << 20, ge=1)
    max_request_bytes: int = Field(64 << 20, ge=1024)
    max_batch_items: int = Field(4096, ge=1)
    max_cases: int = Field(2000, ge=1)
    nproc: int = Field(64, ge=4, description="Processes + threads per execution.")
    fsize_mb: int = Field(16, ge=1, description="Largest file an execution may write.")
    nofile: int = Field(256, ge=16)
    scratch_mb: int = Field(64, ge=1, description="Size of each execution's /tmp.")
    extra_paths: list[str] = Field(
        default_factory=list,
        description="Host directories made visible read-only inside sandboxes (e.g. a "
        "site-packages with numpy).",
    )
    allow_weak_isolation: bool = Field(
        False,
        description="Run without namespaces where the platform forbids them (rlimits "
        "and process groups only). Unsafe for hostile code; reported in logs and /readyz.",
    )
    redis_url: str | None = Field(None, description="Enables the verdict cache.")
    cache_ttl_s: int = Field(7 * 24 * 3600, ge=1)
    cache_prefix: str = Field("codeprm:executor:verdict", description="Redis key prefix.")
    self_test: bool = Field(True, description="Prove isolation at start-up before readiness.")
