"""Non-finite numbers and lone surrogates in any part of a request: a clear 422 from every
service (executor, PRM server, labeler), never a 500, over real HTTP. Each valid request body
below is fuzzed by putting each bad value at each of its leaves in turn."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.bodies import fuzzed
from tests.contained import ContainedExecutor
from tests.labeler.test_runs import labeler_env
from tests.servers import running_labeler_api, start_prm_server

pytestmark = pytest.mark.slow

BAD_VALUES = {
    "nan": "NaN",
    "infinity": "Infinity",
    "minus_infinity": "-Infinity",
    "overflow": "1e999",
    "minus_overflow": "-4.2e4000",
    "high_surrogate": '"\\ud800"',
    "low_surrogate_in_text": '"x = 1\\udc00"',
    "reversed_pair": '"\\udc00\\ud800"',
    "surrogate_key": '{"\\udfff": 1}',
    "in_a_list": '[1, "ok", NaN]',
}


def assert_all_refused(url: str, path: str, body: dict[str, Any], **headers: str) -> None:
    variants = fuzzed(body, BAD_VALUES)
    assert len(variants) >= 2 * len(BAD_VALUES)
    with httpx.Client(base_url=url, timeout=30) as client:
        for name, content in variants:
            response = client.post(
                path, content=content, headers={"content-type": "application/json", **headers}
            )
            assert response.status_code == 422, (name, response.status_code, response.text[:300])
            detail = json.dumps(response.json())
            assert any(
                word in detail for word in ("not a JSON number", "overflows", "lone surrogate")
            ), (name, detail)
        assert client.get("/healthz").status_code == 200


EXECUTOR_BODIES = {
    "/v1/run": {"code": "print(1)", "stdin": "x", "timeout_s": 5, "memory_mb": 128},
    "/v1/evaluate": {
        "code": "def f(x, y=0):\n    return x\n",
        "timeout_s": 5,
        "tests": {
            "kind": "call",
            "entry_point": "f",
            "cases": [{"args": [1, [2.5, "a"]], "kwargs": {"y": 2}, "expected": {"k": [1]}}],
            "float_tolerance": 1e-6,
        },
    },
    "/v1/evaluate/batch": {
        "items": [
            {
                "code": "print(input())",
                "tests": {"kind": "stdio", "cases": [{"stdin": "1", "expected_stdout": "1"}]},
            },
            {"code": "def f(): pass", "tests": {"kind": "assert", "code": "assert True"}},
        ]
    },
    "/run_code": {"code": "print(1)", "language": "python", "run_timeout": 5, "stdin": ""},
}


@pytest.mark.parametrize("path", list(EXECUTOR_BODIES))
def test_executor(contained_executor: ContainedExecutor, path: str) -> None:
    assert_all_refused(contained_executor.url, path, EXECUTOR_BODIES[path])


def test_executor_keeps_valid_unicode_and_numbers(contained_executor: ContainedExecutor) -> None:
    body = '{"code": "print(\\"\\ud83d\\ude00\\", 1e-400, -0.0)"}'
    response = httpx.post(
        f"{contained_executor.url}/v1/run",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["stdout"] == "\U0001f600 0.0 -0.0\n"
    # "nan" as a string, which pydantic would read as a float, is refused too.
    response = httpx.post(
        f"{contained_executor.url}/v1/run", json={"code": "print(1)", "timeout_s": "nan"}
    )
    assert response.status_code == 422 and "finite number" in response.text


@pytest.fixture(scope="module")
def prm_server(tiny_prm_dir: Path) -> Iterator[str]:
    proc, url = start_prm_server(tiny_prm_dir)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


PRM_BODIES = {
    "/v1/score": {"items": [{"prompt": "p", "code": "x = 1\n"}], "aggregate": "min"},
    "/get_reward": {"query": ["q"], "prompts": ["p"], "labels": [1, "a"]},
}


@pytest.mark.parametrize("path", list(PRM_BODIES))
def test_prm_server(prm_server: str, path: str) -> None:
    assert_all_refused(prm_server, path, PRM_BODIES[path])


def test_labeler(contained_executor: ContainedExecutor, redis_namespace: str) -> None:
    env = labeler_env(redis_namespace, contained_executor.url)
    with running_labeler_api(env) as url:
        body = {
            "strategy": "mutation",
            "dataset": "humaneval",
            "limit": 1,
            "mutation": {"variants_per_line": 1, "timeout_s": 5.0},
        }
        assert_all_refused(url, "/v1/label/runs", body)
