"""Labeling throughput, and the completions binary search saves, on this machine.

    python bench/labeling.py [--variants 4] [--k 4]

1. Mutation-label all 164 HumanEval problems (AST mutator) through the real pipeline: a
   `codeprm executor serve` (full isolation, no verdict cache), the Redis queue and one
   `codeprm label worker`. Wall time, problems/s, executions/s. Baseline, same run: the same
   programs (solutions and every variant) sent straight to the executor's batch API, i.e.
   what the labeling pipeline costs on top of executing.
2. Binary search (PSGPO) against a linear scan of every prefix, on the same failing programs:
   one failing AST mutant per HumanEval problem, labeled with a policy that continues a prefix
   of the canonical solution correctly and anything else wrongly (a scripted OpenAI server).
   Completions used by each, and whether they find the same first bad line.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import subprocess
import sys
import time
import uuid

import httpx
import redis
from common import start_executor

from codeprm.api.executor import EvaluateRequest
from codeprm.api.labeler import BackendSpec, LabelRunRequest, MutationOptions, SearchOptions
from codeprm.client import AsyncExecutorClient
from codeprm.datasets import Problem, humaneval
from codeprm.scripted_llm import ScriptedLLM
from codeprm.services.labeler.ast_mutator import apply_mutation, mutate_line
from codeprm.services.labeler.binary_search import first_bad_line
from codeprm.services.labeler.completions import OpenAIBackend
from codeprm.services.labeler.prefixes import Prober, code_lines, prefix_through
from codeprm.services.labeler.queue import open_store
from codeprm.services.labeler.settings import LabelerSettings

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def variants(problem: Problem, per_line: int) -> list[str]:
    """The solution and its AST variants, as the mutation strategy makes them."""
    assert problem.solution is not None
    program = problem.program(problem.solution)
    offset = problem.program_prefix.count("\n")
    programs = [program]
    for line in code_lines(problem.solution):
        for m in mutate_line(program, offset + line.index, per_line):
            programs.append(apply_mutation(program, m))
    return programs


def raw_executor(url: str, problems: list[Problem], per_line: int) -> tuple[int, float]:
    items = [
        EvaluateRequest(code=code, tests=p.tests, timeout_s=10).model_dump(exclude_none=True)
        for p in problems
        for code in variants(p, per_line)
    ]
    start = time.perf_counter()
    response = httpx.post(f"{url}/v1/evaluate/batch", json={"items": items}, timeout=1800)
    response.raise_for_status()
    return len(items), time.perf_counter() - start


def mutation_pipeline(
    executor_url: str, per_line: int, timeout_factor: float
) -> tuple[dict[str, int], float]:
    namespace = f"codeprm-bench:{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "CODEPRM_LABELER_QUEUE_NAME": f"{namespace}:q",
        "CODEPRM_LABELER_KEY_PREFIX": namespace,
        "CODEPRM_LABELER_EXECUTOR_URL": executor_url,
    }
    settings = LabelerSettings(
        redis_url=REDIS_URL, queue_name=f"{namespace}:q", key_prefix=namespace
    )
    request = LabelRunRequest(
        strategy="mutation",
        dataset="humaneval",
        mutation=MutationOptions(variants_per_line=per_line, variant_timeout_factor=timeout_factor),
    )

    async def submit() -> str:
        async with open_store(settings) as store:
            return (await store.submit(request, settings.queue_name)).run_id

    async def info(run_id: str) -> dict[str, int]:
        async with open_store(settings) as store:
            return (await store.info(run_id)).model_dump()

    try:
        start = time.perf_counter()
        run_id = asyncio.run(submit())
        subprocess.run(
            [sys.executable, "-m", "codeprm", "label", "worker", "--burst"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        elapsed = time.perf_counter() - start
        return asyncio.run(info(run_id)), elapsed
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"*{namespace}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def oracle(problems: list[Problem]) -> ScriptedLLM:
    solutions = {p.prompt: p.solution or "" for p in problems}

    def complete(text: str, n: int) -> list[str]:
        prompt = max((q for q in solutions if text.startswith(q)), key=len)
        prefix, solution = text[len(prompt) :], solutions[prompt]
        if solution.startswith(prefix):
            return [solution[len(prefix) :]] * n
        return ["    return None\n"] * n

    return ScriptedLLM(complete=complete)


async def failing_mutants(executor: AsyncExecutorClient, problems: list[Problem]) -> list[Problem]:
    """Each problem with one failing AST mutant (the middle one) as its candidate."""
    chosen = []
    for problem in problems:
        assert problem.solution is not None
        mutants = [v[len(problem.program_prefix) :] for v in variants(problem, 1)[1:]]
        verdicts = await executor.evaluate_batch(
            [
                EvaluateRequest(code=problem.program(m), tests=problem.tests, timeout_s=2)
                for m in mutants
            ]
        )
        failing = [m for m, v in zip(mutants, verdicts, strict=True) if not v.passed]
        if failing:
            candidate = failing[len(failing) // 2]
            chosen.append(problem.model_copy(update={"candidates": [candidate]}))
    return chosen


async def search_vs_scan(executor_url: str, k: int) -> dict[str, float]:
    problems = humaneval()
    with oracle(problems) as llm:
        policy = OpenAIBackend(BackendSpec(kind="openai", url=llm.url, model="scripted"))
        # The scripted policy's wrong endings can fall inside a loop of the prefix and spin:
        # a short timeout keeps the wall time about labeling, not about waiting.
        options = SearchOptions(k=k, timeout_s=2)
        keys = ("programs", "lines", "binary", "bound", "scan", "early", "agree")
        totals = dict.fromkeys(keys, 0.0)
        async with AsyncExecutorClient(executor_url) as executor:
            chosen = await failing_mutants(executor, problems)
            start = time.perf_counter()
            for problem in chosen:
                completion = problem.candidates[0]
                code = code_lines(completion)
                binary = Prober(problem, policy, executor, options)
                found, _, _ = await first_bad_line(binary, completion)
                scan = Prober(problem, policy, executor, options)
                ok = [
                    await scan.recoverable(prefix_through(completion, line)) for line in code[:-1]
                ]
                scanned = next((j + 1 for j, good in enumerate(ok) if not good), len(code))
                totals["programs"] += 1
                totals["lines"] += len(code)
                totals["binary"] += binary.completions
                totals["bound"] += k * math.ceil(math.log2(len(code))) if len(code) > 1 else 0
                totals["scan"] += scan.completions
                totals["early"] += k * min(scanned, len(code) - 1)
                totals["agree"] += found == scanned
            totals["seconds"] = time.perf_counter() - start
        await policy.aclose()
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variants", type=int, default=4, help="AST variants per code line")
    parser.add_argument("--k", type=int, default=4, help="continuations per prefix")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )
    proc, url = start_executor()
    try:
        problems = humaneval()
        raw_executor(url, problems[:20], 1)  # warm-up
        executions, raw_s = raw_executor(url, problems, args.variants)
        fixed, fixed_s = mutation_pipeline(url, args.variants, timeout_factor=0)
        info, pipeline_s = mutation_pipeline(url, args.variants, timeout_factor=10)
        totals = asyncio.run(search_vs_scan(url, args.k))
    finally:
        proc.terminate()
        proc.wait()

    print(f"\n1. mutation labeling of HumanEval ({args.variants} AST variants per code line)")
    rows = [
        ("straight to the batch API, 10 s timeouts (baseline)", executions, raw_s, None),
        ("pipeline, 10 s timeouts", fixed["executions"], fixed_s, fixed),
        (
            "pipeline, variants capped at 10x the solution's time",
            info["executions"],
            pipeline_s,
            info,
        ),
    ]
    for label, count, seconds, run in rows:
        extra = (
            f", {run['done']}/{run['total']} problems, {run['failed']} failed, "
            f"{run['samples']} samples"
            if run
            else ""
        )
        print(
            f"  {label:<54} {seconds:6.1f} s  {count} executions, {count / seconds:6.1f}/s{extra}"
        )
    print(f"  pipeline overhead (same timeouts): {fixed_s / raw_s:5.2f}x the baseline's time")
    print(f"  adaptive timeouts: {fixed_s / pipeline_s:5.2f}x faster than fixed ones")

    n, lines = totals["programs"], totals["lines"]
    print(
        f"\n2. binary search vs linear scan, k={args.k}: {n:.0f} failing programs, "
        f"{lines / n:.1f} code lines on average"
    )
    print(
        f"  binary search: {totals['binary']:8.0f} completions "
        f"({totals['binary'] / n:.1f} per program, "
        f"bound k*ceil(log2 T): {totals['bound']:.0f})"
    )
    print(
        f"  scan of every prefix: {totals['scan']:8.0f} completions  -> binary uses "
        f"{totals['scan'] / totals['binary']:.2f}x fewer"
    )
    print(
        f"  scan stopping at the first bad prefix: {totals['early']:8.0f} completions -> "
        f"{totals['early'] / totals['binary']:.2f}x"
    )
    print(
        f"  same first bad line: {totals['agree']:.0f}/{n:.0f}; "
        f"wall {totals['seconds']:.1f} s for both"
    )


if __name__ == "__main__":
    main()
