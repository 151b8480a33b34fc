"""Labeling runs end to end: real Redis, real executor, real worker processes and CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from codeprm.api.labeler import LabelRunRequest
from codeprm.api.labels import LabeledSample
from codeprm.lines import split_lines
from codeprm.scripted_llm import ScriptedLLM
from codeprm.services.labeler.labeling import Labeled
from codeprm.services.labeler.queue import open_store
from codeprm.services.labeler.runs import unit_key
from codeprm.services.labeler.settings import LabelerSettings
from codeprm.stack import free_port
from tests.conftest import REDIS_URL
from tests.contained import ContainedExecutor, require_isolation
from tests.labeler.constructed import SOLUTION, bugged, oracle, problem
from tests.servers import running_labeler_api

pytestmark = pytest.mark.slow


def labeler_env(namespace: str, executor_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "CODEPRM_LABELER_QUEUE_NAME": f"{namespace}:q",
        "CODEPRM_LABELER_KEY_PREFIX": namespace,
        "CODEPRM_LABELER_EXECUTOR_URL": executor_url,
        **extra,
    }


@pytest.fixture(autouse=True)
def labeler_api(redis_namespace: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The labeler API of the test's namespace: `codeprm label submit/status/export/list` go
    through it (CODEPRM_LABELER_URL, which `labeler_env` passes on)."""
    env = labeler_env(redis_namespace, "http://127.0.0.1:9", CODEPRM_LABELER_STALL_WARNING_S="2")
    with running_labeler_api(env) as url:
        monkeypatch.setenv("CODEPRM_LABELER_URL", url)
        yield url


def codeprm(*args: str, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "codeprm", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def export(run_id: str, env: dict[str, str], tmp_path: Path) -> list[LabeledSample]:
    out = tmp_path / f"{run_id}.jsonl"
    codeprm("label", "export", run_id, "--out", str(out), env=env)
    return [LabeledSample.model_validate_json(line) for line in out.read_text().splitlines()]


def test_cli_submit_work_status_export(
    contained_executor: ContainedExecutor, redis_namespace: str, tmp_path: Path
) -> None:
    require_isolation(contained_executor)
    env = labeler_env(redis_namespace, contained_executor.url)
    run_id = codeprm(
        "label",
        "submit",
        "--dataset",
        "humaneval",
        "--limit",
        "4",
        "--variants-per-line",
        "1",
        env=env,
    ).strip()
    codeprm("label", "worker", "--burst", env=env)
    status = subprocess.run(
        [sys.executable, "-m", "codeprm", "label", "status", run_id, "--no-watch"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and "4/4" in status.stderr, status.stderr
    samples = export(run_id, env, tmp_path)
    originals = [s.problem_id for s in samples if s.provenance["source"] == "solution"]
    assert originals == [f"HumanEval/{i}" for i in range(4)]
    assert any(-1.0 in s.line_labels for s in samples)


def slow_dataset(path: Path, n: int, sleep_s: dict[int, float] | None = None) -> None:
    """Problems whose every test run takes ~1.5 s (or `sleep_s[i]`), so a worker can be
    killed mid-job."""
    rows = [
        {
            "problem_id": f"slow/{i}",
            "prompt": "add one",
            "solution": f"def f(x):\n    return x + {i + 1}\n",
            "tests": {
                "kind": "assert",
                "code": f"import time\ntime.sleep({(sleep_s or {}).get(i, 1.5)})\n"
                f"assert f(1) == {i + 2}\n",
            },
        }
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_a_killed_worker_loses_nothing(
    contained_executor: ContainedExecutor, redis_namespace: str, tmp_path: Path
) -> None:
    require_isolation(contained_executor)
    n = 6
    dataset = tmp_path / "slow.jsonl"
    slow_dataset(dataset, n)
    # A dead worker's job is picked up again once its 3 s lease runs out, not after the
    # job timeout (600 s) + 10 s.
    env = labeler_env(
        redis_namespace,
        contained_executor.url,
        CODEPRM_LABELER_JOB_TIMEOUT_S="600",
        CODEPRM_LABELER_LEASE_S="3",
        CODEPRM_LABELER_MAX_JOBS="2",
    )
    run_id = codeprm(
        "label", "submit", "--dataset", str(dataset), "--variants-per-line", "1", env=env
    ).strip()
    worker = subprocess.Popen(
        [sys.executable, "-m", "codeprm", "label", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill it once it is in the middle of the run
            info = json.loads(codeprm_status_json(run_id, env))
            if 1 <= info["done"] < n:
                break
            time.sleep(0.2)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        assert json.loads(codeprm_status_json(run_id, env))["done"] < n
        started = time.monotonic()
        codeprm("label", "worker", "--burst", env=env, timeout=180)
        # 6 units of ~2 s each, two at a time, after at most a 3 s wait: far from 610 s.
        print(f"the rest of the run after the kill: {time.monotonic() - started:.1f} s")
        assert time.monotonic() - started < 90
    finally:
        if worker.poll() is None:
            worker.kill()
    info = json.loads(codeprm_status_json(run_id, env))
    assert (info["done"], info["failed"], info["remaining"]) == (n, 0, 0)
    samples = export(run_id, env, tmp_path)
    originals = sorted(s.problem_id for s in samples if s.provenance["source"] == "solution")
    assert originals == sorted(f"slow/{i}" for i in range(n))  # each unit exactly once


def test_a_unit_slower_than_the_job_timeout_is_recorded_failed(
    contained_executor: ContainedExecutor, redis_namespace: str, tmp_path: Path
) -> None:
    require_isolation(contained_executor)
    dataset = tmp_path / "slow.jsonl"
    slow_dataset(dataset, 3, sleep_s={0: 0.0, 1: 9.0, 2: 0.0})  # below the executor's 10 s
    env = labeler_env(redis_namespace, contained_executor.url, CODEPRM_LABELER_JOB_TIMEOUT_S="4")
    run_id = codeprm(
        "label", "submit", "--dataset", str(dataset), "--variants-per-line", "1", env=env
    ).strip()
    codeprm("label", "worker", "--burst", env=env, timeout=180)
    info = json.loads(codeprm_status_json(run_id, env))
    assert (info["done"], info["failed"], info["remaining"], info["finished"]) == (2, 1, 0, True)
    assert "timed out after 4 s" in info["failures"]["slow/1"]


def arq_retries(namespace: str, run_id: str, index: int, tries: int) -> None:
    """As if `tries` earlier tries of the unit's job had ended with their worker dying."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.set(f"arq:retry:{namespace}:{run_id}:{index}", tries)
    finally:
        client.close()


def test_a_unit_whose_workers_kept_dying_is_recorded_failed(redis_namespace: str) -> None:
    env = labeler_env(
        redis_namespace, f"http://127.0.0.1:{free_port()}", CODEPRM_LABELER_MAX_TRIES="2"
    )
    run_id = codeprm("label", "submit", "--dataset", "humaneval", "--limit", "3", env=env).strip()
    arq_retries(redis_namespace, run_id, 0, 2)  # the next try is the third: one too many
    arq_retries(redis_namespace, run_id, 1, 3)  # past arq's own limit: arq drops the job
    codeprm("label", "worker", "--burst", env=env, timeout=120)
    info = json.loads(codeprm_status_json(run_id, env))
    assert (info["done"], info["failed"], info["remaining"], info["finished"]) == (0, 3, 0, True)
    failures = info["failures"]
    assert "gave up after 2 tries: the worker running it stopped" in failures["HumanEval/0"]
    assert "lost" in failures["HumanEval/1"] and "retries exceeded" in failures["HumanEval/1"]
    assert "gave up after 2 tries" in failures["HumanEval/2"]  # the executor is down


def codeprm_status_json(run_id: str, env: dict[str, str]) -> str:
    code = (
        "import asyncio\n"
        "from codeprm.services.labeler.queue import open_store\n"
        "from codeprm.services.labeler.settings import LabelerSettings\n"
        "async def main():\n"
        "    async with open_store(LabelerSettings()) as store:\n"
        f"        print((await store.info({run_id!r})).model_dump_json())\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_http_api_and_clear_errors(
    contained_executor: ContainedExecutor, redis_namespace: str, tmp_path: Path
) -> None:
    require_isolation(contained_executor)
    env = labeler_env(redis_namespace, contained_executor.url)
    with running_labeler_api(env, timeout_s=30) as url:
        bad = httpx.post(
            f"{url}/v1/label/runs", json={"strategy": "mutation", "dataset": "/nope.jsonl"}
        )
        assert bad.status_code == 422 and "neither a known dataset" in bad.json()["detail"]
        assert (
            httpx.post(
                f"{url}/v1/label/runs", json={"strategy": "vibes", "dataset": "humaneval"}
            ).status_code
            == 422
        )
        assert httpx.get(f"{url}/v1/label/runs/unknown").status_code == 404
        created = httpx.post(
            f"{url}/v1/label/runs",
            json={
                "strategy": "mutation",
                "dataset": "humaneval",
                "limit": 2,
                "mutation": {"variants_per_line": 1},
            },
        )
        assert created.status_code == 201
        run_id = created.json()["run_id"]
        codeprm("label", "worker", "--burst", env=env)
        info = httpx.get(f"{url}/v1/label/runs/{run_id}").json()
        assert info["finished"] and info["done"] == 2 and info["samples"] > 2
        exported = httpx.get(f"{url}/v1/label/runs/{run_id}/export")
        assert exported.headers["x-codeprm-units-done"] == "2"
        assert exported.headers["x-codeprm-units-failed"] == "0"
        rows = exported.text.splitlines()
        assert len(rows) == info["samples"]
        assert LabeledSample.model_validate_json(rows[0]).problem_id == "HumanEval/0"


def test_unreachable_executor_is_recorded_not_stuck(redis_namespace: str) -> None:
    env = labeler_env(
        redis_namespace, f"http://127.0.0.1:{free_port()}", CODEPRM_LABELER_MAX_TRIES="1"
    )
    run_id = codeprm("label", "submit", "--dataset", "humaneval", "--limit", "2", env=env).strip()
    codeprm("label", "worker", "--burst", env=env, timeout=120)
    info = json.loads(codeprm_status_json(run_id, env))
    assert info["finished"] and info["failed"] == 2
    assert all("gave up" in reason for reason in info["failures"].values())


def constructed_dataset(path: Path) -> None:
    rows = [
        {**problem([bugged(m)]).model_dump(mode="json"), "problem_id": f"total/{m}"} for m in (2, 5)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_binary_search_run_through_the_worker(
    contained_executor: ContainedExecutor, redis_namespace: str, tmp_path: Path
) -> None:
    require_isolation(contained_executor)
    env = labeler_env(redis_namespace, contained_executor.url)
    dataset = tmp_path / "total.jsonl"
    constructed_dataset(dataset)
    with ScriptedLLM(complete=oracle()) as llm:
        run_id = codeprm(
            "label", "submit", "--dataset", str(dataset), "--strategy", "binary_search",
            "--policy", llm.url, "--policy-model", "scripted", "--k", "3", env=env,
        ).strip()  # fmt: skip
        codeprm("label", "worker", "--burst", env=env)
    info = json.loads(codeprm_status_json(run_id, env))
    assert (info["done"], info["failed"]) == (2, 0)
    samples = export(run_id, env, tmp_path)
    code = [line.index for line in split_lines(SOLUTION) if line.kind == "code"]
    assert [s.provenance["first_bad_line"] for s in samples] == [code[1], code[4]]
    assert info["completions"] == sum(s.provenance["completions"] for s in samples) > 0
    assert all(r["n"] == 3 for r in llm.requests)


def test_backend_failures_are_clear(
    contained_executor: ContainedExecutor, redis_namespace: str, tmp_path: Path
) -> None:
    require_isolation(contained_executor)
    env = labeler_env(redis_namespace, contained_executor.url, CODEPRM_LABELER_MAX_TRIES="1")
    dataset = tmp_path / "total.jsonl"
    constructed_dataset(dataset)
    search = ["label", "submit", "--dataset", str(dataset), "--strategy", "binary_search"]
    # Nothing listens there: refused at submission, nothing is queued.
    dead = f"http://127.0.0.1:{free_port()}/v1"
    refused = subprocess.run(
        [sys.executable, "-m", "codeprm", *search, "--policy", dead, "--policy-model", "m"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "does not answer" in refused.stderr, refused.stderr
    # A policy URL without a model name is a usage error, not a queued run.
    assert (
        subprocess.run(
            [sys.executable, "-m", "codeprm", *search, "--policy", dead], env=env
        ).returncode
        == 2
    )
    with ScriptedLLM(complete=oracle()) as llm:
        # The backend answers at submission, then rejects the model (404): failed at once,
        # with the backend's answer as the reason.
        wrong = codeprm(*search, "--policy", llm.url, "--policy-model", "nope", env=env).strip()
        codeprm("label", "worker", "--burst", env=env, timeout=180)
        info = json.loads(codeprm_status_json(wrong, env))
        assert info["finished"] and info["failed"] == 2
        assert all("404" in reason for reason in info["failures"].values()), info["failures"]
        # It answers at submission, then goes down (503s): failed after the retries.
        down = codeprm(*search, "--policy", llm.url, "--policy-model", "scripted", env=env)
        llm.fail_next = [503] * 1000
        codeprm("label", "worker", "--burst", env=env, timeout=180)
    info = json.loads(codeprm_status_json(down.strip(), env))
    assert info["finished"] and info["failed"] == 2
    assert all("gave up" in reason for reason in info["failures"].values()), info["failures"]


async def test_a_unit_run_twice_counts_once(redis_namespace: str, tmp_path: Path) -> None:
    """A job whose lease ran out while its worker was slow may run twice: a late failure of
    one run does not undo the other's labels, and a late success clears a failure."""
    dataset = tmp_path / "two.jsonl"
    slow_dataset(dataset, 2)
    settings = LabelerSettings(
        redis_url=REDIS_URL, key_prefix=redis_namespace, queue_name=f"{redis_namespace}:q"
    )
    async with open_store(settings) as store:
        info = await store.submit(
            LabelRunRequest(strategy="mutation", dataset=str(dataset)), settings.queue_name
        )
        first, second = unit_key(0, "slow/0"), unit_key(1, "slow/1")
        await store.complete(info.run_id, first, Labeled([], executions=1))
        await store.fail(info.run_id, first, "timed out after 1 s")
        await store.fail(info.run_id, second, "timed out after 1 s")
        await store.complete(info.run_id, second, Labeled([], executions=1))
        after = await store.info(info.run_id)
    assert (after.done, after.failed, after.remaining) == (2, 0, 0)


def run_codeprm(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codeprm", *args],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_runs_are_listed_and_an_unfinished_run_is_not_exported_silently(
    redis_namespace: str, tmp_path: Path
) -> None:
    env = labeler_env(
        redis_namespace, f"http://127.0.0.1:{free_port()}", CODEPRM_LABELER_MAX_TRIES="1"
    )
    out = tmp_path / "labels.jsonl"
    out.write_text("precious\n")
    typo = run_codeprm("label", "export", "TYPO", "--out", str(out), env=env)
    assert typo.returncode == 2 and "no labeling run 'TYPO'" in typo.stderr, typo.stderr
    assert out.read_text() == "precious\n"  # looked up before the file is touched

    run_id = codeprm("label", "submit", "--dataset", "humaneval", "--limit", "2", env=env).strip()
    listed = run_codeprm("label", "list", env=env)
    assert listed.returncode == 0 and run_id in listed.stdout, listed.stderr

    # No worker yet: the export is refused, saying how much is missing, unless --partial.
    refused = run_codeprm("label", "export", run_id, "--out", str(out), env=env)
    assert refused.returncode == 2, refused.stderr
    assert "2 of 2 units are still queued or running" in refused.stderr
    assert out.read_text() == "precious\n"
    partial = run_codeprm("label", "export", run_id, "--out", str(out), "--partial", env=env)
    assert partial.returncode == 0 and out.read_text() == "", partial.stderr

    # ...and the status says why the run does not move.
    time.sleep(2.5)
    stalled = run_codeprm("label", "status", run_id, "--no-watch", env=env)
    assert stalled.returncode == 0, stalled.stderr
    assert "no labeler worker is running" in " ".join(stalled.stderr.split())

    worker = subprocess.Popen(
        [sys.executable, "-m", "codeprm", "label", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while (info := json.loads(codeprm_status_json(run_id, env)))["workers"] != 1:
            assert time.monotonic() < deadline, info
            time.sleep(0.5)
        ready = httpx.get(f"{env['CODEPRM_LABELER_URL']}/readyz").json()
        assert ready["details"] == {"workers": 1}
        while not (info := json.loads(codeprm_status_json(run_id, env)))["finished"]:
            assert time.monotonic() < deadline, info
            time.sleep(0.5)
    finally:
        worker.terminate()
        worker.wait(60)
    assert json.loads(codeprm_status_json(run_id, env))["workers"] == 0  # it signed off

    # The executor is down: every unit failed, and the status exits non-zero listing why.
    failed = run_codeprm("label", "status", run_id, env=env)
    assert failed.returncode == 1, failed.stderr
    assert "2 of 2 units failed" in failed.stderr and "HumanEval/0" in failed.stderr
    finished = run_codeprm("label", "export", run_id, "--out", str(out), env=env)
    assert finished.returncode == 0 and out.read_text() == "", finished.stderr
