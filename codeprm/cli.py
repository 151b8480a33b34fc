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

from codeprm.files import checkpoint_dir
from codeprm.serving.logging import configure_logging
from codeprm.serving.settings import ServiceSettings

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


def main() -> None:
    """The `codeprm` command. A failure the user can act on (a wrong path, a missing
    checkpoint, bad YAML, a service or Redis that is down) is one line on stderr, never a
    traceback, and the exit code says whose it is: 2 for bad input (retrying cannot help;
    the Kubernetes Job fails at once), 1 for something down (a retry may succeed).
    CODEPRM_DEBUG=1 shows the traceback."""
    try:
        app(prog_name="codeprm")
    except Exception as exc:
        failure = explain(exc)
        if failure is None or os.environ.get("CODEPRM_DEBUG"):
            raise
        code, message = failure
        console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
        raise SystemExit(code) from None


def explain(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, one line) for a failure the user can act on; None for a bug of ours."""
    import httpx
    import yaml
    from pydantic import ValidationError
    from redis.exceptions import RedisError

    from codeprm.client import ServiceRejected, ServiceUnavailable
    from codeprm.services.trainer.reward_client import RewardUnavailable

    if isinstance(exc, ServiceUnavailable):
        return 1, f"{exc} (is the service running? `codeprm up` starts them all)"
    if isinstance(exc, RewardUnavailable):
        return 1, f"{exc}; rerun the same command to resume from the last checkpoint"
    if isinstance(exc, RedisError | httpx.TransportError):
        return 1, f"{exc} (is it running? check REDIS_URL and the service URLs)"
    if isinstance(exc, ServiceRejected):
        return 2, str(exc.detail)
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors()
        ]
        return 2, f"invalid {exc.title}: " + "; ".join(parts)
    if isinstance(exc, yaml.YAMLError):
        return 2, f"not valid YAML: {' '.join(str(exc).split())}"
    if isinstance(exc, FileNotFoundError | NotADirectoryError | IsADirectoryError):
        return 2, str(exc) if exc.filename is None else f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, FileExistsError | PermissionError | ValueError):
        return 2, str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return 2, f"{exc.filename}: {exc.strerror}"
    return None


def _sigterm_as_ctrl_c() -> None:
    """SIGTERM (kill, a container stop) unwinds like Ctrl-C, so `finally` blocks stop the
    services a command started instead of leaving them running."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)


def cache_dir() -> Path:
    return Path(os.environ.get("CODEPRM_CACHE", Path.home() / ".cache" / "codeprm"))


def _overrides(**values: Any) -> dict[str, Any]:
    """CLI flags the user gave; they win over environment variables."""
    return {k: v for k, v in values.items() if v is not None}


def _server(app_: Any, settings: ServiceSettings, service: str) -> Any:
    import uvicorn

    configure_logging(service, settings.log_level)
    config = uvicorn.Config(
        app_,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.graceful_shutdown_s),
        access_log=False,
    )
    return uvicorn.Server(config)


def _serve(app_: Any, settings: ServiceSettings, service: str) -> None:
    _run(_server(app_, settings, service))


def _run(server: Any) -> None:
    server.run()
    if not server.started:  # as uvicorn.run: a failed start (port taken...) exits non-zero
        raise SystemExit(3)


HostOpt = typer.Option(None, help="Interface to bind (default from settings).")
PortOpt = typer.Option(None, help="Port to bind (default from settings).")


@executor_app.command("serve")
def executor_serve(host: str | None = HostOpt, port: int | None = PortOpt) -> None:
    """Run the executor HTTP API (settings: CODEPRM_EXECUTOR_*)."""
    from codeprm.services.executor.app import create_app
    from codeprm.services.executor.settings import ExecutorSettings

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
    from codeprm.services.prm_server.app import create_app
    from codeprm.services.prm_server.settings import PrmSettings

    settings = PrmSettings(**_overrides(model=model, host=host, port=port, device=device))
    if settings.model is not None:
        checkpoint_dir(settings.model, "PRM checkpoint")
    failures: list[str] = []

    def stop(reason: str) -> None:  # the model cannot load: stop serving, say why
        failures.append(reason)
        server.should_exit = True

    server = _server(create_app(settings, on_load_failure=stop), settings, "prm_server")
    _run(server)
    if failures:
        raise ValueError(failures[0])


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
    from codeprm.services.trainer.prm_train import TrainPrmConfig
    from codeprm.services.trainer.prm_train import train_prm as run

    configure_logging("trainer", os.environ.get("CODEPRM_LOG_LEVEL", "WARNING"))
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
        if (yardstick := result.on_policy_base_likelihood_auc) is not None:
            console.print(
                f"the same programs ranked by the base model's own likelihood: AUC "
                f"{yardstick:.3f} (a PRM below this knows less than the policy)"
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
    from codeprm.services.trainer.ppo import train_ppo as run
    from codeprm.services.trainer.ppo_config import load_config

    configure_logging("trainer", os.environ.get("CODEPRM_LOG_LEVEL", "WARNING"))
    settings = load_config(config, out=out, steps=steps, mode=mode)
    result = run(settings, progress=True)
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
    from codeprm.services.trainer.evaluate import evaluate_policy

    configure_logging("trainer", os.environ.get("CODEPRM_LOG_LEVEL", "WARNING"))
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
    fresh: float = typer.Option(
        0.0, help="listfuncs: share of each batch drawn afresh from the family's generator."
    ),
    hidden: int = typer.Option(64),
    layers: int = typer.Option(2),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
) -> None:
    """Tokenizer + supervised fine-tuning of a small Qwen2-shaped starting policy."""
    from codeprm.services.trainer.sft import SftConfig
    from codeprm.services.trainer.sft import train_sft as run

    configure_logging("trainer", os.environ.get("CODEPRM_LOG_LEVEL", "WARNING"))
    config = SftConfig(
        out=out,
        dataset=dataset,
        base_model=base_model,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        noise=noise,
        fresh=fresh,
        hidden=hidden,
        layers=layers,
        seed=seed,
        device=device,
    )
    path = run(config, progress=True)
    console.print(
        f"policy written to [bold]{path}[/]; try: codeprm eval --model {path} "
        "--dataset listfuncs-test --samples 4 --temperature 1"
    )


@app.command("report")
def report(run: Path = typer.Argument(..., help="A PPO run directory.")) -> None:
    """PNG plots and an HTML page (programs with lines coloured by PRM score) for a run."""
    from codeprm.services.trainer.report import write_report

    page = write_report(run)
    console.print(f"report: {page}")


@label_app.command("serve")
def label_serve(host: str | None = HostOpt, port: int | None = PortOpt) -> None:
    """Run the labeler HTTP API (settings: CODEPRM_LABELER_*, REDIS_URL)."""
    from codeprm.services.labeler.app import create_app
    from codeprm.services.labeler.settings import LabelerSettings

    settings = LabelerSettings(**_overrides(host=host, port=port))
    _require_redis(settings.redis_url)
    _serve(create_app(settings), settings, "labeler")


def _require_redis(url: str) -> None:
    """A Redis that does not answer is one line here, not a traceback from the app's start."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    finally:
        client.close()


@label_app.command("worker")
def label_worker(
    burst: bool = typer.Option(False, help="Exit once the queue is empty."),
) -> None:
    """Run a labeler worker: consumes labeling jobs from Redis (settings: CODEPRM_LABELER_*)."""
    from codeprm.services.labeler.settings import LabelerSettings
    from codeprm.services.labeler.worker import build_worker

    settings = LabelerSettings()
    configure_logging("labeler_worker", settings.log_level)
    build_worker(settings, burst=burst).run()


def _backend_spec(target: str | None, model: str | None, api: str) -> dict[str, Any] | None:
    """`--policy`/`--teacher`: a local checkpoint directory (hf) or an OpenAI-compatible URL.
    A directory is sent as an absolute path: the worker does not share our working directory."""
    if target is None:
        return None
    if Path(target).is_dir():
        return {"kind": "hf", "model": str(Path(target).resolve())}
    if model is None:
        raise typer.BadParameter(f"{target} is not a directory, so it is a URL: name the model")
    return {"kind": "openai", "url": target, "model": model, "api": api}


def _dataset_arg(dataset: str) -> str:
    """A dataset file is sent as an absolute path (the labeler resolves it, not our shell);
    a name (humaneval, listfuncs, ...) as it is."""
    return str(Path(dataset).resolve()) if Path(dataset).is_file() else dataset


LabelerOpt = typer.Option(
    "http://127.0.0.1:8102",
    "--labeler",
    envvar="CODEPRM_LABELER_URL",
    help="The labeler API (`codeprm up` or `codeprm label serve`).",
)


def _labeler(url: str) -> Any:
    from codeprm.client import LabelerClient

    # Few retries: a person is waiting, and a labeler that is down says so at once.
    return LabelerClient(url, timeout_s=60, retries=2, backoff_s=0.5)


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
    labeler: str = LabelerOpt,
) -> None:
    """Enqueue one labeling job per problem (through the labeler API); prints the run id."""
    from pydantic import ValidationError

    from codeprm.api.labeler import LabelRunRequest

    try:
        request = LabelRunRequest.model_validate(
            {
                "strategy": strategy,
                "dataset": _dataset_arg(dataset),
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
    with _labeler(labeler) as client:
        info = client.submit(request)
    console.print(f"run {info.run_id}: {info.total} jobs queued ({labeler})")
    print(info.run_id)


@label_app.command("list")
def label_list(
    limit: int = typer.Option(20, help="The newest N runs."),
    labeler: str = LabelerOpt,
) -> None:
    """The labeling runs, newest first, with their progress."""
    with _labeler(labeler) as client:
        runs = client.list_runs(limit)
    table = Table("run", "strategy", "dataset", "done", "failed", "remaining", "samples", "state")
    for info in runs:
        state = "finished" if info.finished else "running" if info.warning is None else "stalled"
        table.add_row(
            info.run_id,
            info.strategy,
            info.dataset,
            str(info.done),
            str(info.failed),
            str(info.remaining),
            str(info.samples),
            state,
        )
    Console().print(table)
    if not runs:
        console.print("no labeling runs (start one with `codeprm label submit`)")


@label_app.command("status")
def label_status(
    run_id: str = typer.Argument(..., help="The run id `label submit` printed."),
    watch: bool = typer.Option(True, help="Follow live until the run finishes."),
    labeler: str = LabelerOpt,
) -> None:
    """Progress of a run: a live bar with done / failed / remaining, rate and ETA.
    Exits 1 once the run has finished with failed units (their reasons are listed)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("failed {task.fields[failed]}"),
        TextColumn("samples {task.fields[samples]}"),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    warned: str | None = None
    with _labeler(labeler) as client:
        info = client.status(run_id)
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
                if info.warning is not None and info.warning != warned:
                    progress.console.print(f"[yellow]warning:[/yellow] {info.warning}")
                warned = info.warning
                if info.finished or not watch:
                    break
                time.sleep(1)
                info = client.status(run_id)
    for problem, reason in info.failures.items():
        console.print(f"[yellow]failed[/yellow] {problem}: {reason}")
    if info.finished and info.failed:
        console.print(f"{info.failed} of {info.total} units failed")
        raise typer.Exit(1)


def _rate(info: Any) -> str:
    finished = info.done + info.failed
    minutes = max(time.time() - info.created_at, 1e-3) / 60
    return f"{finished / minutes:.1f} units/min, {info.completions} completions"


@label_app.command("export")
def label_export(
    run_id: str = typer.Argument(..., help="The run id."),
    out: Path = typer.Option(..., help="JSONL file to write (replaced only once complete)."),
    partial: bool = typer.Option(
        False, help="Export an unfinished run's samples so far (refused otherwise)."
    ),
    labeler: str = LabelerOpt,
) -> None:
    """Write a run's samples as JSONL (TRL stepwise fields + line_labels + provenance)."""
    from codeprm.files import atomic_open

    if not out.parent.is_dir():
        raise typer.BadParameter(f"{out.parent} is not a directory", param_hint="--out")
    count = 0
    with _labeler(labeler) as client:
        info = client.status(run_id)
        # Written beside `out` and renamed: a failure on the way leaves an existing file as it was.
        with atomic_open(out) as f:
            for sample in client.export(run_id, partial=partial):
                f.write(sample.model_dump_json() + "\n")
                count += 1
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
    if config.prm_model is not None:
        checkpoint_dir(config.prm_model, "PRM checkpoint")
    else:
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
    for s in stack.services:
        table.add_row(s.name, s.url or "(queue worker)")
    table.add_row("redis", stack.redis_url)
    console.print(table)
    # Whole paths, on lines of their own: a table column would cut them to the terminal.
    console.print(f"logs in {stack.log_dir}:", highlight=False)
    for s in stack.services:
        console.print(f"  {s.log_path}", highlight=False, soft_wrap=True)
    labeler = next(s.url for s in stack.services if s.name == "labeler")
    if labeler != LabelerOpt.default:  # where `codeprm label ...` looks unless told
        console.print(
            f"for `codeprm label ...` in another shell:\n    export CODEPRM_LABELER_URL={labeler}",
            highlight=False,
        )


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

    _sigterm_as_ctrl_c()
    try:
        with console.status("starting executor, PRM server, labeler and worker..."):
            stack = LocalStack(config, say=console.print).__enter__()
    except StackError as exc:
        console.print(f"[red]codeprm up failed:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    try:
        _print_services(stack)
        console.print("[green]ready[/green] - Ctrl-C stops everything")
        while (exited := stack.poll_exited()) is None:
            time.sleep(0.5)
        console.print(
            f"[red]{exited.name} exited unexpectedly; stopping the stack[/red]\n"
            + stack.log_tails([exited]),
            highlight=False,
            soft_wrap=True,
        )
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
    problems: int = typer.Option(
        40, help="listfuncs problems to label, by mutation and by binary search each."
    ),
    ppo_steps: int = typer.Option(60),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    quick: bool = typer.Option(False, help="Smaller everything, no learning (a few minutes)."),
) -> None:
    """The end-to-end pipeline: stack, labeling, PRM training, PPO, evaluation, report."""
    from codeprm.demo import DemoOptions, run_demo

    configure_logging("demo", os.environ.get("CODEPRM_LOG_LEVEL", "WARNING"))
    _sigterm_as_ctrl_c()  # a stopped demo stops the services it started too
    options = DemoOptions(out, base_model, problems, ppo_steps, device, quick, cache_dir())
    config = _stack_config(executor_port=0, prm_port=0, labeler_port=0)
    raise typer.Exit(run_demo(config, console, options))
