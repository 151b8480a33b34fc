"""The labeler's processes for fault tests: API and workers to kill and restart, and the
invariant every fault test checks at the end."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from codeprm.api.labels import LabeledSample
from codeprm.stack import free_port, wait_ready


class LabelerProcesses:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "codeprm", "label", *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start_api(self) -> None:
        self.api = self._spawn("api", "serve", "--port", str(self.port))
        assert wait_ready(self.url, timeout_s=60), "labeler API not ready"

    def start_worker(self, slot: int | None = None) -> None:
        proc = self._spawn(f"worker{len(self.workers)}", "worker")
        if slot is None:
            self.workers.append(proc)
        else:
            self.workers[slot] = proc

    def kill(self, proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def stop(self) -> None:
        for proc in [self.api, *self.workers]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)

    def status(self, run_id: str) -> dict[str, object]:
        answer = httpx.get(f"{self.url}/v1/label/runs/{run_id}", timeout=30)
        assert answer.status_code == 200, answer.text
        info: dict[str, object] = answer.json()
        return info

    def wait_finished(self, run_id: str, timeout_s: float) -> dict[str, object]:
        deadline = time.monotonic() + timeout_s
        while True:
            info = self.status(run_id)
            if info["finished"] or time.monotonic() > deadline:
                return info
            time.sleep(0.5)

    def export(self, run_id: str) -> list[LabeledSample]:
        answer = httpx.get(f"{self.url}/v1/label/runs/{run_id}/export", timeout=60)
        assert answer.status_code == 200, answer.text
        info = self.status(run_id)
        for field in ("done", "failed", "remaining"):  # the export's own stats agree
            assert answer.headers[f"x-codeprm-units-{field}"] == str(info[field])
        return [LabeledSample.model_validate_json(line) for line in answer.text.splitlines()]


def assert_accounted_once(info: dict[str, object], samples: list[LabeledSample], n: int) -> None:
    """Every unit is labeled or failed with a reason, and exported exactly once."""
    assert info["finished"] and info["remaining"] == 0, info
    assert info["done"] + info["failed"] == n, info  # type: ignore[operator]
    failures = info["failures"]
    assert isinstance(failures, dict) and len(failures) == min(info["failed"], 20)  # type: ignore[call-overload]
    assert all(reason for reason in failures.values())
    solutions = [s.problem_id for s in samples if s.provenance["source"] == "solution"]
    assert len(solutions) == len(set(solutions)) == info["done"], solutions
    assert not set(solutions) & set(failures)
