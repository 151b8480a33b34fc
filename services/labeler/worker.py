"""arq job functions and the worker that runs them.

Jobs may run more than once (a worker killed mid-job is retried), so every job is idempotent:
a unit's result overwrites the previous attempt's. A transient failure (executor down or
overloaded) is retried with backoff; the last attempt, or a permanent failure, is recorded
with its reason, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from arq import Retry
from arq.worker import Worker

from contracts.clients import AsyncExecutorClient, ServiceRejected, ServiceUnavailable
from contracts.datasets import Problem
from contracts.labeler import BackendSpec, LabelRunRequest
from services.labeler.binary_search import label_by_binary_search
from services.labeler.completions import CompletionBackend, open_backend
from services.labeler.labeling import Labeled, LabelingError
from services.labeler.monte_carlo import label_by_monte_carlo
from services.labeler.mutation import label_by_mutation
from services.labeler.queue import redis_settings
from services.labeler.runs import RunStore, job_deserializer, job_serializer, unit_key
from services.labeler.settings import LabelerSettings

log = logging.getLogger(__name__)


async def ping(ctx: dict[str, Any]) -> dict[str, Any]:
    """Round-trip through the queue: proves a worker is consuming jobs (used by `codeprm up`)."""
    return {"worker": f"{socket.gethostname()}:{os.getpid()}", "job_try": ctx.get("job_try")}


async def label_unit(
    ctx: dict[str, Any], run_id: str, index: int, problem_json: dict[str, Any]
) -> int:
    """Label one problem of a run; returns the number of samples."""
    settings: LabelerSettings = ctx["settings"]
    store = RunStore(ctx["redis"], settings.key_prefix)
    problem = Problem.model_validate(problem_json)
    unit = unit_key(index, problem.problem_id)
    request = await store.request(run_id)
    try:
        labeled = await _label(ctx, request, problem)
    except (LabelingError, ServiceRejected) as exc:
        await store.fail(run_id, unit, str(exc))
        return 0
    except ServiceUnavailable as exc:
        if ctx["job_try"] >= settings.max_tries:
            await store.fail(run_id, unit, f"gave up after {ctx['job_try']} tries: {exc}")
            return 0
        log.warning(
            "a backend is unavailable; retrying",
            extra={"run_id": run_id, "unit": unit, "error": str(exc)},
        )
        raise Retry(defer=min(2 * ctx["job_try"], 30)) from exc
    await store.complete(run_id, unit, labeled)
    log.info(
        "unit labeled",
        extra={"run_id": run_id, "unit": unit, "samples": len(labeled.samples), **labeled.stats},
    )
    return len(labeled.samples)


async def _label(ctx: dict[str, Any], request: LabelRunRequest, problem: Problem) -> Labeled:
    settings: LabelerSettings = ctx["settings"]
    executor: AsyncExecutorClient = ctx["executor"]
    # request.backends() says which models this run calls: none or a teacher for mutation,
    # the policy for the search strategies (LabelRunRequest validates that it is there).
    backends = [await _backend(ctx, spec) for spec in request.backends()]
    if request.strategy == "mutation":
        teacher = backends[0] if backends else None
        return await label_by_mutation(
            problem, executor, request.mutation, teacher, settings.prompts_dir
        )
    (policy,) = backends
    if request.strategy == "binary_search":
        return await label_by_binary_search(problem, policy, executor, request.search)
    return await label_by_monte_carlo(problem, policy, executor, request.search)


async def _backend(ctx: dict[str, Any], spec: BackendSpec) -> CompletionBackend:
    """One backend per spec per worker: connection pools and loaded models are reused."""
    settings: LabelerSettings = ctx["settings"]
    backends: dict[str, CompletionBackend] = ctx["backends"]
    key = spec.model_dump_json()
    if key not in backends:
        async with ctx["backends_lock"]:
            if key not in backends:
                # Loading a local model blocks for seconds: keep the event loop (and the
                # other jobs' HTTP traffic) running meanwhile.
                backends[key] = await asyncio.to_thread(
                    open_backend, spec, api_key=settings.openai_api_key, device=settings.hf_device
                )
    return backends[key]


async def startup(ctx: dict[str, Any]) -> None:
    settings: LabelerSettings = ctx["settings"]
    ctx["executor"] = AsyncExecutorClient(
        settings.executor_url, max_connections=settings.executor_concurrency, retries=2
    )
    ctx["backends"] = {}
    ctx["backends_lock"] = asyncio.Lock()


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["executor"].aclose()
    for backend in ctx["backends"].values():
        await backend.aclose()


def build_worker(settings: LabelerSettings, *, burst: bool = False) -> Worker:
    return Worker(
        functions=[ping, label_unit],
        queue_name=settings.queue_name,
        redis_settings=redis_settings(settings),
        burst=burst,
        max_jobs=settings.max_jobs,
        job_timeout=settings.job_timeout_s,
        max_tries=settings.max_tries + 1,  # our own last try records the failure itself
        job_completion_wait=settings.job_completion_wait_s,
        # Liveness for probes and `codeprm up`: the key is refreshed this often.
        health_check_interval=10,
        on_startup=startup,
        on_shutdown=shutdown,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
        ctx={"settings": settings},
    )
