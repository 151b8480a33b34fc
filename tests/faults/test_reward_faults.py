"""Faults around rewards: the PRM server killed, restarted or slowed under a stream of
requests, and PPO steps whose executor or PRM server dies, hangs, answers garbage or slows at a
random point. Every request gets a verdict or a clear error, every step either completes or
fails with `RewardUnavailable`, and afterwards the services serve and the run completes.
Random choices come from a printed seed (`CODEPRM_FAULT_SEED` replays one)."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from codeprm.datasets import load_problems
from codeprm.services.trainer.ppo import train_ppo
from codeprm.services.trainer.reward_client import Judgement, RewardClient, RewardUnavailable
from codeprm.services.trainer.rollout import Rollout
from codeprm.tiny import build_tiny_policy
from tests.contained import ContainedExecutor, require_isolation
from tests.faults.proxy import FaultyProxy, Mode
from tests.faults.test_labeler_faults import seeded
from tests.servers import start_prm_server
from tests.trainer.test_ppo_services import config

pytestmark = pytest.mark.slow

ITEMS = [{"prompt": "# add\n", "code": f"def f(x):\n    return x + {i}\n"} for i in range(3)]
# What a client may hear when the server dies under it: the connection fails (never a hang).
TRANSPORT_ERRORS = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@dataclass
class PrmProcess:
    proc: subprocess.Popen[bytes]
    url: str


@pytest.fixture(scope="module")
def prm_process(tiny_prm_dir: Path) -> Iterator[PrmProcess]:
    """One PRM server for the module (a start costs half a minute on a busy machine); a test
    that kills it leaves its replacement here."""
    server = PrmProcess(*start_prm_server(tiny_prm_dir))
    yield server
    server.proc.terminate()
    server.proc.wait(30)


@pytest.fixture
def prm_server(prm_process: PrmProcess) -> str:
    return prm_process.url


def test_a_prm_server_killed_and_slowed_under_load_answers_every_request(
    tiny_prm_dir: Path, prm_process: PrmProcess
) -> None:
    rng = seeded()
    url = prm_process.url
    outcomes: list[tuple[str, object]] = []
    with FaultyProxy(port_of(url), delay_s=0.2) as proxy:
        reference = httpx.post(f"{url}/v1/score", json={"items": ITEMS}, timeout=60).json()
        expected = [r["aggregate"] for r in reference["results"]]
        stop = threading.Event()

        def client() -> None:
            deadline = time.monotonic() + 240
            with httpx.Client(base_url=proxy.url, timeout=20) as http:
                for _ in range(2000):  # bounded; stopped once the faults are over
                    if stop.is_set() or time.monotonic() > deadline:
                        return
                    try:
                        answer = http.post("/v1/score", json={"items": ITEMS})
                    except TRANSPORT_ERRORS as exc:
                        outcomes.append(("transport", type(exc).__name__))
                        time.sleep(0.2)
                        continue
                    body = answer.json()
                    if answer.status_code == 200:
                        outcomes.append(("scored", [r["aggregate"] for r in body["results"]]))
                    else:
                        outcomes.append((f"http {answer.status_code}", body["detail"]))

        threads = [threading.Thread(target=client) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(rng.uniform(0.5, 2.0))  # killed at a random point
            prm_process.proc.kill()
            prm_process.proc.wait(10)
            proxy.cut()
            prm_process.proc, prm_process.url = start_prm_server(tiny_prm_dir)
            proxy.upstream_port = port_of(prm_process.url)
            proxy.mode = "slow"  # back, then slow for a while
            time.sleep(rng.uniform(0.5, 1.5))
            proxy.mode = "pass"
            time.sleep(1)
            stop.set()
            for thread in threads:
                thread.join(60)
            after = httpx.post(f"{proxy.url}/v1/score", json={"items": ITEMS}, timeout=60)
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
    assert not any(t.is_alive() for t in threads), "a request hung"
    kinds = {kind for kind, _ in outcomes}
    assert kinds <= {"scored", "transport", "http 503"}, outcomes
    scored = [value for kind, value in outcomes if kind == "scored"]
    assert scored and all(v == pytest.approx(expected, abs=1e-4) for v in scored)
    assert after.status_code == 200  # healthy afterwards, with the same scores
    assert [r["aggregate"] for r in after.json()["results"]] == pytest.approx(expected, abs=1e-4)


@dataclass
class FaultyJudge:
    """The real service judge; at one random step a random fault starts at a random moment
    of the step's calls, on the executor's or the PRM server's proxy."""

    inner: RewardClient
    proxies: dict[str, FaultyProxy]
    fault_step: int
    fault: tuple[str, Mode]
    after_s: float
    calls: int = 0
    seen: list[str] = field(default_factory=list)

    async def judge(self, rollouts: Sequence[Rollout]) -> Judgement:
        self.calls += 1
        if self.calls == self.fault_step:
            service, mode = self.fault
            proxy = self.proxies[service]

            def inject() -> None:
                proxy.mode = mode
                if mode == "refuse":
                    proxy.cut()

            threading.Timer(self.after_s, inject).start()
        try:
            judgement = await self.inner.judge(rollouts)
        except RewardUnavailable as exc:
            self.seen.append(str(exc))
            raise
        assert len(judgement.verdicts) == len(rollouts)
        return judgement


FAULTS: list[tuple[str, Mode]] = [
    ("prm", "refuse"),
    ("prm", "hang"),
    ("prm", "garbage"),
    ("prm", "slow"),
    ("executor", "refuse"),
    ("executor", "garbage"),
    ("executor", "hang"),
]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: "-".join(f))
def test_the_judge_answers_every_fault_with_a_verdict_or_a_clear_error(
    contained_executor: ContainedExecutor, prm_server: str, fault: tuple[str, Mode]
) -> None:
    require_isolation(contained_executor)
    problem = load_problems("humaneval")[0]
    rollouts = [
        Rollout(problem, [], [], text, [], finished=True)
        for text in ("    return True\n", "    x = 1\n    return x\n")
    ]
    service, mode = fault
    with (
        FaultyProxy(port_of(prm_server), delay_s=0.3) as prm,
        FaultyProxy(contained_executor.port, delay_s=0.3) as executor,
    ):
        judge = RewardClient(executor.url, prm.url, retries=1, timeout_s=5)
        healthy = asyncio.run(judge.judge(rollouts))
        {"prm": prm, "executor": executor}[service].mode = mode
        started = time.monotonic()
        try:
            faulty: Judgement | None = asyncio.run(judge.judge(rollouts))
        except RewardUnavailable as exc:
            faulty = None
            name = "PRM server" if service == "prm" else "executor"
            assert str(exc).startswith(name), exc
        assert time.monotonic() - started < 30
        assert (faulty is not None) == (mode == "slow")  # slow is not broken
        prm.mode = executor.mode = "pass"
        assert asyncio.run(judge.judge(rollouts)).verdicts == healthy.verdicts  # serving on


def test_ppo_steps_with_a_reward_service_failing_at_a_random_point(
    contained_executor: ContainedExecutor,
    tiny_prm_dir: Path,
    prm_server: str,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    require_isolation(contained_executor)
    rng = seeded()
    policy = build_tiny_policy(tmp_path_factory.mktemp("policy") / "policy")
    with (
        FaultyProxy(port_of(prm_server), delay_s=0.3) as prm,
        FaultyProxy(contained_executor.port, delay_s=0.3) as executor,
    ):
        cfg = config(policy, tiny_prm_dir, executor.url, prm.url, tmp_path / "run")
        cfg = cfg.model_copy(update={"steps": 2})
        judge = FaultyJudge(
            RewardClient(executor.url, prm.url, retries=1, timeout_s=5),
            {"prm": prm, "executor": executor},
            fault_step=rng.randint(1, cfg.steps),
            fault=rng.choice(FAULTS),
            after_s=rng.uniform(0.0, 0.3),
        )
        print(f"fault {judge.fault} at step {judge.fault_step} after {judge.after_s:.2f}s")
        started = time.monotonic()
        try:
            train_ppo(cfg, judge=judge)
        except RewardUnavailable:
            pass  # the step failed loudly, as it must; anything else fails the test
        assert time.monotonic() - started < 240
        assert all("PRM server" in s or "executor" in s for s in judge.seen), judge.seen
        prm.mode = executor.mode = "pass"
        if (cfg.out / "checkpoint" / "state.pt").is_file() or judge.seen:
            result = train_ppo(cfg)  # resumes where the failed step left it
            assert result.history[-1]["step"] == cfg.steps
        assert httpx.get(f"{prm_server}/readyz", timeout=10).status_code == 200
