"""The local stack: executor, PRM server, labeler API and labeler worker on loopback ports.

`LocalStack` is a context manager used by `codeprm up` (until Ctrl-C), `codeprm demo` and the
tests. Each service is a child process running the same `codeprm ... serve` command a container
runs; children get their own session so a terminal's Ctrl-C reaches only us, and we stop them in
order with SIGTERM (graceful), escalating to SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx
import redis

from codeprm.services.labeler.queue import connect
from codeprm.services.labeler.settings import LabelerSettings


class StackError(RuntimeError):
    """The stack could not be brought up; the message says what to do."""


@dataclass
class Service:
    name: str
    argv: list[str]
    log_path: Path
    url: str | None = None  # HTTP services; the worker has none
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)


@dataclass
class StackConfig:
    redis_url: str = "redis://127.0.0.1:6379/0"
    host: str = "127.0.0.1"
    executor_port: int = 8100
    prm_port: int = 8101
    labeler_port: int = 8102
    prm_model: Path | None = None
    queue_name: str = "codeprm:labeler"
    log_dir: Path | None = None
    ready_timeout_s: float = 120.0
    stop_timeout_s: float = 15.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout_s: float, poll_s: float = 0.1) -> bool:
    """Poll `url`/readyz until it answers 200; False if `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(poll_s)
    return False


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class PrivateRedis:
    """A throwaway redis-server on a free port, keeping nothing on disk."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError("no redis-server binary")
        self.dir = tempfile.mkdtemp(prefix="codeprm-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not redis_answers(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise StackError("the private redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class LocalStack:
    def __init__(self, config: StackConfig, *, say: Callable[[str], None] = print) -> None:
        self.config = config
        self.say = say
        self.redis_url = config.redis_url
        self.private_redis: PrivateRedis | None = None
        self.services: list[Service] = []
        self.log_dir = config.log_dir or Path(tempfile.mkdtemp(prefix="codeprm-stack-"))
        # Port 0 means "any free port".
        for name in ("executor_port", "prm_port", "labeler_port"):
            if getattr(config, name) == 0:
                setattr(config, name, free_port(config.host))

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        self._check_ports()
        try:
            self._ensure_redis()
            self._start_services()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _check_ports(self) -> None:
        """Before starting anything: a port in use (say, a second `codeprm up`) would let
        another stack answer our readiness checks while our own service dies."""
        c = self.config
        for name, port in (
            ("executor", c.executor_port),
            ("PRM server", c.prm_port),
            ("labeler", c.labeler_port),
        ):
            if not port_free(c.host, port):
                flag = {"executor": "--executor-port", "PRM server": "--prm-port"}.get(
                    name, "--labeler-port"
                )
                raise StackError(
                    f"port {port} ({name}) on {c.host} is already in use, perhaps by another "
                    f"`codeprm up`: stop that, or choose another port with {flag}"
                )

    def _ensure_redis(self) -> None:
        if redis_answers(self.redis_url):
            return
        if shutil.which("redis-server") is None:
            raise StackError(
                f"Nothing answers at REDIS_URL={self.redis_url} and no redis-server binary is "
                "installed. Start a Redis (Debian/Ubuntu: `apt-get install redis-server`; macOS: "
                "`brew install redis`; or `docker run -p 6379:6379 redis:7`) or point REDIS_URL "
                "at one."
            )
        self.private_redis = PrivateRedis()
        self.redis_url = self.private_redis.url
        self.say(
            f"Nothing answers at {self.config.redis_url}: started a private redis-server at "
            f"{self.redis_url} (deleted on exit). A `codeprm label worker` started in another "
            f"shell needs:\n    export REDIS_URL={self.redis_url}"
        )

    def _start_services(self) -> None:
        c = self.config
        if c.prm_model is None:
            raise StackError("no PRM model given")
        codeprm = [sys.executable, "-m", "codeprm"]
        http = f"http://{c.host}:"
        self.services = [
            Service(
                "executor",
                [*codeprm, "executor", "serve", "--host", c.host, "--port", str(c.executor_port)],
                self.log_dir / "executor.log",
                f"{http}{c.executor_port}",
            ),
            Service(
                "prm_server",
                [
                    *codeprm,
                    "prm",
                    "serve",
                    "--model",
                    str(c.prm_model),
                    "--host",
                    c.host,
                    "--port",
                    str(c.prm_port),
                ],
                self.log_dir / "prm_server.log",
                f"{http}{c.prm_port}",
            ),
            Service(
                "labeler",
                [*codeprm, "label", "serve", "--host", c.host, "--port", str(c.labeler_port)],
                self.log_dir / "labeler.log",
                f"{http}{c.labeler_port}",
            ),
            Service(
                "labeler_worker", [*codeprm, "label", "worker"], self.log_dir / "labeler_worker.log"
            ),
        ]
        env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "CODEPRM_LABELER_REDIS_URL": self.redis_url,
            "CODEPRM_LABELER_QUEUE_NAME": c.queue_name,
            "CODEPRM_LABELER_EXECUTOR_URL": f"{http}{c.executor_port}",
            "PYTHONUNBUFFERED": "1",
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for service in self.services:
            with service.log_path.open("ab") as log:
                service.proc = subprocess.Popen(
                    service.argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        pending = [s for s in self.services if s.url is not None]
        with httpx.Client(timeout=2.0) as client:
            while pending:
                for service in list(pending):
                    self._check_alive(service)
                    try:
                        if client.get(f"{service.url}/readyz").status_code == 200:
                            pending.remove(service)
                    except httpx.TransportError:
                        pass
                if pending and time.monotonic() > deadline:
                    names = ", ".join(s.name for s in pending)
                    raise StackError(
                        f"not ready after {self.config.ready_timeout_s:.0f}s: {names}"
                        f"\n{self.log_tails(pending)}"
                    )
                time.sleep(0.2)
        worker = next(s for s in self.services if s.name == "labeler_worker")
        self._check_alive(worker)
        left = max(deadline - time.monotonic(), 5.0)
        try:
            asyncio.run(self._ping_worker(left))
        except TimeoutError:
            self._check_alive(worker)
            raise StackError(
                f"labeler worker answered no job in {left:.0f}s\n{self.log_tails([worker])}"
            ) from None

    async def _ping_worker(self, timeout_s: float) -> None:
        # The labeler's own connection, so the job is encoded the way its workers decode it.
        settings = LabelerSettings(redis_url=self.redis_url, queue_name=self.config.queue_name)
        pool = await connect(settings)
        try:
            job = await pool.enqueue_job(
                "ping", _job_id=f"ping-{uuid.uuid4().hex}", _expires=timeout_s
            )
            assert job is not None
            await job.result(timeout=timeout_s, poll_delay=0.1)
        finally:
            await pool.aclose()

    def _check_alive(self, service: Service) -> None:
        assert service.proc is not None
        if service.proc.poll() is not None:
            raise StackError(
                f"{service.name} exited with code {service.proc.returncode}\n"
                f"{self.log_tails([service])}"
            )

    def log_tails(self, services: list[Service], lines: int = 15) -> str:
        parts = []
        for s in services:
            text = s.log_path.read_text(errors="replace") if s.log_path.exists() else ""
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(f"--- {s.name} ({s.log_path}) ---\n{tail}")
        return "\n".join(parts)

    def poll_exited(self) -> Service | None:
        """The first service that has exited on its own, if any."""
        for s in self.services:
            if s.proc is not None and s.proc.poll() is not None:
                return s
        return None

    def stop(self) -> None:
        # Workers first (they call the others), then the servers.
        for service in reversed(self.services):
            if service.proc is not None and service.proc.poll() is None:
                service.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_timeout_s
        for service in reversed(self.services):
            if service.proc is None:
                continue
            try:
                service.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.say(
                    f"{service.name} ignored SIGTERM for {self.config.stop_timeout_s:.0f}s;"
                    " killing it"
                )
                os.killpg(service.proc.pid, signal.SIGKILL)
                service.proc.wait()
        if self.private_redis is not None:
            self.private_redis.stop()
            self.private_redis = None
