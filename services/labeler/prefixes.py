"""Prefix probes, the measurement both search strategies are made of: sample K continuations of
a program prefix from the policy, execute the K programs, count how many pass.

The policy continues `problem.prompt + prefix`; the program executed is
`problem.program_prefix + prefix + continuation` (for HumanEval the two starts are the same
text). A prefix always ends with a newline, so continuations start a fresh line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from codeprm.api.executor import EvaluateRequest
from codeprm.api.labeler import SearchOptions
from codeprm.client import AsyncExecutorClient
from codeprm.datasets import Problem
from codeprm.lines import Line, split_lines
from codeprm.services.labeler.completions import CompletionBackend


def code_lines(completion: str) -> list[Line]:
    return [line for line in split_lines(completion) if line.kind == "code"]


def prefix_through(completion: str, line: Line) -> str:
    """The completion up to and including `line`, ending with a newline."""
    end = completion.find("\n", line.end)
    prefix = completion if end == -1 else completion[: end + 1]
    return prefix if prefix.endswith("\n") else prefix + "\n"


@dataclass
class Prober:
    """Probes for one problem. Verdicts are remembered by program text, so a program that
    several continuations (or several probes) produce is executed once; the executor's own
    cache does the same across jobs."""

    problem: Problem
    policy: CompletionBackend
    executor: AsyncExecutorClient
    options: SearchOptions
    completions: int = 0
    executions: int = 0
    _verdicts: dict[str, bool] = field(default_factory=dict)

    async def sample_programs(self, n: int) -> list[str]:
        """n completions of the bare prompt: programs to label."""
        texts = await self.policy.continuations(self.problem.prompt, "", n, self.options.sampling)
        self.completions += n
        return texts

    async def passes(self, completion: str) -> bool:
        return (await self._execute([self.problem.program(completion)]))[0]

    async def pass_rate(self, prefix: str) -> float:
        """Fraction of K sampled continuations of `prefix` that pass all tests."""
        k = self.options.k
        texts = await self.policy.continuations(
            self.problem.prompt, prefix, k, self.options.sampling
        )
        self.completions += k
        passed = await self._execute([self.problem.program(prefix + t) for t in texts])
        return sum(passed) / k

    async def recoverable(self, prefix: str) -> bool:
        return await self.pass_rate(prefix) > 0

    async def _execute(self, programs: list[str]) -> list[bool]:
        new = list(dict.fromkeys(p for p in programs if p not in self._verdicts))
        if new:
            verdicts = await self.executor.evaluate_batch(
                [
                    EvaluateRequest(
                        code=code,
                        tests=self.problem.tests,
                        timeout_s=self.options.timeout_s,
                        stop_on_first_failure=True,
                    )
                    for code in new
                ]
            )
            self.executions += len(new)
            for code, verdict in zip(new, verdicts, strict=True):
                self._verdicts[code] = verdict.passed
        return [self._verdicts[p] for p in programs]
