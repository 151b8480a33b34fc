"""Real services started as subprocesses on free loopback ports, for integration tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from codeprm.stack import free_port, wait_ready


def port_open(port: int) -> bool:
    """Whether something accepts connections on this loopback port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_prm_server(model: Path, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "codeprm",
            "prm",
            "serve",
            "--model",
            str(model),
            "--port",
            str(port),
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    if not wait_ready(url, timeout_s=120):
        proc.kill()
        raise RuntimeError("PRM server not ready")
    return proc, url


@contextmanager
def running_labeler_api(
    env: dict[str, str], *, port: int | None = None, timeout_s: float = 60
) -> Iterator[str]:
    """`codeprm label serve` with `env`, on `port` or a free one; its URL while it runs."""
    port = port or free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "codeprm", "label", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_ready(url, timeout_s=timeout_s), "labeler API not ready"
        yield url
    finally:
        api.terminate()
        api.wait(30)
