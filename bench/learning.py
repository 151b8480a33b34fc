"""Do the PRM's rewards teach? PPO in the four modes, from the same policy and budget.

    python bench/learning.py --policy POLICY --prm PRM [--seeds 0 1 2] [--steps 30]
                             [--dense-variant plain|clip|delta] [--clip-eta ETA]
                             [--device cpu|cuda] [--out bench-learning]

POLICY is a starting policy (`codeprm train sft`, or the one `codeprm demo` caches), PRM a PRM
trained from it (`codeprm demo` writes one to demo-run/prm). Real services on loopback: a
`codeprm executor serve` and a `codeprm prm serve` of PRM. Every mode (outcome, dense,
value_init, dense+value_init) runs `--steps` PPO steps from POLICY for each seed, with the same
prompts and budget, and held-out sampled pass@1 on `listfuncs-test` is measured every
`--eval-every` steps, overall and by program length in code lines. The baseline is `outcome`
in the same run: for each mode the script prints the final pass@1 (mean and spread over seeds)
and the steps it took to reach `outcome`'s final pass@1, and writes results.json and
learning.png to --out.

`--device cuda` runs bigger batches and more held-out problems (one call of a few minutes on
a GPU); on a CPU the defaults fit the 2-core machine of docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any, get_args

from common import start_executor, start_prm_server, torch_machine

# the demo's PPO settings, measured for this policy size
from codeprm.demo import LEARNING, minibatch_size
from codeprm.services.trainer.plots import plot_curves
from codeprm.services.trainer.ppo import train_ppo
from codeprm.services.trainer.ppo_config import Mode, PpoConfig
from codeprm.token_rewards import DenseVariant

MODES: tuple[Mode, ...] = ("outcome", "dense", "value_init", "dense+value_init")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--prm", type=Path, required=True)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--eval-problems", type=int, default=None)
    parser.add_argument("--prompts", type=int, default=None, help="Prompts per step.")
    parser.add_argument("--samples", type=int, default=4, help="Rollouts per prompt.")
    parser.add_argument("--dense-variant", default="plain", choices=get_args(DenseVariant))
    parser.add_argument("--clip-eta", type=float, default=0.0, help="`clip`: min(score - eta, 0).")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("bench-learning"))
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    prompts = args.prompts or (32 if gpu else 16)
    eval_problems = args.eval_problems or (100 if gpu else 40)
    print(torch_machine())
    print(
        f"modes {args.modes}, seeds {args.seeds}, {args.steps} steps x {prompts} prompts x "
        f"{args.samples} samples, held-out: {eval_problems} listfuncs-test problems x 4 samples, "
        f"every {args.eval_every} steps"
    )
    # A stopped run still stops its services (the `finally` below runs on SIGTERM too).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    executor, executor_url = start_executor()
    prm, prm_url = start_prm_server(args.prm, args.device)
    runs: dict[str, list[list[dict[str, Any]]]] = {}
    try:
        for mode in args.modes:
            for seed in args.seeds:
                started = time.perf_counter()
                out = args.out / f"{mode}-seed{seed}"
                result = train_ppo(
                    PpoConfig(
                        policy=args.policy,
                        value_init=args.prm if "value_init" in mode else None,
                        mode=mode,
                        dataset="listfuncs",
                        out=out,
                        executor_url=executor_url,
                        prm_url=prm_url,
                        steps=args.steps,
                        prompts_per_step=prompts,
                        samples_per_prompt=args.samples,
                        minibatch_size=minibatch_size(prompts * args.samples),
                        dense_variant=args.dense_variant,
                        clip_eta=args.clip_eta,
                        max_new_tokens=args.max_new_tokens,
                        seed=seed,
                        device=args.device,
                        save_every=args.steps,
                        eval_dataset="listfuncs-test",
                        eval_limit=eval_problems,
                        eval_every=args.eval_every,
                        **LEARNING,
                    )
                )
                runs.setdefault(mode, []).append(result.history)
                last = result.history[-1]
                print(
                    f"{mode:>17} seed {seed}: pass@1 {result.history[0]['eval/pass_at_1']:.3f}"
                    f" -> {last['eval/pass_at_1']:.3f} in {time.perf_counter() - started:.0f} s"
                )
    finally:
        prm.terminate()
        executor.terminate()
    summary = summarize(runs)
    print_summary(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(summary, indent=2))
    plot(summary, args.out / "learning.png")
    print(f"results: {args.out / 'results.json'}, plot: {args.out / 'learning.png'}")


def summarize(runs: dict[str, list[list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per mode and evaluated step: mean and standard deviation over seeds of every eval key."""
    curves: dict[str, dict[str, list[list[float]]]] = {}
    for mode, histories in runs.items():
        per_key: dict[str, dict[int, list[float]]] = {}
        for history in histories:
            for row in history:
                for key, value in row.items():
                    if key.startswith("eval/") and value is not None:
                        per_key.setdefault(key, {}).setdefault(row["step"], []).append(value)
        curves[mode] = {
            key: [
                [step, statistics.mean(vs), statistics.pstdev(vs), len(vs)]
                for step, vs in sorted(by_step.items())
            ]
            for key, by_step in per_key.items()
        }
    target = None
    if "outcome" in curves:
        target = curves["outcome"]["eval/pass_at_1"][-1][1]
    reached = {
        mode: next(
            (step for step, mean, _, _ in curve["eval/pass_at_1"] if mean >= target),
            None,
        )
        if target is not None
        else None
        for mode, curve in curves.items()
    }
    return {"curves": curves, "outcome_final": target, "steps_to_outcome_final": reached}


def print_summary(summary: dict[str, Any]) -> None:
    curves = summary["curves"]
    keys = sorted({k for c in curves.values() for k in c})
    print(f"\n{'mode':>17}  " + "  ".join(f"{k.removeprefix('eval/'):>22}" for k in keys))
    for mode, curve in curves.items():
        cells = []
        for key in keys:
            points = curve.get(key)
            if not points:
                cells.append(f"{'-':>22}")
                continue
            first, last = points[0], points[-1]
            cells.append(f"{first[1]:.3f} -> {last[1]:.3f} ±{last[2]:.3f}".rjust(22))
        print(f"{mode:>17}  " + "  ".join(cells))
    target = summary["outcome_final"]
    if target is not None:
        print(f"\nsteps to reach outcome's final pass@1 ({target:.3f}):")
        for mode, step in summary["steps_to_outcome_final"].items():
            print(f"{mode:>17}  {'not reached' if step is None else step}")
        finals = {m: c["eval/pass_at_1"][-1][1] for m, c in summary["curves"].items()}
        base = finals.get("outcome")
        if base:
            print("\nfinal pass@1 / outcome's (same run):")
            for mode, value in finals.items():
                print(f"{mode:>17}  {value / base:.2f}x")


def plot(summary: dict[str, Any], out: Path) -> None:
    """One panel per length bucket, one line per mode (mean over seeds)."""
    curves = summary["curves"]
    keys = sorted({k for c in curves.values() for k in c})
    rows: list[dict[str, float | int | None]] = []
    panels = []
    for key in keys:
        names = []
        for mode, curve in curves.items():
            name = f"{mode}"
            for step, mean, _, _ in curve.get(key, []):
                rows.append({"step": step, f"{key}|{name}": mean})
            names.append(f"{key}|{name}")
        panels.append((key.removeprefix("eval/"), names))
    plot_curves(rows, out, panels)


if __name__ == "__main__":
    main()
