"""arq job functions and the worker that runs them.

Jobs may run more than once (a worker killed mid-job is retried), so every job is idempotent:
a unit's result overwrites the previous attempt's. Every unit ends labeled or failed with a
reason, whatever happens to its job:

* a backend that is down, or answers what cannot be read, is retried with backoff; the last
  try records the failure;
* a unit running longer than `job_timeout_s` is stopped and recorded as timed out (arq's own
  timeout, a little longer, only fires if the recording itself hangs);
* a worker that dies leaves its job claimed for at most `lease_s` (the claim is renewed while
  the job runs), then another worker takes it; after `max_tries` tries the unit is recorded
  failed rather than handed to arq, which would drop it;
* whatever still slips through (arq expiring or dropping a job) is found by `RunStore.info`,
  which records such units as lost with arq's reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from arq import Retry
from arq.constants import in_progress_key_prefix
from arq.worker import Worker
from redis.exceptions import RedisError

from codeprm.api.labeler import BackendSpec, LabelRunRequest
from codeprm.client import AsyncExecutorClient, ServiceRejected
from codeprm.datasets import Problem
from codeprm.services.labeler.binary_search import label_by_binary_search
from codeprm.services.labeler.completions import CompletionBackend, open_backend
from codeprm.services.labeler.labeling import Labeled, LabelingError
from codeprm.services.labeler.monte_carlo import label_by_monte_carlo
from codeprm.services.labeler.mutation import label_by_mutation
from codeprm.services.labeler.queue import redis_settings
from codeprm.services.labeler.runs import (
    HEARTBEAT_S,
    RunNotFound,
    RunStore,
    job_deserializer,
    job_serializer,
    unit_key,
)
from codeprm.services.labeler.settings import LabelerSettings

log = logging.getLogger(__name__)

# arq's own job timeout is this much longer than ours, so that a unit that times out is
# still recorded (one Redis write) before arq cancels the job.
RECORDING_GRACE_S = 30


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
    try:
        async with _holding(ctx, settings.lease_s):
            return await _attempt(ctx, store, run_id, unit, problem)
    except RedisError as exc:
        # The outcome could not be recorded: try again once Redis answers (if it does not,
        # arq's own bookkeeping fails too, and the lease hands the job on).
        log.warning("cannot record the unit; retrying", extra={"unit": unit, "error": repr(exc)})
        raise Retry(defer=2) from exc


async def _attempt(
    ctx: dict[str, Any], store: RunStore, run_id: str, unit: str, problem: Problem
) -> int:
    settings: LabelerSettings = ctx["settings"]
    job_try: int = ctx["job_try"]
    try:
        request = await store.request(run_id)
    except RunNotFound:  # deleted, or lost with a Redis that keeps nothing on disk
        log.warning("the run is gone; unit skipped", extra={"run_id": run_id, "unit": unit})
        return 0
    await store.taken(run_id)
    if job_try > settings.max_tries:  # every earlier try ended without a word
        await store.fail(
            run_id,
            unit,
            f"gave up after {job_try - 1} tries: the worker running it stopped (killed, "
            "out of memory, lost Redis) before it finished",
        )
        return 0
    limit = asyncio.timeout(settings.job_timeout_s)
    try:
        async with limit:
            labeled = await _label(ctx, request, problem)
    except (LabelingError, ServiceRejected) as exc:
        await store.fail(run_id, unit, str(exc))
        return 0
    except Exception as exc:
        if limit.expired():
            await store.fail(run_id, unit, f"timed out after {settings.job_timeout_s} s")
            return 0
        # A backend down or overloaded, an answer that cannot be read: maybe transient.
        if job_try >= settings.max_tries:
            await store.fail(run_id, unit, f"gave up after {job_try} tries: {exc!r}")
            return 0
        log.warning(
            "unit failed; retrying",
            extra={"run_id": run_id, "unit": unit, "error": repr(exc), "try": job_try},
        )
        raise Retry(defer=min(2 * job_try, 30)) from exc
    await store.complete(run_id, unit, labeled)
    log.info(
        "unit labeled",
        extra={"run_id": run_id, "unit": unit, "samples": len(labeled.samples), **labeled.stats},
    )
    return len(labeled.samples)


@asynccontextmanager
async def _holding(ctx: dict[str, Any], lease_s: int) -> AsyncIterator[None]:
    """Renews this job's claim (arq's in-progress key) while the body runs. The claim lasts
    `lease_s`, so when this worker dies another takes the job within `lease_s` instead of
    arq's job timeout + 10 s."""
    key = in_progress_key_prefix + ctx["job_id"]

    async def renew() -> None:
        while True:
            try:
                await ctx["redis"].pexpire(key, lease_s * 1000)
            except (RedisError, OSError) as exc:  # Redis away for a moment: try again soon
                log.warning("cannot renew the job's claim", extra={"error": repr(exc)})
            await asyncio.sleep(lease_s / 3)

    renewing = asyncio.create_task(renew())
    try:
        yield
    finally:
        renewing.cancel()


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
    ctx["worker_id"] = f"{socket.gethostname()}:{os.getpid()}"
    ctx["heartbeat"] = asyncio.create_task(_beat(RunStore(ctx["redis"], settings.key_prefix), ctx))


async def _beat(store: RunStore, ctx: dict[str, Any]) -> None:
    """Tells the labeler this worker is alive (`LabelRunInfo.workers`, `/readyz`)."""
    while True:
        try:
            await store.heartbeat(ctx["worker_id"])
        except (RedisError, OSError) as exc:  # Redis away: the polling loop deals with it
            log.warning("cannot send the heartbeat", extra={"error": repr(exc)})
        await asyncio.sleep(HEARTBEAT_S)


async def shutdown(ctx: dict[str, Any]) -> None:
    ctx["heartbeat"].cancel()
    settings: LabelerSettings = ctx["settings"]
    try:
        await RunStore(ctx["redis"], settings.key_prefix).worker_stopped(ctx["worker_id"])
    except (RedisError, OSError):  # counted gone once its beats stop anyway
        pass
    await ctx["executor"].aclose()
    for backend in ctx["backends"].values():
        await backend.aclose()


class _Worker(Worker):
    """arq's worker, which exits at the first Redis error of its polling loop, made to ride
    out a Redis outage of up to `redis_outage_s` (a restart, a failover): it keeps polling
    once a second. The jobs it was running when Redis went away are retaken once their
    lease runs out."""

    redis_outage_s: float = 120.0
    _outage_since: float | None = None

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except (RedisError, OSError) as exc:
            now = time.monotonic()
            self._outage_since = self._outage_since or now
            if now - self._outage_since > self.redis_outage_s:
                raise
            log.warning("Redis unreachable; polling again in 1 s", extra={"error": repr(exc)})
            await asyncio.sleep(1)
        else:
            self._outage_since = None


def build_worker(settings: LabelerSettings, *, burst: bool = False) -> Worker:
    worker = _Worker(
        functions=[ping, label_unit],
        queue_name=settings.queue_name,
        redis_settings=redis_settings(settings),
        burst=burst,
        max_jobs=settings.max_jobs,
        job_timeout=settings.job_timeout_s + RECORDING_GRACE_S,
        # One try more than ours: the try after our last records the failure (label_unit).
        max_tries=settings.max_tries + 1,
        job_completion_wait=settings.job_completion_wait_s,
        # Liveness for probes and `codeprm up`: the key is refreshed this often.
        health_check_interval=10,
        on_startup=startup,
        on_shutdown=shutdown,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
        ctx={"settings": settings},
    )
    # The claim a new job starts with (arq: its timeout + 10 s); label_unit renews it.
    worker.in_progress_timeout_s = settings.lease_s
    worker.redis_outage_s = settings.redis_outage_s
    return worker
