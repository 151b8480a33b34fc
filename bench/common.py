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
    return _start("executor", ["executor", "serve"], "CODEPRM_EXECUTOR_", {}, timeout_s=30)


def start_prm_server(model: Path, device: str, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real `codeprm prm serve` of `model`: its defaults, plus any CODEPRM_PRM_* in `env`."""
    argv = ["prm", "serve", "--model", str(model), "--device", device]
    return _start("PRM server", argv, "CODEPRM_PRM_", env, timeout_s=600)


def _start(
    name: str, argv: list[str], prefix: str, env: dict[str, str], timeout_s: float
) -> tuple[subprocess.Popen[bytes], str]:
    """`codeprm <argv>` on a free port, with none of this shell's `prefix` settings but `env`."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(prefix)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "codeprm", *argv, "--port", str(port)],
        env=clean | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    if wait_ready(url, timeout_s=timeout_s):
        return proc, url
    proc.kill()
    raise SystemExit(f"{name} did not become ready")


def torch_machine() -> str:
    """The machine line of the model benchmarks: CPU, GPU and torch build."""
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}"
    )
