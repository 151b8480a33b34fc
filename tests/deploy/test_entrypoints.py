"""The containers run the commands the local stack runs, and those commands start and answer
their probes with the containers' own settings.

Each service is started here the way its container starts it: the image's command with the
manifest's `args`, the image's ENV and the pod's variables (rendered from the dev overlay), with
only cluster-specific values replaced (listen address and port, Redis, the model directory).
Then the probe paths the manifests name are called, and SIGTERM must stop the service cleanly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis

import codeprm.stack as stack
from codeprm.services.labeler.queue import connect
from codeprm.services.labeler.settings import LabelerSettings
from codeprm.stack import LocalStack, StackConfig, free_port
from tests.conftest import REDIS_URL
from tests.deploy.dockerfiles import codeprm_args, dockerfile
from tests.deploy.manifests import ROOT, Obj, container_env, rendered, workload

OVERLAY = "dev"
# Image ENV entries that describe the container's filesystem, not the service.
IMAGE_ONLY = {"PATH", "HOME"}
READY_TIMEOUT_S = 60.0


def _image(c: Obj) -> str:
    return str(c["image"].rsplit(":", 1)[0].removeprefix("codeprm/"))


def container_command(name: str) -> list[str]:
    """The `codeprm` arguments a manifest's container runs: its args replace the image's CMD."""
    w = workload(rendered(OVERLAY), name)
    (c,) = w.pod["containers"]
    entrypoint = dockerfile(_image(c)).exec_form("ENTRYPOINT")
    return codeprm_args([*entrypoint, *c.get("args", dockerfile(_image(c)).exec_form("CMD"))])


def _without_options(argv: list[str], options: set[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in options:
            skip = True  # the flag's value follows it
        else:
            out.append(arg)
    return out


def test_containers_run_the_local_stacks_commands(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[list[str]] = []

    class Recorder:
        def __init__(self, argv: list[str], **kwargs: Any) -> None:
            started.append(argv)

    recorder = SimpleNamespace(Popen=Recorder, STDOUT=subprocess.STDOUT, DEVNULL=subprocess.DEVNULL)
    monkeypatch.setattr(stack, "subprocess", recorder)
    local = LocalStack(StackConfig(prm_model=tmp_path, log_dir=tmp_path), say=lambda _: None)
    local._start_services()
    by_name = {s.name: s.argv for s in local.services}
    assert len(started) == len(by_name) == 4
    # The stack sets the listen address, port and model as flags; containers set them as
    # CODEPRM_* variables (checked against the settings classes in test_consistency.py).
    stack_names = {
        "executor": "executor",
        "prm-server": "prm_server",
        "labeler-api": "labeler",
        "labeler-worker": "labeler_worker",
    }
    for manifest_name, stack_name in stack_names.items():
        argv = by_name[stack_name]
        assert argv[:3] == [sys.executable, "-m", "codeprm"]
        local_args = _without_options(argv[3:], {"--host", "--port", "--model"})
        assert container_command(manifest_name) == local_args, manifest_name


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int | None
    container: Obj

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])


def _codeprm() -> list[str]:
    script = Path(sys.executable).parent / "codeprm"  # the console script, as in the images
    return [str(script)] if script.exists() else [sys.executable, "-m", "codeprm"]


def _launch(name: str, overrides: dict[str, str], log_dir: Path) -> Service:
    objs = rendered(OVERLAY)
    w = workload(objs, name)
    (c,) = w.pod["containers"]
    env = container_env(objs, w, c)
    replaced = set(overrides) - set(env)
    assert not replaced, f"{name}: overriding variables the pod does not set: {replaced}"
    image_env = {k: v for k, v in dockerfile(_image(c)).env.items() if k not in IMAGE_ONLY}
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CODEPRM_") and k not in {"REDIS_URL", "OPENAI_API_KEY"}
    }
    pod_env = {k: v for k, v in env.items() if v is not None}  # Secrets are optional
    full_env = {**base, **image_env, **pod_env, **overrides}
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*_codeprm(), *container_command(name)],
            env=full_env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    port = next((int(v) for k, v in overrides.items() if k.endswith("_PORT")), None)
    return Service(name, proc, log, port, c)


def _stop(service: Service) -> int:
    if service.proc.poll() is None:
        service.proc.send_signal(signal.SIGTERM)
        try:
            return service.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(service.proc.pid, signal.SIGKILL)
            service.proc.wait()
            return -signal.SIGKILL
    return service.proc.returncode


@pytest.fixture(scope="module")
def services(tiny_prm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The executor, PRM server, labeler API and a labeler worker, started side by side."""
    logs = tmp_path_factory.mktemp("entrypoints")
    prefix = f"codeprm-test:{uuid.uuid4().hex[:12]}"
    queue = f"{prefix}:labeler"
    labeler = {"REDIS_URL": REDIS_URL, "CODEPRM_LABELER_QUEUE_NAME": queue}
    started = {
        "executor": _launch(
            "executor",
            {"CODEPRM_EXECUTOR_HOST": "127.0.0.1", "CODEPRM_EXECUTOR_PORT": str(free_port())},
            logs,
        ),
        "prm-server": _launch(
            "prm-server",
            {
                "CODEPRM_PRM_HOST": "127.0.0.1",
                "CODEPRM_PRM_PORT": str(free_port()),
                "CODEPRM_PRM_MODEL": str(tiny_prm_dir),
            },
            logs,
        ),
        "labeler-api": _launch(
            "labeler-api",
            {
                **labeler,
                "CODEPRM_LABELER_HOST": "127.0.0.1",
                "CODEPRM_LABELER_PORT": str(free_port()),
            },
            logs,
        ),
        "labeler-worker": _launch("labeler-worker", labeler, logs),
    }
    try:
        yield started, queue
    finally:
        codes = {name: _stop(s) for name, s in started.items()}
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"*{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        # Graceful shutdown on SIGTERM, as in a pod being replaced. uvicorn finishes its
        # shutdown, then re-raises the signal (exit -15, a container's 143); arq exits 0.
        for name, service in started.items():
            if service.port is None:
                assert codes[name] == 0, service.tail()
            else:
                assert codes[name] in (0, -signal.SIGTERM), service.tail()
                assert "Application shutdown complete." in service.log.read_text(), name


@pytest.mark.parametrize("name", ["executor", "prm-server", "labeler-api"])
def test_service_answers_its_probes(services: Any, name: str) -> None:
    started, _ = services
    service: Service = started[name]
    c = service.container
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=5) as client:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            path = c[probe]["httpGet"]["path"]
            while True:
                assert service.proc.poll() is None, f"{name} exited:\n{service.tail()}"
                try:
                    response = client.get(service.url(path))
                    if response.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"{name} {path}: not 200\n{service.tail()}"
                time.sleep(0.2)
        readiness = client.get(service.url(c["readinessProbe"]["httpGet"]["path"])).json()
    assert readiness["ready"] is True and not readiness["warnings"], readiness


def test_labeler_worker_takes_jobs_from_the_queue(services: Any) -> None:
    started, queue = services
    worker: Service = started["labeler-worker"]

    async def ping() -> Any:
        pool = await connect(LabelerSettings(redis_url=REDIS_URL, queue_name=queue))
        try:
            job = await pool.enqueue_job("ping", _job_id=f"{queue}-ping")
            assert job is not None
            return await job.result(timeout=READY_TIMEOUT_S, poll_delay=0.1)
        finally:
            await pool.aclose()

    result = asyncio.run(ping())
    assert worker.proc.poll() is None, worker.tail()
    assert result["job_try"] == 1


def test_trainer_command_exists() -> None:
    args = container_command("trainer")
    assert args[:2] == ["train", "ppo"] and "--config" in args
    done = subprocess.run(
        [*_codeprm(), *args[:2], "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "--config" in done.stdout, done.stderr
