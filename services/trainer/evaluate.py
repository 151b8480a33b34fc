"""`codeprm eval`: pass@1 and pass@k of a policy through the executor, split by length.

`samples` programs per problem, sampled at `temperature` (0: greedy, one program), with the
same prompt format and end-of-code rule as PPO's rollouts. pass@1 is the mean over problems of
c/n, pass@k the unbiased estimate 1 - C(n-c, k)/C(n, k) (Chen et al., 2021), c of n samples
passing. PSGPO's gain is on long programs, so results are also split:

* by the problem's length in code lines (its reference solution's, else the median of its
  samples'): the same problems sit in the same bucket before and after training;
* by each sample's response length in tokens (`long_tokens`).
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from codeprm.client import ExecutorClient
from codeprm.datasets import Problem, load_problems
from codeprm.files import atomic_open, checkpoint_dir
from codeprm.lines import split_lines
from codeprm.prm_model import resolve_device
from codeprm.services.trainer.reward_client import RewardClient
from codeprm.services.trainer.rollout import Rollout, Sampling, generate


class Bucket(BaseModel):
    problems: int
    samples: int
    passed: int
    pass_at_1: float | None
    pass_at_k: dict[int, float | None] = {}


class EvalReport(BaseModel):
    model: str
    dataset: str
    samples_per_problem: int
    temperature: float
    overall: Bucket
    by_lines: dict[str, Bucket]
    """By the problem's length in code lines."""
    by_tokens: dict[str, Bucket]
    """By each sample's response length in tokens (a problem counts in each bucket it has
    samples in)."""

    def summary(self) -> str:
        parts = [f"pass@1 {_fmt(self.overall.pass_at_1)}"]
        parts += [f"pass@{k} {_fmt(v)}" for k, v in self.overall.pass_at_k.items() if k != 1]
        parts += [
            f"{name}: {_fmt(b.pass_at_1)} ({b.problems})" for name, b in self.by_lines.items()
        ]
        return ", ".join(parts)


@dataclass(frozen=True)
class Sampled:
    rollout: Rollout
    passed: bool


def evaluate_policy(
    model_dir: Path,
    dataset: str,
    executor_url: str,
    *,
    limit: int | None = None,
    samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    ks: Sequence[int] = (1,),
    max_new_tokens: int = 256,
    batch_size: int = 8,
    line_edges: Sequence[int] = (5, 10),
    long_tokens: int = 100,
    device: str = "auto",
    seed: int = 0,
    out: Path | None = None,
) -> EvalReport:
    checkpoint_dir(model_dir, "policy")
    problems = load_problems(dataset)[:limit]
    with ExecutorClient(executor_url, retries=1) as executor:  # down: say so before sampling
        executor.ping()
    dev = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    model = model.to(dev).eval()
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    torch.manual_seed(seed)
    results = sample_and_judge(
        model, tokenizer, problems, samples, sampling, dev, executor_url, batch_size=batch_size
    )
    report = summarize(
        results,
        problems,
        model=str(model_dir),
        dataset=dataset,
        temperature=temperature,
        ks=ks,
        line_edges=line_edges,
        long_tokens=long_tokens,
    )
    if out is not None:
        write_samples(results, out)
    return report


def sample_and_judge(
    model: Any,
    tokenizer: Any,
    problems: list[Problem],
    samples: int,
    sampling: Sampling,
    device: torch.device,
    executor_url: str,
    *,
    batch_size: int = 8,
) -> list[Sampled]:
    """`samples` programs per problem (one when greedy), each with its executor verdict."""
    n = samples if sampling.temperature > 0 else 1
    rollouts: list[Rollout] = []
    was_training = model.training
    model.eval()
    for start in range(0, len(problems), batch_size):
        chunk = problems[start : start + batch_size]
        rollouts += generate(model, tokenizer, chunk, n, sampling, device)
    model.train(was_training)
    judge = RewardClient(executor_url=executor_url, prm_url=None)
    verdicts = asyncio.run(judge.judge(rollouts)).verdicts
    return [Sampled(r, v.passed) for r, v in zip(rollouts, verdicts, strict=True)]


def summarize(
    results: list[Sampled],
    problems: list[Problem],
    *,
    model: str,
    dataset: str,
    temperature: float,
    ks: Sequence[int] = (1,),
    line_edges: Sequence[int] = (5, 10),
    long_tokens: int = 100,
) -> EvalReport:
    per_problem: dict[str, list[Sampled]] = {p.problem_id: [] for p in problems}
    for result in results:
        per_problem[result.rollout.problem.problem_id].append(result)
    lengths = {p.problem_id: problem_lines(p, per_problem[p.problem_id]) for p in problems}
    by_lines: dict[str, list[list[Sampled]]] = {name: [] for name in _line_names(line_edges)}
    for problem_id, group in per_problem.items():
        by_lines[_line_bucket(lengths[problem_id], line_edges)].append(group)
    by_tokens: dict[str, list[list[Sampled]]] = {}
    for group in per_problem.values():
        for name, test in ((f"<={long_tokens} tokens", True), (f">{long_tokens} tokens", False)):
            kept = [s for s in group if (len(s.rollout.response_ids) <= long_tokens) == test]
            if kept:
                by_tokens.setdefault(name, []).append(kept)
    samples = max((len(g) for g in per_problem.values()), default=1)
    return EvalReport(
        model=model,
        dataset=dataset,
        samples_per_problem=samples,
        temperature=temperature,
        overall=bucket(list(per_problem.values()), ks),
        by_lines={name: bucket(groups, ks) for name, groups in by_lines.items()},
        by_tokens={name: bucket(groups, ks) for name, groups in by_tokens.items()},
    )


def problem_lines(problem: Problem, group: list[Sampled]) -> int:
    """Code lines of the problem's reference solution, else the median of its samples'."""
    if problem.solution:
        return _code_lines(problem.solution)
    if not group:
        return 0
    return int(statistics.median(_code_lines(s.rollout.text) for s in group))


def _code_lines(text: str) -> int:
    return sum(line.kind == "code" for line in split_lines(text))


def _line_names(edges: Sequence[int]) -> list[str]:
    names, low = [], 1
    for edge in edges:
        names.append(f"{low}-{edge} lines")
        low = edge + 1
    return [*names, f">{edges[-1]} lines" if edges else "all lines"]


def _line_bucket(lines: int, edges: Sequence[int]) -> str:
    names = _line_names(edges)
    for name, edge in zip(names, edges, strict=False):
        if lines <= edge:
            return name
    return names[-1]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass: 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, not {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def bucket(groups: list[list[Sampled]], ks: Sequence[int] = (1,)) -> Bucket:
    groups = [g for g in groups if g]
    passed = [sum(s.passed for s in g) for g in groups]
    rates: dict[int, float | None] = {}
    for k in sorted({1, *ks}):
        usable = [(len(g), c) for g, c in zip(groups, passed, strict=True) if len(g) >= k]
        rates[k] = sum(pass_at_k(n, c, k) for n, c in usable) / len(usable) if usable else None
    return Bucket(
        problems=len(groups),
        samples=sum(len(g) for g in groups),
        passed=sum(passed),
        pass_at_1=rates[1],
        pass_at_k=rates,
    )


def write_samples(results: list[Sampled], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out) as f:
        for result in results:
            row = {
                "problem_id": result.rollout.problem.problem_id,
                "completion": result.rollout.text,
                "tokens": len(result.rollout.response_ids),
                "code_lines": _code_lines(result.rollout.text),
                "passed": result.passed,
            }
            f.write(json.dumps(row) + "\n")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
