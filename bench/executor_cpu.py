"""CPU time per execution: the executor's whole process tree against the fork-per-program
floor, in one run. For a machine shared with other work, where throughput measures the load.

    python bench/executor_cpu.py [--rounds 3] [--trivial 300]    # as root

The script moves itself into a fresh cgroup (cgroup v1 `cpuacct`, else v2 `cpu.stat`), so
that everything it starts is counted: the client, the service, its workers, zygotes, reapers,
judges and candidates, the floor's runners and their children. It reads the cgroup's CPU time
around each pass; contenders take turns, one pass each per round:

1. codeprm: HumanEval's 164 canonical solutions through the HTTP batch API (a real
   `codeprm executor serve`, defaults: full isolation, no verdict cache).
2. floor: `bench/executor.py`'s two lean runners forking a child per program (no isolation,
   no judge, no HTTP), the same 164 programs with their tests inline.
3. codeprm, trivial: `pass` through POST /v1/run, one request at a time.
4. floor, trivial: `pass` forked the floor's way: the fixed cost of a fork per program.

CPU time still grows somewhat with the load (caches and cores shared with other work), so
compare the ratios of one run, and runs made under like load.
"""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Callable

import httpx
from common import start_executor
from executor import PROBLEMS, codeprm_batch, fork_per_program, fork_runners, program

_NAME = f"codeprm-bench-{os.getpid()}"


class CpuCgroup:
    """A cgroup this process moves into; `used_s` is the CPU time of all its processes."""

    def __init__(self) -> None:
        v1, v2 = None, None
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                fstype, options = fields[fields.index("-") + 1], fields[-1].split(",")
                if fstype == "cgroup" and "cpuacct" in options:
                    v1 = fields[4]
                elif fstype == "cgroup2":
                    v2 = v2 or fields[4]
        if v1 is None and v2 is None:
            raise SystemExit("no cgroup hierarchy with CPU accounting is mounted")
        self.base = v1 or v2 or ""
        self.path = os.path.join(self.base, _NAME)
        self._usage = "cpuacct.usage" if v1 else "cpu.stat"
        os.mkdir(self.path)
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    def used_s(self) -> float:
        with open(os.path.join(self.path, self._usage)) as f:
            text = f.read()
        if self._usage == "cpuacct.usage":
            return int(text) / 1e9
        usage = next(line for line in text.splitlines() if line.startswith("usage_usec"))
        return int(usage.split()[1]) / 1e6

    def close(self) -> None:
        with open(os.path.join(self.base, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        os.rmdir(self.path)


def trivial_runs(url: str, n: int) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(n):
            assert client.post("/v1/run", json={"code": "pass"}).json()["status"] == "ok"


def one_round(
    url: str, sources: list[str], trivial: int, cgroup: CpuCgroup
) -> dict[str, tuple[float, int]]:
    """{contender: (CPU seconds, programs)} of one pass each."""
    runners = fork_runners(sources), fork_runners(["pass"] * trivial)  # start-up not counted
    passes: dict[str, tuple[Callable[[], object], int]] = {
        "codeprm": (lambda: codeprm_batch(url, 1), len(sources)),
        "floor": (lambda: fork_per_program(runners[0]), len(sources)),
        "codeprm, trivial": (lambda: trivial_runs(url, trivial), trivial),
        "floor, trivial": (lambda: fork_per_program(runners[1]), trivial),
    }
    spent = {}
    for label, (run, n) in passes.items():
        before = cgroup.used_s()
        run()
        spent[label] = (cgroup.used_s() - before, n)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the 164 problems")
    parser.add_argument("--trivial", type=int, default=300, help="trivial runs per round")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}; load average at start {os.getloadavg()[0]:.2f}"
    )
    cgroup = CpuCgroup()
    proc, url = start_executor()
    sources = [program(p) for p in PROBLEMS]
    counts = {"codeprm": 0, "floor": 0, "codeprm, trivial": 0, "floor, trivial": 0}
    cpu_s = dict.fromkeys(counts, 0.0)
    try:
        codeprm_batch(url, 1)  # warm-up
        trivial_runs(url, 20)
        for _ in range(args.rounds):
            for label, (spent, n) in one_round(url, sources, args.trivial, cgroup).items():
                cpu_s[label] += spent
                counts[label] += n
    finally:
        proc.terminate()
        proc.wait()
        cgroup.close()
    ms = {label: 1000 * cpu_s[label] / counts[label] for label in counts}
    print(f"  {'':<20} {'CPU ms/program':>15}")
    for label, value in ms.items():
        print(f"  {label:<20} {value:15.3f}")
    print(
        f"floor / codeprm, CPU per program: HumanEval {ms['floor'] / ms['codeprm']:.2f}x, "
        f"trivial {ms['floor, trivial'] / ms['codeprm, trivial']:.2f}x"
    )
    print(
        f"codeprm's CPU beyond the floor's: HumanEval {ms['codeprm'] - ms['floor']:.3f} ms, "
        f"trivial {ms['codeprm, trivial'] - ms['floor, trivial']:.3f} ms"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
