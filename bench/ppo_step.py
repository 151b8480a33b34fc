"""Where a PPO step's time goes: generation, reward calls (executor + PRM server), update.

    python bench/ppo_step.py [--shape tiny|small|qwen2-0.5b] [--steps 4] [--device auto]
                             [--json FILE]

Real services on loopback (a `codeprm executor serve` and a `codeprm prm serve`), a policy and a
PRM of the same Qwen2 shape with random weights (same cost as trained ones), `dense+value_init`
mode, HumanEval prompts. The baseline is the step itself: the script prints each part's share of
the step's wall time; the issue's target is reward calls <= 10% of the step on a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from common import start_executor, start_prm_server, torch_machine
from prm_server import SHAPES, shape_config
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

from codeprm.services.trainer.ppo import train_ppo
from codeprm.services.trainer.ppo_config import PpoConfig
from codeprm.tiny import build_tokenizer


def build_models(shape: str, root: Path) -> tuple[Path, Path]:
    """A policy and a PRM of one shape, sharing one tokenizer (value_init needs that)."""
    tokenizer = build_tokenizer()
    config = shape_config(shape, tokenizer)
    torch.manual_seed(0)
    for name, auto in (("policy", AutoModelForCausalLM), ("prm", AutoModelForTokenClassification)):
        auto.from_config(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root / "policy", root / "prm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    print(torch_machine())
    print(
        f"shape {args.shape} {SHAPES[args.shape]}, {args.prompts} prompts x {args.samples} "
        f"samples, <= {args.max_new_tokens} new tokens, {args.steps} steps",
        flush=True,
    )
    executor, executor_url = start_executor()
    with tempfile.TemporaryDirectory() as tmp:
        policy, prm = build_models(args.shape, Path(tmp))
        try:
            server, prm_url = start_prm_server(prm, args.device)
        except SystemExit:
            executor.terminate()
            raise
        try:
            result = train_ppo(
                PpoConfig(
                    policy=policy,
                    value_init=prm,
                    mode="dense+value_init",
                    dataset="humaneval",
                    out=Path(tmp) / "run",
                    executor_url=executor_url,
                    prm_url=prm_url,
                    steps=args.steps + 1,
                    prompts_per_step=args.prompts,
                    samples_per_prompt=args.samples,
                    max_new_tokens=args.max_new_tokens,
                    save_every=10_000,
                    device=args.device,
                )
            )
        finally:
            server.terminate()
            executor.terminate()
            server.wait(60)
            executor.wait(60)
    rows = result.history[1:]  # the first step warms up kernels and connections
    step = statistics.mean(r["time/step_s"] for r in rows)
    tokens = statistics.mean(r["rollout/response_tokens"] for r in rows)
    print(f"  mean step: {step:.2f} s, {tokens:.0f} response tokens per rollout")
    parts = {}
    for key, label in (
        ("time/generate_s", "generation"),
        ("time/rewards_s", "reward calls (executor + PRM, concurrent)"),
        ("time/executor_s", "  of which executor"),
        ("time/prm_s", "  of which PRM server"),
        ("time/update_s", "PPO update (old/ref log-probs, values, epochs)"),
    ):
        value = statistics.mean(r[key] for r in rows)
        parts[key.removeprefix("time/").removesuffix("_s")] = value
        print(f"  {label:<48} {value:7.3f} s  {value / step:6.1%}")
    if args.json:
        figures = {
            "machine": torch_machine(),
            "shape": args.shape,
            "steps_measured": len(rows),
            "step_s": step,
            "response_tokens": tokens,
            "seconds": parts,
            "reward_share": parts["rewards"] / step,
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
