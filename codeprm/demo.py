"""`codeprm demo` (and `make demo`): the main job, end to end on this machine.

1. the local stack comes up (executor, PRM server, labeler API + worker) and every service
   answers its health, readiness and metrics endpoints;
2. a small policy is built offline (or `--base-model DIR` is used);
3. HumanEval problems are labeled through the labeler's queue: AST mutation of the canonical
   solutions, and binary search over line prefixes of programs sampled from the policy;
4. a PRM is trained on those labels (from the policy's backbone, so it shares its tokenizer
   and can initialise PPO's critic) and served by a second PRM server;
5. PPO steps run in `dense+value_init` mode against the executor and that PRM server;
6. the trained policy is evaluated (pass@1 through the executor) and a report is written: plots,
   metrics and an HTML page of rollouts with lines coloured by PRM score.

Offline, the policy has random weights: it passes no test, so the demo shows the pipeline
working, not a policy improving (tests/trainer/test_ppo_learns.py shows PPO learning; a real
checkpoint on a GPU, `--base-model`, shows it on code).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from codeprm.stack import LocalStack, StackConfig, StackError, free_port, wait_ready
from contracts.clients import LabelerClient
from contracts.labeler import LabelRunRequest


@dataclass
class DemoOptions:
    out: Path
    base_model: Path | None = None
    problems: int = 80
    ppo_steps: int = 8
    device: str = "auto"
    quick: bool = False
    """Smaller everything (the test suite runs the demo this way)."""


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
    from codeprm.tiny import build_tiny_policy
    from services.trainer.evaluate import evaluate_policy
    from services.trainer.ppo import train_ppo
    from services.trainer.ppo_config import PpoConfig
    from services.trainer.prm_train import TrainPrmConfig, train_prm
    from services.trainer.report import write_report

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    executor = _url(stack, "executor")
    labeler = _url(stack, "labeler")
    started = time.perf_counter()

    console.rule("policy")
    policy = options.base_model or out / "models" / "policy"
    if options.base_model is None and not (policy / "config.json").is_file():
        build_tiny_policy(policy)
        console.print(f"built a tiny Qwen2-shaped policy (random weights) at {policy}")

    console.rule("labeling (labeler queue -> executor)")
    labels = out / "labels.jsonl"
    search_problems = 2 if options.quick else 6
    runs = {
        "mutation": {"strategy": "mutation", "dataset": "humaneval", "limit": options.problems},
        "binary_search": {
            "strategy": "binary_search",
            "dataset": "humaneval",
            "limit": search_problems,
            "policy": {"kind": "hf", "model": str(policy.resolve())},
            "search": {
                "k": 2,
                "samples_per_problem": 2,
                "sampling": {"max_tokens": 48, "temperature": 1.0},
            },
        },
    }
    with labels.open("w") as sink:
        for name, body in runs.items():
            count = _label(labeler, body, sink, console, name)
            console.print(f"{name}: {count} labeled programs")

    console.rule("PRM training")
    prm_dir = out / "prm"
    if not (prm_dir / "codeprm_prm.json").is_file():
        result = train_prm(
            TrainPrmConfig(
                data=labels,
                base_model=policy,
                out=prm_dir,
                epochs=1 if options.quick else 3,
                lr=1e-3,
                batch_size=8,
                eval_every=10,
                eval_fraction=0.2,
                device=options.device,
                max_tokens=1024,
            ),
            progress=True,
        )
        if result.final is not None:
            console.print(
                f"held-out line accuracy {result.final.line_accuracy:.3f}, "
                f"first-error line {result.final.first_error_accuracy:.3f} "
                f"({result.final.programs} programs of unseen problems)"
            )

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
    try:
        if not wait_ready(prm_url, timeout_s=120):
            raise RuntimeError(f"the trained PRM's server did not become ready; see {prm_log}")
        run = out / "ppo"
        ppo = train_ppo(
            PpoConfig(
                policy=policy,
                value_init=prm_dir,
                mode="dense+value_init",
                dataset="humaneval",
                limit_problems=options.problems,
                out=run,
                executor_url=executor,
                prm_url=prm_url,
                steps=2 if options.quick else options.ppo_steps,
                prompts_per_step=4,
                samples_per_prompt=2,
                max_new_tokens=48 if options.quick else 96,
                policy_lr=1e-5,
                critic_lr=1e-4,
                save_every=2,
                device=options.device,
            ),
            progress=True,
        )
    finally:
        server.terminate()
        server.wait(30)
    last = ppo.history[-1]

    console.rule("evaluation and report")
    report = evaluate_policy(
        run / "policy",
        "humaneval",
        executor,
        limit=8 if options.quick else 20,
        max_new_tokens=48 if options.quick else 96,
        device=options.device,
        out=out / "eval.jsonl",
    )
    page = write_report(run, extra=report.model_dump())

    table = Table(title=f"codeprm demo: done in {time.perf_counter() - started:.0f} s")
    table.add_column("what")
    table.add_column("where / result")
    table.add_row("labels (TRL stepwise + line_labels)", str(labels))
    table.add_row("PRM checkpoint, curves.png, metrics.jsonl", str(prm_dir))
    table.add_row("PPO run (policy/, critic/, metrics.jsonl)", str(run))
    table.add_row(
        "last PPO step",
        f"reward {last['reward/total']:+.3f}, pass {last['reward/pass_rate']:.2f}, "
        f"rewards {last['time/rewards_s']:.1f} s of {last['time/step_s']:.1f} s",
    )
    rate = report.overall.pass_at_1
    table.add_row("eval pass@1", "-" if rate is None else f"{rate:.3f} ({report.overall.problems})")
    table.add_row("report (open in a browser)", str(page))
    table.add_row("service logs", str(stack.log_dir))
    console.print(table)
    console.print("[green]demo passed[/green]")


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
