"""Start-up proof that the sandbox isolates: the executor is not ready until this passes.

Each probe is an ordinary program run through the real pool, exactly as a request would be.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile

from codeprm.api.executor import RunRequest
from codeprm.services.executor.evaluation import Executor
from codeprm.services.executor.pool import WORKER_ENV

log = logging.getLogger(__name__)


async def run_self_test(executor: Executor, service_port: int) -> dict[str, str | None]:
    """{probe: None if it held, else what went wrong}."""
    outcome: dict[str, str | None] = {}
    name = f"codeprm-selftest-{secrets.token_hex(8)}"
    network = f"""
import socket
reached = []
for host, port in [("127.0.0.1", {service_port}), ("127.0.0.1", 6379), ("1.1.1.1", 53)]:
    try:
        socket.create_connection((host, port), timeout=1).close()
        reached.append(f"{{host}}:{{port}}")
    except OSError:
        pass
print("reached", reached)
"""
    outcome["network"] = await _expect(executor, network, "reached []")
    # World-writable on a typical host, absent or read-only in the sandbox; /tmp inside is
    # the execution's private scratch, so writing there must succeed but never reach the host.
    host_paths = [f"/var/tmp/{name}", f"/dev/shm/{name}", f"/{name}", f"/usr/{name}"]
    writes = f"""
wrote = []
for path in {host_paths!r}:
    try:
        with open(path, "w") as f:
            f.write("x")
        wrote.append(path)
    except OSError:
        pass
with open("/tmp/{name}", "w") as f:
    f.write("scratch")
print("wrote", wrote)
"""
    outcome["host_writes"] = await _expect(executor, writes, "wrote []")
    leaked = [
        p for p in [*host_paths, os.path.join(tempfile.gettempdir(), name)] if os.path.exists(p)
    ]
    for path in leaked:
        os.unlink(path)
    if leaked:
        outcome["host_writes"] = f"a sandboxed program wrote to the host: {leaked}"
    # Its own pid namespace, where it sees only itself and the reaper, and is not the init
    # (whom the kernel shields from signals the program sends itself).
    pids = "import os; me = os.getpid(); print(me != 1, sorted(int(p) for p in os.listdir("
    pids += "'/proc') if p.isdigit()) == sorted({1, me}))"
    outcome["pid_namespace"] = await _expect(executor, pids, "True True")
    env = f"import os; print(sorted(set(os.environ) - {set(WORKER_ENV)!r}))"
    outcome["environment"] = await _expect(executor, env, "[]")
    memory = await executor.run(RunRequest(code="x = bytearray(1 << 30)", memory_mb=128))
    outcome["memory_limit"] = (
        None
        if memory.status == "memory_limit"
        else f"a 1 GiB allocation under a 128 MiB limit gave {memory.status}"
    )
    spin = await executor.run(RunRequest(code="while True: pass", timeout_s=0.5))
    outcome["time_limit"] = (
        None if spin.status == "timeout" else f"an endless loop gave {spin.status}"
    )
    for probe, failure in outcome.items():
        if failure is not None:
            log.error("sandbox self-test failed", extra={"probe": probe, "reason": failure})
    return outcome


async def _expect(executor: Executor, code: str, expected: str) -> str | None:
    result = await executor.run(RunRequest(code=code, timeout_s=10))
    if result.status != "ok" or result.stdout.strip() != expected:
        return (
            f"expected {expected!r}, got {result.status}: {result.stdout.strip()!r} "
            f"{result.stderr.strip()[-300:]!r}"
        )
    return None
