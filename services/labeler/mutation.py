"""PRLCoder-style labels: mutate a correct solution line by line and execute every variant.

Rules, for a problem whose solution passes its tests (otherwise it yields no sample):

* the solution itself is one sample: every code line +1, comment and blank lines 0;
* a variant of code line i that **fails** the tests is a sample of the solution's lines up
  to and including the changed one: lines before it +1 (0 if neutral), line i -1. The sample
  stops at line i: what follows a wrong line teaches nothing about it;
* a variant that **passes** (an equivalent mutant, or a harmless rewrite) is a sample of the
  whole mutated solution, all code lines +1;
* a variant that runs more than `variant_timeout_factor` times as long as the solution (at
  least 1 s) fails by timeout, like any other failing variant.

Only the completion's lines are labeled; the problem's `program_prefix` (HumanEval's
signature and docstring) is context.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from codeprm.api.executor import EvaluateRequest, EvaluateResponse
from codeprm.api.labeler import MutationOptions
from codeprm.client import AsyncExecutorClient
from codeprm.datasets import Problem
from codeprm.lines import split_lines
from codeprm.services.labeler.ast_mutator import Mutation, apply_mutation, mutate_line
from codeprm.services.labeler.completions import CompletionBackend
from codeprm.services.labeler.labeling import Labeled, LabelingError, code_or_neutral, make_sample
from codeprm.services.labeler.teacher import Kind, load_prompt, teacher_variants


async def label_by_mutation(
    problem: Problem,
    executor: AsyncExecutorClient,
    options: MutationOptions,
    teacher: CompletionBackend | None = None,
    prompts_dir: Path | None = None,
) -> Labeled:
    """Variants come from the AST mutator, or from `teacher` when options.mutator is "teacher"."""
    if problem.solution is None:
        raise LabelingError("mutation needs a correct solution; this problem has none")
    solution = problem.solution
    program = problem.program(solution)
    offset = problem.program_prefix.count("\n")  # program line of the solution's first line
    lines = split_lines(solution)
    original = await executor.evaluate(
        EvaluateRequest(code=program, tests=problem.tests, timeout_s=options.timeout_s)
    )
    if not original.passed:
        raise LabelingError(f"the solution does not pass its own tests ({_why(original)})")
    code_lines = [offset + line.index for line in lines if line.kind == "code"]
    variants: list[Mutation] = []
    completions = 0
    if options.mutator == "ast":
        for i in code_lines:
            variants += mutate_line(program, i, options.variants_per_line)
    else:
        if teacher is None:
            raise LabelingError("mutator='teacher' but no teacher backend is configured")
        counts: dict[Kind, int] = {
            "bug": options.variants_per_line,
            "rewrite": options.rewrites_per_line,
        }
        templates = {kind: load_prompt(kind, prompts_dir) for kind in counts}
        per_line = await asyncio.gather(
            *(
                teacher_variants(problem, program, i, teacher, counts, options.sampling, templates)
                for i in code_lines
            )
        )
        variants = [m for found in per_line for m in found]
        completions = len(code_lines) * sum(counts.values())
    timeout_s = variant_timeout(options, original.wall_time_s)
    mutants = await executor.evaluate_batch(
        [
            EvaluateRequest(
                code=apply_mutation(program, m), tests=problem.tests, timeout_s=timeout_s
            )
            for m in variants
        ]
    )
    texts = [line.text for line in lines]
    samples = [
        make_sample(
            problem,
            texts,
            [code_or_neutral(x, 1.0) for x in lines],
            "mutation",
            {"source": "solution"},
        )
    ]
    teacher_name = teacher.name if teacher is not None else None
    stats = {
        "variants": len(variants),
        "failing": 0,
        "passing": 0,
        "timeouts": sum(v.status == "timeout" for v in mutants),
    }
    for mutation, verdict in zip(variants, mutants, strict=True):
        j = mutation.line - offset
        provenance: dict[str, object] = {
            "source": "ast_mutator" if options.mutator == "ast" else teacher_name,
            "operator": mutation.operator,
            "line": j,
            "original": mutation.original,
            "mutated": mutation.mutated,
            "status": verdict.status,
        }
        if verdict.passed:
            stats["passing"] += 1
            mutated = [*texts[:j], mutation.mutated, *texts[j + 1 :]]
            labels = [code_or_neutral(x, 1.0) for x in lines]
        else:
            stats["failing"] += 1
            mutated = [*texts[:j], mutation.mutated]
            labels = [code_or_neutral(x, 1.0) for x in lines[:j]] + [-1.0]
        samples.append(make_sample(problem, mutated, labels, "mutation", provenance))
    return Labeled(samples, executions=1 + len(variants), completions=completions, stats=stats)


def variant_timeout(options: MutationOptions, solution_s: float) -> float:
    if options.variant_timeout_factor == 0:
        return options.timeout_s
    return min(options.timeout_s, max(1.0, options.variant_timeout_factor * solution_s))


def _why(verdict: EvaluateResponse) -> str:
    case = verdict.cases[0] if verdict.cases else None
    return f"{verdict.status}: {case.error if case else ''}"[:300]
