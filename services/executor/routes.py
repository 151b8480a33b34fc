"""Executor HTTP routes: the codeprm API (/v1) and the SandboxFusion-compatible one."""

from __future__ import annotations

import asyncio
import socket
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from codeprm.api.executor import (
    BatchRequest,
    BatchResponse,
    EvaluateRequest,
    EvaluateResponse,
    RunRequest,
    RunResponse,
    SandboxFusionRunRequest,
    SandboxFusionRunResponse,
    SandboxFusionRunResult,
)
from codeprm.services.executor.evaluation import Executor
from codeprm.serving.errors import BadInput, NotReady, PayloadTooLarge

router = APIRouter()


# Dependencies are async: FastAPI runs plain `def` ones in a thread pool, a thread hand-off
# per request for a few attribute lookups.
async def get_executor(request: Request) -> Executor:
    executor: Executor | None = getattr(request.app.state, "executor", None)
    if executor is None or not request.app.state.ready:
        raise NotReady("the sandbox is not ready yet", retry_after_s=2)
    if (reason := executor.pool.health()) is not None:
        raise NotReady(reason, retry_after_s=2)
    return executor


async def check_size(request: Request) -> None:
    limit = request.app.state.settings.max_request_bytes
    length = request.headers.get("content-length")
    if length is not None and int(length) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")


ExecutorDep = Annotated[Executor, Depends(get_executor)]
SizeChecked = [Depends(check_size)]


@router.post("/v1/run", response_model=RunResponse, dependencies=SizeChecked)
async def run(body: RunRequest, executor: ExecutorDep) -> RunResponse:
    """Run a program once, with optional stdin."""
    return await executor.run(body)


@router.post("/v1/evaluate", response_model=EvaluateResponse, dependencies=SizeChecked)
async def evaluate(body: EvaluateRequest, executor: ExecutorDep) -> EvaluateResponse:
    """Run a program against unit tests (assert, stdio or call) and return the verdict."""
    return await executor.evaluate(body)


@router.post("/v1/evaluate/batch", response_model=BatchResponse, dependencies=SizeChecked)
async def evaluate_batch(body: BatchRequest, executor: ExecutorDep) -> BatchResponse:
    """Evaluate many programs concurrently; results come back in request order."""
    if len(body.items) > executor.settings.max_batch_items:
        raise BadInput(f"at most {executor.settings.max_batch_items} items per batch")
    for index, item in enumerate(body.items):  # a request error is the caller's: say where
        try:
            executor.check(item)
        except (BadInput, PayloadTooLarge) as exc:
            raise type(exc)(f"items[{index}]: {exc.detail}") from None
    # From here on each item gets its own verdict (`Executor.evaluate` answers even its own
    # failures with a result); only a full queue (503, retried by clients) fails them all.
    results = await asyncio.gather(*(executor.evaluate(item) for item in body.items))
    return BatchResponse(results=list(results))


@router.get("/v1/ping")
async def ping() -> str:
    """SandboxFusion's liveness probe."""
    return "pong"


_SF_RUN_STATUS = {
    "ok": "Finished",
    "runtime_error": "Finished",
    "timeout": "TimeLimitExceeded",
    "memory_limit": "Error",
    "output_limit": "Error",
    "sandbox_error": "Error",
}


@router.post("/run_code", response_model=SandboxFusionRunResponse, dependencies=SizeChecked)
async def run_code(
    body: SandboxFusionRunRequest, executor: ExecutorDep
) -> SandboxFusionRunResponse:
    """SandboxFusion's /run_code, so veRL's `sandbox_fusion.url` can point here unchanged."""
    if body.language not in ("python", "python3"):
        raise BadInput(f"language {body.language!r} is not supported (python only)")
    if body.files or body.fetch_files:
        raise BadInput("files and fetch_files are not supported")
    memory = body.memory_limit_MB if body.memory_limit_MB and body.memory_limit_MB > 0 else None
    try:
        request = RunRequest(
            code=body.code, stdin=body.stdin, timeout_s=body.run_timeout, memory_mb=memory
        )
    except ValidationError as exc:  # their fields are looser than ours (run_timeout <= 0)
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        raise BadInput(f"not runnable here: {problems}") from None
    result = await executor.run(request)
    status = {"ok": "Success", "sandbox_error": "SandboxError"}.get(result.status, "Failed")
    return SandboxFusionRunResponse(
        status=status,
        message="" if result.status == "ok" else result.status,
        run_result=SandboxFusionRunResult(
            status=_SF_RUN_STATUS[result.status],
            execution_time=result.wall_time_s,
            cpu_time=result.cpu_time_s,
            return_code=result.exit_code,
            stdout=result.stdout,
            stderr=result.stderr,
        ),
        executor_pod_name=socket.gethostname(),
    )
