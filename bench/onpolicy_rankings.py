"""What a PRM knows about a policy's programs that the policy does not: rankings of the
on-policy set by the PRM's line scores against rankings by the policy's own likelihood.

    python bench/onpolicy_rankings.py --prm demo-run/prm --policy POLICY \
        --programs demo-run/on_policy.jsonl [--max-tokens 1024] [--json FILE]

`--programs` is the labeler's binary-search export of the policy's samples on held-out problems
(the file `train prm --on-policy` reads; `codeprm demo` writes one). Every ranking is scored
as the AUC of passing vs failing programs, against the policy's total log-probability as the
baseline of the same run (the difference column). Then, over the failing programs, how often
each model's worst line is the line binary search labeled as the first error. The PRM's scores
are read as the PRM server reads them (`codeprm/prm_model.py`); the policy's log-probs per line
in the same line geometry (`services/trainer/likelihood.py`).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from common import torch_machine
from transformers import AutoModelForCausalLM, AutoTokenizer

from codeprm.api.prm import ScoreItem
from codeprm.prm_model import encode, forward, load_prm
from codeprm.services.trainer.likelihood import line_logprobs
from codeprm.services.trainer.prm_data import PrmExample, read_examples
from codeprm.services.trainer.prm_metrics import auc


class Program:
    """One program of the set: its judged lines (labeled, non-zero: those `train prm`'s
    on-policy metrics read), their PRM scores and token log-probs, and the labeled first error.
    Line indices are the program's own, so the models' worst lines compare."""

    def __init__(
        self, example: PrmExample, scores: Sequence[float | None], logprobs: list[list[float]]
    ) -> None:
        judged = [i for i, v in enumerate(example.labels) if v is not None and v != 0]
        self.passed = example.passed
        self.total_logprob = sum(sum(line) for line in logprobs)  # = code_logprob
        self.scores = {i: s for i in judged if (s := scores[i]) is not None}
        self.logprobs = {i: logprobs[i] for i in judged if logprobs[i]}
        self.first_error = next((i for i in judged if (example.labels[i] or 0) < 0), None)


def _worst(values: dict[int, float]) -> int:
    return min(values, key=lambda i: values[i])


RANKINGS: dict[str, Callable[[Program], float]] = {
    "PRM: lowest line score (the server's `min`)": lambda p: min(p.scores.values()),
    "PRM: mean line score": lambda p: statistics.fmean(p.scores.values()),
    "PRM: last line score": lambda p: p.scores[max(p.scores)],
    "program length: minus its line count": lambda p: -len(p.scores),
    "policy: total log-prob (baseline)": lambda p: p.total_logprob,
    "policy: lowest line log-prob": lambda p: min(sum(lp) for lp in p.logprobs.values()),
    "policy: lowest token log-prob": lambda p: min(min(lp) for lp in p.logprobs.values()),
    "policy: mean token log-prob": lambda p: statistics.fmean(
        v for lp in p.logprobs.values() for v in lp
    ),
}
BASELINE = "policy: total log-prob (baseline)"
# Which line each model blames: compared with the line binary search labeled the first error.
# (`train prm`'s on_policy_first_error_accuracy asks another question: is the first line
# scored below the threshold the first error.)
WORST_LINE: dict[str, Callable[[Program], int]] = {
    "PRM's lowest-scored line": lambda p: _worst(p.scores),
    "policy's least likely line": lambda p: _worst({i: sum(lp) for i, lp in p.logprobs.items()}),
    "line of the policy's least likely token": lambda p: _worst(
        {i: min(lp) for i, lp in p.logprobs.items()}
    ),
}


def score_programs(
    prm_dir: Path, policy_dir: Path, examples: list[PrmExample], max_tokens: int
) -> list[Program]:
    prm = load_prm(prm_dir, device="cpu", dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    policy: Any = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32).eval()
    cpu = torch.device("cpu")
    programs = []
    for example in examples:
        item = ScoreItem(prompt=example.prompt, code=example.code)
        [scores] = forward(prm, [encode(prm, item, max_tokens)])
        logprobs = line_logprobs(policy, tokenizer, example.prompt, example.code, max_tokens, cpu)
        program = Program(example, scores, logprobs)
        if program.scores and program.logprobs:
            programs.append(program)
    return programs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prm", type=Path, required=True, help="PRM checkpoint directory")
    parser.add_argument("--policy", type=Path, required=True, help="the policy (a causal LM)")
    parser.add_argument("--programs", type=Path, required=True, help="on-policy export (JSONL)")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    programs = score_programs(args.prm, args.policy, read_examples(args.programs), args.max_tokens)
    passing = sum(p.passed for p in programs)
    failing = [p for p in programs if not p.passed and p.first_error is not None]
    print(torch_machine())
    print(f"{len(programs)} programs, {passing} passing, {len(programs) - passing} failing\n")

    aucs = {name: auc([(rank(p), p.passed) for p in programs]) for name, rank in RANKINGS.items()}
    baseline = aucs[BASELINE]
    print(f"{'ranking':48} {'AUC':>6} {'- baseline':>11}")
    for name, value in aucs.items():
        shown = "-" if value is None else f"{value:.3f}"
        gap = "-" if value is None or baseline is None else f"{value - baseline:+.3f}"
        print(f"{name:48} {shown:>6} {gap:>11}")

    hits = {
        name: sum(worst(p) == p.first_error for p in failing) / len(failing) if failing else None
        for name, worst in WORST_LINE.items()
    }
    print(f"\nthe worst line is the labeled first error ({len(failing)} failing programs):")
    for name, value in hits.items():
        print(f"  {name:40} {'-' if value is None else f'{value:.3f}'}")
    if args.json:
        figures = {"programs": len(programs), "passing": passing, "auc": aucs, "first_error": hits}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
