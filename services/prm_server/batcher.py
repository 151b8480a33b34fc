"""Dynamic batching: many small requests in, few large forward passes out.

Callers `submit` items (each with its token count) and await their results. One loop takes
the first waiting item, gives others up to `max_wait_s` to arrive (less if the token budget is
already full), takes the oldest few batches' worth, sorts them by length so that items of
similar size share a batch (padding is wasted compute), cuts them into batches whose *padded*
size fits the token budget, and runs each batch on one worker thread, off the event loop.
While a batch runs, new items queue up, so batches grow with load by themselves.

No item waits forever: items are taken in arrival order, and a batch holds at most the budget.
When `max_pending` items are already waiting, `submit` raises `Overloaded` at once (503), so a
client learns to back off in microseconds instead of timing out after minutes; a request with
more items than `max_pending` could never fit and gets `PayloadTooLarge` (413) instead.
A batch that fails is split: each of its items runs alone, so one item the model cannot take
fails its own caller only.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram

from codeprm.serving.errors import Overloaded, PayloadTooLarge

SORT_WINDOW = 4
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Waiting(Generic[T, R]):
    item: T
    tokens: int
    future: asyncio.Future[R]
    since: float = field(default_factory=time.monotonic)


class BatchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.batch_items = Histogram(
            "prm_batch_items",
            "Items per forward pass.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=registry,
        )
        self.batch_tokens = Histogram(
            "prm_batch_padded_tokens",
            "Padded tokens per forward pass.",
            buckets=(256, 1024, 4096, 16384, 65536, 262144),
            registry=registry,
        )
        self.queue_wait = Histogram(
            "prm_queue_wait_seconds",
            "Time from submission to the start of the item's forward pass.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.forward = Histogram(
            "prm_forward_seconds",
            "Duration of one forward pass.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.tokens = Counter("prm_tokens", "Real (unpadded) tokens scored.", registry=registry)
        self.rejected = Counter(
            "prm_rejected_overload", "Items refused because the queue was full.", registry=registry
        )


class DynamicBatcher(Generic[T, R]):
    def __init__(
        self,
        run_batch: Callable[[list[T]], list[R]],
        metrics: BatchMetrics,
        *,
        token_budget: int,
        max_batch_items: int,
        max_wait_s: float,
        max_pending: int,
    ) -> None:
        self.run_batch = run_batch
        self.metrics = metrics
        self.token_budget = token_budget
        self.max_batch_items = max_batch_items
        self.max_wait_s = max_wait_s
        self.max_pending = max_pending
        self._waiting: deque[_Waiting[T, R]] = deque()
        self._arrived = asyncio.Event()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="prm-forward")
        self._loop: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._waiting)

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="prm-batcher")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            try:
                await self._loop
            except asyncio.CancelledError:
                pass
        for waiting in self._waiting:
            if not waiting.future.done():
                waiting.future.set_exception(Overloaded("the server is shutting down"))
        self._waiting.clear()
        self._thread.shutdown(wait=True)

    async def submit(self, items: Sequence[T], tokens: Sequence[int]) -> list[R]:
        if len(items) > self.max_pending:
            raise PayloadTooLarge(
                f"{len(items)} items can never fit: at most {self.max_pending} may wait at "
                "once; send them in smaller requests"
            )
        if not items:
            return []
        if self.pending + len(items) > self.max_pending:
            self.metrics.rejected.inc(len(items))
            raise Overloaded(f"{self.pending} items are already waiting; retry shortly")
        loop = asyncio.get_running_loop()
        mine = [
            _Waiting[T, R](item, n, loop.create_future())
            for item, n in zip(items, tokens, strict=True)
        ]
        self._waiting.extend(mine)
        self._arrived.set()
        return list(await asyncio.gather(*(w.future for w in mine)))

    async def _run(self) -> None:
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            await self._let_more_arrive()
            taken = self._take()
            for batch in self._cut(taken):
                await self._forward(batch)

    async def _let_more_arrive(self) -> None:
        deadline = self._waiting[0].since + self.max_wait_s
        while not self._full() and (left := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return

    def _full(self) -> bool:
        tokens = 0
        for count, waiting in enumerate(self._waiting, start=1):
            tokens += waiting.tokens
            if tokens >= self.token_budget or count >= self.max_batch_items:
                return True
        return False

    def _take(self) -> list[_Waiting[T, R]]:
        """Oldest first, up to SORT_WINDOW batches' worth: sorting needs material, and these
        items would have waited for the earlier batches anyway."""
        taken: list[_Waiting[T, R]] = []
        tokens = 0
        while self._waiting and len(taken) < self.max_batch_items * SORT_WINDOW:
            if taken and tokens + self._waiting[0].tokens > self.token_budget * SORT_WINDOW:
                break
            waiting = self._waiting.popleft()
            tokens += waiting.tokens
            if not waiting.future.done():  # its caller may have gone away
                taken.append(waiting)
        return taken

    def _cut(self, taken: list[_Waiting[T, R]]) -> list[list[_Waiting[T, R]]]:
        """Sorted by length, in batches whose padded size (longest x count) fits the budget."""
        batches: list[list[_Waiting[T, R]]] = []
        current: list[_Waiting[T, R]] = []
        for waiting in sorted(taken, key=lambda w: w.tokens):
            full = len(current) >= self.max_batch_items
            if current and (full or waiting.tokens * (len(current) + 1) > self.token_budget):
                batches.append(current)
                current = []
            current.append(waiting)
        if current:
            batches.append(current)
        return batches

    async def _forward(self, batch: list[_Waiting[T, R]]) -> None:
        now = time.monotonic()
        for waiting in batch:
            self.metrics.queue_wait.observe(now - waiting.since)
        self.metrics.batch_items.observe(len(batch))
        self.metrics.batch_tokens.observe(max(w.tokens for w in batch) * len(batch))
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(
                self._thread, self.run_batch, [w.item for w in batch]
            )
            if len(results) != len(batch):  # would leave callers waiting for ever
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
        except Exception as exc:  # a failed batch fails its callers, not the loop
            if len(batch) > 1:  # find out whose item it was: each alone
                for waiting in batch:
                    await self._forward([waiting])
                return
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            return
        finally:
            self.metrics.forward.observe(time.monotonic() - now)
        self.metrics.tokens.inc(sum(w.tokens for w in batch))
        for waiting, result in zip(batch, results, strict=True):
            if not waiting.future.done():
                waiting.future.set_result(result)
