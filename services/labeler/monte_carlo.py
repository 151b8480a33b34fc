"""Math-Shepherd-style soft labels: for every code line, the fraction of K policy continuations
of the prefix through that line that pass the tests.

The last code line's value is the program's own verdict (1.0 or 0.0), which needs no
continuation; comment and blank lines are 0. Cost: K*(T-1) completions per program of T code
lines, so this is the expensive strategy; `line_labels` are soft values in [0, 1] and
`labels` (TRL) is True where the value is above 0.
"""

from __future__ import annotations

import asyncio

from codeprm.api.labeler import SearchOptions
from codeprm.api.labels import LabeledSample
from codeprm.client import AsyncExecutorClient
from codeprm.datasets import Problem
from codeprm.lines import split_lines
from codeprm.services.labeler.completions import CompletionBackend
from codeprm.services.labeler.labeling import Labeled, make_sample
from codeprm.services.labeler.prefixes import Prober, code_lines, prefix_through


async def label_by_monte_carlo(
    problem: Problem,
    policy: CompletionBackend,
    executor: AsyncExecutorClient,
    options: SearchOptions,
) -> Labeled:
    prober = Prober(problem, policy, executor, options)
    programs = problem.candidates or await prober.sample_programs(options.samples_per_problem)
    results = await asyncio.gather(
        *(_label_program(problem, i, text, prober) for i, text in enumerate(programs))
    )
    samples = [s for s in results if s is not None]
    stats = {"programs": len(programs), "empty": len(programs) - len(samples)}
    return Labeled(samples, prober.executions, prober.completions, stats)


async def _label_program(
    problem: Problem, index: int, completion: str, prober: Prober
) -> LabeledSample | None:
    code = code_lines(completion)
    if not code:
        return None
    *inner, last = code
    passed, *rates = await asyncio.gather(
        prober.passes(completion),
        *(prober.pass_rate(prefix_through(completion, line)) for line in inner),
    )
    values = {line.index: rate for line, rate in zip(inner, rates, strict=True)}
    values[last.index] = 1.0 if passed else 0.0
    lines = split_lines(completion)
    return make_sample(
        problem,
        [line.text for line in lines],
        [float(values.get(line.index, 0.0)) for line in lines],
        "monte_carlo",
        {
            "source": prober.policy.name,
            "candidate": index,
            "passed": bool(passed),
            "completions": len(inner) * prober.options.k,
        },
    )
