"""What the benchmark scripts share (they run as `python bench/<name>.py`)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

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


def start_prm_server(model: Path, device: str, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real `codeprm prm serve` of `model`: its defaults, plus any CODEPRM_PRM_* in `env`."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CODEPRM_PRM_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "codeprm", "prm", "serve", "--model", str(model)]
        + ["--port", str(port), "--device", device],
        env=clean | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    if wait_ready(url, timeout_s=600):
        return proc, url
    proc.kill()
    raise SystemExit("PRM server did not become ready")


def torch_machine() -> str:
    """The machine line of the model benchmarks: CPU, GPU and torch build."""
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}"
    )
