"""PSGPO labels: binary search over line prefixes for the first line after which the policy can
no longer reach a passing program.

Rules, for each program to label (the dataset row's `candidates`, or `samples_per_problem`
programs sampled from the policy):

* a program that passes its tests: every code line +1;
* a failing program with code lines c_1..c_T: prefix P_j is the program through c_j, and it is
  *recoverable* when any of K policy continuations of P_j passes. P_0 (nothing written yet)
  is taken as recoverable and P_T (the failing program itself) as not, so the search needs no
  probe at either end. Assuming monotonicity (once unrecoverable, longer prefixes stay so), it
  finds the first unrecoverable j with at most ceil(log2 T) probes, K completions each,
  instead of K*T for a linear scan. Code lines before c_j are +1, c_j and after -1;
* comment and blank lines are 0 everywhere.

`verify_probes` extra prefixes off the search path check the monotonicity assumption: a probe
that disagrees with the labels (recoverable after the first bad line, or not before it) is a
non-monotone finding, counted in the sample's provenance, the run's stats and the log.
`revised_only` keeps only failing programs whose labels contain a +1 -> -1 transition.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from codeprm.api.labeler import SearchOptions
from codeprm.api.labels import LabeledSample
from codeprm.client import AsyncExecutorClient
from codeprm.datasets import Problem
from codeprm.lines import split_lines
from codeprm.services.labeler.completions import CompletionBackend
from codeprm.services.labeler.labeling import Labeled, code_or_neutral, make_sample
from codeprm.services.labeler.prefixes import Prober, code_lines, prefix_through

log = logging.getLogger(__name__)


async def label_by_binary_search(
    problem: Problem,
    policy: CompletionBackend,
    executor: AsyncExecutorClient,
    options: SearchOptions,
) -> Labeled:
    prober = Prober(problem, policy, executor, options)
    programs = problem.candidates or await prober.sample_programs(options.samples_per_problem)
    stats: Counter[str] = Counter(programs=len(programs))
    results = await asyncio.gather(
        *(_label_program(problem, i, text, prober, stats) for i, text in enumerate(programs))
    )
    samples = [s for s in results if s is not None]
    if options.revised_only:
        samples = [s for s in samples if _revised(s.line_labels)]
        stats["dropped_not_revised"] = len(results) - stats["empty"] - len(samples)
    return Labeled(samples, prober.executions, prober.completions, dict(stats))


async def first_bad_line(
    prober: Prober, completion: str, verify_probes: int = 0
) -> tuple[int, int, int]:
    """(j, probes, non-monotone findings) for a failing completion: j is the 1-based ordinal
    of the first code line whose prefix is not recoverable."""
    code = code_lines(completion)
    known: dict[int, bool] = {}
    lo, hi = 0, len(code)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        known[mid] = await prober.recoverable(prefix_through(completion, code[mid - 1]))
        lo, hi = (mid, hi) if known[mid] else (lo, mid)
    off_path = [j for j in range(1, len(code)) if j not in known]
    checks = _spread(off_path, verify_probes)
    found = await asyncio.gather(
        *(prober.recoverable(prefix_through(completion, code[j - 1])) for j in checks)
    )
    violations = sum(ok != (j < hi) for j, ok in zip(checks, found, strict=True))
    return hi, len(known) + len(checks), violations


async def _label_program(
    problem: Problem, index: int, completion: str, prober: Prober, stats: Counter[str]
) -> LabeledSample | None:
    lines = split_lines(completion)
    code = code_lines(completion)
    if not code:
        stats["empty"] += 1
        return None
    texts = [line.text for line in lines]
    provenance: dict[str, object] = {"source": prober.policy.name, "candidate": index}
    if await prober.passes(completion):
        stats["passed"] += 1
        labels = [code_or_neutral(line, 1.0) for line in lines]
        return make_sample(problem, texts, labels, "binary_search", provenance | {"passed": True})
    first_bad, probes, violations = await first_bad_line(
        prober, completion, prober.options.verify_probes
    )
    bad_from = code[first_bad - 1].index
    labels = [code_or_neutral(line, 1.0 if line.index < bad_from else -1.0) for line in lines]
    stats["revised" if first_bad > 1 else "unrecoverable"] += 1
    if violations:
        stats["nonmonotone"] += violations
        log.warning(
            "non-monotone prefix labels",
            extra={"problem_id": problem.problem_id, "candidate": index, "count": violations},
        )
    provenance |= {
        "passed": False,
        "first_bad_line": bad_from,
        "code_lines": len(code),
        "probes": probes,
        "completions": probes * prober.options.k,
        "nonmonotone": violations,
    }
    return make_sample(problem, texts, labels, "binary_search", provenance)


def _revised(labels: list[float]) -> bool:
    steps = [v for v in labels if v != 0]
    return any(a > 0 > b for a, b in zip(steps, steps[1:], strict=False))


def _spread(items: list[int], n: int) -> list[int]:
    """n items spread evenly over `items` (all of them when n >= len(items))."""
    if n >= len(items):
        return items
    return [items[(2 * i + 1) * len(items) // (2 * n)] for i in range(n)]
