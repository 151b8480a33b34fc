"""Thin ctypes wrappers over the Linux calls the sandbox needs (Python 3.11 has no os.unshare).

Every wrapper raises OSError with errno on failure; nothing here decides policy.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

CLONE_PARENT = 0x00008000
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
CAP_LAST_CAP = 40  # kernels up to 6.x; dropping an unknown cap just fails with EINVAL

_SYS_CLONE = 56  # x86-64
_SYS_PIVOT_ROOT = 155
_SYS_CAPSET = 126
_SYS_SECCOMP = 317
_SECCOMP_SET_MODE_FILTER = 1
_SIGCHLD = 17


def _check(result: int) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)))


def fork_into_namespaces(flags: int) -> int:
    """fork(), but the child starts in the new namespaces `flags` asks for.

    For a single-threaded process with no `os.register_at_fork` hooks (the zygote) only: it
    skips CPython's before/after-fork hooks, which have nothing to repair there, and which,
    called through ctypes, would cost every child ~80 extra copy-on-write faults (0.2 ms).
    Returns 0 in the child, the child's pid in the parent.
    """
    pid = _libc.syscall(_SYS_CLONE, ctypes.c_ulong(flags | _SIGCHLD), None, None, None, None)
    return int(_check(pid))


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    _check(
        _libc.mount(
            _bytes(source), _bytes(target), _bytes(fstype), ctypes.c_ulong(flags), _bytes(data)
        )
    )


def _bytes(s: str | None) -> bytes | None:
    return None if s is None else s.encode()


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)))


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(_SYS_PIVOT_ROOT, new_root.encode(), put_old.encode()))


_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def prctl(option: int, arg: int = 0) -> None:
    _check(_prctl(option, arg, 0, 0, 0))


def malloc_trim() -> None:
    """Give the free memory of the C heap back to the kernel (glibc's malloc_trim(0); a libc
    without it has nothing to do here)."""
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(ctypes.c_size_t(0))


def process_name(name: str) -> ctypes.Array[ctypes.c_char]:
    """A name for `set_process_name` (at most 15 bytes), made ahead of the call: in a freshly
    forked process, making it would cost more than the call itself."""
    return ctypes.create_string_buffer(name.encode()[:15])


def set_process_name(name: ctypes.Array[ctypes.c_char]) -> None:
    """The name `ps` and `top` show, so each role can be told apart."""
    prctl(PR_SET_NAME, ctypes.addressof(name))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_bounding_set() -> None:
    """Empty the capability bounding set (inherited across fork): no exec can add one."""
    for cap in range(CAP_LAST_CAP + 1):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError:
            pass  # capabilities this kernel does not know


# Built once, in the worker: each sandbox only makes the call (every ctypes object a freshly
# forked process touches first costs it copy-on-write faults).
_CAP_HEADER = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
_NO_CAPS = (_CapData * 2)()


def clear_capabilities() -> None:
    """Empty the effective, permitted and inheritable sets, for good."""
    _check(_libc.syscall(_SYS_CAPSET, ctypes.byref(_CAP_HEADER), ctypes.byref(_NO_CAPS)))


def write_id_maps(pid: str, inside: int, outside_uid: int, outside_gid: int) -> None:
    """Map one uid and gid into a user namespace (what an unprivileged process may do)."""
    with open(f"/proc/{pid}/setgroups", "w") as f:
        f.write("deny")
    with open(f"/proc/{pid}/uid_map", "w") as f:
        f.write(f"{inside} {outside_uid} 1")
    with open(f"/proc/{pid}/gid_map", "w") as f:
        f.write(f"{inside} {outside_gid} 1")


class SockFprog(ctypes.Structure):
    """struct sock_fprog: a BPF program for `seccomp_set_filter`."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_set_filter(program: SockFprog) -> None:
    """Add a seccomp filter to this thread (inherited by every child; never removable).
    Needs no_new_privs (or CAP_SYS_ADMIN)."""
    _check(
        _libc.syscall(
            _SYS_SECCOMP, _SECCOMP_SET_MODE_FILTER, ctypes.c_ulong(0), ctypes.byref(program)
        )
    )
