"""Real services started as subprocesses on free loopback ports, for integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from codeprm.stack import free_port, wait_ready


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
