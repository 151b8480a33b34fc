"""Labeler wire schemas: submitting a labeling run and following it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class BackendSpec(BaseModel):
    """A completion model: an OpenAI-compatible server (vLLM, SGLang, TGI, ...) or a local
    Hugging Face checkpoint on the worker's disk. API keys come from the worker's settings,
    never from the request (requests are stored in Redis)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["openai", "hf"]
    model: str = Field(
        min_length=1, description="openai: the served model name; hf: a local checkpoint path."
    )
    url: str | None = Field(
        None, description="openai: base URL including /v1, e.g. http://vllm:8000/v1."
    )
    api: Literal["completions", "chat"] = Field(
        "completions",
        description="openai: continue prefixes with /v1/completions (base models) or with "
        "/v1/chat/completions and a prefilled assistant message (vLLM's "
        "continue_final_message).",
    )
    max_concurrency: int = Field(
        16,
        ge=1,
        le=1024,
        description="openai: requests in flight; hf: calls served in one `generate` batch.",
    )
    max_n_per_request: int = Field(
        16, ge=1, description="Larger `n` is split over several requests (TGI serves n=1)."
    )
    timeout_s: float = Field(120.0, gt=0, le=3600)
    retries: int = Field(3, ge=0, le=10, description="On 429/5xx and connection errors.")

    @model_validator(mode="after")
    def _url_for_openai(self) -> BackendSpec:
        if self.kind == "openai" and not self.url:
            raise ValueError("an openai backend needs `url` (its base URL, ending in /v1)")
        return self


class SamplingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(512, ge=1, le=32768)
    temperature: float = Field(0.8, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    stop: list[str] = Field(
        default_factory=list, max_length=8, description="Stop sequences for continuations."
    )


class MutationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mutator: Literal["ast", "teacher"] = Field(
        "ast", description="The built-in AST mutator (offline) or a teacher LLM."
    )
    variants_per_line: int = Field(4, ge=1, le=32, description="Bug variants of each code line.")
    rewrites_per_line: int = Field(
        1, ge=0, le=8, description="teacher: behaviour-preserving rewrites of each code line."
    )
    teacher: BackendSpec | None = Field(None, description="Required for mutator='teacher'.")
    sampling: SamplingOptions = Field(
        default_factory=lambda: SamplingOptions(max_tokens=256, temperature=0.7)
    )
    timeout_s: float = Field(
        10.0, gt=0, le=60, description="Per execution of the solution; the variants' ceiling."
    )
    variant_timeout_factor: float = Field(
        10.0,
        ge=0,
        description="A variant may run this many times as long as the solution did (at least "
        "1 s, at most timeout_s); slower ones are failing variants. Mutants that loop "
        "forever are common, and waiting timeout_s for each dominates labeling time. 0: "
        "every variant gets timeout_s.",
    )

    @model_validator(mode="after")
    def _teacher_named(self) -> MutationOptions:
        if self.mutator == "teacher" and self.teacher is None:
            raise ValueError("mutator='teacher' needs a `teacher` backend")
        return self


class SearchOptions(BaseModel):
    """binary_search and monte_carlo: continuations of line prefixes sampled from the policy."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(8, ge=1, le=256, description="Continuations sampled per prefix.")
    samples_per_problem: int = Field(
        4,
        ge=1,
        le=256,
        description="Programs sampled from the policy per problem, when the dataset row "
        "carries no `candidates` of its own.",
    )
    verify_probes: int = Field(
        0,
        ge=0,
        le=64,
        description="binary_search: extra prefixes probed off the search path to detect "
        "non-monotone labels (counted, logged, kept in provenance).",
    )
    revised_only: bool = Field(
        False,
        description="binary_search: keep only failing programs with a recoverable prefix "
        "(labels with a +1 -> -1 transition), PSGPO's best PRM data.",
    )
    sampling: SamplingOptions = Field(default_factory=SamplingOptions)
    timeout_s: float = Field(10.0, gt=0, le=60, description="Per execution.")


Strategy = Literal["mutation", "binary_search", "monte_carlo"]


class LabelRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: Strategy
    dataset: str = Field(min_length=1, description="'humaneval' or a JSONL path on the server.")
    limit: int | None = Field(None, ge=1, description="Label only the first N problems.")
    mutation: MutationOptions = Field(default_factory=MutationOptions)
    search: SearchOptions = Field(default_factory=SearchOptions)
    policy: BackendSpec | None = Field(
        None, description="The policy whose continuations judge prefixes (search strategies)."
    )

    def backends(self) -> list[BackendSpec]:
        """The completion backends this run calls."""
        if self.strategy != "mutation":
            return [self.policy] if self.policy else []
        teacher = self.mutation.teacher
        return [teacher] if teacher and self.mutation.mutator == "teacher" else []

    @model_validator(mode="after")
    def _policy_named(self) -> LabelRunRequest:
        if self.strategy != "mutation" and self.policy is None:
            raise ValueError(f"strategy {self.strategy!r} needs a `policy` backend")
        return self


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
    completions: int = 0
    created_at: float
    finished: bool
    failures: dict[str, str] = Field(default_factory=dict)
    """Up to 20 failed units: problem id -> reason."""
    workers: int = 0
    """Labeler workers of this deployment alive now (each beats every few seconds)."""
    warning: str | None = None
    """Why an unfinished run is not moving, when it looks stalled (no worker running...)."""
