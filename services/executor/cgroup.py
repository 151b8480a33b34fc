"""A worker's memory cgroup: the first memory wall of all its sandboxes (v1 or v2).

RLIMIT_AS counts one process's address space, and nothing of a tmpfs, a memfd or shared
memory. A memory cgroup counts every page a sandbox's processes own, whatever holds it
(anonymous memory, shmem, memfd, tmpfs, page tables), and when they pass its limit the
kernel kills one of them and counts an `oom_kill` event: a fact the program cannot forge.

One cgroup per worker, reused by every execution of the worker (they run one at a time). Its
zygote joins it once, so every sandbox is forked into it (no migration per execution); the
zygote and the reaper stay at their oom_score_adj while each candidate is forked with 1000
(the zygote raises its own for the fork only), so the kernel always picks a candidate's
process. Judges go back to the worker's own cgroup.

Made while the worker is still root (before `jail.isolate_worker` drops privileges) and used
through file descriptors opened then: the worker's root has no /sys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PREFIX = "codeprm-sandbox-"
_ROOT_MOUNTS = "/proc/self/mountinfo"


@dataclass
class MemoryCgroup:
    version: int
    path: str  # on the host, for logs
    procs: int  # its cgroup.procs, to join
    home: int  # the worker's own cgroup.procs, for judges
    limit: int  # memory.limit_in_bytes (v1) | memory.max (v2)
    swap: int | None  # memory.memsw.limit_in_bytes (v1) | memory.swap.max (v2)
    events: int  # memory.oom_control (v1) | memory.events (v2): both have "oom_kill N"
    limit_bytes: int = -1

    def join(self) -> None:
        """Move the calling process in (the zygote, once)."""
        os.write(self.procs, b"0")

    def leave(self) -> None:
        """Move the calling process back to the worker's cgroup (a judge)."""
        os.write(self.home, b"0")

    def set_limit(self, limit_bytes: int) -> None:
        """The limit for the next execution; written only when it changes."""
        if limit_bytes == self.limit_bytes:
            return
        if self.version == 1 and self.swap is not None:
            # v1 insists on memory <= memory+swap at every step: order the two writes.
            growing = 0 <= self.limit_bytes < limit_bytes  # at first both are unlimited
            first, second = (self.swap, self.limit) if growing else (self.limit, self.swap)
            os.write(first, str(limit_bytes).encode())
            os.write(second, str(limit_bytes).encode())
        else:
            os.write(self.limit, str(limit_bytes).encode())
        self.limit_bytes = limit_bytes

    def oom_kills(self) -> int:
        """How many processes the kernel has killed in this cgroup for want of memory."""
        for line in os.pread(self.events, 4096, 0).decode().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0


def create() -> MemoryCgroup | None:
    """A fresh memory cgroup for this worker under the service's own, or None where the
    controller is absent or not writable (rlimits are then the only memory wall)."""
    try:
        found = _own_memory_cgroup()
    except (OSError, ValueError):
        return None
    if found is None:
        return None
    version, base = found
    try:
        _collect_stale(base)
        path = os.path.join(base, f"{PREFIX}{os.getpid()}")
        if version == 2:
            home = _delegate_v2(base)
            os.mkdir(path)
            swap = _open(path, "memory.swap.max", os.O_WRONLY, optional=True)
            if swap is not None:
                os.write(swap, b"0")  # the limit is on memory, not memory that can wait on disk
            return MemoryCgroup(
                2,
                path,
                _open(path, "cgroup.procs", os.O_WRONLY),
                home,
                _open(path, "memory.max", os.O_WRONLY),
                swap,
                _open(path, "memory.events", os.O_RDONLY),
            )
        os.mkdir(path)
        return MemoryCgroup(
            1,
            path,
            _open(path, "cgroup.procs", os.O_WRONLY),
            _open(base, "cgroup.procs", os.O_WRONLY),
            _open(path, "memory.limit_in_bytes", os.O_WRONLY),
            _open(path, "memory.memsw.limit_in_bytes", os.O_WRONLY, optional=True),
            _open(path, "memory.oom_control", os.O_RDONLY),
        )
    except (OSError, ValueError, StopIteration):  # unwritable, or a layout we do not know
        return None


def _open(directory: str, name: str, flags: int, *, optional: bool = False) -> int:
    try:
        return os.open(os.path.join(directory, name), flags | os.O_CLOEXEC)
    except FileNotFoundError:
        if optional:
            return None  # type: ignore[return-value]
        raise


def _own_memory_cgroup() -> tuple[int, str] | None:
    """(version, directory on this host) of the cgroup this process's memory is charged to."""
    mounts: dict[str, tuple[str, str]] = {}  # "1" (memory controller) | "2": (root, mountpoint)
    with open(_ROOT_MOUNTS) as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            options = fields[-1].split(",")
            if fstype == "cgroup" and "memory" in options:
                mounts["1"] = (fields[3], fields[4])
            elif fstype == "cgroup2":
                mounts.setdefault("2", (fields[3], fields[4]))
    with open("/proc/self/cgroup") as f:
        for line in f:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            if "memory" in controllers.split(",") and "1" in mounts:
                return 1, _on_host(*mounts["1"], path)
            if hierarchy == "0" and "2" in mounts:
                directory = _on_host(*mounts["2"], path)
                if _has_memory_controller(directory):
                    return 2, directory
    return None


def _on_host(root: str, mountpoint: str, path: str) -> str:
    relative = path[len(root) :] if path.startswith(root) else path
    return os.path.normpath(mountpoint + "/" + relative.lstrip("/"))


def _has_memory_controller(directory: str) -> bool:
    try:
        with open(os.path.join(directory, "cgroup.controllers")) as f:
            return "memory" in f.read().split()
    except OSError:
        return False


def _delegate_v2(base: str) -> int:
    """Enable the memory controller for base's children; cgroup v2 allows that only while
    base holds no process, so the service's processes move to a leaf first. Returns the
    cgroup.procs of the cgroup this worker now lives in (its judges' home)."""
    control = os.path.join(base, "cgroup.subtree_control")
    with open(control) as f:
        enabled = "memory" in f.read().split()
    leaf = os.path.join(base, "codeprm-service")
    if not enabled:
        os.makedirs(leaf, exist_ok=True)
        for _ in range(100):  # processes may fork while we move them
            with open(os.path.join(base, "cgroup.procs")) as f:
                pids = f.read().split()
            if not pids:
                break
            for pid in pids:
                try:
                    with open(os.path.join(leaf, "cgroup.procs"), "w") as f:
                        f.write(pid)
                except OSError:
                    pass  # exited meanwhile
        with open(control, "w") as f:
            f.write("+memory")
    with open("/proc/self/cgroup") as f:
        own = next(line for line in f if line.startswith("0::")).rstrip("\n").split(":", 2)[2]
    here = leaf if own.endswith("/codeprm-service") else base
    return _open(here, "cgroup.procs", os.O_WRONLY)


def _collect_stale(base: str) -> None:
    """Remove the cgroups of workers that are gone (a cgroup with a process refuses)."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        # Only a dead worker's: a live one may not have moved its zygote in yet.
        if name.startswith(PREFIX) and not os.path.exists(f"/proc/{name[len(PREFIX) :]}"):
            try:
                os.rmdir(os.path.join(base, name))
            except OSError:
                pass
