"""A Redis of the test's own on a free port, to stop and restart at will (never the shared
one at 6379, which other tests and services use)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from codeprm.stack import free_port


class OwnRedis:
    """`redis-server` in `workdir`; with `aof`, an append-only file fsynced on every write
    (the k8s manifests' setting is everysec: at most a second of writes at risk)."""

    def __init__(self, workdir: Path, *, aof: bool) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("needs redis-server")
        self.workdir = workdir
        self.aof = aof
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else []
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--save",
                "",
                *persistence,
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
            raise AssertionError("own redis-server did not start")
        finally:
            client.close()

    def stop(self, *, crash: bool = False) -> None:
        """SIGKILL with `crash` (nothing flushed on the way out), else a clean SIGTERM."""
        if self.proc is not None and self.proc.poll() is None:
            if crash:
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(20)
        self.proc = None

    def restart(self, *, crash: bool = False, down_s: float = 0.0) -> None:
        self.stop(crash=crash)
        time.sleep(down_s)
        self.start()
