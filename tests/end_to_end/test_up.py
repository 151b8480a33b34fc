"""`codeprm up` as a user runs it: a subprocess, real Redis, real HTTP, Ctrl-C to stop."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from codeprm.stack import free_port
from tests.conftest import REDIS_URL
from tests.servers import port_open

pytestmark = pytest.mark.slow


class Up:
    """A running `codeprm up`, its output read line by line in the background."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "codeprm", "up", *args],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.output.append(line)
            if text in line:
                return
        raise AssertionError(f"{text!r} never printed; output:\n{''.join(self.output)}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(60)
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return code


def up_args(ports: list[int], model: Path, log_dir: Path) -> list[str]:
    return [
        "--executor-port",
        str(ports[0]),
        "--prm-port",
        str(ports[1]),
        "--labeler-port",
        str(ports[2]),
        "--prm-model",
        str(model),
        "--log-dir",
        str(log_dir),
    ]


def test_up_serves_every_service_and_stops_on_ctrl_c(
    tiny_prm_dir: Path, redis_namespace: str, tmp_path: Path
) -> None:
    ports = [free_port() for _ in range(3)]
    queue_name = f"{redis_namespace}:queue"
    env = {**os.environ, "REDIS_URL": REDIS_URL, "CODEPRM_LABELER_QUEUE_NAME": queue_name}
    up = Up(up_args(ports, tiny_prm_dir, tmp_path), env)
    try:
        up.wait_for("ready - Ctrl-C stops everything")
        for port, service in zip(ports, ["executor", "prm_server", "labeler"], strict=True):
            body = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
            assert body["ready"] and body["service"] == service
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            assert "http_requests_total" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert redis.Redis.from_url(REDIS_URL).exists(f"{queue_name}:health-check")
    finally:
        code = up.stop()
    assert code == 0, "".join(up.output)
    assert "stopped" in "".join(up.output)
    assert not any(port_open(p) for p in ports)
    # The worker deregisters on a graceful stop; a killed one would leave its key behind.
    assert not redis.Redis.from_url(REDIS_URL).exists(f"{queue_name}:health-check")
    for log in ("executor", "prm_server", "labeler"):
        assert "Application shutdown complete" in (tmp_path / f"{log}.log").read_text()


def test_up_starts_a_private_redis_when_none_answers(tiny_prm_dir: Path, tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    dead = free_port()
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{dead}/0"}
    env.pop("CODEPRM_LABELER_REDIS_URL", None)
    up = Up(up_args(ports, tiny_prm_dir, tmp_path), env)
    try:
        up.wait_for("started a private redis-server")
        up.wait_for("export REDIS_URL=redis://127.0.0.1:")  # for a worker in another shell
        up.wait_for("ready - Ctrl-C stops everything")
        private = [line for line in up.output if "export REDIS_URL=" in line][-1]
        private_port = int(private.split("redis://127.0.0.1:")[1].split("/")[0])
        assert private_port != dead and port_open(private_port)
    finally:
        assert up.stop() == 0, "".join(up.output)
    assert not port_open(private_port)


def test_up_explains_how_to_get_redis_when_there_is_none(
    tiny_prm_dir: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "PATH": str(tmp_path)}
    ports = [free_port() for _ in range(3)]
    result = subprocess.run(
        [sys.executable, "-m", "codeprm", "up", *up_args(ports, tiny_prm_dir, tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    text = " ".join((result.stdout + result.stderr).split())
    assert "no redis-server binary is installed" in text
    assert "apt-get install redis-server" in text


def test_a_second_up_is_refused_before_it_starts_anything(
    tiny_prm_dir: Path, redis_namespace: str, tmp_path: Path
) -> None:
    ports = [free_port() for _ in range(3)]
    env = {**os.environ, "REDIS_URL": REDIS_URL, "CODEPRM_LABELER_QUEUE_NAME": redis_namespace}
    first = Up(up_args(ports, tiny_prm_dir, tmp_path / "first"), env)
    try:
        first.wait_for("ready - Ctrl-C stops everything")
        log_lines = [line.strip() for line in first.output if line.strip().endswith(".log")]
        assert {Path(line).name for line in log_lines} >= {"executor.log", "labeler.log"}
        assert all(Path(line).is_file() for line in log_lines)  # whole paths, not cut
        second = subprocess.run(
            [sys.executable, "-m", "codeprm", "up", *up_args(ports, tiny_prm_dir, tmp_path)],
            env={**env, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        assert first.stop() == 0, "".join(first.output)
    text = " ".join((second.stdout + second.stderr).split())
    assert second.returncode == 1, text
    assert f"port {ports[0]} (executor)" in text and "already in use" in text, text
    assert "ready -" not in text  # nothing was started, so nothing said ready
