"""The service's side of the sandbox workers: start them, hand out jobs, replace the dead.

Each worker is a `python -m codeprm.services.executor.worker` child with a clean environment,
talking `wire` frames over its stdin/stdout. One job at a time per worker; callers wait in a bounded
queue (full: `Overloaded`, i.e. 503). A job keeps running if its HTTP caller goes away, so a
worker's stream never falls out of step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from codeprm.services.executor import wire
from codeprm.services.executor.settings import ExecutorSettings
from codeprm.serving.errors import Overloaded

log = logging.getLogger(__name__)

WORKER_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/tmp",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
}


class IsolationUnavailable(RuntimeError):
    pass


@dataclass(eq=False)  # identity: workers live in sets
class WorkerProcess:
    proc: asyncio.subprocess.Process
    host_dir: str | None
    cpu: int | None  # its judge's CPU (`ExecutorSettings.pin_judges`)

    async def call(self, frames: bytes) -> Any:
        """Send `frames`, return the worker's answer (one frame, decoded)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(frames)
        await self.proc.stdin.drain()
        size = wire.frame_size(await self.proc.stdout.readexactly(wire.HEADER_BYTES))
        return json.loads(await self.proc.stdout.readexactly(size))

    async def stop(self) -> None:
        if self.proc.returncode is None and self.proc.stdin is not None:
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.host_dir:
            with contextlib.suppress(OSError):
                os.rmdir(self.host_dir)


class Pool:
    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self.isolated = True
        self._idle: asyncio.Queue[WorkerProcess] = asyncio.Queue()
        self._all: set[WorkerProcess] = set()
        self._running: set[asyncio.Task[Any]] = set()
        self._replacements: set[asyncio.Task[None]] = set()
        self._replacing = 0  # workers being started in place of failed ones
        self._watchers: set[asyncio.Task[None]] = set()
        self._closing = False
        self.waiting = 0

    @property
    def size(self) -> int:
        return len(self._all)

    @property
    def busy(self) -> int:
        return len(self._all) - self._idle.qsize()

    def _cpu(self, slot: int) -> int | None:
        """The CPU of worker `slot`'s judge: round-robin over the CPUs this service may use."""
        if not self.settings.pin_judges:
            return None
        cpus = sorted(os.sched_getaffinity(0))
        return cpus[slot % len(cpus)]

    async def start(self) -> None:
        try:
            first = await self._spawn(isolated=True, cpu=self._cpu(0))
        except IsolationUnavailable as exc:
            if not self.settings.allow_weak_isolation:
                raise
            log.error(
                "SANDBOX ISOLATION UNAVAILABLE, running with weak isolation (rlimits and "
                "process groups only): hostile code can reach this host",
                extra={"reason": str(exc)},
            )
            self.isolated = False
            first = await self._spawn(isolated=False, cpu=self._cpu(0))
        others = await asyncio.gather(
            *(
                self._spawn(self.isolated, self._cpu(slot))
                for slot in range(1, self.settings.workers)
            )
        )
        for worker in (first, *others):
            self._add(worker)

    def _add(self, worker: WorkerProcess) -> None:
        self._all.add(worker)
        self._idle.put_nowait(worker)
        watcher = asyncio.create_task(self._watch(worker))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, worker: WorkerProcess) -> None:
        """Replace a worker the moment it dies, busy or idle: nothing else would notice an
        idle one, and a pool of dead workers would wait for work that never comes."""
        returncode = await worker.proc.wait()
        if not self._closing:
            self._retire(worker, RuntimeError(f"worker exited with {returncode}"))

    async def _spawn(self, isolated: bool, cpu: int | None) -> WorkerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "codeprm.services.executor.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            env=WORKER_ENV,
            cwd="/",
            limit=256 << 20,
        )
        worker = WorkerProcess(proc, None, cpu)
        config: wire.WorkerConfig = {
            "isolated": isolated,
            "parent_pid": os.getpid(),
            "extra_paths": self.settings.extra_paths,
            "scratch_mb": self.settings.scratch_mb,
            "judge_memory_mb": self.settings.max_memory_mb,
            "cpu": cpu,
        }
        try:
            hello: wire.WorkerHello = await asyncio.wait_for(
                worker.call(wire.encode_frame(config)), 60
            )
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
            await worker.stop()
            raise IsolationUnavailable(f"worker failed to start: {exc!r}") from exc
        if not hello.get("ready"):
            await worker.stop()
            raise IsolationUnavailable(hello.get("error", "worker not ready"))
        worker.host_dir = hello.get("host_dir")
        return worker

    async def execute(self, job: wire.Job) -> wire.Result:
        """Run one job on the next free worker. Raises Overloaded when the queue is full."""
        if self.waiting >= self.settings.max_queue:
            raise Overloaded("executor queue is full; retry shortly", retry_after_s=1)
        self.waiting += 1
        try:
            worker = await self._idle.get()
            while worker not in self._all:  # it died while idle (`_watch`): not this job's fault
                worker = await self._idle.get()
        finally:
            self.waiting -= 1
        task = asyncio.create_task(self._run(worker, job))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return await asyncio.shield(task)

    def health(self) -> str | None:
        """None while the pool can serve, else why not (/readyz; requests get 503 meanwhile)."""
        if self._all:
            return None
        if self._replacing:
            return "every sandbox worker failed; replacements are starting"
        return "no sandbox worker is alive"

    async def _run(self, worker: WorkerProcess, job: wire.Job) -> wire.Result:
        # The worker enforces the job's deadline itself; this only catches a stuck worker.
        grace = float(job["timeout_s"]) + 30
        try:
            result: wire.Result = await asyncio.wait_for(worker.call(wire.encode_job(job)), grace)
            if not isinstance(result, dict) or not isinstance(result.get("status"), str):
                raise ValueError(f"a result that is not one: {str(result)[:200]}")
        except BaseException as exc:
            # Whatever went wrong (a dead or stuck worker, a frame we could not read), its
            # stream may be out of step: it is never handed another job, it is replaced.
            self._retire(worker, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return wire.sandbox_error(f"sandbox worker failed: {exc!r}"[:2000])
        self._idle.put_nowait(worker)
        return result

    def _retire(self, worker: WorkerProcess, exc: BaseException) -> None:
        if worker not in self._all:  # already retired (its watcher saw it die)
            return
        log.error("sandbox worker failed; replacing it", extra={"error": repr(exc)[:500]})
        self._all.discard(worker)
        if worker.proc.returncode is None:
            worker.proc.kill()
        self._replacing += 1
        task = asyncio.create_task(self._replace(worker))
        self._replacements.add(task)
        task.add_done_callback(self._replacements.discard)

    async def _replace(self, dead: WorkerProcess) -> None:
        try:
            await dead.stop()
            delay = 0.5
            while True:
                try:
                    self._add(await self._spawn(self.isolated, dead.cpu))
                    return
                except (IsolationUnavailable, OSError):
                    log.exception("could not replace a sandbox worker; trying again")
                await asyncio.sleep(delay)
                delay = min(2 * delay, 30.0)
        finally:
            self._replacing -= 1

    async def close(self) -> None:
        self._closing = True
        if self._running:
            await asyncio.wait(self._running, timeout=self.settings.graceful_shutdown_s)
        for task in list(self._replacements):
            task.cancel()
        if self._replacements:
            await asyncio.wait(self._replacements)
        await asyncio.gather(*(w.stop() for w in list(self._all)))
        self._all.clear()
        for task in list(self._watchers):
            task.cancel()
