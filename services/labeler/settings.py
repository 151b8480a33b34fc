from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from codeprm.serving.settings import ServiceSettings


class LabelerSettings(ServiceSettings):
    """Labeler API and worker settings, from `CODEPRM_LABELER_*` environment variables.

    The Redis URL also honours the conventional `REDIS_URL`.
    """

    model_config = SettingsConfigDict(env_prefix="CODEPRM_LABELER_", extra="forbid")

    port: int = Field(8102, ge=0, le=65535)
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("CODEPRM_LABELER_REDIS_URL", "REDIS_URL", "redis_url"),
        description="Redis holding the job queue and the runs' state.",
    )
    queue_name: str = Field("codeprm:labeler", description="arq queue name (one per deployment).")
    executor_url: str = Field("http://127.0.0.1:8100", description="Executor base URL.")
    key_prefix: str = Field("codeprm:labeler", description="Prefix of every Redis key of runs.")
    export_ttl_s: int = Field(7 * 24 * 3600, ge=60, description="Run data kept after export.")
    executor_concurrency: int = Field(64, ge=1, description="Requests in flight to the executor.")
    max_jobs: int = Field(8, ge=1, description="Jobs one worker runs concurrently.")
    job_timeout_s: int = Field(
        600,
        ge=1,
        description="A unit labeling longer is stopped and recorded failed (timed out).",
    )
    lease_s: int = Field(
        15,
        ge=2,
        description="A worker holds its running jobs for this long and renews the hold every "
        "lease_s / 3 s: the jobs of a worker that died are picked up again after at most "
        "lease_s.",
    )
    max_tries: int = Field(
        5,
        ge=1,
        description="Attempts per unit (a backend down, a worker that died) before it is "
        "recorded failed.",
    )
    redis_outage_s: int = Field(
        120,
        ge=0,
        description="How long a worker waits for its Redis to come back before it exits "
        "(its supervisor then restarts it).",
    )
    job_completion_wait_s: int = Field(
        25,
        ge=0,
        description="On SIGTERM, how long running jobs may finish (match the pod's "
        "terminationGracePeriodSeconds minus a margin).",
    )
    openai_api_key: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "CODEPRM_LABELER_OPENAI_API_KEY", "OPENAI_API_KEY", "openai_api_key"
        ),
        description="Bearer token for OpenAI-compatible policy/teacher backends.",
    )
    prompts_dir: Path | None = Field(
        None, description="Directory with the teacher prompts bug.md and rewrite.md."
    )
    hf_device: str = Field("cpu", description="Device for local Hugging Face backends.")
    stall_warning_s: float = Field(
        30.0,
        ge=0,
        description="An unfinished run none of whose jobs a worker has taken for this long "
        "says why in its status (no worker running, or all busy with earlier runs).",
    )
