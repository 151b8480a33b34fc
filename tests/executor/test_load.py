"""Load: 10,000 evaluations through the batch API from 64 concurrent clients."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.contained import ContainedExecutor, require_isolation

pytestmark = pytest.mark.slow

TOTAL = 10_000
CONCURRENCY = 64
BATCH = 25


def item(n: int) -> tuple[dict[str, object], bool]:
    """A different program per n (so the verdict cache cannot help), right on even n."""
    k = n % 7
    answer = 2 * k if n % 2 == 0 else 2 * k + 1
    kind = n % 3
    if kind == 0:
        return {
            "code": f"def f(x):\n    return x * 2  # {n}\n",
            "tests": {
                "kind": "call",
                "entry_point": "f",
                "cases": [{"args": [k], "expected": answer}],
            },
        }, n % 2 == 0
    if kind == 1:
        return {
            "code": f"print(int(input()) * 2)  # {n}\n",
            "tests": {
                "kind": "stdio",
                "cases": [{"stdin": f"{k}\n", "expected_stdout": f"{answer}\n"}],
            },
        }, n % 2 == 0
    return {
        "code": f"def f(x):\n    return x * 2  # {n}\n",
        "tests": {
            "kind": "assert",
            "entry_point": "f",
            "code": f"def check(c):\n    assert c({k}) == {answer}\n",
        },
    }, n % 2 == 0


def rss_mb(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def test_ten_thousand_evaluations_at_concurrency_64(contained_executor: ContainedExecutor) -> None:
    executor = contained_executor
    require_isolation(executor)
    baseline = executor.steady_count()
    memory_before = rss_mb(executor.processes())
    items = [item(n) for n in range(TOTAL)]
    batches = [list(range(i, min(i + BATCH, TOTAL))) for i in range(0, TOTAL, BATCH)]
    verdicts: dict[int, bool] = {}

    async def client(queue: asyncio.Queue[list[int]], http: httpx.AsyncClient) -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            response = await http.post(
                "/v1/evaluate/batch", json={"items": [items[i][0] for i in batch]}
            )
            assert response.status_code == 200, response.text[:300]
            results = response.json()["results"]
            assert len(results) == len(batch)
            for index, result in zip(batch, results, strict=True):
                assert result["status"] == "ok", result
                verdicts[index] = result["passed"]

    async def run() -> None:
        queue: asyncio.Queue[list[int]] = asyncio.Queue()
        for batch in batches:
            queue.put_nowait(batch)
        limits = httpx.Limits(max_connections=CONCURRENCY)
        async with httpx.AsyncClient(base_url=executor.url, timeout=600, limits=limits) as http:
            await asyncio.gather(*(client(queue, http) for _ in range(CONCURRENCY)))

    asyncio.run(run())
    assert len(verdicts) == TOTAL  # nothing lost
    wrong = [n for n in range(TOTAL) if verdicts[n] != items[n][1]]
    assert wrong == []
    assert executor.settled_count(baseline) == baseline, "processes leaked"
    memory_after = rss_mb(executor.processes())
    assert memory_after < memory_before + 100, (memory_before, memory_after)
    metrics = httpx.get(f"{executor.url}/metrics").text
    assert 'executor_executions_total{status="ok"}' in metrics
