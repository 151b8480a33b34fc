"""A real executor for integration tests, behind an outer containment made by the harness.

The service runs inside `unshare --pid --fork --mount-proc` (a sandbox escape that kills
"every process" only reaches this tree) and, where cgroup v1/v2 controllers are writable, in
a pids cgroup (fork bombs that escaped would hit its ceiling) and a memory cgroup. Hostile
tests must call `require_isolation(executor)` first: it runs a non-destructive preflight.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from codeprm.stack import free_port
from tests.conftest import REDIS_URL

SECRET = f"codeprm-secret-{uuid.uuid4().hex}"
CACHE_PREFIX = f"codeprm-test:{uuid.uuid4().hex[:12]}:verdict"


@dataclass
class ContainedExecutor:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    cgroups: list[Path] = field(default_factory=list)
    preflight: str | None = "not run"  # None once the sandbox was shown to isolate

    def processes(self) -> set[int]:
        """Every process inside the outer containment."""
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
        found, todo = set(), [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.add(pid)
            todo.extend(children.get(pid, []))
        return found

    def steady_count(self, quiet_s: float = 0.5, timeout_s: float = 10.0) -> int:
        """The process count once it has not changed for `quiet_s`.

        Workers rebuild their spare sandbox after every job, so a count taken right after the
        previous test can catch one being torn down or built.
        """
        deadline = time.monotonic() + timeout_s
        count, since = len(self.processes()), time.monotonic()
        while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
            time.sleep(0.05)
            now = len(self.processes())
            if now != count:
                count, since = now, time.monotonic()
        return count

    def settled_count(self, expected: int, timeout_s: float = 10.0) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            count = len(self.processes())
            if count == expected or time.monotonic() > deadline:
                return count
            time.sleep(0.05)


def _make_cgroups(name: str) -> list[Path]:
    made = []
    for controller, settings in (
        ("pids", {"pids.max": "4096"}),
        ("memory", {"memory.limit_in_bytes": str(8 << 30)}),
    ):
        path = Path("/sys/fs/cgroup") / controller / name
        try:
            path.mkdir()
            for key, value in settings.items():
                (path / key).write_text(value)
            made.append(path)
        except OSError:
            continue
    return made


def _remove_cgroups(paths: list[Path]) -> None:
    for path in paths:
        # The executor's workers make cgroups of their own inside (deepest removed first).
        nested = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for directory in [*nested, path]:
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


@pytest.fixture(scope="session")
def contained_executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainedExecutor]:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        pytest.skip("needs Linux and util-linux unshare for the outer containment")
    if (
        subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("this platform refuses pid namespaces; no outer containment possible")
    port = free_port()
    log = tmp_path_factory.mktemp("executor") / "executor.log"
    cgroups = _make_cgroups(f"codeprm-test-{uuid.uuid4().hex[:8]}")
    enter = "; ".join(f"echo $$ > {c}/cgroup.procs" for c in cgroups) or "true"
    command = (
        f"{enter}; exec unshare --pid --fork --mount-proc --kill-child "
        f"{sys.executable} -m codeprm executor serve --port {port}"
    )
    env = {
        **os.environ,
        "CODEPRM_TEST_SECRET": SECRET,
        "CODEPRM_EXECUTOR_WORKERS": "3",
        "CODEPRM_EXECUTOR_REDIS_URL": REDIS_URL,
        "CODEPRM_EXECUTOR_CACHE_PREFIX": CACHE_PREFIX,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["sh", "-c", command],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    executor = ContainedExecutor(f"http://127.0.0.1:{port}", port, proc, log, cgroups)
    try:
        _wait_ready(executor)
        yield executor
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _remove_cgroups(cgroups)
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{CACHE_PREFIX}*"))
        if keys:
            client.delete(*keys)
        client.close()


def _wait_ready(executor: ContainedExecutor) -> None:
    deadline = time.monotonic() + 90
    body: object = None
    while time.monotonic() < deadline:
        if executor.proc.poll() is not None:
            break
        try:
            response = httpx.get(f"{executor.url}/readyz", timeout=2)
            body = response.json()
            if response.status_code == 200:
                return
            if "starting" not in str(body):
                break  # start-up finished and failed: no point waiting
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"executor not ready: {body}\n{executor.log.read_text()[-3000:]}")


PREFLIGHT = """
import os, socket
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=1).close()
    net = "open"
except OSError:
    net = "closed"
me = os.getpid()  # not the init of its pid namespace, and alone in it with that init
alone = me != 1 and pids == sorted({{1, me}})
print(alone, net, os.path.exists("/work"), os.path.exists("/root/.ssh"))
"""


def require_isolation(executor: ContainedExecutor) -> None:
    """Fail (never run a destructive case) unless a harmless probe shows the sandbox isolates."""
    if executor.preflight == "not run":
        response = httpx.post(
            f"{executor.url}/v1/run",
            json={"code": PREFLIGHT.format(port=executor.port)},
            timeout=30,
        )
        out = response.json()["stdout"].strip()
        executor.preflight = None if out == "True closed False False" else f"preflight saw {out!r}"
    if executor.preflight is not None:
        pytest.fail(f"sandbox does not isolate ({executor.preflight}); destructive tests not run")
