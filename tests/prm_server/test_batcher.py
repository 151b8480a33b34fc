"""The dynamic batcher on its own, with a recording stand-in for the forward pass."""

from __future__ import annotations

import asyncio
import threading

import pytest
from prometheus_client import CollectorRegistry

from codeprm.services.prm_server.batcher import BatchMetrics, DynamicBatcher
from codeprm.serving.errors import Overloaded, PayloadTooLarge


class Recorder:
    def __init__(self, delay_s: float = 0.0, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, items: list[str]) -> list[str]:
        with self.lock:
            self.batches.append(items)
        if self.fail_on in items:
            raise RuntimeError("forward failed")
        threading.Event().wait(self.delay_s)
        return [item.upper() for item in items]


def make(recorder: Recorder, **kw: float) -> DynamicBatcher[str, str]:
    options = {"token_budget": 100, "max_batch_items": 8, "max_wait_s": 0.02, "max_pending": 64}
    options.update(kw)
    return DynamicBatcher(recorder, BatchMetrics(CollectorRegistry()), **options)  # type: ignore[arg-type]


async def test_concurrent_callers_share_batches_and_get_their_own_results() -> None:
    recorder = Recorder(delay_s=0.01)
    batcher = make(recorder)
    batcher.start()
    words = [f"w{i}" for i in range(20)]
    results = await asyncio.gather(*(batcher.submit([w], [5]) for w in words))
    await batcher.stop()
    assert results == [[w.upper()] for w in words]
    assert len(recorder.batches) < 20 and max(len(b) for b in recorder.batches) == 8


async def test_batches_are_sorted_by_length_and_fit_the_padded_budget() -> None:
    recorder = Recorder()
    batcher = make(recorder, max_batch_items=100)
    batcher.start()
    sizes = {"a": 10, "b": 40, "c": 12, "d": 45, "e": 11}
    results = await batcher.submit(list(sizes), list(sizes.values()))
    await batcher.stop()
    assert results == ["A", "B", "C", "D", "E"]  # in the caller's order
    for batch in recorder.batches:
        assert max(sizes[x] for x in batch) * len(batch) <= 100
    assert [x for b in recorder.batches for x in b] == sorted(sizes, key=sizes.__getitem__)


async def test_an_item_larger_than_the_budget_still_runs_alone() -> None:
    recorder = Recorder()
    batcher = make(recorder)
    batcher.start()
    assert await batcher.submit(["big", "small"], [500, 3]) == ["BIG", "SMALL"]
    await batcher.stop()
    assert ["big"] in recorder.batches


async def test_a_failing_batch_fails_its_callers_only() -> None:
    recorder = Recorder(fail_on="bad")
    batcher = make(recorder, max_wait_s=0.0)
    batcher.start()
    with pytest.raises(RuntimeError, match="forward failed"):
        await batcher.submit(["bad"], [5])
    assert await batcher.submit(["good"], [5]) == ["GOOD"]
    await batcher.stop()


async def test_an_item_that_fails_a_shared_batch_fails_only_its_own_caller() -> None:
    recorder = Recorder(fail_on="bad")
    batcher = make(recorder, max_wait_s=0.05)
    batcher.start()
    good, bad, other = await asyncio.gather(
        batcher.submit(["good"], [5]),
        batcher.submit(["bad"], [5]),
        batcher.submit(["other"], [5]),
        return_exceptions=True,
    )
    await batcher.stop()
    assert good == ["GOOD"] and other == ["OTHER"]
    assert isinstance(bad, RuntimeError)
    assert sorted(recorder.batches[0]) == ["bad", "good", "other"]  # shared, then split


async def test_a_request_larger_than_the_queue_is_refused_as_too_large() -> None:
    batcher = make(Recorder(), max_pending=4)
    batcher.start()
    with pytest.raises(PayloadTooLarge, match="can never fit"):
        await batcher.submit(["a"] * 5, [5] * 5)
    assert await batcher.submit(["a"] * 4, [5] * 4) == ["A"] * 4  # a full queue's worth fits
    await batcher.stop()


async def test_overload_is_refused_at_once() -> None:
    recorder = Recorder(delay_s=0.2)
    batcher = make(recorder, max_pending=4, max_batch_items=1, max_wait_s=0.0)
    batcher.start()
    first = asyncio.create_task(batcher.submit(["a"], [5]))
    await asyncio.sleep(0.05)  # "a" is running; the queue is empty again
    waiting = asyncio.create_task(batcher.submit(["b", "c", "d", "e"], [5] * 4))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await batcher.submit(["f"], [5])
    assert await first == ["A"] and await waiting == ["B", "C", "D", "E"]
    await batcher.stop()


async def test_a_caller_that_went_away_is_skipped() -> None:
    recorder = Recorder(delay_s=0.1)
    batcher = make(recorder, max_batch_items=1, max_wait_s=0.0)
    batcher.start()
    running = asyncio.create_task(batcher.submit(["a"], [5]))
    await asyncio.sleep(0.02)
    gone = asyncio.create_task(batcher.submit(["b"], [5]))
    await asyncio.sleep(0.01)
    gone.cancel()
    assert await running == ["A"]
    assert await batcher.submit(["c"], [5]) == ["C"]
    await batcher.stop()
    assert ["b"] not in recorder.batches
