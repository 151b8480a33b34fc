"""What a PRM knows about a policy's programs that the policy does not: rankings of the
on-policy set by the PRM's line scores against rankings by the policy's own likelihood.

    python bench/onpolicy_rankings.py --prm demo-run/prm --policy POLICY \
        --programs demo-run/on_policy.jsonl [--max-tokens 1024] [--json FILE]

`--programs` is the labeler's binary-search export of the policy's samples on held-out problems
(the file `train prm --on-policy` reads; `codeprm demo` writes one). Every ranking is scored
as the AUC of passing vs failing programs, with the policy's total log-probability as the
baseline of the same run (ratio column). Then, over the failing programs, how often each
model's worst line is the line binary search labeled as the first error. The PRM's scores are
read as the PRM server reads them (`codeprm/prm_model.py`); the policy's log-probs per line in
the same line geometry (`services/trainer/likelihood.py`).
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
    """One program of the set, reduced to its judged lines (labeled, non-zero, and seen by
    both models): their PRM scores, their token log-probs, and the labeled first error."""

    def __init__(
        self, example: PrmExample, scores: Sequence[float | None], logprobs: list[list[float]]
    ) -> None:
        judged = [
            (s, lp, v)
            for s, lp, v in zip(scores, logprobs, example.labels, strict=True)
            if s is not None and lp and v is not None and v != 0
        ]
        self.passed = example.passed
        self.scores = [s for s, _, _ in judged]
        self.logprobs = [lp for _, lp, _ in judged]
        self.first_error = next((i for i, (_, _, v) in enumerate(judged) if v < 0), None)


RANKINGS: dict[str, Callable[[Program], float]] = {
    "PRM: lowest line score (the server's `min`)": lambda p: min(p.scores),
    "PRM: mean line score": lambda p: statistics.fmean(p.scores),
    "PRM: last line score": lambda p: p.scores[-1],
    "program length: minus its line count": lambda p: -len(p.scores),
    "policy: total log-prob (baseline)": lambda p: sum(sum(lp) for lp in p.logprobs),
    "policy: lowest line log-prob": lambda p: min(sum(lp) for lp in p.logprobs),
    "policy: lowest token log-prob": lambda p: min(min(lp) for lp in p.logprobs),
    "policy: mean token log-prob": lambda p: statistics.fmean(v for lp in p.logprobs for v in lp),
}
BASELINE = "policy: total log-prob (baseline)"


def score(
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
        if program.scores:
            programs.append(program)
    return programs


def first_error_hits(programs: list[Program], worst: Callable[[Program], int]) -> float | None:
    """Share of failing programs whose worst line is the labeled first error."""
    failing = [p for p in programs if not p.passed and p.first_error is not None]
    if not failing:
        return None
    return sum(worst(p) == p.first_error for p in failing) / len(failing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prm", type=Path, required=True, help="PRM checkpoint directory")
    parser.add_argument("--policy", type=Path, required=True, help="the policy (a causal LM)")
    parser.add_argument("--programs", type=Path, required=True, help="on-policy export (JSONL)")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    programs = score(args.prm, args.policy, read_examples(args.programs), args.max_tokens)
    passing = sum(p.passed for p in programs)
    print(torch_machine())
    print(f"{len(programs)} programs, {passing} passing, {len(programs) - passing} failing\n")

    aucs = {name: auc([(rank(p), p.passed) for p in programs]) for name, rank in RANKINGS.items()}
    baseline = aucs[BASELINE]
    print(f"{'ranking':48} {'AUC':>6} {'x baseline':>11}")
    for name, value in aucs.items():
        ratio = value / baseline if value is not None and baseline else None
        shown = "-" if value is None else f"{value:.3f}"
        print(f"{name:48} {shown:>6} {'-' if ratio is None else f'{ratio:.2f}x':>11}")

    def lowest(values: Callable[[Program], list[float]]) -> Callable[[Program], int]:
        return lambda p: min(range(len(p.scores)), key=lambda i: values(p)[i])

    hits = {
        "PRM's lowest-scored line": first_error_hits(programs, lowest(lambda p: p.scores)),
        "policy's least likely line": first_error_hits(
            programs, lowest(lambda p: [sum(lp) for lp in p.logprobs])
        ),
    }
    failing = sum(not p.passed and p.first_error is not None for p in programs)
    print(f"\nworst line is the labeled first error ({failing} failing programs):")
    for name, value in hits.items():
        print(f"  {name:30} {'-' if value is None else f'{value:.3f}'}")
    if args.json:
        figures = {"programs": len(programs), "passing": passing, "auc": aucs, "first_error": hits}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
