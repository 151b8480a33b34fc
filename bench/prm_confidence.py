"""Can a PRM be taught what the policy knows? Rows built from the policy's own confidence,
added to the demo's labels, against the demo's labels alone, by on-policy AUC.

    python bench/prm_confidence.py --policy POLICY --labels demo-run/labels.jsonl \
        --on-policy demo-run/on_policy.jsonl [--problems 500] [--samples 8] [--seeds 0 1]

The policy ranks its own passing and failing programs far better than a PRM trained on the
labeler's rows does (`bench/onpolicy_rankings.py`). This asks whether that knowledge can be
moved into the PRM through its training rows, with the checkpoint format left as it is. The
policy writes `--samples` programs for each of `--problems` listfuncs training problems
(temperature 1, as PPO samples), a real `codeprm executor serve` judges them, and each program
becomes a row of either kind:

* **confidence**: every line's target is the policy's confidence in it,
  `2 * sigmoid(min token log-prob of the line + 2) - 1` (a line whose least likely token has
  p = e^-2 = 0.14 sits at 0), whatever the verdict;
* **outcome + confidence**: a passing program's lines are +1; in a failing one the line of its
  least likely token is -1, the lines before it +1 (what follows is left out, as
  `--after-error drop` does).

Every PRM is trained with the demo's recipe (`codeprm.demo.prm_recipe`: 3 epochs, lr 1e-3,
`--after-error drop --balance`) from the policy, two at a time (one torch thread each); the
demo's labels alone are the baseline of the same run, per seed (the seed also picks the
held-out problems, so seeds differ by more than the PRM's initialisation).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from common import start_executor, torch_machine
from transformers import AutoModelForCausalLM, AutoTokenizer

from codeprm.datasets import load_problems
from codeprm.demo import prm_recipe
from codeprm.lines import split_lines
from codeprm.services.trainer.evaluate import Sampled, sample_and_judge
from codeprm.services.trainer.likelihood import line_logprobs
from codeprm.services.trainer.prm_train import train_prm
from codeprm.services.trainer.rollout import Sampling

CENTRE = -2.0  # a line whose least likely token has this log-prob gets confidence 0
MAX_TOKENS = 1024  # as the demo's PRM reads a program (prm_recipe)


def sample(
    model: Any, tokenizer: Any, problems: int, samples: int, executor_url: str
) -> list[Sampled]:
    tasks = load_problems("listfuncs")
    random.Random(0).shuffle(tasks)
    torch.manual_seed(0)
    sampling = Sampling(max_new_tokens=200, temperature=1.0)
    cpu = torch.device("cpu")
    return sample_and_judge(
        model, tokenizer, tasks[:problems], samples, sampling, cpu, executor_url, batch_size=16
    )


def rows(
    model: Any, tokenizer: Any, programs: Sequence[Sampled]
) -> dict[str, list[dict[str, Any]]]:
    """Per kind, the programs as labeler-export rows (line_labels on the +1/-1 scale)."""
    cpu = torch.device("cpu")
    out: dict[str, list[dict[str, Any]]] = {"confidence": [], "outcome + confidence": []}
    for program in programs:
        rollout = program.rollout
        code = rollout.text if rollout.text.endswith("\n") else rollout.text + "\n"
        lines = split_lines(code)
        judged = [i for i, line in enumerate(lines) if line.kind == "code"]
        if not judged:
            continue
        per_line = line_logprobs(model, tokenizer, rollout.problem.prompt, code, MAX_TOKENS, cpu)
        lowest = [min(tokens, default=0.0) for tokens in per_line]
        confidence = [2 / (1 + math.exp(-(v - CENTRE))) - 1 for v in lowest]
        if program.passed:
            located: list[float | None] = [1.0] * len(lines)
        else:
            bad = min(judged, key=lambda i: lowest[i])
            located = [1.0 if i < bad else -1.0 if i == bad else None for i in range(len(lines))]
        row = {
            "problem_id": rollout.problem.problem_id,
            "prompt": rollout.problem.prompt,
            "completions": code[:-1].split("\n"),  # the export joins them with "\n"
            "provenance": {"passed": program.passed},
        }
        out["confidence"].append(row | {"line_labels": confidence, "strategy": "confidence"})
        out["outcome + confidence"].append(
            row | {"line_labels": located, "strategy": "outcome_confidence"}
        )
    return out


def train(job: tuple[str, Path, Path, Path, Path, int]) -> tuple[str, int, float, float]:
    name, data, policy, on_policy, out, seed = job
    torch.set_num_threads(1)
    config = prm_recipe(data, policy, out, on_policy, device="cpu")
    # Only the final evaluation: the figures are the trained PRM's.
    result = train_prm(config.model_copy(update={"seed": seed, "eval_every": 10_000}))
    assert result.on_policy is not None and result.on_policy.auc is not None
    first_error = result.on_policy.first_error_accuracy or 0.0
    return name, seed, result.on_policy.auc, first_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True, help="the demo's labels.jsonl")
    parser.add_argument("--on-policy", type=Path, required=True, help="the demo's test set")
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    print(torch_machine())

    tokenizer = AutoTokenizer.from_pretrained(args.policy)
    model = AutoModelForCausalLM.from_pretrained(args.policy).eval()
    executor, url = start_executor()
    try:
        programs = sample(model, tokenizer, args.problems, args.samples, url)
    finally:
        executor.terminate()
    passing = sum(p.passed for p in programs)
    print(f"{len(programs)} programs of {args.problems} training problems, {passing} passing")

    work = Path(tempfile.mkdtemp(prefix="prm-confidence-"))
    labels = args.labels.read_text()
    data = {"demo labels (baseline)": args.labels}
    for kind, kind_rows in rows(model, tokenizer, programs).items():
        path = work / f"{kind.replace(' + ', '_')}.jsonl"
        path.write_text(labels + "".join(json.dumps(r) + "\n" for r in kind_rows))
        data[f"demo labels + {kind}"] = path
    jobs = [
        (name, path, args.policy, args.on_policy, work / f"prm-{i}-{seed}", seed)
        for i, (name, path) in enumerate(data.items())
        for seed in args.seeds
    ]
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(train, jobs))

    auc = {(name, seed): value for name, seed, value, _ in results}
    print(f"\non-policy AUC, {len(args.seeds)} seeds; difference to the baseline's, same seed")
    header = ("training rows", "AUC per seed", "mean", "vs baseline", "first err")
    print("{:<38} {:<22} {:>6} {:>12} {:>9}".format(*header))
    baseline = "demo labels (baseline)"
    figures = []
    for name in data:
        values = [auc[(name, s)] for s in args.seeds]
        diffs = [auc[(name, s)] - auc[(baseline, s)] for s in args.seeds]
        first = statistics.mean(f for n, _, _, f in results if n == name)
        per_seed = " ".join(f"{v:.3f}" for v in values)
        mean_diff = statistics.mean(diffs)
        print(
            f"{name:<38} {per_seed:<22} {statistics.mean(values):>6.3f} "
            f"{mean_diff:>+12.3f} {first:>9.3f}"
        )
        figures.append({"rows": name, "auc": values, "vs_baseline": diffs, "first_error": first})
    if args.json:
        args.json.write_text(json.dumps({"programs": len(programs), "results": figures}, indent=1))


if __name__ == "__main__":
    main()
