"""PRM training throughput: `train_prm` on a Qwen2-shaped model, tokens/s and padding.

    python bench/prm_train.py [--shape tiny|small|qwen2-0.5b|qwen2-1.5b] [--programs 128]
                              [--tokens 512] [--batch-size 8] [--device auto] [--json FILE]

One process (a launcher's processes each run the same loop on their share). The programs are
HumanEval solutions laid end to end to 75-100% of `--tokens` tokens (`bench/prm_server.py`),
every code line labeled +1 or -1 at random (the cost of a step does not depend on the labels),
in the labeler's export format; no held-out split, so every step is a training step. Reported:
real tokens per second of the optimizer steps (the first step, which warms up kernels, left
out) and the padding fraction of the length-bucketed micro-batches, both from the run's own
`metrics.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import torch_machine
from prm_server import SHAPES, build_model, make_items

from codeprm.services.trainer.prm_train import TrainPrmConfig, train_prm
from codeprm.tiny import build_tokenizer


def write_rows(path: Path, programs: int, tokens: int) -> Path:
    rng = random.Random(0)
    rows = []
    for i, item in enumerate(make_items(build_tokenizer(), programs, tokens)):
        lines = item.code.splitlines()
        labels = [rng.choice([1.0, -1.0]) for _ in lines]
        rows.append(
            {
                "prompt": item.prompt,
                "completions": lines,
                "labels": [v > 0 for v in labels],
                "line_labels": labels,
                "problem_id": f"bench/{i}",
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--programs", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=512, help="longest program, in tokens")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    print(torch_machine())
    print(
        f"shape {args.shape} {SHAPES[args.shape]}, {args.programs} programs of "
        f"{args.tokens * 3 // 4}-{args.tokens} tokens, batch {args.batch_size}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # fp32 weights: the trainer's master copy is fp32 whatever the file holds.
        model = build_model(args.shape, root / "base")
        data = write_rows(root / "labels.jsonl", args.programs, args.tokens)
        config = TrainPrmConfig(
            data=data,
            base_model=model,
            out=root / "prm",
            epochs=1,
            batch_size=args.batch_size,
            warmup_steps=1,
            max_tokens=args.tokens + 64,
            eval_fraction=0,
            eval_every=1_000_000,
            save_every=1_000_000,
            device=args.device,
            gradient_checkpointing=args.gradient_checkpointing,
        )
        started = time.perf_counter()
        train_prm(config)
        wall = time.perf_counter() - started
        rows = [json.loads(r) for r in (config.out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["step"] >= 2] or rows[-1:]
    figures = {
        "machine": torch_machine(),
        "shape": args.shape,
        "programs": args.programs,
        "batch_size": args.batch_size,
        "gradient_checkpointing": args.gradient_checkpointing,
        "steps": len(rows),
        "tokens_per_s": statistics.mean(r["tokens_per_s"] for r in steps),
        "padding_fraction": statistics.mean(r["padding_fraction"] for r in steps),
        "wall_s": wall,
        "peak_gpu_memory_gib": (
            torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
        ),
    }
    print(
        f"  {figures['tokens_per_s']:,.0f} tokens/s over {len(steps)} steps, padding "
        f"{figures['padding_fraction']:.1%} (whole run {wall:.1f} s)"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
