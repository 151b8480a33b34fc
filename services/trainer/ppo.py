"""PPO for a code policy with unit-test and PRM line rewards (PSGPO), in the order it runs.

One step: sample K rollouts for each of a few prompts -> judge them (executor and PRM server,
concurrently, over HTTP) -> old log-probabilities, reference log-probabilities and values ->
per-token rewards (outcome at the last token, dense PRM rewards at line ends, KL penalty on
every token) -> GAE -> a few epochs of clipped policy and value updates on minibatches.

The critic is a backbone with a scalar head: a PRM checkpoint (`value_init`: the PRM already
predicts whether a prefix can still pass, which is what the value of that prefix is about) or
the policy's backbone with a fresh head. Checkpoints hold both models, both optimizers and the
step; a step is a pure function of (seed, step) apart from sampling, so a resumed run goes on
where the checkpoint left it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForTokenClassification,
    AutoTokenizer,
)
from transformers.utils import logging as hf_logging

from codeprm.datasets import Problem, load_problems
from codeprm.files import atomic_dir, atomic_write_text, checkpoint_dir
from codeprm.lines import split_lines
from codeprm.prm_model import read_metadata, resolve_device
from codeprm.services.trainer import ppo_core
from codeprm.services.trainer.plots import plot_curves
from codeprm.services.trainer.ppo_config import PpoConfig
from codeprm.services.trainer.reward_client import Judgement, RewardClient, RewardSource
from codeprm.services.trainer.rollout import Rollout, Sampling, generate
from codeprm.services.trainer.runlog import Row, append_row, rows_until
from codeprm.token_rewards import outcome_reward, token_rewards

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
METRICS = "metrics.jsonl"
FINISHED = "policy/config.json"  # written last (atomically, with the whole policy/)
SAMPLES = "samples.jsonl"
EVAL_SAMPLES = "eval_samples.jsonl"


@dataclass
class Models:
    tokenizer: Any
    policy: Any
    reference: Any
    critic: Any
    device: torch.device


@dataclass(frozen=True)
class PpoResult:
    out: Path
    steps: int
    history: list[Row]


def train_ppo(
    config: PpoConfig, *, judge: RewardSource | None = None, progress: bool = False
) -> PpoResult:
    hf_logging.disable_progress_bar()
    torch.manual_seed(config.seed)
    checkpoint = config.out / CHECKPOINT
    resuming = (checkpoint / "state.pt").is_file()
    if not resuming and (config.out / FINISHED).is_file():
        # The same rule as `train prm`: an unfinished run resumes, a finished one is kept.
        raise FileExistsError(
            f"{config.out} already holds a finished PPO run (policy/, critic/, {METRICS}); "
            "choose another out (--out), or delete it to start over"
        )
    models = load_models(config, checkpoint if resuming else None)
    problems = load_problems(config.dataset)[: config.limit_problems]
    policy_opt = torch.optim.AdamW(models.policy.parameters(), lr=config.policy_lr)
    critic_opt = torch.optim.AdamW(models.critic.parameters(), lr=config.critic_lr)
    step = 0
    if resuming:
        state = torch.load(checkpoint / "state.pt", weights_only=False)
        policy_opt.load_state_dict(state["policy_opt"])
        critic_opt.load_state_dict(state["critic_opt"])
        step = state["step"]
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed", extra={"step": step, "checkpoint": str(checkpoint)})
    config.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config.out / "config.json", config.model_dump_json(indent=2))
    history = rows_until(config.out / METRICS, step)
    tensorboard = _tensorboard(config.out)
    held_out = (
        load_problems(config.eval_dataset)[: config.eval_limit] if config.eval_dataset else []
    )
    if held_out and step == 0:
        start = {"step": 0} | _held_out(models, config, held_out)
        append_row(config.out / METRICS, start)
        history.append(start)
    judge = judge or RewardClient(
        executor_url=config.executor_url,
        prm_url=config.prm_url if config.dense else None,
        prm_api_key=config.prm_api_key,
        retries=config.service_retries,
        execution_timeout_s=config.execution_timeout_s,
    )
    columns = (
        TextColumn("[bold]ppo"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("ppo", total=config.steps, completed=step, status="")
        while step < config.steps:
            step += 1
            row, rollouts, judgement = ppo_step(
                models, policy_opt, critic_opt, config, judge, step, problems
            )
            if held_out and (step % config.eval_every == 0 or step == config.steps):
                row |= _held_out(models, config, held_out)
            append_row(config.out / METRICS, row)
            history.append(row)
            if tensorboard is not None:
                for key, value in row.items():
                    if key != "step":
                        tensorboard.add_scalar(key, value, step)
            _log_samples(config, step, rollouts, judgement)
            log.info("step", extra=row)
            bar.update(
                task,
                advance=1,
                status=f"reward {row['reward/total']:+.3f}  pass {row['reward/pass_rate']:.2f}",
            )
            if config.collect is not None and step % config.collect.every == 0:
                asyncio.run(_collect(config, step, rollouts, judgement))
            if step % config.save_every == 0 and step < config.steps:
                save_checkpoint(models, policy_opt, critic_opt, step, config)
    if tensorboard is not None:
        tensorboard.close()
    _save_final(models, config, history)
    return PpoResult(config.out, config.steps, history)


def _tensorboard(out: Path) -> Any:
    """A TensorBoard writer under OUT/tensorboard when the package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


# ---------------------------------------------------------------- models


def load_models(config: PpoConfig, checkpoint: Path | None) -> Models:
    checkpoint_dir(config.policy, "policy")
    if config.value_init is not None:
        checkpoint_dir(config.value_init, "value_init")
    device = resolve_device(config.device)
    tokenizer = AutoTokenizer.from_pretrained(config.policy)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy_dir = checkpoint / "policy" if checkpoint else config.policy
    # fp32 master weights; the forward passes run under bf16 autocast on a GPU.
    policy = _load(AutoModelForCausalLM, policy_dir, device)
    reference = _load(AutoModelForCausalLM, config.policy, device)
    reference.eval().requires_grad_(False)
    if checkpoint:
        critic_dir = checkpoint / "critic"
    elif config.prm_value_init:
        assert config.value_init is not None
        critic_dir = config.value_init
        _check_same_tokenizer(tokenizer, critic_dir)
        _check_values(critic_dir)
    else:
        critic_dir = config.policy  # the policy's backbone with a fresh scalar head
    # No ignore_mismatched_sizes: a PRM whose head is not one scalar is refused above, and a
    # causal LM has no `score` head, which is then created (the fresh-head critic).
    critic = _load(AutoModelForTokenClassification, critic_dir, device, num_labels=1)
    return Models(tokenizer, policy, reference, critic, device)


def _load(auto_class: Any, path: Path, device: torch.device, **options: Any) -> Any:
    return auto_class.from_pretrained(path, dtype=torch.float32, **options).to(device)


def _check_values(prm_dir: Path) -> None:
    """Refuse a PRM whose head does not output the value itself.

    The critic reads the PRM's scalar head as V(prefix) at every token. Only a `pm1_mse` PRM's
    output is such a score (a regression on +1/-1, read as it is by `/v1/score`); a
    `binary_bce` logit is served through a sigmoid and a `trl_two_class` head has two outputs
    whose softmax is served, so their raw head is not what the PRM scores, and loading the
    latter with one label would replace its head by a random one."""
    num_labels = AutoConfig.from_pretrained(prm_dir).num_labels
    scheme = read_metadata(prm_dir, num_labels).label_scheme
    if scheme != "pm1_mse" or num_labels != 1:
        raise ValueError(
            f"value_init {prm_dir}: its label scheme is {scheme!r} with {num_labels} outputs; "
            "only a one-output 'pm1_mse' PRM (codeprm train prm --objective mse) has a head "
            "that outputs its score, which the critic starts from. Train one with "
            "--objective mse, or use mode 'dense' (PRM rewards, fresh critic)."
        )


def _check_same_tokenizer(tokenizer: Any, prm_dir: Path) -> None:
    other = AutoTokenizer.from_pretrained(prm_dir)
    if other.get_vocab() != tokenizer.get_vocab():
        raise ValueError(
            f"value_init {prm_dir}: its tokenizer differs from the policy's; the critic reads "
            "the policy's tokens, so the PRM must share the policy's tokenizer"
        )


# ---------------------------------------------------------------- one step


def ppo_step(
    models: Models,
    policy_opt: torch.optim.Optimizer,
    critic_opt: torch.optim.Optimizer,
    config: PpoConfig,
    judge: RewardSource,
    step: int,
    problems: list[Problem],
) -> tuple[Row, list[Rollout], Judgement]:
    started = time.perf_counter()
    chosen = random.Random(config.seed * 1_000_003 + step).sample(
        problems, min(config.prompts_per_step, len(problems))
    )
    models.policy.eval()
    # The token-classification head has dropout: old values must be read without it.
    models.critic.eval()
    sampling = Sampling(config.max_new_tokens, config.temperature, config.top_p, tuple(config.stop))
    rollouts = generate(
        models.policy, models.tokenizer, chosen, config.samples_per_prompt, sampling, models.device
    )
    generated = time.perf_counter()
    judgement = asyncio.run(judge.judge(rollouts))
    judged = time.perf_counter()

    batch = build_batch(rollouts, models.tokenizer.pad_token_id, models.device)
    mask = batch.mask
    with torch.no_grad():
        old_logprobs, _ = _policy_outputs(models.policy, batch, models.device)
        ref_logprobs, _ = _policy_outputs(models.reference, batch, models.device)
        old_values = _values(models.critic, batch, models.device)
    scores, outcomes, dense_sums = _rewards(rollouts, judgement, config, mask.shape[1])
    kl = (old_logprobs - ref_logprobs) * mask
    rewards = scores.to(models.device) - config.kl_coef * kl
    start_stats: Row = {}
    if step == 1:
        # How much the critic knows before any update: PRM-initialised or fresh head.
        mc_returns = ppo_core.discounted_returns(rewards, mask, config.gamma)
        start_stats["value/ev_start"] = _explained_variance(old_values, mc_returns, mask)
        if config.prm_value_init and config.value_calibration:
            calibrate_head(models.critic, old_values, mc_returns, mask)
            with torch.no_grad():
                old_values = _values(models.critic, batch, models.device)
            start_stats["value/ev_start_calibrated"] = _explained_variance(
                old_values, mc_returns, mask
            )
    advantages, returns = ppo_core.gae(rewards, old_values, mask, config.gamma, config.gae_lambda)
    if config.whiten_advantages:
        advantages = ppo_core.masked_whiten(advantages, mask)

    stats = _update(
        models,
        policy_opt,
        critic_opt,
        config,
        batch,
        old_logprobs,
        old_values,
        advantages,
        returns,
        step=step,
        update_policy=step > config.critic_warmup_steps,
    )
    finished = time.perf_counter()
    passed = [v.passed for v in judgement.verdicts]
    lines = [split_lines(r.text) for r in rollouts]
    code_lines = [sum(line.kind == "code" for line in ls) for ls in lines]
    comment_lines = sum(line.kind == "comment" for ls in lines for line in ls)
    row: Row = {
        "step": step,
        "reward/total": float(scores.sum(1).mean()),
        "reward/outcome": sum(outcomes) / len(outcomes),
        "reward/dense": sum(dense_sums) / len(dense_sums),
        "reward/pass_rate": sum(passed) / len(passed),
        "policy/kl_to_reference": float(kl.sum(1).mean()),  # per rollout
        **stats,
        **start_stats,
        "rollout/response_tokens": float(mask.sum(1).mean()),
        "rollout/unfinished": sum(not r.finished for r in rollouts) / len(rollouts),
        "rollout/code_lines": sum(code_lines) / len(code_lines),
        "rollout/comment_ratio": comment_lines / max(1, comment_lines + sum(code_lines)),
        "time/generate_s": generated - started,
        "time/rewards_s": judged - generated,
        "time/executor_s": judgement.executor_s,
        "time/prm_s": judgement.prm_s,
        "time/update_s": finished - judged,
        "time/step_s": finished - started,
    }
    return row, rollouts, judgement


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # (N, P + T): prompts left-padded to P, responses right-padded to T
    attention_mask: torch.Tensor  # (N, P + T)
    position_ids: torch.Tensor  # (N, P + T)
    prompt_width: int  # P
    tokens: torch.Tensor  # (N, T) response tokens
    mask: torch.Tensor  # (N, T) 1 on response tokens

    def rows(self, index: torch.Tensor) -> Batch:
        return Batch(
            self.input_ids[index],
            self.attention_mask[index],
            self.position_ids[index],
            self.prompt_width,
            self.tokens[index],
            self.mask[index],
        )


def build_batch(rollouts: list[Rollout], pad_id: int, device: torch.device) -> Batch:
    width = max(len(r.prompt_ids) for r in rollouts)
    length = max(len(r.response_ids) for r in rollouts)
    ids = torch.full((len(rollouts), width + length), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for i, r in enumerate(rollouts):
        ids[i, width - len(r.prompt_ids) : width] = torch.tensor(r.prompt_ids)
        ids[i, width : width + len(r.response_ids)] = torch.tensor(r.response_ids)
        attention[i, width - len(r.prompt_ids) : width + len(r.response_ids)] = 1
    # Left padding shifts positions; count them from each row's first real token.
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    return Batch(
        ids.to(device),
        attention.to(device),
        positions.to(device),
        width,
        ids[:, width:].to(device),
        attention[:, width:].float().to(device),
    )


@contextmanager
def _autocast(device: torch.device) -> Iterator[None]:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        yield


def _policy_outputs(
    model: Any, batch: Batch, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities and entropies of the response tokens, (N, T)."""
    with _autocast(device):
        logits = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).logits
    p, t = batch.prompt_width, batch.tokens.shape[1]
    # The logits at position i predict token i + 1.
    return ppo_core.logprobs_and_entropy(logits[:, p - 1 : p - 1 + t], batch.tokens)


def _values(model: Any, batch: Batch, device: torch.device) -> torch.Tensor:
    """V(state before response token t), read at the token before it, (N, T); a PRM reads a
    prefix's score at its last token, so `value_init` starts the critic at the PRM's reading."""
    with _autocast(device):
        out = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).logits[..., 0]
    p, t = batch.prompt_width, batch.tokens.shape[1]
    values: torch.Tensor = out[:, p - 1 : p - 1 + t].float() * batch.mask
    return values


def _rewards(
    rollouts: list[Rollout], judgement: Judgement, config: PpoConfig, width: int
) -> tuple[torch.Tensor, list[float], list[float]]:
    """Per-token rewards before the KL penalty (N, T), and the outcome and dense parts."""
    scores = torch.zeros((len(rollouts), width))
    dense = config.dense_reward()
    outcomes, dense_sums = [], []
    for i, (rollout, verdict) in enumerate(zip(rollouts, judgement.verdicts, strict=True)):
        if dense is not None and verdict.line_scores is None:
            raise ValueError("dense rewards need the PRM's line scores")
        outcome = outcome_reward(
            verdict.passed,
            verdict.pass_rate,
            config.outcome,
            config.pass_reward,
            config.fail_reward,
        )
        rewards = token_rewards(
            verdict.line_scores or [],
            rollout.offsets,
            passed=verdict.passed,
            outcome=outcome,
            dense=dense,
        )
        scores[i, : len(rewards)] = torch.tensor(rewards)
        outcomes.append(outcome)
        dense_sums.append(sum(rewards) - outcome)
    return scores, outcomes, dense_sums


def _update(
    models: Models,
    policy_opt: torch.optim.Optimizer,
    critic_opt: torch.optim.Optimizer,
    config: PpoConfig,
    batch: Batch,
    old_logprobs: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    *,
    step: int,
    update_policy: bool = True,
) -> Row:
    models.policy.train()
    models.critic.train()
    sums: dict[str, float] = {}
    count = 0
    for index in minibatches(batch.tokens.shape[0], config, step):
        index = index.to(models.device)
        mb = batch.rows(index)
        mask = mb.mask
        logprobs, entropy = _policy_outputs(models.policy, mb, models.device)
        pg_loss, clip_fraction, approx_kl = ppo_core.policy_loss(
            logprobs, old_logprobs[index], advantages[index], mask, config.clip_ratio
        )
        mean_entropy = ppo_core.masked_mean(entropy, mask)
        if update_policy:
            (pg_loss - config.entropy_coef * mean_entropy).backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(models.policy.parameters(), config.max_grad_norm)
            policy_opt.step()
            policy_opt.zero_grad(set_to_none=True)

        values = _values(models.critic, mb, models.device)
        v_loss, v_clip = ppo_core.value_loss(
            values, old_values[index], returns[index], mask, config.value_clip
        )
        v_loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(models.critic.parameters(), config.max_grad_norm)
        critic_opt.step()
        critic_opt.zero_grad(set_to_none=True)

        for key, value in (
            ("loss/policy", pg_loss),
            ("loss/value", v_loss),
            ("policy/entropy", mean_entropy),
            ("policy/clip_fraction", clip_fraction),
            ("policy/approx_kl", approx_kl),
            ("value/clip_fraction", v_clip),
        ):
            sums[key] = sums.get(key, 0.0) + float(value.detach())
        count += 1
    stats = {key: total / count for key, total in sums.items()}
    stats["value/explained_variance"] = _explained_variance(old_values, returns, batch.mask)
    return stats


def minibatches(n: int, config: PpoConfig, step: int) -> Iterator[torch.Tensor]:
    """Row indices of each minibatch of step `step`'s `n` rollouts, over `ppo_epochs` epochs:
    a fresh shuffle every epoch, drawn from (seed, step) so that each step has its own order
    and a resumed run repeats the order an uninterrupted one would have used."""
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    for _ in range(config.ppo_epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.minibatch_size):
            yield order[start : start + config.minibatch_size]


def calibrate_head(
    critic: Any, values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor
) -> tuple[float, float]:
    """Rescale the critic's scalar head so that a * value + b fits `returns` by least squares
    over the real tokens, in place -> (a, b). A linear head makes this exact: the new head
    reads a * old + b everywhere, so the PRM's ranking of prefixes is kept, its scale is not."""
    head = getattr(critic, "score", None)
    if not isinstance(head, torch.nn.Linear) or head.bias is None:
        log.warning("value calibration skipped: the critic has no linear `score` head")
        return 1.0, 0.0
    v, g = values[mask.bool()].double(), returns[mask.bool()].double()
    var = ((v - v.mean()) ** 2).mean()
    a = float(((v - v.mean()) * (g - g.mean())).mean() / var) if var > 1e-12 else 0.0
    b = float(g.mean() - a * v.mean())
    with torch.no_grad():
        head.weight.mul_(a)
        head.bias.mul_(a).add_(b)
    log.info("critic head calibrated", extra={"scale": a, "shift": b})
    return a, b


def _explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns): how much the critic already knew."""
    var = ppo_core.masked_mean((returns - ppo_core.masked_mean(returns, mask)) ** 2, mask)
    err = returns - values
    var_err = ppo_core.masked_mean((err - ppo_core.masked_mean(err, mask)) ** 2, mask)
    return float(1 - var_err / var) if var > 0 else 0.0


def _held_out(models: Models, config: PpoConfig, problems: list[Problem]) -> Row:
    """pass@1 of the current policy on held-out problems, overall and by code lines."""
    from codeprm.services.trainer.evaluate import sample_and_judge, summarize, write_samples

    sampling = Sampling(config.max_new_tokens, config.eval_temperature, 1.0, tuple(config.stop))
    # Its own generator state: evaluating must not change the training run's samples.
    rng = torch.get_rng_state()
    torch.manual_seed(config.seed + 7919)
    results = sample_and_judge(
        models.policy,
        models.tokenizer,
        problems,
        config.eval_samples,
        sampling,
        models.device,
        config.executor_url,
    )
    torch.set_rng_state(rng)
    write_samples(results, config.out / EVAL_SAMPLES)  # the latest evaluation's programs
    report = summarize(
        results,
        problems,
        model=str(config.policy),
        dataset=str(config.eval_dataset),
        temperature=config.eval_temperature,
        line_edges=config.eval_line_edges,
    )
    row: Row = {"eval/pass_at_1": report.overall.pass_at_1 or 0.0}
    for name, bucket in report.by_lines.items():
        if bucket.pass_at_1 is not None:
            row[f"eval/pass_at_1/{name}"] = bucket.pass_at_1
    return row


# ---------------------------------------------------------------- data collection


async def _collect(
    config: PpoConfig, step: int, rollouts: list[Rollout], judgement: Judgement
) -> None:
    """Failing rollouts of this step -> a binary_search labeling run of the labeler."""
    from codeprm.api.labeler import LabelRunRequest, SearchOptions
    from codeprm.client import AsyncLabelerClient

    assert config.collect is not None
    failing: dict[str, tuple[Problem, list[str]]] = {}
    for rollout, verdict in zip(rollouts, judgement.verdicts, strict=True):
        if not verdict.passed and rollout.text.strip():
            entry = failing.setdefault(rollout.problem.problem_id, (rollout.problem, []))
            entry[1].append(rollout.text)
    if not failing:
        return
    path = config.collect.shared_dir / f"{config.out.name}-step{step}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            problem.model_copy(update={"candidates": texts}).model_dump_json() + "\n"
            for problem, texts in failing.values()
        )
    )
    request = LabelRunRequest(
        strategy="binary_search",
        dataset=str(path),
        policy=config.collect.policy,
        search=SearchOptions(k=config.collect.k),
    )
    async with AsyncLabelerClient(config.collect.labeler_url) as labeler:
        info = await labeler.submit(request)
    log.info("labeling run submitted", extra={"step": step, "run_id": info.run_id})
    append_row(
        config.out / "collect.jsonl",
        {"step": step, "run_id": info.run_id, "problems": str(path)},
    )


# ---------------------------------------------------------------- files


def _log_samples(
    config: PpoConfig, step: int, rollouts: list[Rollout], judgement: Judgement
) -> None:
    for rollout, verdict in list(zip(rollouts, judgement.verdicts, strict=True))[
        : config.samples_logged
    ]:
        append_row(
            config.out / SAMPLES,
            {
                "step": step,
                "problem_id": rollout.problem.problem_id,
                "prompt": rollout.problem.prompt,
                "code": rollout.text,
                "passed": verdict.passed,
                "line_scores": None
                if verdict.line_scores is None
                else [s.model_dump() for s in verdict.line_scores],
            },
        )


def save_checkpoint(
    models: Models,
    policy_opt: torch.optim.Optimizer,
    critic_opt: torch.optim.Optimizer,
    step: int,
    config: PpoConfig,
) -> None:
    # Written beside the old one and swapped in: a crash mid-save keeps the old one usable.
    final = config.out / CHECKPOINT
    with atomic_dir(final) as staging:
        models.policy.save_pretrained(staging / "policy")
        models.critic.save_pretrained(staging / "critic")
        torch.save(
            {
                "policy_opt": policy_opt.state_dict(),
                "critic_opt": critic_opt.state_dict(),
                "step": step,
                "torch_rng": torch.get_rng_state(),
            },
            staging / "state.pt",
        )
    log.info("checkpoint saved", extra={"step": step, "path": str(final)})


def _save_final(models: Models, config: PpoConfig, history: list[Row]) -> None:
    plot_run(history, config.out)
    with atomic_dir(config.out / "critic") as critic:
        models.critic.save_pretrained(critic)
    with atomic_dir(config.out / "policy") as policy:  # last: it marks the run finished
        models.policy.save_pretrained(policy)
        models.tokenizer.save_pretrained(policy)
    shutil.rmtree(config.out / CHECKPOINT, ignore_errors=True)


def _keys(history: list[Row]) -> list[str]:
    return list(dict.fromkeys(key for row in history for key in row))


def plot_run(history: list[Row], out: Path) -> Path:
    return plot_curves(
        history,
        out / "curves.png",
        [
            ("reward", ["reward/total", "reward/outcome", "reward/dense", "reward/pass_rate"]),
            ("held-out pass@1", [k for k in _keys(history) if k.startswith("eval/")]),
            ("policy", ["policy/kl_to_reference", "policy/entropy", "policy/clip_fraction"]),
            ("value", ["loss/value", "value/explained_variance"]),
            ("time per step (s)", ["time/generate_s", "time/rewards_s", "time/update_s"]),
        ],
    )
