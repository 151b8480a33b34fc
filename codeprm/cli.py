"""The `codeprm` command: one sub-command group per service, plus `up` and `demo`.

Service modules are imported inside the commands, so `codeprm --help` stays fast and the
executor never imports torch.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from contracts.logging import configure_logging
from contracts.settings import ServiceSettings

app = typer.Typer(no_args_is_help=True, help="codeprm: line-level process rewards for code RL.")
executor_app = typer.Typer(no_args_is_help=True, help="Sandboxed code-execution service.")
prm_app = typer.Typer(no_args_is_help=True, help="Process Reward Model scoring server.")
label_app = typer.Typer(no_args_is_help=True, help="Line-labeling jobs (Redis/arq).")
train_app = typer.Typer(no_args_is_help=True, help="Training: the PRM, and PPO.")
app.add_typer(executor_app, name="executor")
app.add_typer(prm_app, name="prm")
app.add_typer(label_app, name="label")
app.add_typer(train_app, name="train")

console = Console(stderr=True)


def cache_dir() -> Path:
    return Path(os.environ.get("CODEPRM_CACHE", Path.home() / ".cache" / "codeprm"))


def _overrides(**values: Any) -> dict[str, Any]:
    """CLI flags the user gave; they win over environment variables."""
    return {k: v for k, v in values.items() if v is not None}


def _serve(app_: Any, settings: ServiceSettings, service: str) -> None:
    import uvicorn

    configure_logging(service, settings.log_level)
    uvicorn.run(
        app_,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.graceful_shutdown_s),
        access_log=False,
    )


HostOpt = typer.Option(None, help="Interface to bind (default from settings).")
PortOpt = typer.Option(None, help="Port to bind (default from settings).")


@executor_app.command("serve")
def executor_serve(host: str | None = HostOpt, port: int | None = PortOpt) -> None:
    """Run the executor HTTP API (settings: CODEPRM_EXECUTOR_*)."""
    from services.executor.app import create_app
    from services.executor.settings import ExecutorSettings

    settings = ExecutorSettings(**_overrides(host=host, port=port))
    _serve(create_app(settings), settings, "executor")


@prm_app.command("serve")
def prm_serve(
    model: Path | None = typer.Option(None, help="PRM checkpoint directory."),
    host: str | None = HostOpt,
    port: int | None = PortOpt,
    device: str | None = typer.Option(None, help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Run the PRM scoring server (settings: CODEPRM_PRM_*)."""
    from services.prm_server.app import create_app
    from services.prm_server.settings import PrmSettings

    settings = PrmSettings(**_overrides(model=model, host=host, port=port, device=device))
    _serve(create_app(settings), settings, "prm_server")


@prm_app.command("tiny")
def prm_tiny(out: Path = typer.Option(..., help="Directory to write the checkpoint to.")) -> None:
    """Build a tiny randomly initialised PRM offline (for trying the server out)."""
    from codeprm.tiny import build_tiny_prm

    build_tiny_prm(out)
    console.print(f"tiny PRM written to {out}")


@train_app.command("prm")
def train_prm(
    data: Path = typer.Option(..., help="JSONL: `codeprm label export` or TRL stepwise rows."),
    base_model: Path = typer.Option(..., help="Causal LM (or PRM) directory to start from."),
    out: Path = typer.Option(..., help="Directory for the PRM, metrics.jsonl and curves.png."),
    objective: str = typer.Option("mse", help="mse on +1/0/-1 labels, or bce on 0/1."),
    epochs: int = typer.Option(3),
    batch_size: int = typer.Option(8, help="Programs per forward pass."),
    grad_accum: int = typer.Option(1, help="Forward passes per optimizer step."),
    lr: float = typer.Option(1e-5, help="Peak learning rate."),
    warmup_steps: int = typer.Option(10),
    max_tokens: int = typer.Option(2048, help="Tokens per program, prompt included."),
    eval_fraction: float = typer.Option(0.1, help="Fraction of problems held out."),
    eval_every: int = typer.Option(50),
    save_every: int = typer.Option(100, help="Checkpoint interval; a rerun resumes from it."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    parallel: str = typer.Option(
        "ddp", help="Under torchrun / accelerate launch: ddp, or fsdp (full shard)."
    ),
    gradient_checkpointing: bool = typer.Option(
        False, help="Recompute activations in the backward pass: less memory, more compute."
    ),
    prompt_template: str = typer.Option("{prompt}", help="Text before the code."),
    on_policy: Path | None = typer.Option(
        None, help="Binary-search labels of the policy's own held-out samples: on-policy AUC."
    ),
    after_error: str = typer.Option("keep", help="Lines after the first bad one: keep | drop."),
    balance: bool = typer.Option(False, help="Passing and failing programs weigh the same."),
) -> None:
    """Train a line-level PRM; rerunning the same command resumes from its checkpoint.

    Runs as it is under `torchrun` or `accelerate launch` (one process per device)."""
    from services.trainer.prm_train import TrainPrmConfig
    from services.trainer.prm_train import train_prm as run

    configure_logging("trainer", os.environ.get("CODEPRM_LOG_LEVEL", "WARNING"))
    try:
        config = TrainPrmConfig.model_validate(
            dict(
                data=data,
                base_model=base_model,
                out=out,
                objective=objective,
                epochs=epochs,
                batch_size=batch_size,
                grad_accum=grad_accum,
                lr=lr,
                warmup_steps=warmup_steps,
                max_tokens=max_tokens,
                eval_fraction=eval_fraction,
                eval_every=eval_every,
                save_every=save_every,
                seed=seed,
                device=device,
                parallel=parallel,
                gradient_checkpointing=gradient_checkpointing,
                prompt_template=prompt_template,
                on_policy=on_policy,
                after_error=after_error,
                balance=balance,
            )
        )
        result = run(config, progress=True)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:  # incl. ValidationError
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    if os.environ.get("RANK", "0") != "0":
        return  # one summary per job, from rank 0
    console.print(f"PRM written to [bold]{result.out}[/] after {result.steps} steps")
    if result.final is not None:
        m = result.final
        auc = "n/a" if m.auc is None else f"{m.auc:.3f}"
        console.print(
            f"held-out ({m.programs} programs, {m.lines} lines): line accuracy "
            f"{m.line_accuracy:.3f}, AUC {auc}, first-error line {m.first_error_accuracy:.3f}"
        )
    if result.on_policy is not None:
        p = result.on_policy

        def fmt(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        console.print(
            f"on-policy ({p.programs} programs, {p.passing} passing): AUC {fmt(p.auc)} "
            f"(passing vs failing by lowest line score), first-error line "
            f"{fmt(p.first_error_accuracy)}, passing last lines flagged "
            f"{fmt(p.passing_last_line_flagged)}"
        )
    console.print(f"curves: {result.out / 'curves.png'}")


@train_app.command("ppo")
def train_ppo(
    config: Path = typer.Option(..., help="YAML config (services/trainer/ppo_config.py)."),
    out: Path | None = typer.Option(None, help="Run directory (overrides the config's)."),
    steps: int | None = typer.Option(None, help="Steps (overrides the config's)."),
    mode: str | None = typer.Option(
        None, help="outcome | dense | value_init | dense+value_init (overrides the config's)."
    ),
) -> None:
    """PPO with executor and PRM rewards; rerunning the same command resumes the run."""
    from services.trainer.judge import RewardUnavailable
    from services.trainer.ppo import train_ppo as run
    from services.trainer.ppo_config import load_config

    configure_logging("trainer", os.environ.get("CODEPRM_LOG_LEVEL", "WARNING"))
    try:
        settings = load_config(config, out=out, steps=steps, mode=mode)
        result = run(settings, progress=True)
    except RewardUnavailable as exc:
        console.print(f"[red]step failed, no reward:[/] {exc}")
        console.print("the run resumes from its last checkpoint when this command is rerun")
        raise typer.Exit(1) from None
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    console.print(f"run written to [bold]{result.out}[/] ({result.steps} steps)")
    console.print(f"plots: {result.out / 'curves.png'}; report: codeprm report {result.out}")


@app.command("eval")
def eval_policy(
    model: Path = typer.Option(..., help="Policy checkpoint directory."),
    dataset: str = typer.Option("humaneval", help="humaneval, listfuncs-test, or a JSONL."),
    executor: str = typer.Option("http://127.0.0.1:8100", help="Executor URL."),
    limit: int | None = typer.Option(None, help="First N problems only."),
    samples: int = typer.Option(1, help="Programs sampled per problem (pass@k needs k)."),
    temperature: float = typer.Option(0.0, help="0: greedy (one program per problem)."),
    k: list[int] = typer.Option([1], "--k", help="pass@k to report (repeat the flag)."),
    max_new_tokens: int = typer.Option(256),
    long_tokens: int = typer.Option(100, help="Token split: responses above are 'long'."),
    line_edges: list[int] = typer.Option(
        [5, 10], "--line-edge", help="Line split: buckets of problems by code lines."
    ),
    device: str = typer.Option("auto"),
    seed: int = typer.Option(0),
    out: Path | None = typer.Option(None, help="Write per-sample results (JSONL) here."),
) -> None:
    """pass@1 and pass@k through the executor, split by code lines and by response tokens."""
    from services.trainer.evaluate import evaluate_policy

    configure_logging("trainer", os.environ.get("CODEPRM_LOG_LEVEL", "WARNING"))
    try:
        report = evaluate_policy(
            model,
            dataset,
            executor,
            limit=limit,
            samples=samples,
            temperature=temperature,
            ks=k,
            max_new_tokens=max_new_tokens,
            long_tokens=long_tokens,
            line_edges=sorted(line_edges),
            device=device,
            seed=seed,
            out=out,
        )
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    ks = sorted(report.overall.pass_at_k)
    table = Table("split", "problems", "samples", "passed", *(f"pass@{n}" for n in ks))
    rows = {"all": report.overall, **report.by_lines, **report.by_tokens}
    for name, bucket in rows.items():
        rates = [bucket.pass_at_k.get(n) for n in ks]
        table.add_row(
            name,
            str(bucket.problems),
            str(bucket.samples),
            str(bucket.passed),
            *("-" if r is None else f"{r:.3f}" for r in rates),
        )
    Console().print(table)


@train_app.command("sft")
def train_sft(
    out: Path = typer.Option(..., help="Where the policy (model + tokenizer) is written."),
    dataset: str = typer.Option("listfuncs", help="Problems with solutions: a name or JSONL."),
    base_model: Path | None = typer.Option(None, help="Fine-tune this model instead."),
    steps: int = typer.Option(700),
    batch_size: int = typer.Option(16),
    lr: float = typer.Option(5e-3),
    noise: float = typer.Option(0.08, help="Chance each solution line is made wrong."),
    hidden: int = typer.Option(64),
    layers: int = typer.Option(2),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
) -> None:
    """Tokenizer + supervised fine-tuning of a small Qwen2-shaped starting policy."""
    from services.trainer.sft import SftConfig
    from services.trainer.sft import train_sft as run

    configure_logging("trainer", os.environ.get("CODEPRM_LOG_LEVEL", "WARNING"))
    config = SftConfig(
        out=out,
        dataset=dataset,
        base_model=base_model,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        noise=noise,
        hidden=hidden,
        layers=layers,
        seed=seed,
        device=device,
    )
    try:
        path = run(config, progress=True)
    except (ValueError, FileExistsError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    console.print(
        f"policy written to [bold]{path}[/]; try: codeprm eval --model {path} "
        "--dataset listfuncs-test --samples 4 --temperature 1"
    )


@app.command("report")
def report(run: Path = typer.Argument(..., help="A PPO run directory.")) -> None:
    """PNG plots and an HTML page (programs with lines coloured by PRM score) for a run."""
    from services.trainer.report import write_report

    page = write_report(run)
    console.print(f"report: {page}")


@label_app.command("serve")
def label_serve(host: str | None = HostOpt, port: int | None = PortOpt) -> None:
    """Run the labeler HTTP API (settings: CODEPRM_LABELER_*, REDIS_URL)."""
    from services.labeler.app import create_app
    from services.labeler.settings import LabelerSettings

    settings = LabelerSettings(**_overrides(host=host, port=port))
    _serve(create_app(settings), settings, "labeler")


@label_app.command("worker")
def label_worker(
    burst: bool = typer.Option(False, help="Exit once the queue is empty."),
) -> None:
    """Run a labeler worker: consumes labeling jobs from Redis (settings: CODEPRM_LABELER_*)."""
    from services.labeler.settings import LabelerSettings
    from services.labeler.worker import build_worker

    settings = LabelerSettings()
    configure_logging("labeler_worker", settings.log_level)
    build_worker(settings, burst=burst).run()


def _backend_spec(target: str | None, model: str | None, api: str) -> dict[str, Any] | None:
    """`--policy`/`--teacher`: a local checkpoint directory (hf) or an OpenAI-compatible URL."""
    if target is None:
        return None
    if Path(target).is_dir():
        return {"kind": "hf", "model": target}
    if model is None:
        raise typer.BadParameter(f"{target} is not a directory, so it is a URL: name the model")
    return {"kind": "openai", "url": target, "model": model, "api": api}


@label_app.command("submit")
def label_submit(
    dataset: str = typer.Option(..., help="'humaneval' or a JSONL file (docs/labeler.md)."),
    strategy: str = typer.Option(
        "mutation", help="mutation (PRLCoder), binary_search (PSGPO) or monte_carlo."
    ),
    limit: int | None = typer.Option(None, help="Label only the first N problems."),
    policy: str | None = typer.Option(
        None, help="Search strategies: the policy, an OpenAI-compatible base URL or a local dir."
    ),
    policy_model: str | None = typer.Option(None, help="The policy's served model name."),
    policy_api: str = typer.Option("completions", help="completions or chat."),
    k: int = typer.Option(8, help="Search: continuations sampled per prefix."),
    samples_per_problem: int = typer.Option(4, help="Search: programs sampled per problem."),
    verify_probes: int = typer.Option(0, help="binary_search: monotonicity checks per program."),
    revised_only: bool = typer.Option(False, help="binary_search: keep +1 -> -1 samples only."),
    max_tokens: int = typer.Option(512, help="Search: tokens per continuation."),
    temperature: float = typer.Option(0.8, help="Search: sampling temperature."),
    stop: list[str] = typer.Option([], help="Search: stop sequence (repeatable)."),
    mutator: str = typer.Option("ast", help="mutation: ast (offline) or teacher."),
    teacher: str | None = typer.Option(None, help="mutation: teacher URL or local dir."),
    teacher_model: str | None = typer.Option(None, help="mutation: the teacher's model name."),
    variants_per_line: int = typer.Option(4, help="mutation: bug variants of each code line."),
    rewrites_per_line: int = typer.Option(1, help="mutation (teacher): rewrites per line."),
) -> None:
    """Enqueue one labeling job per problem; prints the run id."""
    import asyncio

    from pydantic import ValidationError

    from contracts.datasets import DatasetError
    from contracts.labeler import LabelRunRequest
    from services.labeler.completions import BackendUnreachable
    from services.labeler.queue import open_store
    from services.labeler.settings import LabelerSettings

    settings = LabelerSettings()
    try:
        request = LabelRunRequest.model_validate(
            {
                "strategy": strategy,
                "dataset": dataset,
                "limit": limit,
                "policy": _backend_spec(policy, policy_model, policy_api),
                "search": {
                    "k": k,
                    "samples_per_problem": samples_per_problem,
                    "verify_probes": verify_probes,
                    "revised_only": revised_only,
                    "sampling": {
                        "max_tokens": max_tokens,
                        "temperature": temperature,
                        "stop": stop,
                    },
                },
                "mutation": {
                    "mutator": mutator,
                    "teacher": _backend_spec(teacher, teacher_model, "chat"),
                    "variants_per_line": variants_per_line,
                    "rewrites_per_line": rewrites_per_line,
                },
            }
        )
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            console.print(f"[red]bad request:[/red] {where}: {error['msg']}")
        raise typer.Exit(2) from None

    async def submit() -> Any:
        async with open_store(settings) as store:
            return await store.submit(request, settings.queue_name, settings.openai_api_key)

    try:
        info = asyncio.run(submit())
    except (DatasetError, BackendUnreachable) as exc:
        console.print(f"[red]cannot submit:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"run {info.run_id}: {info.total} jobs queued on {settings.queue_name}")
    print(info.run_id)


@label_app.command("status")
def label_status(
    run_id: str = typer.Argument(..., help="The run id `label submit` printed."),
    watch: bool = typer.Option(True, help="Follow live until the run finishes."),
) -> None:
    """Progress of a run: a live bar with done / failed / remaining, rate and ETA."""
    import asyncio

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from services.labeler.queue import open_store
    from services.labeler.runs import RunNotFound
    from services.labeler.settings import LabelerSettings

    settings = LabelerSettings()

    async def follow() -> Any:
        async with open_store(settings) as store:
            info = await store.info(run_id)
            columns = (
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("failed {task.fields[failed]}"),
                TextColumn("samples {task.fields[samples]}"),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=console) as progress:
                task = progress.add_task(
                    f"run {run_id}", total=info.total, failed=0, samples=0, rate=""
                )
                while True:
                    progress.update(
                        task,
                        completed=info.done + info.failed,
                        failed=info.failed,
                        samples=info.samples,
                        rate=_rate(info),
                    )
                    if info.finished or not watch:
                        return info
                    await asyncio.sleep(1)
                    info = await store.info(run_id)

    try:
        info = asyncio.run(follow())
    except RunNotFound:
        console.print(f"[red]no labeling run {run_id!r}[/red]")
        raise typer.Exit(2) from None
    for problem, reason in info.failures.items():
        console.print(f"[yellow]failed[/yellow] {problem}: {reason}")


def _rate(info: Any) -> str:
    finished = info.done + info.failed
    minutes = max(time.time() - info.created_at, 1e-3) / 60
    return f"{finished / minutes:.1f} units/min, {info.completions} completions"


@label_app.command("export")
def label_export(
    run_id: str = typer.Argument(..., help="The run id."),
    out: Path = typer.Option(..., help="JSONL file to write."),
) -> None:
    """Write a run's samples as JSONL (TRL stepwise fields + line_labels + provenance)."""
    import asyncio

    from services.labeler.queue import open_store
    from services.labeler.runs import RunNotFound
    from services.labeler.settings import LabelerSettings

    settings = LabelerSettings()

    async def export() -> tuple[int, Any]:
        count = 0
        async with open_store(settings) as store:
            info = await store.info(run_id)
            with out.open("w") as f:
                async for line in store.export(run_id, settings.export_ttl_s):
                    f.write(line)
                    count += 1
        return count, info

    try:
        count, info = asyncio.run(export())
    except RunNotFound:
        console.print(f"[red]no labeling run {run_id!r}[/red]")
        raise typer.Exit(2) from None
    console.print(
        f"{count} samples written to {out}, from {info.done} of {info.total} units; "
        f"{info.failed} failed, {info.remaining} not finished"
        + (f" (`codeprm label status {run_id}` says why)" if info.failed else "")
    )


def _stack_config(**kw: Any) -> Any:
    from codeprm.stack import StackConfig
    from codeprm.tiny import cached_tiny_prm

    config = StackConfig(
        redis_url=os.environ.get("REDIS_URL", StackConfig.redis_url),
        queue_name=os.environ.get("CODEPRM_LABELER_QUEUE_NAME", StackConfig.queue_name),
        **kw,
    )
    if config.prm_model is None:
        console.print(
            "[dim]No --prm-model given: serving the tiny offline demo PRM "
            f"(built once under {cache_dir()}).[/dim]"
        )
        config.prm_model = cached_tiny_prm(cache_dir())
    return config


def _print_services(stack: Any) -> None:
    table = Table(title="codeprm local stack")
    table.add_column("service")
    table.add_column("url")
    table.add_column("log")
    for s in stack.services:
        table.add_row(s.name, s.url or "(queue worker)", str(s.log_path))
    table.add_row("redis", stack.redis_url, "")
    console.print(table)


@app.command()
def up(
    executor_port: int = typer.Option(8100, help="Executor port."),
    prm_port: int = typer.Option(8101, help="PRM server port."),
    labeler_port: int = typer.Option(8102, help="Labeler API port."),
    prm_model: Path | None = typer.Option(None, help="PRM checkpoint (default: tiny demo PRM)."),
    log_dir: Path | None = typer.Option(None, help="Where services write logs (default: temp)."),
) -> None:
    """Start the local stack on loopback (Redis from REDIS_URL) until Ctrl-C."""
    from codeprm.stack import LocalStack, StackError

    config = _stack_config(
        executor_port=executor_port,
        prm_port=prm_port,
        labeler_port=labeler_port,
        prm_model=prm_model,
        log_dir=log_dir,
    )

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with console.status("starting executor, PRM server, labeler and worker..."):
            stack = LocalStack(config, say=console.print).__enter__()
    except StackError as exc:
        console.print(f"[red]codeprm up failed:[/red] {exc}")
        raise typer.Exit(1) from None
    try:
        _print_services(stack)
        console.print("[green]ready[/green] - Ctrl-C stops everything")
        while (exited := stack.poll_exited()) is None:
            time.sleep(0.5)
        console.print(f"[red]{exited.name} exited unexpectedly; stopping the stack[/red]")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        stack.stop()
        console.print("stopped")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-run"), help="Where everything the demo makes goes."),
    base_model: Path | None = typer.Option(
        None, help="A real causal-LM checkpoint instead of the tiny offline one (use a GPU)."
    ),
    problems: int = typer.Option(40, help="listfuncs problems to label (mutation)."),
    ppo_steps: int = typer.Option(15),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    quick: bool = typer.Option(False, help="Smaller everything, no learning (a few minutes)."),
) -> None:
    """The end-to-end pipeline: stack, labeling, PRM training, PPO, evaluation, report."""
    from codeprm.demo import DemoOptions, run_demo

    configure_logging("demo", os.environ.get("CODEPRM_LOG_LEVEL", "WARNING"))
    options = DemoOptions(out, base_model, problems, ppo_steps, device, quick, cache_dir())
    config = _stack_config(executor_port=0, prm_port=0, labeler_port=0)
    raise typer.Exit(run_demo(config, console, options))
