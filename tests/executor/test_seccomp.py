"""The seccomp filters: well-formed BPF, and what they refuse, kill and allow.

The behaviour checks install the filters in a forked child of the test process and make the
calls there (the child's own calls, nothing hostile): the parent reads its verdicts.
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable

import pytest

from codeprm.services.executor import linux, seccomp
from codeprm.services.executor.seccomp import Instruction

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="seccomp is Linux's")

_RET, _JMP_CLASS = 0x06, 0x05


def _check_program(program: list[Instruction]) -> None:
    """Every jump lands inside the program, and every path ends in a return."""
    assert len(program) < 4096
    for i, (code, jt, jf, _) in enumerate(program):
        if code & 0x07 == _JMP_CLASS:
            assert i + 1 + max(jt, jf) < len(program), f"jump out of the program at {i}"
    assert program[-1][0] == _RET


def test_the_programs_are_well_formed() -> None:
    _check_program(seccomp.kernel_surface())
    _check_program(seccomp.sandbox_rules())
    _check_program(seccomp.candidate_rules(512 << 20))
    _check_program(seccomp.candidate_rules(1 << 40))
    assert seccomp.CandidateFilter()._slots, "the limit has places to go"


def _in_filtered_child(memory_bytes: int, probe: Callable[[], object]) -> tuple[int, object]:
    """(wait status, what `probe` returned) of a child running under the three filters, as a
    candidate does."""
    r, w = os.pipe()
    memory = seccomp.CandidateFilter()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
            seccomp.Filter(seccomp.kernel_surface()).install()
            seccomp.Filter(seccomp.sandbox_rules()).install()
            memory.install_with_limit(memory_bytes)
            os.write(w, json.dumps(probe()).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    return status, json.loads(out) if out else None


def _errno_of(call: Callable[[], int]) -> int:
    return 0 if call() >= 0 else ctypes.get_errno()


LIBC = ctypes.CDLL(None, use_errno=True)


def _refusals() -> dict[str, int]:
    sigsys = int(signal.SIGSYS)
    calls: dict[str, Callable[[], int]] = {
        "add_key": lambda: LIBC.syscall(248, b"user", b"k", b"v", 1, ctypes.c_long(-4)),
        "keyctl": lambda: LIBC.syscall(250, 0, ctypes.c_long(-3), 1),
        "bpf": lambda: LIBC.syscall(321, 0, None, 0),
        "userfaultfd": lambda: LIBC.syscall(323, 0),
        "io_uring_setup": lambda: LIBC.syscall(425, 1, None),
        "perf_event_open": lambda: LIBC.syscall(298, None, 0, -1, -1, 0),
        "ptrace": lambda: LIBC.syscall(101, 0, 0, 0, 0),
        "unshare_user": lambda: LIBC.syscall(272, linux.CLONE_NEWUSER),
        "unshare_mount": lambda: LIBC.syscall(272, linux.CLONE_NEWNS),
        "mount": lambda: LIBC.syscall(165, b"none", b"/", b"tmpfs", 0, None),
        "kill_sigsys": lambda: LIBC.syscall(62, os.getpid(), sigsys),
        "timer_create": lambda: LIBC.syscall(222, 0, None, ctypes.byref(ctypes.c_int())),
        "fcntl_setsig": lambda: LIBC.syscall(72, 0, 10, sigsys),
        "clone3": lambda: LIBC.syscall(435, None, 0),
        "x32": lambda: LIBC.syscall(0x40000000 | 39),
        "socket_af_alg": lambda: LIBC.syscall(41, 38, 5, 0),
        "socket_af_vsock": lambda: LIBC.syscall(41, 40, 1, 0),
    }
    return {name: _errno_of(call) for name, call in calls.items()}


def test_kernel_surfaces_are_refused() -> None:
    status, refusals = _in_filtered_child(1 << 30, _refusals)
    assert os.WIFEXITED(status), status
    assert isinstance(refusals, dict)
    refused = (errno.EPERM, errno.ENOSYS, errno.EAFNOSUPPORT)
    wrong = {k: v for k, v in refusals.items() if v not in refused}
    assert not wrong, wrong


def _ordinary() -> str:
    # Threads (glibc reserves 128 MiB per arena with PROT_NONE), fork, mmap below the limit.
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(sum(range(1000))))
    thread.start()
    thread.join()
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    _, status = os.waitpid(pid, 0)
    block = mmap.mmap(-1, 32 << 20)
    block[:1] = b"x"
    for family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):
        socket.socket(family).close()
    return f"{done[0]} {os.WEXITSTATUS(status)}"


def test_ordinary_calls_pass() -> None:
    status, out = _in_filtered_child(64 << 20, _ordinary)
    assert os.WIFEXITED(status) and out == "499500 3", (status, out)


@pytest.mark.parametrize("size_mb", [65, 1024, 1 << 20])
def test_a_mapping_beyond_the_limit_is_killed(size_mb: int) -> None:
    status, out = _in_filtered_child(64 << 20, lambda: len(mmap.mmap(-1, size_mb << 20)))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS, (status, out)


def test_a_limit_above_four_gib_is_exact() -> None:
    limit = (4096 + 64) << 20  # the high word matters
    status, out = _in_filtered_child(limit, lambda: len(mmap.mmap(-1, 16 << 20)))
    assert os.WIFEXITED(status) and out == 16 << 20, (status, out)
    status, out = _in_filtered_child(limit, lambda: len(bytearray(limit + (1 << 20))))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS, (status, out)
