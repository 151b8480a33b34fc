"""Faults during labeling runs: real API, workers, executor and Redis; the invariant is always
that every unit ends labeled or failed with a reason, exactly once, and the services are
healthy afterwards. Random choices come from a seed printed by the test
(`CODEPRM_FAULT_SEED` replays one)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.contained import ContainedExecutor, require_isolation
from tests.faults.labeling import LabelerProcesses, assert_accounted_once
from tests.faults.proxy import FaultyProxy
from tests.faults.redis_server import OwnRedis
from tests.labeler.test_runs import codeprm, labeler_env, slow_dataset

pytestmark = pytest.mark.slow


def seeded() -> random.Random:
    seed = int(os.environ.get("CODEPRM_FAULT_SEED", time.time_ns() % 100_000))
    print(f"fault seed: {seed}")
    return random.Random(seed)


@pytest.fixture
def labeler(
    contained_executor: ContainedExecutor, redis_namespace: str, tmp_path: Path
) -> Iterator[LabelerProcesses]:
    require_isolation(contained_executor)
    env = labeler_env(
        redis_namespace,
        contained_executor.url,
        CODEPRM_LABELER_LEASE_S="2",
        CODEPRM_LABELER_MAX_JOBS="2",
        CODEPRM_LABELER_MAX_TRIES="10",
    )
    processes = LabelerProcesses(env, tmp_path)
    yield processes
    processes.stop()


def submit(processes: LabelerProcesses, dataset: Path) -> str:
    body = {"strategy": "mutation", "dataset": str(dataset), "mutation": {"variants_per_line": 1}}
    answer = httpx.post(f"{processes.url}/v1/label/runs", json=body, timeout=60)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["run_id"])


def test_workers_and_the_api_killed_at_random_lose_no_unit(
    labeler: LabelerProcesses, tmp_path: Path
) -> None:
    rng = seeded()
    n = 10
    dataset = tmp_path / "slow.jsonl"
    slow_dataset(dataset, n, sleep_s={i: rng.choice([0.5, 1.0, 2.0]) for i in range(n)})
    labeler.start_api()
    run_id = submit(labeler, dataset)
    labeler.start_worker()
    labeler.start_worker()
    deadline = time.monotonic() + 120
    kills = []
    for _ in range(6):  # at most six kills, each followed by a restart
        time.sleep(rng.uniform(0.5, 2.5))
        if labeler.status(run_id)["finished"] or time.monotonic() > deadline:
            break
        victim = rng.choice(["api", 0, 1])
        kills.append(victim)
        if victim == "api":
            labeler.kill(labeler.api)
            labeler.start_api()
        else:
            assert isinstance(victim, int)
            labeler.kill(labeler.workers[victim])
            labeler.start_worker(victim)
    print(f"killed mid-run: {kills}")
    assert kills, "the run finished before the first fault"
    info = labeler.wait_finished(run_id, timeout_s=max(deadline - time.monotonic(), 30))
    samples = labeler.export(run_id)
    assert_accounted_once(info, samples, n)
    assert info["failed"] == 0, info["failures"]  # ten tries each: deaths alone never fail one
    assert httpx.get(f"{labeler.url}/readyz").status_code == 200
    assert all(w.poll() is None for w in labeler.workers)


def test_an_executor_that_dies_hangs_or_answers_garbage(
    contained_executor: ContainedExecutor, redis_namespace: str, tmp_path: Path
) -> None:
    require_isolation(contained_executor)
    n = 3
    dataset = tmp_path / "quick.jsonl"
    slow_dataset(dataset, n, sleep_s=dict.fromkeys(range(n), 0.0))
    with FaultyProxy(contained_executor.port) as proxy:
        env = labeler_env(
            redis_namespace,
            proxy.url,
            CODEPRM_LABELER_JOB_TIMEOUT_S="8",
            CODEPRM_LABELER_MAX_TRIES="2",
        )
        processes = LabelerProcesses(env, tmp_path)
        processes.start_api()
        try:
            outcomes = {}
            for mode in ("garbage", "hang", "refuse", "slow"):
                proxy.mode = mode
                proxy.delay_s = 0.3
                run_id = submit(processes, dataset)
                codeprm("label", "worker", "--burst", env=env, timeout=180)
                info = processes.status(run_id)
                assert_accounted_once(info, processes.export(run_id), n)
                outcomes[mode] = info
            assert httpx.get(f"{processes.url}/readyz").status_code == 200
        finally:
            processes.stop()
    reasons = {m: " ".join(i["failures"].values()) for m, i in outcomes.items()}  # type: ignore[attr-defined]
    assert outcomes["garbage"]["failed"] == n and "gave up after 2 tries" in reasons["garbage"]
    assert outcomes["hang"]["failed"] == n and "timed out after 8 s" in reasons["hang"]
    assert outcomes["refuse"]["failed"] == n and "gave up after 2 tries" in reasons["refuse"]
    assert outcomes["slow"]["done"] == n  # slow is not broken


def test_an_executor_back_after_an_outage_labels_everything(
    contained_executor: ContainedExecutor, redis_namespace: str, tmp_path: Path
) -> None:
    require_isolation(contained_executor)
    n = 4
    dataset = tmp_path / "quick.jsonl"
    slow_dataset(dataset, n, sleep_s=dict.fromkeys(range(n), 0.3))
    with FaultyProxy(contained_executor.port, mode="refuse") as proxy:
        env = labeler_env(redis_namespace, proxy.url, CODEPRM_LABELER_MAX_TRIES="6")
        processes = LabelerProcesses(env, tmp_path)
        processes.start_api()
        try:
            run_id = submit(processes, dataset)
            processes.start_worker()
            time.sleep(4)  # every unit fails its first tries
            proxy.mode = "pass"
            info = processes.wait_finished(run_id, timeout_s=120)
            assert_accounted_once(info, processes.export(run_id), n)
            assert info["done"] == n, info["failures"]
        finally:
            processes.stop()


@pytest.mark.parametrize("crash", [False, True], ids=["sigterm", "sigkill"])
def test_redis_with_an_append_only_file_restarted_mid_run_loses_nothing(
    contained_executor: ContainedExecutor, redis_namespace: str, tmp_path: Path, crash: bool
) -> None:
    require_isolation(contained_executor)
    redis_server = OwnRedis(tmp_path, aof=True)
    redis_server.start()
    n = 6
    dataset = tmp_path / "slow.jsonl"
    slow_dataset(dataset, n, sleep_s=dict.fromkeys(range(n), 1.0))
    env = labeler_env(
        redis_namespace,
        contained_executor.url,
        REDIS_URL=redis_server.url,
        CODEPRM_LABELER_LEASE_S="3",
        CODEPRM_LABELER_MAX_JOBS="2",
    )
    processes = LabelerProcesses(env, tmp_path)
    try:
        processes.start_api()
        run_id = submit(processes, dataset)
        processes.start_worker()
        deadline = time.monotonic() + 60
        while processes.status(run_id)["done"] == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        redis_server.restart(crash=crash, down_s=2)
        info = processes.wait_finished(run_id, timeout_s=120)
        assert_accounted_once(info, processes.export(run_id), n)
        assert info["done"] == n, info["failures"]
        assert processes.workers[0].poll() is None  # it rode out the outage
        assert httpx.get(f"{processes.url}/readyz").status_code == 200
    finally:
        processes.stop()
        redis_server.stop()


def test_redis_without_persistence_restarted_forgets_runs_and_serves_on(
    contained_executor: ContainedExecutor, redis_namespace: str, tmp_path: Path
) -> None:
    require_isolation(contained_executor)
    redis_server = OwnRedis(tmp_path, aof=False)
    redis_server.start()
    n = 4
    dataset = tmp_path / "slow.jsonl"
    slow_dataset(dataset, n, sleep_s=dict.fromkeys(range(n), 1.0))
    env = labeler_env(redis_namespace, contained_executor.url, REDIS_URL=redis_server.url)
    processes = LabelerProcesses(env, tmp_path)
    try:
        processes.start_api()
        run_id = submit(processes, dataset)
        processes.start_worker()
        time.sleep(1.5)
        redis_server.stop()
        down = httpx.get(f"{processes.url}/v1/label/runs/{run_id}", timeout=30)
        assert down.status_code == 503 and "Redis" in down.json()["detail"]
        assert httpx.get(f"{processes.url}/readyz").status_code == 503
        redis_server.start()
        # The run went with the data: a clear 404, and the labeler works on.
        gone = httpx.get(f"{processes.url}/v1/label/runs/{run_id}", timeout=30)
        assert gone.status_code == 404, gone.text
        again = submit(processes, dataset)
        info = processes.wait_finished(again, timeout_s=120)
        assert_accounted_once(info, processes.export(again), n)
        assert info["done"] == n and processes.workers[0].poll() is None
    finally:
        processes.stop()
        redis_server.stop()
