"""Executor wire schemas (docs/design.md, "Executor"). Field names here are fixed there."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RunStatus = Literal[
    "ok", "runtime_error", "timeout", "memory_limit", "output_limit", "sandbox_error"
]
Language = Literal["python"]


class _Request(BaseModel):
    # allow_inf_nan: pydantic would otherwise read the strings "nan" and "inf" as floats.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Limits(_Request):
    timeout_s: float | None = Field(None, gt=0, description="Wall-clock limit (default: server's).")
    memory_mb: int | None = Field(
        None, gt=0, description="Address-space limit (default: server's)."
    )


class RunRequest(Limits):
    code: str = Field(min_length=1)
    language: Language = "python"
    stdin: str | None = None


class RunResponse(BaseModel):
    status: RunStatus
    exit_code: int | None
    stdout: str
    stderr: str
    wall_time_s: float
    cpu_time_s: float
    peak_memory_mb: float
    cached: bool = False


class AssertTests(_Request):
    """HumanEval/MBPP style: test code with asserts, optionally a `check(candidate)`."""

    kind: Literal["assert"]
    code: str = Field(min_length=1)
    entry_point: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class StdioCase(_Request):
    stdin: str = ""
    expected_stdout: str


class StdioTests(_Request):
    """APPS/CodeContests style: the program reads stdin and prints its answer."""

    kind: Literal["stdio"]
    cases: list[StdioCase] = Field(min_length=1)
    compare: Literal["tolerant", "exact"] = Field(
        "tolerant",
        description="tolerant: line by line, whitespace-insensitive, trailing blank lines "
        "ignored; an expected integer token is matched exactly, an expected float (with a '.' "
        "or an exponent) within float_tolerance; exact: byte for byte.",
    )
    float_tolerance: float = Field(
        1e-6, ge=0, description="Absolute or relative; applies only to expected floats."
    )


class CallCase(_Request):
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    expected: Any


class CallTests(_Request):
    """LeetCode style: call `entry_point(*args, **kwargs)` and compare with `expected`."""

    kind: Literal["call"]
    entry_point: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    cases: list[CallCase] = Field(min_length=1)
    float_tolerance: float = Field(
        1e-6, ge=0, description="Absolute or relative; applies only to expected floats."
    )


Tests = Annotated[AssertTests | StdioTests | CallTests, Field(discriminator="kind")]


class EvaluateRequest(Limits):
    code: str = Field(min_length=1)
    language: Language = "python"
    tests: Tests
    stop_on_first_failure: bool = False


class CaseResult(BaseModel):
    passed: bool
    status: RunStatus
    error: str | None = None
    """Why the case failed: the exception, or what differed."""
    stdout: str = ""
    stderr: str = ""
    actual: Any = None
    """stdio: the program's output; call: the returned value."""
    wall_time_s: float = 0.0


class EvaluateResponse(BaseModel):
    passed: bool
    pass_rate: float
    status: RunStatus
    """The first non-ok case status, else "ok"."""
    cases: list[CaseResult]
    wall_time_s: float
    cpu_time_s: float
    peak_memory_mb: float
    cached: bool = False


class BatchRequest(_Request):
    items: list[EvaluateRequest] = Field(min_length=0)


class BatchResponse(BaseModel):
    results: list[EvaluateResponse]


# -- SandboxFusion compatibility (what veRL's sandbox_fusion reward sends and reads) ----------


class SandboxFusionRunRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # their clients send fields we do not use

    code: str = Field(min_length=1)
    language: str = "python"
    compile_timeout: float | None = None
    run_timeout: float | None = None
    memory_limit_MB: int | None = None  # noqa: N815 (their field name)
    stdin: str | None = None
    files: dict[str, str] = Field(default_factory=dict)
    fetch_files: list[str] = Field(default_factory=list)


class SandboxFusionRunResult(BaseModel):
    status: Literal["Finished", "TimeLimitExceeded", "Error"]
    execution_time: float
    cpu_time: float
    return_code: int | None
    stdout: str
    stderr: str


class SandboxFusionRunResponse(BaseModel):
    status: Literal["Success", "Failed", "SandboxError"]
    message: str = ""
    compile_result: None = None
    run_result: SandboxFusionRunResult | None
    executor_pod_name: str | None = None
    files: dict[str, str] = Field(default_factory=dict)
