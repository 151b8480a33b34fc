"""The executor's HTTP contract: bad input gets clear 4xx errors and the service keeps serving."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from codeprm.services.executor.pool import Pool
from codeprm.services.executor.settings import ExecutorSettings
from codeprm.serving.errors import Overloaded
from tests.bodies import fuzzed
from tests.contained import ContainedExecutor

pytestmark = pytest.mark.slow

GOOD_TESTS = {"kind": "call", "entry_point": "f", "cases": [{"args": [2], "expected": 4}]}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"code": ""}, "at least 1 character"),
        ({"language": "python"}, "Field required"),
        ({"code": "print(1)", "language": "rust"}, "'python'"),
        ({"code": "print(1)", "timeout_s": 1e6}, "timeout_s must be at most"),
        ({"code": "print(1)", "timeout_s": -1}, "greater than 0"),
        ({"code": "print(1)", "memory_mb": 1}, "memory_mb must be between"),
        ({"code": "print(1)", "surprise": True}, "Extra inputs are not permitted"),
    ],
)
def test_bad_run_requests_are_422(
    contained_executor: ContainedExecutor, body: dict[str, object], fragment: str
) -> None:
    response = httpx.post(f"{contained_executor.url}/v1/run", json=body)
    assert response.status_code == 422
    assert fragment in response.text


@pytest.mark.parametrize(
    "tests",
    [
        {"kind": "stdio", "cases": []},
        {"kind": "call", "cases": [{"args": [1], "expected": 1}]},
        {"kind": "fuzz"},
        {"kind": "assert", "code": "assert True", "entry_point": "not a name"},
    ],
)
def test_malformed_tests_are_422(
    contained_executor: ContainedExecutor, tests: dict[str, object]
) -> None:
    response = httpx.post(
        f"{contained_executor.url}/v1/evaluate", json={"code": "def f(x): return x", "tests": tests}
    )
    assert response.status_code == 422


def test_oversized_code_is_413(contained_executor: ContainedExecutor) -> None:
    response = httpx.post(
        f"{contained_executor.url}/v1/run", json={"code": "#" * (2 << 20)}, timeout=30
    )
    assert response.status_code == 413
    assert httpx.get(f"{contained_executor.url}/readyz").status_code == 200


def test_batch_keeps_order_and_accepts_empty(contained_executor: ContainedExecutor) -> None:
    assert httpx.post(f"{contained_executor.url}/v1/evaluate/batch", json={"items": []}).json() == {
        "results": []
    }
    items = [{"code": f"def f(x):\n    return x * {k}\n", "tests": GOOD_TESTS} for k in range(6)]
    results = httpx.post(
        f"{contained_executor.url}/v1/evaluate/batch", json={"items": items}, timeout=60
    ).json()["results"]
    assert [r["passed"] for r in results] == [k == 2 for k in range(6)]


def test_a_batch_is_checked_whole_before_anything_runs(
    contained_executor: ContainedExecutor,
) -> None:
    good = {"code": "def f(x):\n    return x * 2\n", "tests": GOOD_TESTS}
    for bad, fragment in [
        ({**good, "timeout_s": 1e6}, "items[1]: timeout_s must be at most"),
        ({**good, "code": "#" * (2 << 20)}, "items[1]: code is larger than"),
        (
            {**good, "tests": {**GOOD_TESTS, "cases": [{"args": [1], "expected": 1}] * 5000}},
            "items[1]: at most",
        ),
    ]:
        response = httpx.post(
            f"{contained_executor.url}/v1/evaluate/batch",
            json={"items": [good, bad, good]},
            timeout=60,
        )
        assert response.status_code in (413, 422) and fragment in response.text, response.text


def test_identical_submissions_come_from_the_cache(contained_executor: ContainedExecutor) -> None:
    body = {
        "code": "import random\ndef f(x):\n    return x * 2\n# " + str(id(object())),
        "tests": GOOD_TESTS,
    }
    first = httpx.post(f"{contained_executor.url}/v1/evaluate", json=body, timeout=30).json()
    second = httpx.post(f"{contained_executor.url}/v1/evaluate", json=body, timeout=30).json()
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["passed"] is first["passed"] is True
    changed = httpx.post(
        f"{contained_executor.url}/v1/evaluate", json={**body, "timeout_s": 3}, timeout=30
    ).json()
    assert changed["cached"] is False  # other limits, other verdict


def test_stdio_compare_modes_and_stop_on_first_failure(
    contained_executor: ContainedExecutor,
) -> None:
    code = "a, b = map(float, input().split())\nprint(a / b)\n"
    cases = [
        {"stdin": "1 3\n", "expected_stdout": "0.3333333333\n"},
        {"stdin": "1 0\n", "expected_stdout": "inf\n"},
        {"stdin": "2 1\n", "expected_stdout": "2.0\n"},
    ]
    tolerant = httpx.post(
        f"{contained_executor.url}/v1/evaluate",
        timeout=30,
        json={"code": code, "tests": {"kind": "stdio", "cases": cases}},
    ).json()
    assert [c["passed"] for c in tolerant["cases"]] == [True, False, True]
    assert tolerant["cases"][1]["status"] == "runtime_error"
    assert tolerant["pass_rate"] == pytest.approx(2 / 3)
    stopped = httpx.post(
        f"{contained_executor.url}/v1/evaluate",
        timeout=30,
        json={
            "code": code,
            "stop_on_first_failure": True,
            "tests": {"kind": "stdio", "cases": cases, "compare": "exact"},
        },
    ).json()
    assert [c["error"] for c in stopped["cases"]][1:] == [
        "not run (stop_on_first_failure)",
        "not run (stop_on_first_failure)",
    ]


def test_large_outputs_are_compared_off_the_event_loop(
    contained_executor: ContainedExecutor,
) -> None:
    """Six cases of 70,000 floats each (~0.9 MB): comparing them is seconds of Python work,
    during which /healthz must still answer promptly."""
    code = "n = int(input())\nprint(' '.join(f'{i / 7:.7f}' for i in range(n)))\n"
    expected = " ".join(f"{i / 7:.6f}" for i in range(70_000))
    tests = {"kind": "stdio", "cases": [{"stdin": "70000", "expected_stdout": expected}] * 6}

    async def main() -> tuple[httpx.Response, float]:
        async with httpx.AsyncClient(base_url=contained_executor.url, timeout=120) as client:
            evaluation = asyncio.create_task(
                client.post("/v1/evaluate", json={"code": code, "tests": tests})
            )
            worst = 0.0
            while not evaluation.done():
                start = time.monotonic()
                assert (await client.get("/healthz")).status_code == 200
                worst = max(worst, time.monotonic() - start)
                await asyncio.sleep(0.05)
            return await evaluation, worst

    response, worst = asyncio.run(main())
    assert response.status_code == 200
    assert response.json()["passed"], response.json()["cases"][0]["error"]
    assert worst < 1.0, f"/healthz took {worst:.2f} s while outputs were compared"


def test_judged_candidates_run_on_their_judges_cpu(contained_executor: ContainedExecutor) -> None:
    cpus = sorted(os.sched_getaffinity(0))  # the service inherited this test's CPUs
    code = "import os\ndef f():\n    return sorted(os.sched_getaffinity(0))\n"
    tests = {"kind": "call", "entry_point": "f", "cases": [{"args": [], "expected": []}]}
    items = [{"code": code, "tests": tests}] * 12  # spread over every worker
    results = httpx.post(
        f"{contained_executor.url}/v1/evaluate/batch", json={"items": items}, timeout=60
    ).json()["results"]
    seen = [r["cases"][0]["actual"] for r in results]
    assert all(len(actual) == 1 and actual[0] in cpus for actual in seen), seen
    assert len({actual[0] for actual in seen}) == min(len(cpus), 3)  # 3 workers, round-robin
    # A plain run has no judge to sit next to: it may use every CPU.
    run = httpx.post(
        f"{contained_executor.url}/v1/run",
        json={"code": "import os\nprint(sorted(os.sched_getaffinity(0)))"},
        timeout=30,
    ).json()
    assert run["stdout"] == f"{cpus}\n"


ODD_VALUES = {
    "null": "null",
    "negative": "-1",
    "zero": "0",
    "huge_int": "1" + "0" * 40,
    "huge_float": "1.7e308",
    "tiny_float": "5e-324",
    "empty_text": '""',
    "text": '"x"',
    "empty_list": "[]",
    "empty_object": "{}",
    "true": "true",
    "nan_text": '"nan"',
    "deep": "[" * 500 + "]" * 500,
}
FUZZED_BODIES = {
    "/v1/run": {"code": "print(1)", "stdin": "", "timeout_s": 5, "memory_mb": 128},
    "/v1/evaluate": {
        "code": "def f(x):\n    return x * 2\n",
        "timeout_s": 5,
        "tests": {
            "kind": "call",
            "entry_point": "f",
            "cases": [{"args": [2], "kwargs": {}, "expected": 4}],
            "float_tolerance": 0.5,
        },
        "stop_on_first_failure": False,
    },
    "/v1/evaluate/batch": {
        "items": [
            {
                "code": "print(input())",
                "timeout_s": 5,
                "tests": {
                    "kind": "stdio",
                    "cases": [{"stdin": "1", "expected_stdout": "1"}],
                    "compare": "tolerant",
                },
            },
            {
                "code": "def f(): pass",
                "tests": {"kind": "assert", "code": "assert True", "entry_point": "f"},
            },
        ]
    },
    "/run_code": {
        "code": "print(1)",
        "language": "python",
        "run_timeout": 5,
        "memory_limit_MB": 128,
        "stdin": "",
        "files": {},
    },
}


@pytest.mark.parametrize("path", list(FUZZED_BODIES))
def test_odd_values_anywhere_never_give_a_500(
    contained_executor: ContainedExecutor, path: str
) -> None:
    """Each leaf of a valid request replaced in turn by odd but valid JSON: a 2xx or a
    clear 4xx, never a 500 (what each should be is the other tests' business)."""
    variants = fuzzed(FUZZED_BODIES[path], ODD_VALUES)
    with httpx.Client(base_url=contained_executor.url, timeout=60) as client:
        for name, content in variants:
            response = client.post(
                path, content=content, headers={"content-type": "application/json"}
            )
            assert response.status_code in (200, 413, 422), (name, response.text[:300])
            assert response.json() is not None
    assert httpx.get(f"{contained_executor.url}/readyz").status_code == 200


def _worker_pids(executor: ContainedExecutor) -> set[int]:
    """The service's worker processes: its children running codeprm.services.executor.worker (their
    own children, forked from them, share the command line)."""
    commands, parents = {}, {}
    for pid in executor.processes():
        try:
            commands[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
    return {
        pid
        for pid, command in commands.items()
        if b"codeprm.services.executor.worker" in command
        and b"codeprm.services.executor.worker" not in commands.get(parents.get(pid, 0), b"")
    }


def test_dead_workers_are_replaced_and_readyz_says_so_meanwhile(
    contained_executor: ContainedExecutor,
) -> None:
    url = contained_executor.url
    workers = _worker_pids(contained_executor)
    assert len(workers) == 3
    for pid in workers:  # killed from outside, idle: no job would ever notice
        os.kill(pid, signal.SIGKILL)
    seen = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        seen.append(httpx.get(f"{url}/readyz").status_code)
        alive = _worker_pids(contained_executor)
        if seen[-1] == 200 and len(alive) == 3 and not alive & workers:
            break
        time.sleep(0.02)
    assert seen[-1] == 200 and 503 in seen, seen[-20:]
    ok = httpx.post(
        f"{url}/v1/evaluate", json={"code": "def f(x):\n    return x * 2\n", "tests": GOOD_TESTS}
    )
    assert ok.json()["passed"], ok.text


async def test_a_full_queue_answers_overloaded_at_once() -> None:
    pool = Pool(ExecutorSettings(max_queue=1, workers=1))  # not started: nothing frees up
    waiting = asyncio.create_task(pool.execute({"timeout_s": 1}))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await pool.execute({"timeout_s": 1})
    waiting.cancel()


def test_a_programs_traceback_shows_only_the_program(
    contained_executor: ContainedExecutor,
) -> None:
    """What `python solution.py` prints: the program's frames, never the executor's own (its
    files and paths on the host)."""
    code = "def inner(x):\n    return 1 / x\n\ndef outer():\n    return inner(0)\n\nouter()\n"
    failed = httpx.post(f"{contained_executor.url}/v1/run", json={"code": code}).json()
    assert failed["status"] == "runtime_error"
    stderr = failed["stderr"]
    assert stderr.startswith("Traceback (most recent call last):\n"), stderr
    assert 'File "/tmp/solution.py", line 7, in <module>' in stderr
    assert 'File "/tmp/solution.py", line 2, in inner' in stderr
    assert stderr.rstrip().endswith("ZeroDivisionError: division by zero")
    assert stderr.count('File "') == 3, stderr
    for leak in ("runner.py", "services/executor", str(Path(__file__).parents[2])):
        assert leak not in stderr, stderr

    broken = httpx.post(f"{contained_executor.url}/v1/run", json={"code": "def f(:\n"}).json()
    assert "SyntaxError" in broken["stderr"] and "runner.py" not in broken["stderr"]
    judged = httpx.post(
        f"{contained_executor.url}/v1/evaluate",
        json={"code": "import nope_not_a_module\n", "tests": GOOD_TESTS},
    ).json()
    assert "runner.py" not in str(judged), judged
