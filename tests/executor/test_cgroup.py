"""The worker's memory cgroup handle: paths, limits written in a valid order, oom_kill counts.

Files stand in for the cgroup's own (what is written where, and in which order); the real
cgroup is exercised by the hostile memory tests against the contained executor.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from codeprm.services.executor import cgroup
from codeprm.services.executor.cgroup import MemoryCgroup


class Recorder:
    """Files standing in for a cgroup's, known by name."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.names: dict[int, str] = {}

    def open(self, name: str, text: str = "") -> int:
        path = self.tmp_path / name
        path.write_text(text)
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        self.names[fd] = name
        return fd


def test_paths_on_the_host() -> None:
    assert cgroup._on_host("/", "/sys/fs/cgroup/memory", "/a/b") == "/sys/fs/cgroup/memory/a/b"
    # A container's cgroup namespace: the mount's root is where /proc/self/cgroup starts.
    assert cgroup._on_host("/kube/pod1", "/sys/fs/cgroup", "/kube/pod1") == "/sys/fs/cgroup"
    assert cgroup._on_host("/", "/sys/fs/cgroup", "/") == "/sys/fs/cgroup"


def _v1(recorder: Recorder, *, swap: bool) -> MemoryCgroup:
    return MemoryCgroup(
        version=1,
        path="/sys/fs/cgroup/memory/x",
        procs=recorder.open("procs"),
        home=recorder.open("home"),
        limit=recorder.open("limit"),
        swap=recorder.open("swap") if swap else None,
        events=recorder.open("events", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
    )


def test_limits_are_written_in_an_order_v1_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(tmp_path)
    memory = _v1(recorder, swap=True)
    order: list[str] = []
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        order.append(f"{recorder.names[fd]}={data.decode()}")
        return real_write(fd, data + b"\n")

    monkeypatch.setattr(os, "write", write)
    memory.set_limit(512)  # from unlimited: shrink, memory first
    memory.set_limit(512)  # unchanged: nothing written
    memory.set_limit(1024)  # grow: memory+swap first
    memory.set_limit(256)  # shrink: memory first
    monkeypatch.undo()
    assert order == [
        "limit=512",
        "swap=512",
        "swap=1024",
        "limit=1024",
        "limit=256",
        "swap=256",
    ]


def test_oom_kills_are_read_from_events(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path)
    assert _v1(recorder, swap=False).oom_kills() == 3
    v2_events = recorder.open("events2", "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\n")
    memory = MemoryCgroup(2, "/x", 0, 0, 0, None, v2_events)
    assert memory.oom_kills() == 2


def test_stale_cgroups_of_dead_workers_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / f"{cgroup.PREFIX}{2**22 + 12345}"  # above any pid_max: no such process
    alive = tmp_path / f"{cgroup.PREFIX}{os.getpid()}"
    other = tmp_path / "someone-else"
    for directory in (dead, alive, other):
        directory.mkdir()
    cgroup._collect_stale(str(tmp_path))
    assert not dead.exists() and alive.exists() and other.exists()
