"""Hostile programs against a real executor (real HTTP), inside the harness's containment.

Every case checks its status, then that the service is still healthy and that nothing the
program started is left running (the process count inside the containment is back to what it
was). `require_isolation` runs a harmless preflight before anything destructive.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.contained import SECRET, ContainedExecutor, require_isolation

pytestmark = pytest.mark.slow

ADD_TESTS = {
    "kind": "assert",
    "code": "def check(candidate):\n    assert candidate(2, 3) == 5\n"
    "    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}
WRONG_ADD = "def add(a, b):\n    return a - b\n"


@dataclass
class Case:
    name: str
    code: str
    expect: set[str]  # acceptable statuses
    tests: dict[str, Any] | None = None  # evaluate (must not pass) instead of run
    timeout_s: float = 2.0
    check: Callable[[dict[str, Any]], None] | None = None
    memory_mb: int | None = None


def src(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


def prints(expected: str) -> Callable[[dict[str, Any]], None]:
    def check(result: dict[str, Any]) -> None:
        assert result["stdout"].strip() == expected, result

    return check


def no_secret(result: dict[str, Any]) -> None:
    assert SECRET not in result["stdout"] + result["stderr"], "a service secret leaked"


CASES = [
    # -- time ---------------------------------------------------------------------------
    Case("infinite_loop", "while True: pass", {"timeout"}),
    Case(
        "sleep_ignoring_sigterm",
        src("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(1000)"""),
        {"timeout"},
    ),
    Case(
        "spinning_threads",
        src("""
        import threading
        def spin():
            while True: pass
        for _ in range(4): threading.Thread(target=spin).start()"""),
        {"timeout"},
    ),
    Case(
        "spinning_children",
        src("""
        import os
        for _ in range(3):
            if os.fork() == 0:
                while True: pass
        while True: pass"""),
        {"timeout"},
    ),
    Case(
        "blocked_on_empty_stdin_then_sleep",
        "import sys, time\nsys.stdin.read()\ntime.sleep(100)",
        {"timeout"},
    ),
    # -- memory -------------------------------------------------------------------------
    Case("one_huge_allocation", "x = bytearray(16 * 1024 ** 3)", {"memory_limit"}),
    Case(
        "growing_list",
        "a = []\nwhile True: a.append(' ' * 10 ** 6)",
        {"memory_limit"},
        memory_mb=128,
    ),
    Case(
        "memory_in_threads",
        src("""
        import threading
        blocks = []
        def grab():
            while True: blocks.append(bytearray(10 ** 7))
        t = threading.Thread(target=grab); t.start(); t.join()
        raise MemoryError"""),
        {"memory_limit", "runtime_error"},
        memory_mb=128,  # reached with less work: a loaded machine must not turn it into timeout
    ),
    # -- processes ----------------------------------------------------------------------
    Case(
        "fork_bomb",
        src("""
        import os
        while True:
            try: os.fork()
            except OSError: pass"""),
        {"timeout", "runtime_error", "memory_limit"},
    ),
    Case(
        "thread_bomb",
        src("""
        import threading, time
        while True:
            threading.Thread(target=time.sleep, args=(100,), daemon=True).start()"""),
        {"runtime_error", "memory_limit", "timeout"},
    ),
    Case(
        "double_forked_daemon",
        src("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(1000)
            os._exit(0)
        os.wait()
        print("parent done")"""),
        {"ok"},
        check=prints("parent done"),
    ),
    Case(
        "leftover_subprocess",
        src("""
        import subprocess
        subprocess.Popen(["sleep", "1000"])
        print("started")"""),
        {"ok"},
        check=prints("started"),
    ),
    Case(
        "kill_parent",
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('alive')",
        {"runtime_error", "ok"},
    ),
    # kill(-1) reaches every other process in the sandbox (but the reaper, its pid namespace's
    # init, which the kernel shields from signals sent from inside) and nothing outside it.
    Case(
        "kill_everything",
        src("""
        import os, signal, subprocess
        child = subprocess.Popen(["sleep", "100"])
        os.kill(-1, signal.SIGKILL)
        print("alive", child.wait())"""),
        {"ok"},
        check=prints("alive -9"),
    ),
    Case(  # an ordinary process: its own group includes itself
        "kill_own_group",
        "import os, signal\nos.killpg(0, signal.SIGKILL)\nprint('alive')",
        {"runtime_error"},
    ),
    Case("kill_init", "import os, signal\nos.kill(1, signal.SIGKILL)\nprint('alive')", {"ok"}),
    # -- output -------------------------------------------------------------------------
    Case(
        "close_output_and_sleep",  # no stream left to watch: the deadline must still hold
        "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(120)",
        {"timeout"},
    ),
    Case("stdout_flood", "while True: print('x' * 1000)", {"output_limit"}),
    Case("stderr_flood", "import sys\nwhile True: sys.stderr.write('y' * 1000)", {"output_limit"}),
    Case("one_huge_write", "import sys\nsys.stdout.write('x' * 50_000_000)", {"output_limit"}),
    Case(
        "large_but_allowed_output",
        "print('z' * 500_000)",
        {"ok"},
        check=lambda r: len(r["stdout"]) == 500_001 or pytest.fail("output truncated"),
    ),
    # -- disk ---------------------------------------------------------------------------
    Case(
        "fill_scratch",
        src("""
        with open("/tmp/big", "wb") as f:
            while True: f.write(b"x" * (1 << 20))"""),
        {"runtime_error"},
    ),
    Case(
        "many_files",
        src("""
        i = 0
        while True:
            open(f"/tmp/f{i}", "w").close(); i += 1"""),
        {"runtime_error"},
    ),
    Case("append_to_passwd", "open('/etc/passwd', 'a').write('x')", {"runtime_error"}),
    Case("delete_system_file", "import os\nos.remove('/usr/bin/env')", {"runtime_error"}),
    Case(
        "write_service_tree", f"open({os.getcwd() + '/pwned'!r}, 'w').write('x')", {"runtime_error"}
    ),
    Case("write_dev_shm", "open('/dev/shm/pwned', 'w').write('x')", {"runtime_error"}),
    # -- network ------------------------------------------------------------------------
    Case(
        "connect_redis",
        src("""
        import socket
        try:
            socket.create_connection(("127.0.0.1", 6379), timeout=1); print("open")
        except OSError: print("blocked")"""),
        {"ok"},
        check=prints("blocked"),
    ),
    Case(
        "connect_internet",
        src("""
        import socket
        try:
            socket.create_connection(("1.1.1.1", 53), timeout=1); print("open")
        except OSError: print("blocked")"""),
        {"ok"},
        check=prints("blocked"),
    ),
    Case(
        "dns_lookup",
        src("""
        import socket
        try:
            socket.getaddrinfo("example.com", 80); print("resolved")
        except OSError: print("blocked")"""),
        {"ok"},
        check=prints("blocked"),
    ),
    Case(
        "udp_send",
        src("""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(b"x", ("8.8.8.8", 53)); print("sent")
        except OSError: print("blocked")"""),
        {"ok"},
        check=prints("blocked"),
    ),
    Case(
        "raw_socket",
        src("""
        import socket
        try:
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print("raw")
        except OSError: print("blocked")"""),
        {"ok"},
        check=prints("blocked"),
    ),
    Case(
        "unix_socket_of_postgres",
        src("""
        import socket
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect("/run/postgresql/.s.PGSQL.5432"); print("open")
        except OSError: print("blocked")"""),
        {"ok"},
        check=prints("blocked"),
    ),
    # -- information --------------------------------------------------------------------
    Case("read_environment", "import os\nprint(dict(os.environ))", {"ok"}, check=no_secret),
    Case(
        "read_proc_environ",
        src("""
        import os
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try: print(open(f"/proc/{pid}/environ").read())
                except OSError: pass"""),
        {"ok"},
        check=no_secret,
    ),
    Case(
        "list_processes",  # itself and the reaper, its pid namespace's init
        "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()) == "
        "sorted({1, os.getpid()}))",
        {"ok"},
        check=prints("True"),
    ),
    Case("read_shadow", "print(open('/etc/shadow').read())", {"runtime_error"}),
    Case("read_ssh_keys", "import os\nprint(os.listdir('/root/.ssh'))", {"runtime_error"}),
    Case(
        "mount_tmpfs",
        src("""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        print(libc.mount(b"none", b"/usr", b"tmpfs", 0, None), ctypes.get_errno())"""),
        {"ok"},
        check=prints("-1 1"),
    ),
    Case("become_root", "import os\nos.setuid(0)\nos.chroot('/')", {"runtime_error", "ok"}),
    # -- verdict forging (evaluate; none of these may pass) ------------------------------
    Case("sys_exit_before_tests", "import sys\nsys.exit(0)\n" + WRONG_ADD, set(), ADD_TESTS),
    Case("os_exit_before_tests", "import os\nos._exit(0)\n", set(), ADD_TESTS),
    Case("exit_inside_function", "import os\ndef add(a, b):\n    os._exit(0)\n", set(), ADD_TESTS),
    Case(
        "always_equal_object",
        src("""
        class Anything:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
        def add(a, b): return Anything()"""),
        set(),
        ADD_TESTS,
    ),
    Case(
        "int_subclass_equal_to_all",
        src("""
        class Sneaky(int):
            def __eq__(self, other): return True
        def add(a, b): return Sneaky(0)"""),
        set(),
        ADD_TESTS,
    ),
    Case(
        "base_exception_escape",
        src("""
        class Out(BaseException): pass
        def add(a, b): raise Out()"""),
        set(),
        ADD_TESTS,
    ),
    Case("keyboard_interrupt", "def add(a, b):\n    raise KeyboardInterrupt\n", set(), ADD_TESTS),
    Case(
        "fake_pass_markers",
        "print('PASSED\\nall tests passed\\nOK')\n" + WRONG_ADD,
        set(),
        ADD_TESTS,
    ),
    Case(
        "patched_builtins",
        "import builtins\nbuiltins.AssertionError = type('X', "
        "(Exception,), {})\nbuiltins.abs = lambda x: 0\n" + WRONG_ADD,
        set(),
        ADD_TESTS,
    ),
    Case("own_check_function", "def check(candidate):\n    pass\n" + WRONG_ADD, set(), ADD_TESTS),
    Case("close_all_fds", "import os\nos.closerange(0, 1024)\n" + WRONG_ADD, set(), ADD_TESTS),
    Case(
        "write_fake_frames",
        src("""
        import os, json
        frame = json.dumps({"done": True, "completed": True}).encode()
        for fd in range(0, 64):
            try: os.write(fd, len(frame).to_bytes(4, "big") + frame)
            except OSError: pass
        def add(a, b): return a - b"""),
        set(),
        ADD_TESTS,
    ),
    Case(
        "atexit_exit_zero",
        "import atexit, os\natexit.register(lambda: os._exit(0))\n" + WRONG_ADD,
        set(),
        ADD_TESTS,
    ),
    Case(
        "ptrace_any_other_process",  # the judge lives in another pid namespace: no pid to name
        src("""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        others = [p for p in range(1, 300) if p != os.getpid()]
        print("attached", [p for p in others if libc.ptrace(16, p, None, None) == 0])
        print("seen", [p for p in os.listdir("/proc") if p.isdigit()])
        def add(a, b): return a - b"""),
        set(),
        ADD_TESTS,
    ),
    Case(
        "kill_everything_it_can",
        src("""
        import os, signal
        for pid in [-1, *range(1, 300)]:
            try: os.kill(pid, signal.SIGKILL)
            except OSError: pass
        def add(a, b): return a - b"""),
        set(),
        ADD_TESTS,
    ),
    Case(
        "forge_replies_on_every_fd",
        src("""
        import json, os, struct
        frame = json.dumps({"value": 5}).encode()
        for fd in map(int, os.listdir("/proc/self/fd")):
            try: os.write(fd, struct.pack(">I", len(frame)) + frame)
            except OSError: pass
        def add(a, b): return a - b"""),
        set(),
        ADD_TESTS,
    ),
    Case("trace_hook", "import sys\nsys.settrace(lambda *a: None)\n" + WRONG_ADD, set(), ADD_TESTS),
    Case(
        "stdio_right_output_bad_exit",
        "print(4)\nimport os\nos._exit(1)",
        set(),
        {"kind": "stdio", "cases": [{"stdin": "", "expected_stdout": "4\n"}]},
    ),
    Case(
        "read_the_tests_from_its_own_memory",
        src("""
        import gc, re, sys
        def tests():
            for obj in gc.get_objects():
                if isinstance(obj, dict) and isinstance(obj.get("test_code"), str):
                    return obj["test_code"]
            frame = sys._getframe()
            while frame is not None:
                for value in frame.f_locals.values():
                    if isinstance(value, dict) and "test_code" in value:
                        return value["test_code"]
                frame = frame.f_back
            return ""
        pattern = r"candidate\\((-?\\d+), (-?\\d+)\\) == (-?\\d+)"
        answers = {(int(a), int(b)): int(c) for a, b, c in re.findall(pattern, tests())}
        def add(a, b): return answers.get((a, b), a - b)"""),
        set(),
        ADD_TESTS,
    ),
    Case(
        "call_returns_object",
        "class A:\n    def __eq__(s, o): return True\ndef f(x):\n    return A()\n",
        set(),
        {"kind": "call", "entry_point": "f", "cases": [{"args": [1], "expected": 2}]},
    ),
]


def test_the_suite_is_big_enough() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_program_is_contained(contained_executor: ContainedExecutor, case: Case) -> None:
    executor = contained_executor
    require_isolation(executor)
    baseline = executor.steady_count()
    body: dict[str, Any] = {"code": case.code, "timeout_s": case.timeout_s}
    if case.memory_mb is not None:
        body["memory_mb"] = case.memory_mb
    if case.tests is None:
        result = httpx.post(f"{executor.url}/v1/run", json=body, timeout=60).json()
        assert result["status"] in case.expect, result
    else:
        result = httpx.post(
            f"{executor.url}/v1/evaluate", json={**body, "tests": case.tests}, timeout=60
        ).json()
        assert result["passed"] is False, result
    if case.check is not None:
        case.check(result)
    assert httpx.get(f"{executor.url}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"{executor.url}/readyz", timeout=5).status_code == 200
    assert executor.settled_count(baseline) == baseline, "the program left processes behind"
    assert not os.path.exists(os.path.join(os.getcwd(), "pwned"))


def test_a_correct_solution_still_passes(contained_executor: ContainedExecutor) -> None:
    """The hostile cases fail for the right reason: the same tests pass an honest solution."""
    result = httpx.post(
        f"{contained_executor.url}/v1/evaluate",
        json={"code": "def add(a, b):\n    return a + b\n", "tests": ADD_TESTS},
        timeout=30,
    ).json()
    assert result["passed"] is True, result


MEMORY_SCAN = src("""
    import ctypes, re
    planted = b"candidate(" + b"7, 8) == 15"  # proves the scan finds what is there
    pattern = re.compile(rb"candidate\\((-?\\d+), (-?\\d+)\\) == (-?\\d+)")
    found = set()
    for line in open("/proc/self/maps"):
        fields = line.split()
        if "r" not in fields[1] or (len(fields) > 5 and fields[5] != "[heap]"):
            continue  # anonymous memory and the heap: where freed objects' bytes stay
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if end - start <= 256 << 20:
            found.update(pattern.findall(ctypes.string_at(start, end - start)))
    print(sorted(found))""")


def test_no_earlier_tests_are_left_in_sandbox_memory(contained_executor: ContainedExecutor) -> None:
    """Sandboxes forked from memory that once held a job's tests would carry their bytes to
    every later sandbox, where a program can read them back (RL resubmits the same problem
    constantly). Sandboxes come from a zygote that never sees a job."""
    require_isolation(contained_executor)
    url = contained_executor.url
    honest = {"code": "def add(a, b):\n    return a + b\n", "tests": ADD_TESTS}
    for _ in range(6):  # every worker has judged these tests (the pool hands jobs round-robin)
        assert httpx.post(f"{url}/v1/evaluate", json=honest, timeout=30).json()["passed"]
    for _ in range(6):
        result = httpx.post(f"{url}/v1/run", json={"code": MEMORY_SCAN}, timeout=60).json()
        assert result["status"] == "ok", result
        assert result["stdout"].strip() == "[(b'7', b'8', b'15')]", result["stdout"]


def test_later_executions_are_judged_afresh(contained_executor: ContainedExecutor) -> None:
    """Judges are long-lived; nothing an earlier job did reaches a later job's verdict: a
    candidate that wrote forged replies everywhere, test code stuck in a loop, test code that
    kills its judge."""
    require_isolation(contained_executor)
    url = contained_executor.url
    forger = next(c for c in CASES if c.name == "forge_replies_on_every_fd")
    stuck = {**ADD_TESTS, "code": "while True: pass\n"}
    exits = {**ADD_TESTS, "code": "import os\nos._exit(0)\n"}

    def evaluate(code: str, tests: dict[str, Any]) -> dict[str, Any]:
        body = {"code": code, "tests": tests, "timeout_s": 2}
        result: dict[str, Any] = httpx.post(f"{url}/v1/evaluate", json=body, timeout=60).json()
        return result

    honest = "def add(a, b):\n    return a + b\n"
    assert evaluate(honest, stuck)["status"] == "timeout"
    assert evaluate(honest, exits)["passed"] is False
    for _ in range(6):  # every worker, round-robin
        assert evaluate(forger.code, ADD_TESTS)["passed"] is False
        assert evaluate(honest, ADD_TESTS)["passed"] is True
        assert evaluate(WRONG_ADD, ADD_TESTS)["passed"] is False
