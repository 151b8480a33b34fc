"""`codeprm train sft`: a starting policy trained here, on CPU in minutes.

A byte-level BPE tokenizer is trained on the dataset's programs (plus some Python source), a
small Qwen2-shaped causal LM is built from it (`codeprm/tiny.py`), and it is fine-tuned on
`prompt + solution + EOS` with the loss on the solution's tokens only.

`noise` is the chance that a solution line is replaced by a wrong variant of itself (a constant
moved by one, a comparison or an aggregate swapped) in a training example: the policy then
learns a distribution that puts some mass on wrong lines, as a real policy does, so its pass@1
falls with the number of lines and there is something for RL to fix. Noise is drawn afresh
for every batch.

Resuming is not supported: a run takes minutes; `--out` must not hold a finished policy.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from codeprm import listfuncs
from codeprm.datasets import Problem, load_problems
from codeprm.files import atomic_write_text
from codeprm.prm_model import resolve_device
from codeprm.services.trainer.plots import plot_curves
from codeprm.services.trainer.runlog import append_row
from codeprm.tiny import build_tokenizer, code_corpus, tiny_config

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"


class SftConfig(BaseModel):
    dataset: str = Field("listfuncs", description="Problems with solutions (a name or JSONL).")
    out: Path = Field(description="Where the policy (model + tokenizer) is written.")
    limit_problems: int | None = Field(None, ge=1, description="Train on the first N only.")
    base_model: Path | None = Field(
        None, description="Fine-tune this causal LM (and keep its tokenizer) instead of a new one."
    )
    vocab_size: int = Field(1024, ge=300)
    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    steps: int = Field(700, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(5e-3, gt=0, description="Peak learning rate (AdamW), cosine to 10%.")
    warmup_steps: int = Field(30, ge=0)
    noise: float = Field(0.08, ge=0, le=1, description="Chance a solution line is made wrong.")
    fresh: float = Field(
        0.0,
        ge=0,
        le=1,
        description="listfuncs only: the share of each batch drawn afresh from the family's "
        "generator (new step sequences, never a held-out prompt) instead of "
        "from the dataset's problems.",
    )
    seed: int = 0
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")


# ---------------------------------------------------------------- noise


_NUMBER = re.compile(r"(?<![\w.])\d+(?![\w.])")
_SWAPS = (
    (" > ", " < "),
    (" < ", " > "),
    (" == ", " != "),
    (" != ", " == "),
    ("sum(", "len("),
    ("len(", "sum("),
    ("max(", "min("),
    ("min(", "max("),
    (" + ", " - "),
    (" - ", " + "),
    (" * ", " + "),
    ("reverse=True", "reverse=False"),
    ("[::-1]", "[1:]"),
    ("sorted(ys)", "sorted(ys, reverse=True)"),
    ("y % 2 == 0", "y % 2 == 1"),
    ("y % 2 == 1", "y % 2 == 0"),
)


def corrupt(line: str, rng: random.Random) -> str:
    """A wrong variant of a code line (or the line itself when no rule applies)."""
    options: list[str] = []
    for match in _NUMBER.finditer(line):
        n = int(match.group())
        for other in {n + 1, max(0, n - 1)} - {n}:
            options.append(line[: match.start()] + str(other) + line[match.end() :])
    options += [line.replace(a, b, 1) for a, b in _SWAPS if a in line]
    return rng.choice(options) if options else line


def noisy_solution(solution: str, noise: float, rng: random.Random) -> str:
    lines = solution.split("\n")
    return "\n".join(
        corrupt(line, rng) if line.strip() and rng.random() < noise else line for line in lines
    )


# ---------------------------------------------------------------- training


def train_sft(config: SftConfig, *, progress: bool = False) -> Path:
    hf_logging.disable_progress_bar()
    if (config.out / "config.json").is_file():
        raise FileExistsError(f"{config.out} already holds a policy; choose another --out")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    device = resolve_device(config.device)
    problems = [p for p in load_problems(config.dataset) if p.solution]
    problems = problems[: config.limit_problems]
    if not problems:
        raise ValueError(f"{config.dataset}: no problem has a solution to train on")

    tokenizer, model = _start(config, problems)
    draw = _batches(config, problems, rng)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / METRICS).unlink(missing_ok=True)
    history: list[dict[str, float | int | None]] = []
    columns = (
        TextColumn("[bold]train sft"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
    )
    log.info(
        "training",
        extra={"problems": len(problems), "parameters": _parameters(model), "steps": config.steps},
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("sft", total=config.steps, status="")
        for step in range(1, config.steps + 1):
            lr = _lr(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            ids, labels, mask = _collate(tokenizer, draw(), config.noise, rng, device)
            model.train()
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            row: dict[str, float | int | None] = {"step": step, "loss": loss.item(), "lr": lr}
            history.append(row)
            append_row(config.out / METRICS, row)
            bar.update(task, advance=1, status=f"loss {row['loss']:.3f}")
    atomic_write_text(config.out / "sft_config.json", config.model_dump_json(indent=2))
    plot_curves(history, config.out / "curves.png", [("train loss", ["loss"])])
    _save_policy(model, tokenizer, config.out)
    return config.out


def _save_policy(model: Any, tokenizer: Any, out: Path) -> None:
    """Saved in a staging folder inside `out`, then moved in with config.json last: its
    presence marks a finished policy, so a crash mid-save never leaves one that looks whole."""
    with tempfile.TemporaryDirectory(dir=out, prefix=".policy.") as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        for name in sorted(os.listdir(staging), key=lambda name: name == "config.json"):
            os.replace(Path(staging, name), out / name)


def _start(config: SftConfig, problems: list[Problem]) -> tuple[Any, Any]:
    if config.base_model is not None:
        tokenizer = AutoTokenizer.from_pretrained(config.base_model)
        model = AutoModelForCausalLM.from_pretrained(config.base_model, dtype=torch.float32)
        return tokenizer, model
    # The tokenizer learns the task's words and Python's; merges of the task's phrases keep
    # programs short, which is what a small model on a CPU needs.
    corpus = [p.prompt + (p.solution or "") for p in problems] + code_corpus()[:6]
    tokenizer = build_tokenizer(config.vocab_size, corpus)
    model = AutoModelForCausalLM.from_config(
        tiny_config(tokenizer, hidden=config.hidden, layers=config.layers, heads=config.heads)
    )
    return tokenizer, model


def _batches(
    config: SftConfig, problems: list[Problem], rng: random.Random
) -> Callable[[], list[tuple[str, str]]]:
    """A function drawing one batch of (prompt, solution) pairs.

    `fresh` > 0 mixes in new programs of the family (listfuncs only), so a long run sees more
    step sequences than the dataset's 1000 problems hold."""
    if config.fresh and config.dataset != "listfuncs":
        raise ValueError("fresh programs are drawn for the `listfuncs` training split only")
    held_out = frozenset(p.prompt for p in listfuncs.problems("test")) if config.fresh else None

    def draw() -> list[tuple[str, str]]:
        if held_out is None:
            chosen = rng.sample(problems, min(config.batch_size, len(problems)))
            return [(p.prompt, p.solution or "") for p in chosen]
        batch = []
        for _ in range(config.batch_size):
            if held_out is not None and rng.random() < config.fresh:
                batch.append(listfuncs.fresh_program(rng, held_out))
            else:
                problem = rng.choice(problems)
                batch.append((problem.prompt, problem.solution or ""))
        return batch

    return draw


def _collate(
    tokenizer: Any,
    batch: list[tuple[str, str]],
    noise: float,
    rng: random.Random,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = []
    for text, solution in batch:
        prompt = tokenizer(text)["input_ids"]
        answer = noisy_solution(solution, noise, rng)
        completion = tokenizer(answer)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((prompt, completion))
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
    labels = torch.full_like(ids, -100)  # -100: no loss (prompt and padding)
    mask = torch.zeros_like(ids)
    for i, (prompt, completion) in enumerate(rows):
        n = len(prompt) + len(completion)
        ids[i, :n] = torch.tensor(prompt + completion)
        labels[i, len(prompt) : n] = torch.tensor(completion)
        mask[i, :n] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def _lr(config: SftConfig, step: int) -> float:
    # 1) linear warm-up, 2) cosine decay to a tenth of the peak
    if step <= config.warmup_steps:
        return config.lr * step / max(1, config.warmup_steps)
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
