"""The pool never loses a worker: whatever goes wrong with a job, the worker is replaced.

Real workers run a harmless program here (no hostile code: that only runs behind the
harness's containment). The failures are made from outside: a reply frame that cannot be
read (bytes pushed into the service's end of the worker's stream), a worker killed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from codeprm.services.executor.evaluation import Executor, ExecutorMetrics
from codeprm.services.executor.pool import Pool
from codeprm.services.executor.settings import ExecutorSettings

pytestmark = pytest.mark.slow


async def _replaced(pool: Pool, size: int) -> None:
    for _ in range(600):
        if pool.size == size and pool.health() is None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"pool stayed at {pool.size} workers: {pool.health()}")


async def test_a_worker_whose_job_went_wrong_is_replaced() -> None:
    settings = ExecutorSettings(workers=1, allow_weak_isolation=True, pin_judges=False)
    pool = Pool(settings)
    await pool.start()
    executor = Executor(settings, pool, ExecutorMetrics(CollectorRegistry(), pool), None)
    job: dict[str, Any] = executor._job("program", "print(1)", 5.0, 128)
    try:
        assert (await pool.execute(job))["status"] == "ok"
        failures = {
            "unreadable frame": lambda w: w.proc.stdout.feed_data(b"\x00\x00\x00\x07garbage"),
            "not a result": lambda w: w.proc.stdout.feed_data(b"\x00\x00\x00\x04[11]"),
        }
        for name, break_it in failures.items():
            (worker,) = pool._all
            break_it(worker)
            result = await pool.execute(job)
            assert result["status"] == "sandbox_error", (name, result)
            assert pool.size == 0 and pool.health() is not None, name
            await _replaced(pool, 1)
            assert (await pool.execute(job))["stdout"] == "1\n", name
        # A worker that dies while idle is noticed and replaced without any job.
        (worker,) = pool._all
        worker.proc.kill()
        for _ in range(200):
            if worker not in pool._all:
                break
            await asyncio.sleep(0.05)
        assert worker not in pool._all
        await _replaced(pool, 1)
        assert (await pool.execute(job))["stdout"] == "1\n"
    finally:
        await pool.close()
