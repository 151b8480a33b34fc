"""Binary search with a local Hugging Face policy (the demo's labeling): the HF backend serving
calls that wait together in one `generate` batch, against one call at a time, same run.

    python bench/hf_policy.py [--policy DIR] [--problems 40] [--k 4] [--jobs 8]

The programs are failing AST mutants of `--problems` listfuncs solutions (one per problem, the
middle one), searched `--jobs` at a time as a labeler worker runs its jobs, with the policy's
continuations sampled as the demo samples them (temperature 1, up to 200 tokens) and judged by
a real `codeprm executor serve`. `--policy` defaults to the demo's cached SFT policy, else a
tiny random-weight one (whose continuations are noise, so only the timings mean anything).
The first run (one call at a time: `max_batch` 1, what the backend did before) is the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import torch
from common import start_executor, torch_machine
from labeling import failing_mutants

from codeprm.api.labeler import SamplingOptions, SearchOptions
from codeprm.cli import cache_dir
from codeprm.client import AsyncExecutorClient
from codeprm.datasets import Problem, load_problems
from codeprm.demo import policy_dir
from codeprm.services.labeler.binary_search import first_bad_line
from codeprm.services.labeler.completions import HFBackend
from codeprm.services.labeler.prefixes import Prober


def default_policy() -> Path:
    demo = policy_dir(cache_dir())
    if (demo / "config.json").is_file():
        return demo
    from codeprm.tiny import build_tiny_policy

    return build_tiny_policy(cache_dir() / "bench-tiny-policy")


async def search_all(
    executor_url: str, programs: list[Problem], backend: HFBackend, k: int, jobs: int
) -> tuple[float, int]:
    """Wall seconds to label every program, and the completions it took."""
    options = SearchOptions(
        k=k, timeout_s=2, sampling=SamplingOptions(max_tokens=200, temperature=1.0)
    )
    slots = asyncio.Semaphore(jobs)
    async with AsyncExecutorClient(executor_url) as executor:

        async def one(problem: Problem) -> int:
            async with slots:
                prober = Prober(problem, backend, executor, options)
                await first_bad_line(prober, problem.candidates[0])
                return prober.completions

        torch.manual_seed(0)
        start = time.perf_counter()
        completions = await asyncio.gather(*(one(p) for p in programs))
        return time.perf_counter() - start, sum(completions)


async def mutants(executor_url: str, count: int) -> list[Problem]:
    async with AsyncExecutorClient(executor_url) as executor:
        return await failing_mutants(executor, load_problems("listfuncs")[:count])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, help="default: the demo's cached policy")
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--k", type=int, default=4, help="continuations per prefix")
    parser.add_argument("--jobs", type=int, default=8, help="programs searched at a time")
    args = parser.parse_args()
    print(torch_machine())
    policy = args.policy or default_policy()
    proc, url = start_executor()
    try:
        programs = asyncio.run(mutants(url, args.problems))
        rows = []
        for max_batch in (1, 16):
            backend = HFBackend(policy, max_batch=max_batch)
            seconds, completions = asyncio.run(
                search_all(url, programs, backend, args.k, args.jobs)
            )
            rows.append((max_batch, seconds, completions))
    finally:
        proc.terminate()
        proc.wait()
    print(f"\nbinary search, k={args.k}, {len(programs)} failing programs, {args.jobs} at a time")
    print(f"policy: {policy}")
    baseline = rows[0][1]
    for max_batch, seconds, completions in rows:
        label = (
            "one call at a time (baseline)" if max_batch == 1 else f"batched, max_batch {max_batch}"
        )
        print(
            f"  {label:<32} {seconds:6.1f} s  {completions} completions, "
            f"{completions / seconds:6.1f}/s  {baseline / seconds:5.2f}x"
        )


if __name__ == "__main__":
    main()
