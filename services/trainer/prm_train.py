"""`codeprm train prm`: fit a line-level PRM on labeled programs.

The model is a causal-LM backbone with a one-output token-classification head, trained only
at the last token of each line (the geometry the server reads, `codeprm/geometry.py`):
MSE on the +1 / 0 / -1 line labels (the PSGPO recipe; comment and blank lines are trained
towards 0), or BCE on 0/1 with neutral lines left out. Encoding and held-out scoring go
through the server's own `encode` and `forward`, so what is measured here is what is served.

Resuming is exact: the data order of every step is a pure function of (seed, step), and the
checkpoint holds the model, the optimizer and the step.

Under `torchrun` / `accelerate launch` the same loop runs in every process (`prm_dist.py`:
DDP or FSDP): a step's global batch is cut into micro-batches dealt among processes, only
rank 0 writes metrics and checkpoints, and held-out scoring is shared out batch by batch, so
every number equals a single process's on the same global batch.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import AutoModelForTokenClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from codeprm.api.prm import METADATA_FILE, PrmMetadata, ScoreItem
from codeprm.files import atomic_dir, atomic_write_text, checkpoint_dir
from codeprm.geometry import EncodedLines
from codeprm.prm_model import LoadedPrm, encode, forward
from codeprm.services.trainer import prm_dist
from codeprm.services.trainer.likelihood import likelihood_auc
from codeprm.services.trainer.plots import plot_curves
from codeprm.services.trainer.prm_batches import epoch_steps, split_step
from codeprm.services.trainer.prm_data import (
    PrmExample,
    drop_after_first_error,
    read_examples,
    split_by_problem,
)
from codeprm.services.trainer.prm_dist import Parallel, Processes
from codeprm.services.trainer.prm_metrics import OnPolicyMetrics, PrmMetrics, evaluate, on_policy
from codeprm.services.trainer.runlog import append_row, rows_until

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
METRICS = "metrics.jsonl"


class TrainPrmConfig(BaseModel):
    data: Path = Field(description="JSONL: the labeler's export or TRL stepwise rows.")
    base_model: Path = Field(description="Causal LM (or PRM) directory to start from.")
    out: Path = Field(description="Where the trained PRM, metrics and plot are written.")
    objective: Literal["mse", "bce"] = Field("mse", description="mse on +1/0/-1, bce on 0/1.")
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(8, ge=1, description="Programs per forward pass (per process).")
    grad_accum: int = Field(
        1,
        ge=1,
        description="Forward passes per optimizer step and process: a step's global batch is "
        "batch_size x grad_accum x processes programs.",
    )
    lr: float = Field(1e-5, gt=0, description="Peak learning rate (AdamW).")
    warmup_steps: int = Field(10, ge=0, description="Linear warm-up, then cosine decay to 10%.")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_tokens: int = Field(2048, ge=16, description="Tokens per program, prompt included.")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="Problems held out.")
    eval_every: int = Field(50, ge=1, description="Optimizer steps between evaluations.")
    save_every: int = Field(100, ge=1, description="Optimizer steps between checkpoints.")
    seed: int = 0
    device: str = Field(
        "auto", description="auto, cpu, cuda or cuda:N (under a launcher: each process's own GPU)."
    )
    parallel: Parallel = Field(
        "ddp",
        description="Under torchrun / accelerate launch: ddp (a whole model per device) or fsdp "
        "(weights, gradients and optimizer state sharded across devices).",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, more compute."
    )
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
    on_policy_base_likelihood_auc: float | None = None
    """The same programs ranked by their likelihood under the base model (the policy, when the
    PRM starts from it): the yardstick for `on_policy.auc` (likelihood.py). None when resuming:
    step 0's row of metrics.jsonl holds it."""


def train_prm(config: TrainPrmConfig, *, progress: bool = False) -> TrainResult:
    hf_logging.disable_progress_bar()
    if (config.out / METADATA_FILE).is_file():
        raise FileExistsError(f"{config.out} already holds a trained PRM; choose another --out")
    procs = prm_dist.start(config.device)
    try:
        return _train(config, procs, progress=progress and procs.is_main)
    finally:
        prm_dist.stop(procs)


def _train(config: TrainPrmConfig, procs: Processes, *, progress: bool) -> TrainResult:
    torch.manual_seed(config.seed)  # the fresh head: the same on every process
    checkpoint = config.out / CHECKPOINT
    resuming = (checkpoint / "state.pt").is_file()
    prm = _load(
        config,
        checkpoint if resuming else checkpoint_dir(config.base_model, "base model"),
        procs,
    )
    trained = prm_dist.wrap(prm.model, procs, config.parallel)

    train_set, eval_set = split_by_problem(
        read_examples(config.data), config.eval_fraction, config.seed
    )
    if config.after_error == "drop":
        train_set = [drop_after_first_error(e) for e in train_set]
    train = _encode_all(prm, train_set, config)
    if config.balance:
        train = _balanced(train)
    held_out = _encode_all(prm, eval_set, config)
    policy_programs = read_examples(config.on_policy) if config.on_policy else []
    policy_set = _encode_all(prm, policy_programs, config)
    if not train:
        raise ValueError(f"{config.data}: no training line has a label and a token")
    # Step 0's row holds it; a resumed run has that row already.
    baseline = (
        likelihood_auc(config.base_model, policy_programs, config.max_tokens, procs.device)
        if policy_programs and procs.is_main and not resuming
        else None
    )
    group = config.batch_size * config.grad_accum * procs.world  # the global batch
    steps_per_epoch = math.ceil(len(train) / group)
    total = steps_per_epoch * config.epochs
    lengths = [len(e.lines.input_ids) for e in train]

    # Created after sharding: under FSDP its state holds only this process's shard.
    optimizer = torch.optim.AdamW(
        prm.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    step = _resume(checkpoint, prm, optimizer, group, config, procs) if resuming else 0
    history: list[dict[str, float | int | None]] = []
    if procs.is_main:
        config.out.mkdir(parents=True, exist_ok=True)
        history = rows_until(config.out / METRICS, step)
        log.info(
            "training",
            extra={
                "train_programs": len(train),
                "held_out_programs": len(held_out),
                "steps": total,
                "global_batch": group,
                "processes": procs.world,
                "parallel": config.parallel if procs.world > 1 else "none",
                "device": str(procs.device),
            },
        )

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
            first = _evaluate_all(prm, held_out, policy_set, config, procs)
            row0 = {"step": 0} | first.row() | {"on_policy_base_likelihood_auc": baseline}
            _log_row(config, history, row0, procs)
        epoch, order = -1, []
        while step < total:
            if step // steps_per_epoch != epoch:
                epoch = step // steps_per_epoch
                order = epoch_steps(lengths, group, config.seed, epoch)
            batch = [train[i] for i in order[step % steps_per_epoch]]
            lr = _lr(config, step, total)
            started = time.perf_counter()
            stats = _optimizer_step(trained, optimizer, batch, config, procs, step, lr)
            seconds = time.perf_counter() - started
            step += 1
            row: dict[str, float | int | None] = {
                "step": step,
                "epoch": step / steps_per_epoch,
                "loss": stats.loss,
                "lr": lr,
                "padding_fraction": 1 - stats.tokens / stats.padded,
                "tokens_per_s": stats.tokens / seconds,
            }
            # The last step is always evaluated: its metrics are the saved model's.
            if step % config.eval_every == 0 or step == total:
                evaluation = _evaluate_all(prm, held_out, policy_set, config, procs)
                row |= evaluation.row()
                final, final_policy = evaluation.held_out, evaluation.on_policy
            _log_row(config, history, row, procs)
            bar.update(task, advance=1, status=_status(row))
            if step % config.save_every == 0 and step < total:
                _save_checkpoint(prm, optimizer, step, group, config, procs)
    _save_final(prm, config, history, procs)
    return TrainResult(config.out, total, final, final_policy, baseline)


def _load(config: TrainPrmConfig, source: Path, procs: Processes) -> LoadedPrm:
    """The tokenizer and model on the CPU (`prm_dist.wrap` places or shards the model)."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    if not tokenizer.is_fast:
        raise ValueError(f"{source}: line geometry needs a fast tokenizer (tokenizer.json)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # fp32 master weights; on a GPU the forward pass runs in bf16 (autocast, or FSDP's policy).
    model = AutoModelForTokenClassification.from_pretrained(
        source, num_labels=1, ignore_mismatched_sizes=True, dtype=torch.float32
    )
    if config.gradient_checkpointing:
        # Non-reentrant: the variant that works under DDP and FSDP.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    scheme = "pm1_mse" if config.objective == "mse" else "binary_bce"
    metadata = PrmMetadata(
        label_scheme=scheme,
        prompt_template=config.prompt_template,
        max_tokens=config.max_tokens,
        base_model=str(config.base_model),
    )
    return LoadedPrm(config.out.name, tokenizer, model, procs.device, torch.float32, metadata)


def _resume(
    checkpoint: Path,
    prm: LoadedPrm,
    optimizer: torch.optim.Optimizer,
    group: int,
    config: TrainPrmConfig,
    procs: Processes,
) -> int:
    # Memory-mapped: processes other than rank 0 read only the step and the RNG state.
    state = torch.load(checkpoint / "state.pt", weights_only=False, mmap=True)
    saved = state.get("global_batch", group)
    if saved != group:
        per_process = config.batch_size * procs.world
        hint = f" (--grad-accum {saved // per_process})" if saved % per_process == 0 else ""
        raise ValueError(
            f"{checkpoint} was trained with {saved} programs per step; with {procs.world} "
            f"processes and --batch-size {config.batch_size} keep it{hint}: batch_size x "
            "grad_accum x processes must not change within a run"
        )
    prm_dist.load_optimizer_state(
        prm.model, optimizer, state["optimizer"] if procs.is_main else {}, procs
    )
    log.info("resumed", extra={"step": state["step"], "checkpoint": str(checkpoint)})
    return int(state["step"])


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


@dataclass(frozen=True)
class StepStats:
    loss: float
    tokens: int
    """Real tokens in the step's micro-batches, all processes together."""
    padded: int
    """Tokens including padding (rows x longest program, summed over micro-batches)."""


def _optimizer_step(
    trained: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: list[Encoded],
    config: TrainPrmConfig,
    procs: Processes,
    step: int,
    lr: float,
) -> StepStats:
    trained.train()
    for group in optimizer.param_groups:
        group["lr"] = lr
    parts = split_step(
        range(len(batch)), [len(e.lines.input_ids) for e in batch], procs.world * config.grad_accum
    )
    mine = parts[procs.rank :: procs.world]  # grad_accum micro-batches of this process
    # Dividing by the whole step's (weighted) line count, not per micro-batch or process,
    # makes accumulation exact: a labeled line weighs the same whatever micro-batch, and
    # whatever process, it landed in.
    count = sum(len(e.positions) * e.weight for e in batch)
    loss_sum = tokens = padded = 0.0
    for k, part in enumerate(mine):
        # Dropout (transformers' token-classification heads have 0.1) draws from a stream
        # seeded by (seed, step, part): the same masks however the parts are spread over
        # processes, and after a resume.
        torch.manual_seed(hash((config.seed, step, procs.rank + k * procs.world)))
        # A step with fewer programs than micro-batches leaves a part empty; it still runs
        # (one program, weight 0) because every process must take part in each collective.
        programs = [batch[i] for i in part] or [replace(batch[0], weight=0.0)]
        # Padding is masked out of attention and loss, so its token id does not matter.
        ids, mask, targets, weights = _collate(programs, procs.device)
        with prm_dist.sync_gradients(trained, is_last=k == len(mine) - 1):
            with torch.autocast(
                procs.device.type, dtype=torch.bfloat16, enabled=procs.device.type == "cuda"
            ):
                output = trained(input_ids=ids, attention_mask=mask).logits[..., 0].float()
            if config.objective == "mse":
                per_token = (output - targets) ** 2  # (B, T)
            else:
                per_token = torch.nn.functional.binary_cross_entropy_with_logits(
                    output, targets, reduction="none"
                )
            loss = (per_token * weights).sum() / count
            # DDP and FSDP average gradients over processes; the step's loss is their sum.
            (loss * procs.world).backward()
        loss_sum += loss.item()
        if part:
            tokens += int(mask.sum())
            padded += mask.numel()
    torch.nn.utils.clip_grad_norm_(trained.parameters(), config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss_sum, tokens, padded = prm_dist.sum_across([loss_sum, tokens, padded], procs)
    return StepStats(loss_sum, int(tokens), int(padded))


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class _Evaluation:
    held_out: PrmMetrics | None
    on_policy: OnPolicyMetrics | None

    def row(self) -> dict[str, float | int | None]:
        row: dict[str, float | int | None] = {}
        if self.held_out is not None:
            row |= _metrics_row(self.held_out)
        if self.on_policy is not None:
            row |= _policy_row(self.on_policy)
        return row


def _evaluate_all(
    prm: LoadedPrm,
    held_out: list[Encoded],
    policy_set: list[Encoded],
    config: TrainPrmConfig,
    procs: Processes,
) -> _Evaluation:
    threshold = 0.0 if prm.metadata.label_scheme == "pm1_mse" else 0.5
    metrics = policy = None
    if held_out:
        ordered, scores = _line_scores(prm, held_out, config.batch_size, procs)
        metrics = evaluate(scores, [e.labels for e in ordered], threshold)
    if policy_set:
        ordered, scores = _line_scores(prm, policy_set, config.batch_size, procs)
        policy = on_policy(
            scores, [e.labels for e in ordered], [e.passed for e in ordered], threshold
        )
    return _Evaluation(metrics, policy)


def _line_scores(
    prm: LoadedPrm, programs: list[Encoded], batch_size: int, procs: Processes
) -> tuple[list[Encoded], list[list[float | None]]]:
    """The PRM's line scores of every program, in batches of similar length (little padding);
    returns the programs in the order scored, with their scores. With several processes the
    batches are dealt among them, the same batches as one process scores, so the scores are
    the same."""
    prm.model.eval()
    ordered = sorted(programs, key=lambda e: len(e.lines.input_ids))
    batches = [ordered[start : start + batch_size] for start in range(0, len(ordered), batch_size)]
    scored = prm_dist.map_shared(batches, lambda b: forward(prm, [e.lines for e in b]), procs)
    return ordered, [scores for batch in scored for scores in batch]


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
    procs: Processes,
) -> None:
    if not procs.is_main:
        return
    history.append(row)
    append_row(config.out / METRICS, row)
    log.info("step", extra=row)


def _save_checkpoint(
    prm: LoadedPrm,
    optimizer: torch.optim.Optimizer,
    step: int,
    group: int,
    config: TrainPrmConfig,
    procs: Processes,
) -> None:
    # Every process takes part in gathering the full states; rank 0 writes them.
    weights = prm_dist.model_state(prm.model, procs)
    optimizer_state = prm_dist.optimizer_state(prm.model, optimizer, procs)
    if not procs.is_main:
        return
    # Written beside the old one and swapped in, so a crash mid-save leaves a usable checkpoint.
    final = config.out / CHECKPOINT
    with atomic_dir(final) as staging:
        prm.model.save_pretrained(staging, state_dict=weights)
        prm.tokenizer.save_pretrained(staging)
        torch.save(
            {
                "optimizer": optimizer_state,
                "step": step,
                "global_batch": group,
                "processes": procs.world,
                "config": config.model_dump(mode="json"),
            },
            staging / "state.pt",
        )
    log.info("checkpoint saved", extra={"step": step, "path": str(final)})


def _save_final(
    prm: LoadedPrm,
    config: TrainPrmConfig,
    history: list[dict[str, float | int | None]],
    procs: Processes,
) -> None:
    weights = prm_dist.model_state(prm.model, procs)
    if not procs.is_main:
        return
    prm.model.save_pretrained(config.out, state_dict=weights)
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
