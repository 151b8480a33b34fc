"""Labeling runs in Redis: submission, per-unit results, progress and export.

Keys, all under `<prefix>:run:<run_id>`:
    (hash)          the run's request and size
    :done (hash)    unit -> its samples as JSON; written once per unit, overwritten by a
                    retry, so every unit appears exactly once however often its job ran
    :failed (hash)  unit -> reason, for units that could not be labeled after retries
    :stats (hash)   unit -> "samples executions completions"
    :units (list)   every unit, in dataset order (its index is its arq job's suffix)
A unit is `<index:08d>:<problem_id>`, so exports come out in dataset order. The keys have no
expiry until the run is exported; then they expire after `export_ttl_s`.

Besides the runs, `<prefix>:runs` (sorted set: run id by creation time) lists them, and
`<prefix>:workers` (hash: worker id -> last heartbeat) says which workers are alive, so that
a run nobody works on says so instead of sitting at 0/N.

Every unit is accounted for: its worker records it done or failed, and `info` records as
failed ("lost") any unit whose arq job is gone without either, with arq's reason (a job
cancelled by arq's timeout, dropped after too many tries, expired in the queue).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from typing import Any, TypeVar

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix

from codeprm.api.labeler import LabelRunInfo, LabelRunRequest
from codeprm.datasets import load_problems
from codeprm.services.labeler.completions import check_reachable
from codeprm.services.labeler.labeling import Labeled

T = TypeVar("T")
# A queued job's definition expires after this long (arq's default, one day, would drop the
# tail of a long run queued behind too few workers).
JOB_EXPIRY = timedelta(days=30)
# Workers beat every HEARTBEAT_S; one silent for WORKER_GONE_S is counted gone (a few beats
# missed, so a busy event loop is not mistaken for a dead worker).
HEARTBEAT_S = 5.0
WORKER_GONE_S = 20.0
# A run that no worker has touched for this long says so (`LabelRunInfo.warning`).
STALL_WARNING_S = 30.0


async def resolved(value: Awaitable[T] | T) -> T:
    """redis-py types its methods `Awaitable[T] | T` (one stub for both clients); on the
    asyncio client they always return awaitables."""
    return await value  # type: ignore[misc,no-any-return]


class RunNotFound(KeyError):
    pass


class RunUnfinished(ValueError):
    """An export of a run with units neither labeled nor failed, without `partial`."""

    def __init__(self, info: LabelRunInfo) -> None:
        super().__init__(
            f"run {info.run_id} is not finished: {info.remaining} of {info.total} units are "
            f"still queued or running ({info.done} labeled, {info.failed} failed); wait for "
            "it (`codeprm label status`), or export what there is with --partial"
        )
        self.info = info


def unit_key(index: int, problem_id: str) -> str:
    return f"{index:08d}:{problem_id}"


class RunStore:
    def __init__(
        self, redis: ArqRedis, prefix: str, stall_warning_s: float = STALL_WARNING_S
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.stall_warning_s = stall_warning_s

    def key(self, run_id: str, part: str = "") -> str:
        return f"{self.prefix}:run:{run_id}{part}"

    async def submit(
        self, request: LabelRunRequest, queue_name: str, api_key: str | None = None
    ) -> LabelRunInfo:
        """Raises DatasetError or BackendUnreachable before anything is queued."""
        problems = load_problems(request.dataset)[: request.limit]
        for spec in request.backends():
            await check_reachable(spec, api_key)
        run_id = uuid.uuid4().hex[:12]
        created_at = time.time()
        await resolved(
            self.redis.hset(
                self.key(run_id),
                mapping={
                    "request": request.model_dump_json(),
                    "total": len(problems),
                    "created_at": created_at,
                },
            )
        )
        await resolved(self.redis.zadd(f"{self.prefix}:runs", {run_id: created_at}))
        units = [unit_key(i, p.problem_id) for i, p in enumerate(problems)]
        if units:
            await resolved(self.redis.rpush(self.key(run_id, ":units"), *units))
        for index, problem in enumerate(problems):
            await self.redis.enqueue_job(
                "label_unit",
                run_id,
                index,
                problem.model_dump(mode="json"),
                _job_id=self.job_id(run_id, index),
                _queue_name=queue_name,
                _expires=JOB_EXPIRY,
            )
        # From here on, a unit without a job is lost (before, it may not be queued yet).
        await resolved(self.redis.hset(self.key(run_id), "queued", "1"))
        return await self.info(run_id)

    def job_id(self, run_id: str, index: int) -> str:
        return f"{self.prefix}:{run_id}:{index}"

    async def request(self, run_id: str) -> LabelRunRequest:
        raw = await resolved(self.redis.hget(self.key(run_id), "request"))
        if raw is None:
            raise RunNotFound(run_id)
        return LabelRunRequest.model_validate_json(raw)

    async def taken(self, run_id: str) -> None:
        """A worker started on one of the run's units (how `info` tells a stalled run)."""
        await resolved(self.redis.hset(self.key(run_id), "taken_at", str(time.time())))

    async def complete(self, run_id: str, unit: str, labeled: Labeled) -> None:
        payload = json.dumps([s.model_dump(mode="json") for s in labeled.samples])
        counts = f"{len(labeled.samples)} {labeled.executions} {labeled.completions}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key(run_id, ":done"), unit, payload)
            pipe.hset(self.key(run_id, ":stats"), unit, counts)
            pipe.hdel(self.key(run_id, ":failed"), unit)
            await pipe.execute()

    async def fail(self, run_id: str, unit: str, reason: str) -> None:
        """Records the unit failed, unless another run of its job labeled it already (a job
        whose lease ran out while its worker was slow may run twice)."""
        if await resolved(self.redis.hexists(self.key(run_id, ":done"), unit)):
            return
        await resolved(self.redis.hset(self.key(run_id, ":failed"), unit, reason[:2000]))

    async def account_for_lost(self, run_id: str) -> int:
        """Records as failed every unit whose job is gone without a result; returns how many.

        The jobs are looked at *before* the results: a worker records a unit before arq
        deletes its job, so a job seen gone and a result then seen missing is truly lost."""
        units = [
            u.decode() for u in await resolved(self.redis.lrange(self.key(run_id, ":units"), 0, -1))
        ]
        async with self.redis.pipeline(transaction=False) as pipe:
            for index in range(len(units)):
                pipe.exists(job_key_prefix + self.job_id(run_id, index))
            queued = await pipe.execute()
        gone = [i for i, exists in enumerate(queued) if not exists]
        if not gone:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in gone:
                pipe.hexists(self.key(run_id, ":done"), units[i])
                pipe.hexists(self.key(run_id, ":failed"), units[i])
                pipe.get(result_key_prefix + self.job_id(run_id, i))
            answers = await pipe.execute()
        lost = 0
        for n, i in enumerate(gone):
            done, failed, result = answers[3 * n : 3 * n + 3]
            if not done and not failed:
                reason = f"lost: its job ended without a result ({_arq_outcome(result)})"
                lost += await resolved(
                    self.redis.hsetnx(self.key(run_id, ":failed"), units[i], reason)
                )
        return lost

    async def info(self, run_id: str) -> LabelRunInfo:
        meta = await resolved(self.redis.hgetall(self.key(run_id)))
        if not meta:
            raise RunNotFound(run_id)
        if b"queued" in meta:
            await self._account_if_unfinished(run_id, int(meta[b"total"]))
        request = LabelRunRequest.model_validate_json(meta[b"request"])
        total = int(meta[b"total"])
        labeled = set(await resolved(self.redis.hkeys(self.key(run_id, ":done"))))
        done = len(labeled)
        failed_map = {
            unit: reason
            for unit, reason in (
                await resolved(self.redis.hgetall(self.key(run_id, ":failed")))
            ).items()
            if unit not in labeled  # labeled by a second run of its job: it counts as done
        }
        stats = await resolved(self.redis.hvals(self.key(run_id, ":stats")))
        counts = [[int(n) for n in v.split()] for v in stats]
        samples, executions, completions = (sum(c[i] for c in counts) for i in range(3))
        failures = {
            k.decode().split(":", 1)[1]: v.decode() for k, v in sorted(failed_map.items())[:20]
        }
        created_at = float(meta[b"created_at"])
        finished = done + len(failed_map) >= total
        workers = await self.live_workers()
        taken_at = float(meta[b"taken_at"]) if b"taken_at" in meta else None
        return LabelRunInfo(
            run_id=run_id,
            strategy=request.strategy,
            dataset=request.dataset,
            total=total,
            done=done,
            failed=len(failed_map),
            remaining=total - done - len(failed_map),
            samples=samples,
            executions=executions,
            completions=completions,
            created_at=created_at,
            finished=finished,
            failures=failures,
            workers=workers,
            warning=None
            if finished
            else _stall_warning(created_at, taken_at, workers, self.stall_warning_s),
        )

    async def list_runs(self, limit: int = 50) -> list[LabelRunInfo]:
        """The newest `limit` runs, newest first (runs whose data expired are dropped)."""
        index = f"{self.prefix}:runs"
        ids = [r.decode() for r in await resolved(self.redis.zrevrange(index, 0, limit - 1))]
        runs = []
        for run_id in ids:
            try:
                runs.append(await self.info(run_id))
            except RunNotFound:
                await resolved(self.redis.zrem(index, run_id))
        return runs

    async def heartbeat(self, worker_id: str) -> None:
        await resolved(self.redis.hset(f"{self.prefix}:workers", worker_id, str(time.time())))

    async def worker_stopped(self, worker_id: str) -> None:
        await resolved(self.redis.hdel(f"{self.prefix}:workers", worker_id))

    async def live_workers(self) -> int:
        """Workers of this deployment that beat in the last WORKER_GONE_S; forgets the rest."""
        beats = await resolved(self.redis.hgetall(f"{self.prefix}:workers"))
        now = time.time()
        gone = [w for w, t in beats.items() if now - float(t) > WORKER_GONE_S]
        if gone:
            await resolved(self.redis.hdel(f"{self.prefix}:workers", *gone))
        return len(beats) - len(gone)

    async def _account_if_unfinished(self, run_id: str, total: int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hlen(self.key(run_id, ":done"))
            pipe.hlen(self.key(run_id, ":failed"))
            done, failed = await pipe.execute()
        if done + failed < total:
            await self.account_for_lost(run_id)

    async def export(self, run_id: str, ttl_s: int) -> AsyncIterator[str]:
        """The run's samples as JSONL lines, in dataset order; starts the keys' expiry.
        Callers check first that the run is finished (or that a partial export is wanted)."""
        done = await resolved(self.redis.hgetall(self.key(run_id, ":done")))
        for _, payload in sorted(done.items()):
            for sample in json.loads(payload):
                yield json.dumps(sample) + "\n"
        for part in ("", ":done", ":failed", ":stats", ":units"):
            await resolved(self.redis.expire(self.key(run_id, part), ttl_s))


def _stall_warning(
    created_at: float, taken_at: float | None, workers: int, after_s: float
) -> str | None:
    idle_s = time.time() - (taken_at or created_at)
    if idle_s < after_s:
        return None
    if workers == 0:
        return (
            f"no labeler worker is running: no job of this run taken for {idle_s:.0f} s. "
            "Start one with `codeprm label worker` (same REDIS_URL and "
            "CODEPRM_LABELER_QUEUE_NAME as the labeler)"
        )
    if taken_at is None:
        return (
            f"waiting {idle_s:.0f} s for a worker: {workers} worker(s) alive, busy with "
            "other runs' jobs queued before this one"
        )
    return None


def job_serializer(value: dict[str, Any]) -> bytes:
    # `default=repr`: arq also stores a failed job's exception this way, and its repr is
    # the reason `account_for_lost` reports.
    return json.dumps(value, default=repr).encode()


def _arq_outcome(raw: bytes | None) -> str:
    if raw is None:
        return "no record of it left in arq"
    try:
        outcome = json.loads(raw)
        return f"arq: {outcome['r']} after {outcome['t']} tries"
    except (ValueError, KeyError, TypeError):
        return "arq's record of it cannot be read"


def job_deserializer(raw: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(raw)
    return result
