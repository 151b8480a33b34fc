"""`codeprm demo` (and `make demo`): the main job, end to end on this machine.

1. the local stack comes up (executor, PRM server, labeler API + worker) and every service
   answers its health, readiness and metrics endpoints;
2. a starting policy: `--base-model DIR`, else the small policy `codeprm train sft` trains on
   the generated `listfuncs` family (cached under CODEPRM_CACHE after the first run);
3. labels through the labeler's queue: AST mutation of reference solutions (PRLCoder) and
   binary search over line prefixes of the policy's own programs (PSGPO) on training
   problems, plus binary search on held-out problems: the PRM's on-policy test set;
4. a PRM is trained on those labels from the policy's backbone (so it shares the tokenizer
   and can initialise PPO's critic), reports its on-policy AUC and first-error accuracy, and
   is served by a second PRM server;
5. PPO in `dense+value_init` mode against the executor and that PRM server, with held-out
   sampled pass@1 measured before, during and after, split by program length;
6. a report: before/after table, curves, and an HTML page of rollouts with lines coloured by
   PRM score.

`--quick` (the test suite's run) makes everything small: it shows the pipeline working, not
the policy learning.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from codeprm.api.labeler import LabelRunRequest
from codeprm.client import LabelerClient
from codeprm.listfuncs import VERSION
from codeprm.stack import LocalStack, StackConfig, StackError, free_port, wait_ready

if TYPE_CHECKING:  # the trainer imports torch: loaded only when the demo gets there
    from codeprm.services.trainer.prm_train import TrainPrmConfig

SFT_STEPS = 700
"""The starting policy's SFT steps (a full run; `--quick` takes fewer)."""


@dataclass
class DemoOptions:
    out: Path
    base_model: Path | None = None
    problems: int = 40
    """Training problems labeled by mutation, and as many by binary search."""
    ppo_steps: int = 60
    device: str = "auto"
    quick: bool = False
    """Smaller everything (the test suite runs the demo this way)."""
    cache: Path | None = None
    """Where the SFT policy is kept between runs (None: trained into `out`)."""


@dataclass(frozen=True)
class Sizes:
    """How much of everything a run does."""

    sft_steps: int
    mutation_problems: int
    search_problems: int
    policy_test_problems: int
    search_k: int
    prm_epochs: int
    ppo_steps: int
    prompts_per_step: int
    samples_per_prompt: int
    eval_problems: int
    eval_every: int
    max_new_tokens: int

    @staticmethod
    def of(options: DemoOptions) -> Sizes:
        if options.quick:
            return Sizes(
                sft_steps=30,
                mutation_problems=6,
                search_problems=2,
                policy_test_problems=2,
                search_k=2,
                prm_epochs=1,
                ppo_steps=2,
                prompts_per_step=4,
                samples_per_prompt=2,
                eval_problems=8,
                eval_every=2,
                max_new_tokens=64,
            )
        # Measured on listfuncs (docs/results.md): 128 rollouts a step learn where 32 did not;
        # all 100 held-out problems, so that a 10-point change is well above the noise.
        return Sizes(
            sft_steps=SFT_STEPS,
            mutation_problems=options.problems,
            search_problems=options.problems,
            policy_test_problems=40,
            search_k=4,
            prm_epochs=3,
            ppo_steps=options.ppo_steps,
            prompts_per_step=16,
            samples_per_prompt=8,
            eval_problems=100,
            eval_every=max(1, options.ppo_steps // 3),
            max_new_tokens=200,
        )


def run_demo(config: StackConfig, console: Console, options: DemoOptions) -> int:
    try:
        with console.status("starting the local stack..."):
            stack = LocalStack(config, say=console.print).__enter__()
    except StackError as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        return 1
    try:
        if not _check_services(stack, console):
            return 1
        _pipeline(stack, console, options)
    except Exception as exc:  # the demo reports what failed, with the logs to look at
        console.print(f"[red]demo failed:[/red] {type(exc).__name__}: {exc}")
        console.print(f"service logs: {stack.log_dir}")
        raise
    finally:
        stack.stop()
    return 0


def _check_services(stack: LocalStack, console: Console) -> bool:
    table = Table(title="codeprm demo: service checks")
    for column in ("service", "url", "/healthz", "/readyz", "/metrics"):
        table.add_column(column)
    failures = 0
    with httpx.Client(timeout=10) as client:
        for service in stack.services:
            if service.url is None:
                table.add_row(service.name, "(queue worker)", "-", "job answered", "-")
                continue
            codes = [
                client.get(f"{service.url}{path}").status_code
                for path in ("/healthz", "/readyz", "/metrics")
            ]
            failures += sum(code != 200 for code in codes)
            table.add_row(service.name, service.url, *(str(c) for c in codes))
    console.print(table)
    if failures:
        console.print(f"[red]demo failed: {failures} checks did not answer 200")
    return failures == 0


def _pipeline(stack: LocalStack, console: Console, options: DemoOptions) -> None:
    from codeprm.services.trainer.ppo import EVAL_SAMPLES, train_ppo
    from codeprm.services.trainer.ppo_config import PpoConfig
    from codeprm.services.trainer.report import write_report

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    sizes = Sizes.of(options)
    executor = _url(stack, "executor")
    labeler = _url(stack, "labeler")
    started = time.perf_counter()

    console.rule("policy")
    policy = _policy(options, sizes, console)

    console.rule("labeling (labeler queue -> executor)")
    labels, on_policy = out / "labels.jsonl", out / "on_policy.jsonl"
    search = {
        "k": sizes.search_k,
        "samples_per_problem": 4,
        "sampling": {"max_tokens": sizes.max_new_tokens, "temperature": 1.0},
    }
    runs = {
        "mutation (PRLCoder)": (
            labels,
            {"strategy": "mutation", "dataset": "listfuncs", "limit": sizes.mutation_problems},
        ),
        "binary search (PSGPO)": (
            labels,
            {
                "strategy": "binary_search",
                "dataset": "listfuncs",
                "limit": sizes.search_problems,
                "policy": {"kind": "hf", "model": str(policy.resolve())},
                "search": search,
            },
        ),
        "binary search, held out (on-policy test set)": (
            on_policy,
            {
                "strategy": "binary_search",
                "dataset": "listfuncs-test",
                "limit": sizes.policy_test_problems,
                "policy": {"kind": "hf", "model": str(policy.resolve())},
                "search": search,
            },
        ),
    }
    for path in (labels, on_policy):
        path.write_text("")
    for name, (path, body) in runs.items():
        with path.open("a") as sink:
            count = _label(labeler, body, sink, console, name)
        console.print(f"{name}: {count} labeled programs")

    console.rule("PRM training")
    prm_dir = out / "prm"
    prm_quality = _train_prm(prm_dir, labels, on_policy, policy, sizes, options, console)

    console.rule("PPO (dense + value_init) against the executor and the new PRM server")
    port = free_port()
    prm_log = stack.log_dir / "prm_trained.log"
    with prm_log.open("ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "codeprm", "prm", "serve", "--model", str(prm_dir)]
            + ["--port", str(port), "--device", options.device],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prm_url = f"http://127.0.0.1:{port}"
    run = out / "ppo"
    shutil.rmtree(run, ignore_errors=True)  # a demo starts over; `train ppo` would refuse it
    try:
        if not wait_ready(prm_url, timeout_s=120):
            raise RuntimeError(f"the trained PRM's server did not become ready; see {prm_log}")
        ppo = train_ppo(
            PpoConfig(
                policy=policy,
                value_init=prm_dir,
                mode="dense+value_init",
                **DENSE,
                dataset="listfuncs",
                out=run,
                executor_url=executor,
                prm_url=prm_url,
                steps=sizes.ppo_steps,
                prompts_per_step=sizes.prompts_per_step,
                samples_per_prompt=sizes.samples_per_prompt,
                minibatch_size=minibatch_size(sizes.prompts_per_step * sizes.samples_per_prompt),
                max_new_tokens=sizes.max_new_tokens,
                **LEARNING,
                save_every=max(2, sizes.ppo_steps),
                device=options.device,
                eval_dataset="listfuncs-test",
                eval_limit=sizes.eval_problems,
                eval_every=sizes.eval_every,
                eval_samples=4,
            ),
            progress=True,
        )
    finally:
        server.terminate()
        server.wait(30)

    console.rule("evaluation and report")
    before = next(r for r in ppo.history if r["step"] == 0)
    after = ppo.history[-1]
    _write_eval(run / EVAL_SAMPLES, out / "eval.jsonl")
    page = write_report(run, extra={"prm": prm_quality, "before": before, "after": after})
    console.print(_before_after(before, after))

    table = Table(title=f"codeprm demo: done in {time.perf_counter() - started:.0f} s")
    table.add_column("what")
    table.add_column("where / result")
    table.add_row("policy (SFT on listfuncs)", str(policy))
    table.add_row("labels (TRL stepwise + line_labels)", f"{labels}, {on_policy}")
    table.add_row("PRM checkpoint, curves.png, metrics.jsonl", str(prm_dir))
    table.add_row("PRM on-policy AUC", _fmt(prm_quality.get("on_policy_auc")))
    table.add_row(
        "on-policy AUC of the policy's own likelihood",
        _fmt(prm_quality.get("on_policy_base_likelihood_auc")),
    )
    table.add_row("PPO run (policy/, critic/, metrics.jsonl, curves)", str(run))
    table.add_row(
        "held-out sampled pass@1",
        f"{_fmt(before.get('eval/pass_at_1'))} -> {_fmt(after.get('eval/pass_at_1'))}",
    )
    table.add_row("report (open in a browser)", str(page))
    table.add_row("service logs", str(stack.log_dir))
    console.print(table)
    console.print("[green]demo passed[/green]")


LEARNING: dict[str, Any] = {
    # For a 140k-parameter policy SFT'd at 5e-3 (a 0.5B model wants ~1e-6), measured on
    # listfuncs (docs/results.md): at 2e-4 the KL to the reference reached 3.5-4.9 nats a
    # rollout within 4 steps and the pass rate fell; 2e-5 moved held-out pass@1 by 5 points
    # in 20 steps, 5e-5 with 128 rollouts a step by 15 in 30.
    "policy_lr": 5e-5,
    "critic_lr": 1e-3,
    "kl_coef": 0.01,
    "ppo_epochs": 2,
}


DENSE: dict[str, Any] = {
    # The PRM scores most lines of failing programs as good too (docs/results.md), so `plain`
    # dense rewards paid failing rollouts more than passing ones; `clip` only subtracts for
    # lines scored below eta, which has the outcome's sign.
    "dense_variant": "clip",
    "clip_eta": 0.7,
}


def minibatch_size(rollouts_per_step: int) -> int:
    """Four gradient steps per PPO epoch, whatever the batch."""
    return max(1, rollouts_per_step // 4)


def policy_dir(where: Path, sft_steps: int = SFT_STEPS) -> Path:
    """Where the demo keeps its SFT policy. Keyed by the family's version too: a policy SFT'd
    on an older family is not reused."""
    return where / f"listfuncs-{VERSION}-policy-{sft_steps}"


def _policy(options: DemoOptions, sizes: Sizes, console: Console) -> Path:
    from codeprm.services.trainer.sft import SftConfig, train_sft

    if options.base_model is not None:
        return options.base_model
    where = options.cache if options.cache is not None else options.out / "models"
    policy = policy_dir(where, sizes.sft_steps)
    if (policy / "config.json").is_file():
        console.print(f"policy: the SFT policy of an earlier run, {policy}")
        return policy
    console.print(f"training the starting policy ({sizes.sft_steps} SFT steps) into {policy}")
    staging = policy.with_name(policy.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    config = SftConfig(out=staging, steps=sizes.sft_steps, device=options.device)
    if options.quick:
        config = config.model_copy(update={"hidden": 32, "layers": 1, "limit_problems": 200})
    train_sft(config, progress=True)
    staging.rename(policy)
    return policy


def prm_recipe(
    labels: Path,
    policy: Path,
    out: Path,
    on_policy: Path | None,
    *,
    epochs: int = 3,
    device: str = "auto",
) -> TrainPrmConfig:
    """The demo's PRM recipe (chosen by on-policy AUC, docs/results.md): from the policy's
    backbone, lines after a first error left out, passing and failing programs balanced."""
    from codeprm.services.trainer.prm_train import TrainPrmConfig

    return TrainPrmConfig(
        data=labels,
        base_model=policy,
        out=out,
        epochs=epochs,
        lr=1e-3,
        batch_size=8,
        eval_every=50,  # each evaluation scores every held-out and on-policy program
        eval_fraction=0.2,
        device=device,
        max_tokens=1024,
        on_policy=on_policy,
        after_error="drop",
        balance=True,
    )


def _train_prm(
    prm_dir: Path,
    labels: Path,
    on_policy: Path,
    policy: Path,
    sizes: Sizes,
    options: DemoOptions,
    console: Console,
) -> dict[str, float | None]:
    from codeprm.services.trainer.prm_train import train_prm

    shutil.rmtree(prm_dir, ignore_errors=True)
    config = prm_recipe(
        labels,
        policy,
        prm_dir,
        on_policy if on_policy.stat().st_size else None,
        epochs=sizes.prm_epochs,
        device=options.device,
    )
    result = train_prm(config, progress=True)
    quality: dict[str, float | None] = {}
    if result.final is not None:
        quality |= {
            "held_out_line_accuracy": result.final.line_accuracy,
            "held_out_auc": result.final.auc,
        }
    if result.on_policy is not None:
        quality |= {
            "on_policy_auc": result.on_policy.auc,
            "on_policy_first_error_accuracy": result.on_policy.first_error_accuracy,
            "on_policy_last_line_flagged": result.on_policy.passing_last_line_flagged,
        }
    if result.on_policy_base_likelihood_auc is not None:
        quality["on_policy_base_likelihood_auc"] = result.on_policy_base_likelihood_auc
    console.print(", ".join(f"{k} {_fmt(v)}" for k, v in quality.items()))
    return quality


def _before_after(before: dict[str, Any], after: dict[str, Any]) -> Table:
    table = Table(title="held-out sampled pass@1 (listfuncs-test), before and after PPO")
    for column in ("problems", "before", "after", "change"):
        table.add_column(column)
    for key in [k for k in before if k.startswith("eval/")]:
        name = key.removeprefix("eval/pass_at_1").removeprefix("/") or "all"
        a, b = before.get(key), after.get(key)
        change = "-" if a is None or b is None else f"{100 * (b - a):+.1f} points"
        table.add_row(name, _fmt(a), _fmt(b), change)
    return table


def _write_eval(source: Path, out: Path) -> None:
    """The programs of the run's last held-out evaluation, one JSON row each."""
    out.write_text(source.read_text() if source.is_file() else "")


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def _url(stack: LocalStack, name: str) -> str:
    url = next(s.url for s in stack.services if s.name == name)
    assert url is not None
    return url


def _label(labeler: str, body: dict[str, Any], sink: Any, console: Console, name: str) -> int:
    with LabelerClient(labeler, timeout_s=60) as client:
        info = client.submit(LabelRunRequest.model_validate(body))
        with Progress(console=console) as bar:
            task = bar.add_task(name, total=info.total)
            info = client.wait(
                info.run_id,
                poll_s=0.5,
                on_progress=lambda now: bar.update(task, completed=now.done + now.failed),
            )
        if info.failed:
            console.print(f"[yellow]{info.failed} problems failed:[/] {info.failures}")
        count = 0
        for sample in client.export(info.run_id):
            sink.write(sample.model_dump_json() + "\n")
            count += 1
    return count
