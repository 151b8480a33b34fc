"""Nothing of an execution's kernel-side state reaches the next execution or a concurrent one,
and the kernel surfaces a test program has no use for are refused (seccomp), over real HTTP
against the contained executor.

Each channel is a pair of programs: `store` leaves something behind (or reports that the
kernel refused it), `probe` looks for it. The probe runs on every worker after the store has
ended, and on other workers while the store is still running.
"""

from __future__ import annotations

import textwrap
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.contained import ContainedExecutor, require_isolation

pytestmark = pytest.mark.slow

TOKEN = uuid.uuid4().hex
WORKERS = 3  # tests/contained.py starts the executor with three


def src(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


LIBC = "import ctypes, os, sys, time\nlibc = ctypes.CDLL(None, use_errno=True)\n"


@dataclass
class Channel:
    name: str
    store: str  # prints "stored" or "refused"
    probe: str  # prints "absent" or what it found
    refused: bool = False  # the kernel must refuse the store outright


CHANNELS = [
    Channel(
        "keyring_user_and_session",
        LIBC
        + src(f"""
        token = b"{TOKEN}"
        ok = []
        for ring in (-2, -3, -4, -5):  # process, session, user, user-session keyrings
            key = libc.syscall(248, b"user", b"codeprm-probe", token, len(token),
                               ctypes.c_long(ring))
            ok.append(key >= 0)
        print("stored" if any(ok) else "refused", flush=True)
        """),
        LIBC
        + src("""
        found = []
        for ring in (-2, -3, -4, -5):  # KEYCTL_SEARCH
            key = libc.syscall(250, 10, ctypes.c_long(ring), b"user", b"codeprm-probe", 0)
            if key >= 0:
                found.append(ring)
        print("absent" if not found else f"found {found}")
        """),
        refused=True,
    ),
    Channel(
        "keyring_named_session",
        LIBC
        + src(f"""
        ring = libc.syscall(250, 1, b"codeprm-shared")  # KEYCTL_JOIN_SESSION_KEYRING
        key = libc.syscall(248, b"user", b"k", b"{TOKEN}", 32, ctypes.c_long(-3))
        print("stored" if ring >= 0 or key >= 0 else "refused", flush=True)
        """),
        LIBC
        + src("""
        ring = libc.syscall(250, 1, b"codeprm-shared")
        buf = ctypes.create_string_buffer(4096)
        size = libc.syscall(250, 11, ctypes.c_long(ring), buf, 4096) if ring >= 0 else -1
        print("absent" if size <= 0 else f"found {buf.raw[:size]!r}")
        """),
        refused=True,
    ),
    Channel(
        "keyring_request_key",
        LIBC
        + src("""
        key = libc.syscall(249, b"user", b"codeprm-probe", b"callout", ctypes.c_long(-4))
        print("stored" if key >= 0 else "refused", flush=True)
        """),
        LIBC
        + src("""
        key = libc.syscall(249, b"user", b"codeprm-probe", None, ctypes.c_long(-4))
        print("absent" if key < 0 else "found")
        """),
        refused=True,
    ),
    Channel(
        "sysv_shared_memory",
        LIBC
        + src(f"""
        libc.shmat.restype = ctypes.c_void_p
        shmid = libc.shmget(0x5EED, 4096, 0o1666)
        if shmid >= 0:
            ctypes.memmove(libc.shmat(shmid, None, 0), b"{TOKEN}", 32)
        print("stored" if shmid >= 0 else "refused", flush=True)
        """),
        LIBC
        + src("""
        libc.shmat.restype = ctypes.c_void_p
        shmid = libc.shmget(0x5EED, 0, 0)
        print("absent" if shmid < 0 else f"found {ctypes.string_at(libc.shmat(shmid, None, 0), 32)!r}")
        """),  # noqa: E501
        refused=True,
    ),
    Channel(
        "sysv_message_queue",
        LIBC
        + src(f"""
        queue = libc.msgget(0x5EEE, 0o1666)
        message = ctypes.create_string_buffer(8 + 32)
        ctypes.memmove(ctypes.addressof(message), (1).to_bytes(8, "little") + b"{TOKEN}", 40)
        sent = queue >= 0 and libc.msgsnd(queue, message, 32, 0) == 0
        print("stored" if sent else "refused", flush=True)
        """),
        LIBC
        + src("""
        queue = libc.msgget(0x5EEE, 0)
        print("absent" if queue < 0 else "found")
        """),
        refused=True,
    ),
    Channel(
        "sysv_semaphore",
        LIBC
        + src("""
        sem = libc.semget(0x5EEF, 1, 0o1666)
        print("stored" if sem >= 0 and libc.semctl(sem, 0, 16, 42) == 0 else "refused", flush=True)
        """),
        LIBC
        + src("""
        sem = libc.semget(0x5EEF, 0, 0)
        print("absent" if sem < 0 else f"found {libc.semctl(sem, 0, 12)}")
        """),
        refused=True,
    ),
    Channel(
        "posix_shared_memory",
        LIBC
        + src(f"""
        from multiprocessing import shared_memory
        try:
            block = shared_memory.SharedMemory("codeprm-probe", create=True, size=64)
            block.buf[:32] = b"{TOKEN}"
            print("stored", flush=True)
        except OSError:
            print("refused", flush=True)
        """),
        LIBC
        + src("""
        from multiprocessing import shared_memory
        try:
            print("found", bytes(shared_memory.SharedMemory("codeprm-probe").buf[:32]))
        except OSError:
            print("absent")
        """),
    ),
    Channel(
        "posix_message_queue",
        LIBC
        + src("""
        rt = ctypes.CDLL("librt.so.1", use_errno=True)
        queue = rt.mq_open(b"/codeprm-probe", os.O_CREAT | os.O_RDWR, 0o600, None)
        print("stored" if queue >= 0 else "refused", flush=True)
        """),
        LIBC
        + src("""
        rt = ctypes.CDLL("librt.so.1", use_errno=True)
        print("absent" if rt.mq_open(b"/codeprm-probe", os.O_RDONLY) < 0 else "found")
        """),
        refused=True,
    ),
    Channel(
        "abstract_socket_held_by_a_daemon",
        LIBC
        + src(f"""
        import socket
        ready_r, ready_w = os.pipe()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                server = socket.socket(socket.AF_UNIX)
                server.bind(b"\\0codeprm-probe")
                server.listen()
                os.write(ready_w, b"x")
                while True:
                    connection, _ = server.accept()
                    connection.sendall(b"{TOKEN}")
                    connection.close()
            os._exit(0)
        os.read(ready_r, 1)
        print("stored", flush=True)
        """),
        LIBC
        + src("""
        import socket
        client = socket.socket(socket.AF_UNIX)
        try:
            client.connect(b"\\0codeprm-probe")
            print("found", client.recv(64))
        except OSError:
            print("absent")
        """),
    ),
    Channel(
        "files",
        LIBC
        + src(f"""
        stored = []
        for path in ("/tmp/codeprm-probe", "/var/tmp/codeprm-probe", "/dev/shm/codeprm-probe",
                     "/codeprm-probe", "/proc/codeprm-probe", "/dev/codeprm-probe"):
            try:
                with open(path, "w") as f:
                    f.write("{TOKEN}")
                stored.append(path)
            except OSError:
                pass
        print("stored" if stored else "refused", flush=True)
        """),
        LIBC
        + src(f"""
        found = [p for p in ("/tmp/codeprm-probe", "/var/tmp/codeprm-probe",
                             "/dev/shm/codeprm-probe", "/codeprm-probe",
                             "/proc/codeprm-probe", "/dev/codeprm-probe") if os.path.exists(p)]
        for name in os.listdir("/tmp"):
            with open(os.path.join("/tmp", name), errors="replace") as f:
                if "{TOKEN}" in f.read():
                    found.append(name)
        print("absent" if not found else f"found {{found}}")
        """),
    ),
    Channel(
        "tmpfs_inode_counter",  # a /tmp that lived on would number the next file after them
        LIBC
        + src("""
        for i in range(300):
            open(f"/tmp/f{i}", "w").close()
            os.unlink(f"/tmp/f{i}")
        print("stored", flush=True)
        """),
        LIBC
        + src("""
        with open("/tmp/probe", "w") as f:
            ino = os.fstat(f.fileno()).st_ino
        print("absent" if ino < os.stat("/tmp").st_ino + 10 else f"found inode {ino}")
        """),
    ),
    Channel(
        "daemon_process",
        LIBC
        + src("""
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(1000)
            os._exit(0)
        os.wait()
        print("stored", flush=True)
        """),
        LIBC
        + src("""
        others = {int(p) for p in os.listdir("/proc") if p.isdigit()} - {1, os.getpid()}
        print("absent" if not others else f"found {sorted(others)}")
        """),
    ),
    Channel(
        "pid_counter",  # the next candidate's pid would tell how many processes were made
        LIBC
        + src("""
        for _ in range(37):
            if os.fork() == 0:
                os._exit(0)
            os.wait()
        print("stored", flush=True)
        """),
        LIBC + 'print("absent" if os.getpid() == 2 else f"found pid {os.getpid()}")\n',
    ),
    Channel(
        "clone_parent",  # a process made as its worker's child, outside the candidate's tree
        LIBC
        + src("""
        pid = libc.syscall(56, 0x00008000 | 17, 0, 0, 0, 0)  # clone(CLONE_PARENT | SIGCHLD)
        if pid == 0:
            time.sleep(1000)
            os._exit(0)
        print("stored" if pid > 0 else "refused", flush=True)
        """),
        LIBC
        + src("""
        child = os.fork()
        if child == 0:
            os._exit(0)
        os.wait()
        mine = (os.getpid(), child)
        print("absent" if mine == (2, 3) else f"found pids {mine}")
        """),
        refused=True,
    ),
    Channel(
        "hostname",
        LIBC
        + src("""
        import socket
        try:
            socket.sethostname("codeprm-probe")
            print("stored", flush=True)
        except OSError:
            print("refused", flush=True)
        """),
        LIBC
        + src("""
        import socket
        name = socket.gethostname()
        print("absent" if name == "sandbox" else f"found {name}")
        """),
        refused=True,
    ),
]


def run(executor: ContainedExecutor, code: str, **extra: Any) -> dict[str, Any]:
    body = {"code": code, "timeout_s": 10, **extra}
    response = httpx.post(f"{executor.url}/v1/run", json=body, timeout=60)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_the_suite_covers_each_channel() -> None:
    assert len(CHANNELS) >= 12


@pytest.mark.parametrize("channel", CHANNELS, ids=[c.name for c in CHANNELS])
def test_nothing_reaches_the_next_execution(
    contained_executor: ContainedExecutor, channel: Channel
) -> None:
    require_isolation(contained_executor)
    stored = run(contained_executor, channel.store)
    assert stored["status"] == "ok", stored
    assert stored["stdout"].strip() in {"stored", "refused"}, stored
    if channel.refused:
        assert stored["stdout"].strip() == "refused", stored
    for _ in range(2 * WORKERS):  # every worker, whichever ran the store
        probe = run(contained_executor, channel.probe)
        assert (probe["status"], probe["stdout"].strip()) == ("ok", "absent"), probe


@pytest.mark.parametrize("channel", CHANNELS, ids=[c.name for c in CHANNELS])
def test_nothing_reaches_a_concurrent_execution(
    contained_executor: ContainedExecutor, channel: Channel
) -> None:
    require_isolation(contained_executor)
    stores: list[dict[str, Any]] = []
    lingering = channel.store + "time.sleep(3)\n"
    store = threading.Thread(target=lambda: stores.append(run(contained_executor, lingering)))
    store.start()
    time.sleep(1.0)  # the store has run its part and lingers on its worker
    probes = [run(contained_executor, channel.probe) for _ in range(WORKERS - 1)]
    store.join()
    assert stores and stores[0]["stdout"].strip() in {"stored", "refused"}, stores
    for probe in probes:
        assert (probe["status"], probe["stdout"].strip()) == ("ok", "absent"), probe


SURFACES = {  # system call: arguments that would succeed for an unfiltered, unprivileged process
    "bpf": "321, 0, None, 0",  # BPF_MAP_CREATE with no attributes: EINVAL if it got that far
    "perf_event_open": "298, None, 0, -1, -1, 0",
    "userfaultfd": "323, 0",
    "io_uring_setup": "425, 4, ctypes.create_string_buffer(120)",
    "keyctl_get_keyring_id": "250, 0, ctypes.c_long(-3), 1",
    "add_key": "248, b'user', b'x', b'y', 1, ctypes.c_long(-4)",
    "unshare_user_namespace": "272, 0x10000000",
    "clone_user_namespace": "56, 0x10000000 | 17, 0, 0, 0, 0",
    "unshare_mount_namespace": "272, 0x00020000",
    "mount_tmpfs": "165, b'none', b'/tmp', b'tmpfs', 0, None",
    "umount_proc": "166, b'/proc', 2",
    "ptrace_traceme": "101, 0, 0, 0, 0",
    "process_vm_readv": "310, 1, None, 0, None, 0, 0",
    "kcmp": "312, 1, os.getpid(), 0, 0, 0",
    "pidfd_getfd": "438, 0, 0, 0",
    "setns": "308, 0, 0",
    "io_setup": "206, 1, ctypes.byref(ctypes.c_ulong(0))",
    "personality": "135, 0x0040000",
    "kill_self_with_sigsys": "62, os.getpid(), 31",
    "tgkill_self_with_sigsys": "234, os.getpid(), os.getpid(), 31",
    "timer_create": "222, 0, None, ctypes.byref(ctypes.c_int(0))",
    "fcntl_setsig": "72, 1, 10, 31",
    "pdeathsig_sigsys": "157, 1, 31, 0, 0, 0",
    "clone_exit_signal_sigsys": "56, 31, 0, 0, 0, 0",
    "clone3": "435, None, 0",
    "prlimit_of_the_reaper": "302, 1, 7, None, ctypes.byref((ctypes.c_ulong * 2)())",
    "sethostname": "170, b'x', 1",
    "chroot": "161, b'/tmp'",
    "syslog": "103, 3, ctypes.create_string_buffer(64), 64",
    "i386_abi_getpid_via_x32_bit": "0x40000000 | 39",
    "socket_af_alg": "41, 38, 5, 0",
    "socket_af_vsock": "41, 40, 1, 0",
    "socket_af_tipc": "41, 30, 2, 0",
    "shmget": "29, 0, 4096, 0o1600",
    "semget": "64, 0, 1, 0o1600",
    "msgget": "68, 0, 0o1600",
    "mq_open": "240, b'codeprm-probe', os.O_CREAT | os.O_RDWR, 0o600, None",
    "clone_parent": "56, 0x00008000 | 17, 0, 0, 0, 0",
}


@pytest.mark.parametrize("call", list(SURFACES), ids=list(SURFACES))
def test_kernel_surfaces_are_refused(contained_executor: ContainedExecutor, call: str) -> None:
    """Each call fails with EPERM or ENOSYS (seccomp), never succeeds, never kills."""
    require_isolation(contained_executor)
    code = LIBC + f"r = libc.syscall({SURFACES[call]})\nprint(r, ctypes.get_errno())\n"
    result = run(contained_executor, code)
    assert result["status"] == "ok", result
    value, error = map(int, result["stdout"].split())
    assert value == -1 and error in {1, 38, 97}, result  # EPERM, ENOSYS, EAFNOSUPPORT


def test_ordinary_programs_still_work(contained_executor: ContainedExecutor) -> None:
    """What Python programs do: threads, processes, pipes, sockets in the sandbox, mmap, time."""
    code = src("""
        import mmap, os, signal, socket, subprocess, threading, time
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(abs, [-1, -2])) == [1, 2]
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        assert os.waitpid(pid, 0)[1] == 7 << 8
        assert subprocess.run(["true"]).returncode == 0
        a, b = socket.socketpair()
        a.sendall(b"x"); assert b.recv(1) == b"x"
        m = mmap.mmap(-1, 1 << 20); m[:1] = b"y"
        fd = os.memfd_create("scratch"); os.write(fd, b"z" * 4096)
        signal.signal(signal.SIGALRM, lambda *a: None); signal.setitimer(signal.ITIMER_REAL, 0.01)
        time.sleep(0.05)
        print("fine")
    """)
    result = run(contained_executor, code)
    assert (result["status"], result["stdout"].strip()) == ("ok", "fine"), result
