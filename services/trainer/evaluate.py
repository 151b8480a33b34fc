"""`codeprm eval`: pass@1 of a policy through the executor, split by response length.

Greedy decoding, one program per problem, the same prompt format and end-of-code rule as PPO's
rollouts. PSGPO's gain is on long responses, so results are also reported for responses up to
and beyond `long_tokens` tokens.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from contracts.datasets import load_problems
from contracts.prm_model import resolve_device
from services.trainer.judge import ServiceJudge
from services.trainer.rollout import Sampling, generate


class Bucket(BaseModel):
    problems: int
    passed: int
    pass_at_1: float | None


class EvalReport(BaseModel):
    model: str
    dataset: str
    overall: Bucket
    by_length: dict[str, Bucket]


def evaluate_policy(
    model_dir: Path,
    dataset: str,
    executor_url: str,
    *,
    limit: int | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    long_tokens: int = 100,
    device: str = "auto",
    out: Path | None = None,
) -> EvalReport:
    dev = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    model = model.to(dev).eval()
    problems = load_problems(dataset)[:limit]
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=0.0)
    rollouts = []
    for start in range(0, len(problems), batch_size):
        chunk = problems[start : start + batch_size]
        rollouts += generate(model, tokenizer, chunk, 1, sampling, dev)
    judge = ServiceJudge(executor_url=executor_url, prm_url=None)
    verdicts = asyncio.run(judge.judge(rollouts)).verdicts
    lengths = [len(r.response_ids) for r in rollouts]
    passed = [v.passed for v in verdicts]
    short = [p for p, n in zip(passed, lengths, strict=True) if n <= long_tokens]
    long = [p for p, n in zip(passed, lengths, strict=True) if n > long_tokens]
    report = EvalReport(
        model=str(model_dir),
        dataset=dataset,
        overall=_bucket(passed),
        by_length={
            f"<={long_tokens} tokens": _bucket(short),
            f">{long_tokens} tokens": _bucket(long),
        },
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w") as f:
            for rollout, verdict in zip(rollouts, verdicts, strict=True):
                row = {
                    "problem_id": rollout.problem.problem_id,
                    "completion": rollout.text,
                    "tokens": len(rollout.response_ids),
                    "passed": verdict.passed,
                }
                f.write(json.dumps(row) + "\n")
    return report


def _bucket(passed: list[bool]) -> Bucket:
    return Bucket(
        problems=len(passed),
        passed=sum(passed),
        pass_at_1=sum(passed) / len(passed) if passed else None,
    )
