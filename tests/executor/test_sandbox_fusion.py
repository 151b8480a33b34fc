"""/run_code and /v1/ping as SandboxFusion clients use them (veRL's sandbox_fusion reward)."""

from __future__ import annotations

import httpx
import pytest
from sandbox_fusion import RunCodeRequest, RunStatus, run_code

from tests.contained import ContainedExecutor

pytestmark = pytest.mark.slow


def test_official_client_runs_code(contained_executor: ContainedExecutor) -> None:
    response = run_code(
        RunCodeRequest(code="print(input()[::-1])", stdin="abc\n", language="python"),
        endpoint=contained_executor.url,
        max_attempts=1,
    )
    assert response.status == RunStatus.Success
    assert response.run_result is not None
    assert response.run_result.stdout == "cba\n"
    assert response.run_result.return_code == 0


def test_official_client_sees_failures_and_timeouts(contained_executor: ContainedExecutor) -> None:
    failed = run_code(
        RunCodeRequest(code="raise SystemExit(3)", language="python"),
        endpoint=contained_executor.url,
        max_attempts=1,
    )
    assert failed.status == RunStatus.Failed
    assert failed.run_result is not None and failed.run_result.return_code == 3
    slow = run_code(
        RunCodeRequest(code="while True: pass", language="python", run_timeout=1),
        endpoint=contained_executor.url,
        max_attempts=1,
    )
    assert slow.status == RunStatus.Failed
    assert slow.run_result is not None and slow.run_result.status == "TimeLimitExceeded"


def test_the_exact_request_verl_sends(contained_executor: ContainedExecutor) -> None:
    # The payload of verl/utils/reward_score/sandbox_fusion/utils.py:call_sandbox_api.
    payload = {
        "compile_timeout": 10,
        "run_timeout": 10,
        "code": "print(int(input()) * 2)",
        "stdin": "21\n",
        "memory_limit_MB": 1024,
        "language": "python",
        "files": {},
        "fetch_files": [],
    }
    body = httpx.post(f"{contained_executor.url}/run_code", json=payload, timeout=30).json()
    assert body["status"] == "Success"
    assert body["run_result"]["stdout"] == "42\n"
    assert body["run_result"]["status"] == "Finished"
    assert httpx.get(f"{contained_executor.url}/v1/ping").json() == "pong"


def test_unsupported_language_is_a_clear_4xx(contained_executor: ContainedExecutor) -> None:
    response = httpx.post(
        f"{contained_executor.url}/run_code", json={"code": "int main(){}", "language": "cpp"}
    )
    assert response.status_code == 422
    assert "not supported" in response.json()["detail"]
