"""The sandbox's walls.

Three levels, so that the expensive part is done once per worker and what is left per
execution is as little as possible:

* `isolate_worker` (once, in each worker process): drop to an unprivileged uid, enter a new user
  and mount namespace, and pivot into a minimal read-only root holding only the system
  libraries, the Python installation and a few device nodes. No /home, /root, /run, /var, /sys,
  no service files, no sockets of other services.
  It also gets an empty network namespace of its own.
* `prepare_sandboxes` (once, in the zygote that forks sandboxes): empty the capability
  bounding set, and set no_new_privs and non-dumpable, which every sandbox inherits. The
  zygote then makes the candidates' pid, mount, IPC and UTS namespaces (hostname `sandbox`)
  and, once its privileged set-up is over, drops every capability itself
  (`linux.clear_capabilities`): candidates are born with none.
* Per execution: a fresh size-capped tmpfs at the candidates' /tmp (`renew_scratch`, by the
  reaper of their pid namespace, before each candidate is forked). A judge, long-lived, makes
  its own namespaces and scratch once (`enter_judge_sandbox`).

The user, network, pid, mount, IPC and UTS namespaces of candidates are per worker rather than
per execution (creating and destroying them is most of the cost of a sandbox). A worker runs
one execution at a time, every process of an execution is dead before the next one starts,
and what a namespace could carry from one to the next is reset or refused: the pid counter
(`zygote` resets it), the scratch (a new tmpfs each time, with its own inode numbers), the
hostname (no capability to change it, and seccomp), SysV IPC and POSIX message queues
(refused by seccomp: their objects and id counters would outlive the execution). Every
candidate's uid is the worker namespace's 0, which is the host's `nobody` (or the service's own
uid when that is not root).
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field

from codeprm.services.executor import linux
from codeprm.services.executor.linux import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
)

NOBODY = 65534
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
_ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/mime.types",
)
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_STATVFS_TO_MS = {
    os.ST_RDONLY: MS_RDONLY,
    os.ST_NOSUID: MS_NOSUID,
    os.ST_NODEV: MS_NODEV,
    os.ST_NOEXEC: MS_NOEXEC,
}


@dataclass
class RootSpec:
    """What the sandbox's read-only root contains besides the system directories."""

    extra_paths: list[str] = field(default_factory=list)
    python_prefixes: list[str] = field(
        default_factory=lambda: sorted({sys.base_prefix, sys.base_exec_prefix})
    )


def isolate_worker(spec: RootSpec) -> str:
    """Confine the calling (single-threaded) worker. Returns the host dir used as its root."""
    # Not tempfile.mkdtemp: tempfile imports random, whose fork hook (a reseed) would cost
    # every sandbox forked from this process.
    host_dir = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"codeprm-root-{os.urandom(8).hex()}")
    os.mkdir(host_dir, 0o700)
    if os.geteuid() == 0:
        # Build the root while we can still read everything (the Python installation may live
        # under /root), then never let sandboxed code act as the host's root.
        linux.unshare(linux.CLONE_NEWNS)
        _build_root(host_dir, spec)
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        # Changing uid made us non-dumpable, which leaves /proc/self owned by root and our own
        # uid_map unwritable. Nothing outside this pid namespace can reach us anyway.
        linux.prctl(linux.PR_SET_DUMPABLE, 1)
        _enter_user_namespace()
    else:
        _enter_user_namespace()
        _build_root(host_dir, spec)
    # pivot_root refuses a new root that is locked (copied from a more privileged mount
    # namespace); a bind of it made here, in our own namespace, is not.
    linux.mount(host_dir, host_dir, None, MS_BIND | MS_REC)
    linux.pivot_root(host_dir, f"{host_dir}/.old")
    os.chdir("/")
    linux.umount("/.old", MNT_DETACH)  # the empty /.old mountpoint stays, unreadable
    linux.mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return host_dir


def _enter_user_namespace() -> None:
    uid, gid = os.geteuid(), os.getegid()
    linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNS)
    linux.write_id_maps("self", 0, uid, gid)


def _build_root(host_dir: str, spec: RootSpec) -> None:
    linux.mount(None, "/", None, MS_REC | MS_PRIVATE)
    linux.mount("tmpfs", host_dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    _populate_root(host_dir, spec)
    os.mkdir(f"{host_dir}/.old", mode=0)


def _populate_root(root: str, spec: RootSpec) -> None:
    for path in (*_SYSTEM_DIRS, *spec.python_prefixes, *spec.extra_paths):
        if os.path.islink(path):
            _mkdirs(root, os.path.dirname(path))
            if not os.path.lexists(root + path):
                os.symlink(os.readlink(path), root + path)
        elif os.path.isdir(path) and not os.path.ismount(root + path):
            _bind_readonly(path, root + path, is_dir=True)
    for path in (*_ETC_FILES, *_DEVICES):
        if os.path.exists(path):
            _bind_readonly(path, root + path, is_dir=False, devices=path.startswith("/dev/"))
    _mkdirs(root, "/tmp")
    # A visible host /proc lets each sandbox mount its own procfs over it (the kernel refuses
    # a new procfs in a user namespace that has none); every sandbox covers it at once.
    _mkdirs(root, "/proc")
    linux.mount("/proc", root + "/proc", None, MS_BIND | MS_REC)


def _mkdirs(root: str, path: str) -> None:
    os.makedirs(root + path, mode=0o755, exist_ok=True)


def _bind_readonly(source: str, target: str, *, is_dir: bool, devices: bool = False) -> None:
    if is_dir:
        _mkdirs("", target)
    else:
        _mkdirs("", os.path.dirname(target))
        with open(target, "w"):
            pass
    linux.mount(source, target, None, MS_BIND | MS_REC)
    # A remount may only add restrictions to flags the host mount already has (they are locked).
    existing = os.statvfs(source).f_flag
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
    flags |= sum(ms for st, ms in _STATVFS_TO_MS.items() if existing & st)
    if not devices:
        flags |= MS_NODEV
    linux.mount(None, target, None, flags)


def prepare_sandboxes() -> None:
    """Called once in the zygote: what every sandbox it forks inherits."""
    linux.drop_bounding_set()  # no sandbox can ever regain a capability
    # Non-dumpable: code running as the same uid in a sandbox cannot ptrace its sandbox's
    # first process or open its /proc/<pid>/fd and /proc/<pid>/mem.
    linux.prctl(linux.PR_SET_DUMPABLE, 0)
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)


def mount_proc() -> None:
    """A procfs of the caller's pid namespace over /proc (of its mount namespace)."""
    linux.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def mount_scratch(scratch_mb: int) -> None:
    """A fresh, empty tmpfs at /tmp, the only writable place in a sandbox."""
    linux.mount(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        f"size={scratch_mb}m,nr_inodes=4096,mode=1777",
    )


def renew_scratch(scratch_mb: int) -> None:
    """Replace the /tmp the previous execution used by a fresh one (nothing of it is left:
    its files, timestamps and its inode counter go with the detached tmpfs)."""
    linux.umount("/tmp", MNT_DETACH)
    mount_scratch(scratch_mb)


def enter_judge_sandbox(scratch_mb: int) -> None:
    """Called in a judge just cloned into new pid, mount, IPC and UTS namespaces: that pid
    namespace's /proc, a scratch /tmp, then no capability, so nothing it runs can ever regain
    one."""
    mount_proc()
    mount_scratch(scratch_mb)
    os.chdir("/tmp")
    socket.sethostname("sandbox")
    linux.clear_capabilities()  # last: the mounts above needed CAP_SYS_ADMIN
