"""What the benchmark scripts share (they run as `python bench/<name>.py`)."""

from __future__ import annotations

import os
import subprocess
import sys

from codeprm.stack import free_port, wait_ready


def start_executor() -> tuple[subprocess.Popen[bytes], str]:
    """A real `codeprm executor serve` with its defaults (full isolation, no verdict cache)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEPRM_EXECUTOR_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "codeprm", "executor", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    if wait_ready(url, timeout_s=30):
        return proc, url
    proc.kill()
    raise SystemExit("executor did not become ready")
