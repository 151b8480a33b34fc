"""PRLCoder-style labels: mutate a correct solution line by line and execute every variant.

Rules, for a problem whose solution passes its tests (otherwise it yields no sample):

* the solution itself is one sample: every code line +1, comment and blank lines 0;
* a variant of code line i that **fails** the tests is a sample of the solution's lines up
  to and including the changed one: lines before it +1 (0 if neutral), line i -1. The sample
  stops at line i: what follows a wrong line teaches nothing about it;
* a variant that **passes** (an equivalent mutant, or a harmless rewrite) is a sample of the
  whole mutated solution, all code lines +1.

Only the completion's lines are labeled; the problem's `program_prefix` (HumanEval's
signature and docstring) is context.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contracts.clients import ExecutorClient
from contracts.executor import EvaluateRequest, EvaluateResponse
from contracts.labels import LabeledSample
from contracts.lines import split_lines
from services.labeler.datasets import Problem
from services.labeler.mutate import Mutation, mutate_line


class LabelingError(RuntimeError):
    """This problem cannot be labeled by this strategy (recorded with the reason)."""


@dataclass
class MutationConfig:
    variants_per_line: int = 4
    """At most this many variants of each code line."""
    timeout_s: float = 10.0
    """Per execution."""


@dataclass
class Labeled:
    samples: list[LabeledSample]
    executions: int
    stats: dict[str, int] = field(default_factory=dict)


def sample(
    problem: Problem,
    lines: list[str],
    labels: list[float],
    strategy: str,
    provenance: dict[str, object],
) -> LabeledSample:
    return LabeledSample(
        prompt=problem.prompt,
        completions=lines,
        labels=[v > 0 for v in labels],
        line_labels=labels,
        problem_id=problem.problem_id,
        strategy=strategy,
        provenance=provenance,
    )


def neutral_or(kind: str, value: float) -> float:
    return 0.0 if kind != "code" else value


async def label_by_mutation(
    problem: Problem, executor: ExecutorClient, config: MutationConfig
) -> Labeled:
    if problem.solution is None:
        raise LabelingError("mutation needs a correct solution; this problem has none")
    solution = problem.solution
    program = problem.program(solution)
    offset = problem.program_prefix.count("\n")  # program line of the solution's first line
    lines = split_lines(solution)
    variants: list[Mutation] = []
    for line in lines:
        if line.kind == "code":
            variants += mutate_line(program, offset + line.index, config.variants_per_line)
    programs = [program] + [_apply(program, m) for m in variants]
    verdicts = await executor.evaluate_batch(
        [
            EvaluateRequest(code=code, tests=problem.tests, timeout_s=config.timeout_s)
            for code in programs
        ]
    )
    original, *mutants = verdicts
    if not original.passed:
        raise LabelingError(f"the solution does not pass its own tests ({_why(original)})")
    texts = [line.text for line in lines]
    samples = [
        sample(
            problem,
            texts,
            [neutral_or(x.kind, 1.0) for x in lines],
            "mutation",
            {"source": "solution"},
        )
    ]
    stats = {"variants": len(variants), "failing": 0, "passing": 0}
    for mutation, verdict in zip(variants, mutants, strict=True):
        j = mutation.line - offset
        provenance = {
            "source": "ast_mutator",
            "operator": mutation.operator,
            "line": j,
            "original": mutation.original,
            "mutated": mutation.mutated,
            "status": verdict.status,
        }
        if verdict.passed:
            stats["passing"] += 1
            mutated = [*texts[:j], mutation.mutated, *texts[j + 1 :]]
            labels = [neutral_or(x.kind, 1.0) for x in lines]
        else:
            stats["failing"] += 1
            mutated = [*texts[:j], mutation.mutated]
            labels = [neutral_or(x.kind, 1.0) for x in lines[:j]] + [-1.0]
        samples.append(sample(problem, mutated, labels, "mutation", provenance))
    return Labeled(samples, executions=len(programs), stats=stats)


def _apply(program: str, mutation: Mutation) -> str:
    lines = program.split("\n")
    lines[mutation.line] = mutation.mutated
    return "\n".join(lines)


def _why(verdict: EvaluateResponse) -> str:
    case = verdict.cases[0] if verdict.cases else None
    return f"{verdict.status}: {case.error if case else ''}"[:300]
