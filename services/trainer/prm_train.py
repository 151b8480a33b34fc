"""`codeprm train prm`: fit a line-level PRM on labeled programs.

The model is a causal-LM backbone with a one-output token-classification head, trained only
at the last token of each line (the geometry the server reads, `contracts/geometry.py`):
MSE on the +1 / 0 / -1 line labels (the PSGPO recipe; comment and blank lines are trained
towards 0), or BCE on 0/1 with neutral lines left out. Encoding and held-out scoring go
through the server's own `encode` and `forward`, so what is measured here is what is served.

Resuming is exact: the data order of every step is a pure function of (seed, step), and the
checkpoint holds the model, the optimizer and the step.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import AutoModelForTokenClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from contracts.files import atomic_dir, atomic_write_text, checkpoint_dir
from contracts.geometry import EncodedLines
from contracts.prm import METADATA_FILE, PrmMetadata, ScoreItem
from contracts.prm_model import LoadedPrm, encode, forward, resolve_device
from services.trainer.plots import plot_curves
from services.trainer.prm_data import (
    PrmExample,
    drop_after_first_error,
    read_examples,
    split_by_problem,
)
from services.trainer.prm_metrics import OnPolicyMetrics, PrmMetrics, evaluate, on_policy
from services.trainer.runlog import append_row, rows_until

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
METRICS = "metrics.jsonl"


class TrainPrmConfig(BaseModel):
    data: Path = Field(description="JSONL: the labeler's export or TRL stepwise rows.")
    base_model: Path = Field(description="Causal LM (or PRM) directory to start from.")
    out: Path = Field(description="Where the trained PRM, metrics and plot are written.")
    objective: Literal["mse", "bce"] = Field("mse", description="mse on +1/0/-1, bce on 0/1.")
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(8, ge=1, description="Programs per forward pass.")
    grad_accum: int = Field(1, ge=1, description="Forward passes per optimizer step.")
    lr: float = Field(1e-5, gt=0, description="Peak learning rate (AdamW).")
    warmup_steps: int = Field(10, ge=0, description="Linear warm-up, then cosine decay to 10%.")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_tokens: int = Field(2048, ge=16, description="Tokens per program, prompt included.")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="Problems held out.")
    eval_every: int = Field(50, ge=1, description="Optimizer steps between evaluations.")
    save_every: int = Field(100, ge=1, description="Optimizer steps between checkpoints.")
    seed: int = 0
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    prompt_template: str = Field("{prompt}", description="Text before the code; {prompt}.")
    # -- the labeling recipe, as far as training decides it
    after_error: Literal["keep", "drop"] = Field(
        "keep",
        description="Lines after a program's first bad line: keep their -1 labels (PSGPO as "
        "written) or leave them out (see prm_data.drop_after_first_error).",
    )
    balance: bool = Field(
        False, description="Passing and failing programs weigh the same in the loss."
    )
    on_policy: Path | None = Field(
        None,
        description="The labeler's binary-search export of the policy's own samples on "
        "held-out problems: on-policy AUC and first-error accuracy are measured on it.",
    )


@dataclass(frozen=True)
class Encoded:
    lines: EncodedLines
    labels: list[float | None]
    positions: list[int]
    targets: list[float]
    passed: bool = False
    weight: float = 1.0


@dataclass(frozen=True)
class TrainResult:
    out: Path
    steps: int
    final: PrmMetrics | None
    """Held-out metrics of the saved model (None without a held-out split)."""
    on_policy: OnPolicyMetrics | None = None
    """On the policy's own samples (None without `on_policy` data)."""


def train_prm(config: TrainPrmConfig, *, progress: bool = False) -> TrainResult:
    hf_logging.disable_progress_bar()
    if (config.out / METADATA_FILE).is_file():
        raise FileExistsError(f"{config.out} already holds a trained PRM; choose another --out")
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    checkpoint = config.out / CHECKPOINT
    resuming = (checkpoint / "state.pt").is_file()
    source = checkpoint if resuming else checkpoint_dir(config.base_model, "base model")

    tokenizer = AutoTokenizer.from_pretrained(source)
    if not tokenizer.is_fast:
        raise ValueError(f"{source}: line geometry needs a fast tokenizer (tokenizer.json)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # fp32 master weights; on a GPU the forward pass runs under bf16 autocast.
    model = AutoModelForTokenClassification.from_pretrained(
        source, num_labels=1, ignore_mismatched_sizes=True, dtype=torch.float32
    ).to(device)
    scheme = "pm1_mse" if config.objective == "mse" else "binary_bce"
    metadata = PrmMetadata(
        label_scheme=scheme,
        prompt_template=config.prompt_template,
        max_tokens=config.max_tokens,
        base_model=str(config.base_model),
    )
    prm = LoadedPrm(config.out.name, tokenizer, model, device, torch.float32, metadata)

    train_set, eval_set = split_by_problem(
        read_examples(config.data), config.eval_fraction, config.seed
    )
    if config.after_error == "drop":
        train_set = [drop_after_first_error(e) for e in train_set]
    train = _encode_all(prm, train_set, config)
    if config.balance:
        train = _balanced(train)
    held_out = _encode_all(prm, eval_set, config)
    policy_set = (
        _encode_all(prm, read_examples(config.on_policy), config) if config.on_policy else []
    )
    if not train:
        raise ValueError(f"{config.data}: no training line has a label and a token")
    group = config.batch_size * config.grad_accum
    steps_per_epoch = math.ceil(len(train) / group)
    total = steps_per_epoch * config.epochs

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    step = 0
    if resuming:
        state = torch.load(checkpoint / "state.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed", extra={"step": step, "checkpoint": str(checkpoint)})
    config.out.mkdir(parents=True, exist_ok=True)
    history = rows_until(config.out / METRICS, step)
    log.info(
        "training",
        extra={
            "train_programs": len(train),
            "held_out_programs": len(held_out),
            "steps": total,
            "device": str(device),
        },
    )

    threshold = 0.0 if scheme == "pm1_mse" else 0.5
    final: PrmMetrics | None = None
    final_policy: OnPolicyMetrics | None = None
    columns = (
        TextColumn("[bold]train prm"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("train", total=total, completed=step, status="")
        if step == 0 and (held_out or policy_set):
            first: dict[str, float | int | None] = {"step": 0}
            if held_out:
                first |= _metrics_row(_evaluate(prm, held_out, config, threshold))
            if policy_set:
                first |= _policy_row(_evaluate_on_policy(prm, policy_set, config, threshold))
            _log_row(config, history, first)
        while step < total:
            order = _order(len(train), config.seed, step // steps_per_epoch)
            start = (step % steps_per_epoch) * group
            batch = [train[i] for i in order[start : start + group]]
            model.train()
            lr = _lr(config, step, total)
            loss = _optimizer_step(model, optimizer, batch, config, device, lr)
            step += 1
            row: dict[str, float | int | None] = {
                "step": step,
                "epoch": step / steps_per_epoch,
                "loss": loss,
                "lr": lr,
            }
            # The last step is always evaluated: its metrics are the saved model's.
            if step % config.eval_every == 0 or step == total:
                if held_out:
                    final = _evaluate(prm, held_out, config, threshold)
                    row |= _metrics_row(final)
                if policy_set:
                    final_policy = _evaluate_on_policy(prm, policy_set, config, threshold)
                    row |= _policy_row(final_policy)
            _log_row(config, history, row)
            bar.update(task, advance=1, status=_status(row))
            if step % config.save_every == 0 and step < total:
                _save_checkpoint(prm, optimizer, step, config)
    _save_final(prm, config, history)
    return TrainResult(config.out, total, final, final_policy)


# ---------------------------------------------------------------- data


def _encode_all(
    prm: LoadedPrm, examples: list[PrmExample], config: TrainPrmConfig
) -> list[Encoded]:
    encoded = []
    for example in examples:
        lines = encode(prm, ScoreItem(prompt=example.prompt, code=example.code), config.max_tokens)
        positions, targets = [], []
        for line, token, value in zip(lines.lines, lines.line_tokens, example.labels, strict=True):
            if token is None or value is None:
                continue
            if config.objective == "bce":
                if line.kind != "code":
                    continue  # neutral: no 0/1 target means "neither"
                value = (value + 1) / 2
            positions.append(token)
            targets.append(value)
        if positions:
            encoded.append(Encoded(lines, example.labels, positions, targets, example.passed))
    dropped = len(examples) - len(encoded)
    if dropped:
        log.warning("programs without a trainable line dropped", extra={"count": dropped})
    return encoded


def _balanced(train: list[Encoded]) -> list[Encoded]:
    """Weights that give passing and failing programs half of the loss each (when both are
    there): binary search on a weak policy yields mostly failing programs, and a PRM trained
    on them learns that programs fail rather than which line fails."""
    passing = sum(e.passed for e in train)
    failing = len(train) - passing
    if not passing or not failing:
        return train
    return [replace(e, weight=len(train) / (2 * (passing if e.passed else failing))) for e in train]


def _order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def _collate(
    batch: list[Encoded], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(e.lines.input_ids) for e in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    targets = torch.zeros((len(batch), width))
    weights = torch.zeros((len(batch), width))  # 0 where no line is labeled
    for row, e in enumerate(batch):
        ids[row, : len(e.lines.input_ids)] = torch.tensor(e.lines.input_ids)
        mask[row, : len(e.lines.input_ids)] = 1
        targets[row, e.positions] = torch.tensor(e.targets)
        weights[row, e.positions] = e.weight
    return ids.to(device), mask.to(device), targets.to(device), weights.to(device)


# ---------------------------------------------------------------- optimisation


def _lr(config: TrainPrmConfig, step: int, total: int) -> float:
    # 1) linear warm-up, 2) cosine decay to a tenth of the peak
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, total - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _optimizer_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: list[Encoded],
    config: TrainPrmConfig,
    device: torch.device,
    lr: float,
) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    # Sorting the step's programs by length before cutting micro-batches limits padding; the
    # summed gradient is the same in any order.
    batch = sorted(batch, key=lambda e: len(e.lines.input_ids))
    # Dividing by the whole step's (weighted) line count, not per micro-batch, makes
    # accumulation exact: a labeled line weighs the same whatever micro-batch it landed in.
    count = sum(len(e.positions) * e.weight for e in batch)
    total = 0.0
    for start in range(0, len(batch), config.batch_size):
        # Padding is masked out of attention and loss, so its token id does not matter.
        ids, mask, targets, weights = _collate(batch[start : start + config.batch_size], device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            output = model(input_ids=ids, attention_mask=mask).logits[..., 0].float()  # (B, T)
        if config.objective == "mse":
            per_token = (output - targets) ** 2
        else:
            per_token = torch.nn.functional.binary_cross_entropy_with_logits(
                output, targets, reduction="none"
            )
        loss = (per_token * weights).sum() / count
        loss.backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


# ---------------------------------------------------------------- evaluation


def _evaluate(
    prm: LoadedPrm, held_out: list[Encoded], config: TrainPrmConfig, threshold: float
) -> PrmMetrics:
    ordered, scores = _line_scores(prm, held_out, config.batch_size)
    return evaluate(scores, [e.labels for e in ordered], threshold)


def _evaluate_on_policy(
    prm: LoadedPrm, programs: list[Encoded], config: TrainPrmConfig, threshold: float
) -> OnPolicyMetrics:
    ordered, scores = _line_scores(prm, programs, config.batch_size)
    return on_policy(scores, [e.labels for e in ordered], [e.passed for e in ordered], threshold)


def _line_scores(
    prm: LoadedPrm, programs: list[Encoded], batch_size: int
) -> tuple[list[Encoded], list[list[float | None]]]:
    """The PRM's line scores of every program, in batches of similar length (little padding);
    returns the programs in the order scored, with their scores."""
    prm.model.eval()
    ordered = sorted(programs, key=lambda e: len(e.lines.input_ids))
    scores: list[list[float | None]] = []
    for start in range(0, len(ordered), batch_size):
        scores += forward(prm, [e.lines for e in ordered[start : start + batch_size]])
    return ordered, scores


def _policy_row(metrics: OnPolicyMetrics) -> dict[str, float | int | None]:
    return {
        "on_policy_auc": metrics.auc,
        "on_policy_first_error_accuracy": metrics.first_error_accuracy,
        "on_policy_last_line_flagged": metrics.passing_last_line_flagged,
    }


def _metrics_row(metrics: PrmMetrics) -> dict[str, float | int | None]:
    return {
        "eval_line_accuracy": metrics.line_accuracy,
        "eval_auc": metrics.auc,
        "eval_first_error_accuracy": metrics.first_error_accuracy,
    }


def _status(row: dict[str, float | int | None]) -> str:
    text = f"loss {row['loss']:.4f}"
    if row.get("eval_line_accuracy") is not None:
        text += f"  held-out line acc {row['eval_line_accuracy']:.3f}"
    return text


# ---------------------------------------------------------------- files


def _log_row(
    config: TrainPrmConfig,
    history: list[dict[str, float | int | None]],
    row: dict[str, float | int | None],
) -> None:
    history.append(row)
    append_row(config.out / METRICS, row)
    log.info("step", extra=row)


def _save_checkpoint(
    prm: LoadedPrm, optimizer: torch.optim.Optimizer, step: int, config: TrainPrmConfig
) -> None:
    # Written beside the old one and swapped in, so a crash mid-save leaves a usable checkpoint.
    final = config.out / CHECKPOINT
    with atomic_dir(final) as staging:
        prm.model.save_pretrained(staging)
        prm.tokenizer.save_pretrained(staging)
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "step": step,
                "torch_rng": torch.get_rng_state(),
                "config": config.model_dump(mode="json"),
            },
            staging / "state.pt",
        )
    log.info("checkpoint saved", extra={"step": step, "path": str(final)})


def _save_final(
    prm: LoadedPrm, config: TrainPrmConfig, history: list[dict[str, float | int | None]]
) -> None:
    prm.model.save_pretrained(config.out)
    prm.tokenizer.save_pretrained(config.out)
    atomic_write_text(config.out / "train_config.json", config.model_dump_json(indent=2))
    plot_curves(
        history,
        config.out / "curves.png",
        [
            ("train loss", ["loss"]),
            ("held-out", ["eval_line_accuracy", "eval_auc", "eval_first_error_accuracy"]),
            (
                "on-policy",
                ["on_policy_auc", "on_policy_first_error_accuracy", "on_policy_last_line_flagged"],
            ),
        ],
    )
    # Last: its presence marks a finished run.
    atomic_write_text(config.out / METADATA_FILE, prm.metadata.model_dump_json(indent=2))
    shutil.rmtree(config.out / CHECKPOINT, ignore_errors=True)
