"""The sandbox factory: a small process that forks every sandbox of its worker.

A worker starts its zygote once, before it reads any job, and never forks again. So no
sandbox is ever forked from memory that has held another job's program or tests, and the
worker's own work (reading jobs, supervising them) causes no copy-on-write faults in it or
in the sandboxes. The zygote only ever receives one-byte orders; each answer is the new
sandbox's pid and the worker's ends of its pipes, passed as SCM_RIGHTS. Sandboxes are cloned
with CLONE_PARENT, so they are the worker's children: the worker reaps them, gets their
resource usage, sets their limits (`runner.Limits.apply_to`) and kills them without racing a
reused pid.

Every candidate of a worker lives in one pid, mount, IPC and UTS namespace made by its zygote,
whose first process is a reaper (`_reaper_main`): it is that pid namespace's init, so the
candidate is an ordinary process with the signal semantics of any program
(`os.kill(os.getpid(), SIGKILL)`, an alarm, `raise_signal(SIGTERM)` end it), and it is still
the worker's child (CLONE_PARENT), so the worker gets its exact wait status and resource usage.
When a candidate is gone the worker asks the reaper to sweep: kill(-1) from a namespace's init
kills every other process in it, so nothing an execution started outlives it; the namespace's
pid counter is reset, so every candidate is pid 2; and /tmp is replaced by a fresh tmpfs. The
next candidate is forked only after that. If the worker dies, the zygote and then the reaper
die with it (PDEATHSIG), and the kernel kills every process of the reaper's namespace.

Two kinds of sandbox:

* candidate, one per execution, a plain fork into the namespaces above: reads its program from
  a pipe, then becomes that program (`runner.run_program`) or, for assert and call tests,
  answers the judge's calls (`runner.serve_candidate`). The first byte it writes to stdout,
  `STARTED`, says that its set-up is over and the program's own code begins: a failure
  before it is the sandbox's (`sandbox_error`), anything after is the program's.
* judge, long-lived, one per worker, in pid, mount, IPC and UTS namespaces of its own: runs
  the trusted test code of each judged execution against the candidate it is handed pipes to
  (`runner.serve_judge`). It lives on so that a judged execution costs one fork, not two; it
  never shares a namespace with a candidate.

Everything a candidate can inherit is set up once, in the zygote, before the first fork: the
seccomp filters (`seccomp.kernel_surface`, then `seccomp.sandbox_rules` once the zygote's own
privileged set-up is over), the memory cgroup (`cgroup`), no capabilities at all, the
standard streams. A forked child pays a copy-on-write fault for every page it writes, so
what is left per candidate runs in as little Python as possible; its limits are set from
outside, by the worker, and the only filter it installs itself is the few instructions that
hold its job's memory limit and refuse CLONE_PARENT (`seccomp.CandidateFilter`).
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import traceback
from dataclasses import dataclass
from typing import NoReturn

from codeprm.services.executor import jail, linux, runner, seccomp, wire
from codeprm.services.executor.cgroup import MemoryCgroup

SANDBOX_FAILURE = 70  # exit code of a sandbox whose set-up failed (EX_SOFTWARE)
STARTED = b"\x00"  # a candidate's first byte on stdout: its set-up is over
# A judge's, made when it is forked; the candidates' are made once, by their zygote.
SANDBOX_NAMESPACES = (
    linux.CLONE_NEWNS | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS | linux.CLONE_NEWPID
)
_CANDIDATE, _JUDGE = b"c", b"j"
_SWEEP, _SWEPT = b"s", b"k"
_PID = 4  # bytes of the pid in an answer
_ROLES = ("zygote", "sandbox", "judge", "judges", "reaper")
_NAMES = {role: linux.process_name(f"codeprm-{role}") for role in _ROLES}
_OOM_FIRST = b"1000"  # a candidate's oom_score_adj: the kernel's first choice in the cgroup
_WALL = 0x40000000  # waitpid's __WALL


class ZygoteFailed(RuntimeError):
    """The zygote is gone or could not fork: the worker cannot run anything any more."""


@dataclass
class CandidateSandbox:
    """The worker's ends of a candidate's pipes."""

    pid: int
    job_w: int
    stdin_w: int
    stdout_r: int
    stderr_r: int
    requests_w: int  # these two go to the judge, for judged executions
    replies_r: int


@dataclass
class JudgeSandbox:
    pid: int
    channel: socket.socket  # jobs and candidate pipes in, report frames out
    jobs: int = 0


@dataclass
class SandboxConfig:
    isolated: bool
    scratch_mb: int
    judge_memory_mb: int
    # The judge's CPU; a judged candidate moves there too, so that the two hand calls to each
    # other on one core instead of waking one another across cores.
    cpu: int | None = None
    cgroup: MemoryCgroup | None = None


class Zygote:
    """The worker's handle on its zygote."""

    def __init__(self, pid: int, control: socket.socket, reaper: socket.socket | None) -> None:
        self.pid = pid
        self.control = control
        self.reaper = reaper  # None without namespaces (weak isolation)
        self._ordered = False
        self._sweeping = False

    @classmethod
    def start(cls, config: SandboxConfig) -> Zygote:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        reaper_ours, reaper_theirs = (
            socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            if config.isolated
            else (None, None)
        )
        worker_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            ours.close()
            if reaper_ours is not None:
                reaper_ours.close()
            _serve(theirs, reaper_theirs, config, worker_pid)
        theirs.close()
        if reaper_theirs is not None:
            reaper_theirs.close()
        return cls(pid, ours, reaper_ours)

    def sweep(self) -> None:
        """Have the reaper kill every process left in the candidates' pid namespace. Call it
        once the candidate is dead; it runs while the worker finishes the result, and the
        next candidate is forked only once it is over (`order_candidate` waits for it)."""
        if self.reaper is not None and not self._sweeping:
            try:
                self.reaper.send(_SWEEP)
            except OSError as exc:
                raise ZygoteFailed("the sandboxes' reaper is gone") from exc
            self._sweeping = True

    def _swept(self) -> None:
        if self._sweeping:
            assert self.reaper is not None
            self._sweeping = False
            try:
                answer = self.reaper.recv(1)
            except OSError:
                answer = b""
            if answer != _SWEPT:
                raise ZygoteFailed("the sandboxes' reaper is gone")

    def order_candidate(self) -> None:
        """Have the next candidate forked now, while the worker does something else."""
        self._swept()
        if not self._ordered:
            self._send(_CANDIDATE)
            self._ordered = True

    def candidate(self) -> CandidateSandbox:
        self.order_candidate()
        self._ordered = False
        pid, fds = self._answer(6)
        return CandidateSandbox(pid, *fds)

    def judge(self) -> JudgeSandbox:
        if self._ordered:  # answers come in order: take the candidate's first
            raise RuntimeError("a candidate is on order; take it before ordering a judge")
        self._send(_JUDGE)
        pid, (fd,) = self._answer(1)
        return JudgeSandbox(pid, socket.socket(fileno=fd))

    def _send(self, order: bytes) -> None:
        try:
            self.control.send(order)
        except OSError as exc:
            raise ZygoteFailed(f"the zygote is gone: {exc!r}") from exc

    def _answer(self, nfds: int) -> tuple[int, list[int]]:
        data, fds, _, _ = socket.recv_fds(self.control, 512, nfds)
        if len(data) != _PID or len(fds) != nfds:
            for fd in fds:
                os.close(fd)
            reason = data[_PID:].decode(errors="replace") if data else "the zygote is gone"
            raise ZygoteFailed(reason)
        return int.from_bytes(data, "little"), fds

    def close(self) -> None:
        """Stop the zygote; a candidate on order is taken and told there is no job."""
        self._swept()
        if self._ordered:
            try:
                sandbox = self.candidate()
            except ZygoteFailed:
                pass
            else:
                for fd in (sandbox.job_w, sandbox.stdin_w, sandbox.stdout_r, sandbox.stderr_r):
                    os.close(fd)
                os.close(sandbox.requests_w)
                os.close(sandbox.replies_r)
                os.waitpid(sandbox.pid, 0)  # it reads EOF for a job and exits
        self.control.close()
        if self.reaper is not None:
            self.reaper.close()
        os.waitpid(self.pid, 0)


# -- inside the zygote ----------------------------------------------------------------------


@dataclass
class _OomScore:
    """The zygote's own oom_score_adj, opened once: raised to `_OOM_FIRST` just for each
    candidate's fork (the child inherits it), then put back, so that the zygote and the
    reaper are never the kernel's choice in the cgroup while a candidate's processes are."""

    fd: int
    own: bytes

    @classmethod
    def open(cls) -> _OomScore:
        fd = os.open("/proc/self/oom_score_adj", os.O_RDWR | os.O_CLOEXEC)
        return cls(fd, os.pread(fd, 16, 0).strip())


def _serve(
    control: socket.socket, reaper: socket.socket | None, config: SandboxConfig, worker_pid: int
) -> NoReturn:
    try:
        linux.set_process_name(_NAMES["zygote"])
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != worker_pid:
            os._exit(0)
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1):  # the worker's protocol pipes: no business of the zygote's
            os.dup2(devnull, fd)
        os.close(devnull)
        candidate_filter = judges = oom = None
        if config.isolated:
            assert reaper is not None
            if config.cgroup is not None:
                # Opened while still dumpable: a non-dumpable process's /proc files belong to
                # the host's root.
                oom = _OomScore.open()
            # Inherited by every sandbox: done once, not per fork.
            jail.prepare_sandboxes()
            if config.cgroup is not None:
                config.cgroup.join()
            seccomp.Filter(seccomp.kernel_surface()).install()
            # Before the candidates' namespaces exist: judges are forked outside them.
            judges = _start_judge_factory(control, reaper, config)
            _start_reaper(reaper, config.scratch_mb)
            # Privileged set-up over: candidates are born with no capability, under both
            # filters, and can only add the one that holds their memory limit.
            linux.clear_capabilities()
            seccomp.Filter(seccomp.sandbox_rules()).install()
            candidate_filter = seccomp.CandidateFilter()
        runner.standard_streams()
        # Last: the set-up's garbage goes back to the kernel. clone copies a page-table entry
        # for every anonymous page the zygote holds, at every fork (~600 kB fewer).
        linux.malloc_trim()
    except BaseException:
        traceback.print_exc()
        os._exit(SANDBOX_FAILURE)
    while order := control.recv(1):
        if order == _JUDGE and judges is not None:
            judges.send(_JUDGE)  # its answer goes on to the worker as it is
            data, fds, _, _ = socket.recv_fds(judges, 512, 1)
            _answer(control, data, fds)
            continue
        try:
            if order == _CANDIDATE:
                pid, fds = _fork_candidate(control, config, candidate_filter, oom)
            else:
                pid, fds = _fork_judge(control, 0, config)
        except OSError as exc:  # e.g. EAGAIN: out of processes; the worker reports it
            _answer(control, _failure(exc), [])
            continue
        _answer(control, pid.to_bytes(_PID, "little"), fds)
    os._exit(0)


def _failure(exc: OSError) -> bytes:
    return b"\0" * _PID + f"could not fork a sandbox: {exc}".encode()[:500]


def _answer(channel: socket.socket, data: bytes, fds: list[int]) -> None:
    if fds:
        socket.send_fds(channel, [data], fds)
    else:
        channel.send(data or _failure(OSError("the judge factory is gone")))
    for fd in fds:
        os.close(fd)


def _start_judge_factory(
    control: socket.socket, reaper: socket.socket, config: SandboxConfig
) -> socket.socket:
    """A process that forks judges, each in namespaces of its own. It stays in the zygote's
    namespaces while every candidate lives in the reaper's, so no judge is ever inside
    (visible to, or killable from) the candidates' pid namespace. Like the zygote's, its
    sandboxes are the worker's children (CLONE_PARENT, and it is the worker's child)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if linux.fork_into_namespaces(linux.CLONE_PARENT) == 0:
        try:
            control.close()
            reaper.close()
            ours.close()
            linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # with the worker
            linux.set_process_name(_NAMES["judges"])
            while theirs.recv(1):
                try:
                    pid, fds = _fork_judge(theirs, SANDBOX_NAMESPACES, config)
                except OSError as exc:
                    _answer(theirs, _failure(exc), [])
                    continue
                _answer(theirs, pid.to_bytes(_PID, "little"), fds)
        finally:
            os._exit(0)
    theirs.close()
    return ours


def _start_reaper(channel: socket.socket, scratch_mb: int) -> None:
    """Make the candidates' namespaces (pid, mount, IPC, UTS), their init, the reaper (the
    first child), and what every candidate sees there: that namespace's /proc, mounted once,
    a hostname, and a fresh /tmp per execution (`_reaper_main`)."""
    linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWPID | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS)
    socket.sethostname("sandbox")
    mounted_r, mounted_w = os.pipe()
    if linux.fork_into_namespaces(0) == 0:
        os.close(mounted_r)
        _reaper_main(channel, mounted_w, scratch_mb)
    os.close(mounted_w)
    mounted = os.read(mounted_r, 1)
    os.close(mounted_r)
    channel.close()
    if not mounted:
        raise OSError("the reaper could not mount the candidates' /proc and /tmp")


def _reaper_main(channel: socket.socket, mounted: int, scratch_mb: int) -> NoReturn:
    """Pid 1 of the candidates' namespace: reaps orphans, sweeps when the worker asks.

    It keeps its capabilities (in the worker's user namespace) for two reasons: to reset the
    namespace's pid counter after each sweep, so that every candidate is pid 2 (otherwise
    the counter would be state an execution leaves to the next: fork k times, and the next
    candidate's pid tells k), and to give each execution a fresh /tmp. A candidate cannot
    reach it (init: no signal from inside takes effect without its consent; non-dumpable;
    ptrace refused)."""
    try:
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # with the zygote
        linux.set_process_name(_NAMES["reaper"])
        jail.mount_proc()  # procfs shows the pid namespace of whoever mounts it: ours
        jail.mount_scratch(scratch_mb)
        os.write(mounted, b"m")
        last_pid = os.open("/proc/sys/kernel/ns_last_pid", os.O_WRONLY)
        runner.close_fds_except((channel.fileno(), last_pid))
        while channel.recv(1):
            _sweep()
            os.pwrite(last_pid, b"1", 0)
            jail.renew_scratch(scratch_mb)
            channel.send(_SWEPT)
    finally:
        os._exit(0)


def _sweep() -> None:
    # kill(-1) from a pid namespace's init reaches every other process in it; a process still
    # forking is either reached or its fork fails. Each reaped parent has handed its own
    # children to us before it could be reaped, so "no child left" means none is left.
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(-1, _WALL)  # __WALL: also children whose exit signal is not SIGCHLD
        except ChildProcessError:
            return


def _fork_candidate(
    control: socket.socket,
    config: SandboxConfig,
    candidate_filter: seccomp.CandidateFilter | None,
    oom: _OomScore | None,
) -> tuple[int, list[int]]:
    job_r, job_w = os.pipe()
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    ours = [job_w, stdin_w, stdout_r, stderr_r, requests_w, replies_r]
    theirs = [job_r, stdin_r, stdout_w, stderr_w, requests_r, replies_w]
    if oom is not None:
        os.pwrite(oom.fd, _OOM_FIRST, 0)
    pid = linux.fork_into_namespaces(linux.CLONE_PARENT)
    if pid == 0:
        _candidate_main(config, candidate_filter, *theirs)
    if oom is not None:
        os.pwrite(oom.fd, oom.own, 0)
    for fd in theirs:
        os.close(fd)
    return pid, ours


def _fork_judge(
    control: socket.socket, namespaces: int, config: SandboxConfig
) -> tuple[int, list[int]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = linux.fork_into_namespaces(linux.CLONE_PARENT | namespaces)
    if pid == 0:
        control.close()
        ours.close()
        _judge_main(config, theirs)
    theirs.close()
    return pid, [ours.detach()]


# -- inside a sandbox, before any untrusted code --------------------------------------------
# A candidate runs this part in a freshly forked process, where every page it writes is a
# copy-on-write fault: what could be done once, in the zygote, is; the rest is kept short.


def _candidate_main(
    config: SandboxConfig,
    candidate_filter: seccomp.CandidateFilter | None,
    job_r: int,
    stdin_r: int,
    stdout_w: int,
    stderr_w: int,
    requests_r: int,
    replies_w: int,
) -> NoReturn:
    failures = stderr_w  # where our own failure is told: the program's stderr
    try:
        linux.set_process_name(_NAMES["sandbox"])
        if config.isolated:
            os.chdir("/tmp")  # this execution's fresh scratch
        else:  # no reaper's namespace to die with: die with the worker
            linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        # Own session: kill(0, ...) inside reaches only this sandbox's processes.
        os.setsid()
        # Everything that does not depend on the job is done before it arrives; the zygote's
        # fds (its control socket, the worker's ends of our pipes) go here too.
        runner.become_program(stdin_r, stdout_w, stderr_w, keep=(job_r, requests_r, replies_w))
        failures = 2
        program: wire.ProgramJob | None = wire.read_trusted(wire.FrameReader(job_r))
        os.close(job_r)
        if program is None:  # no job (the worker is closing, or could not set our limits)
            os._exit(0)
        judged = program["mode"] != "program"
        if not judged:
            os.close(requests_r)
            os.close(replies_w)
        if candidate_filter is not None:
            candidate_filter.install_with_limit(program["memory_mb"] << 20)
        os.write(1, STARTED)
    except BaseException:
        # Our own failure, before any untrusted code ran: the worker sees no STARTED.
        os.write(failures, traceback.format_exc().encode()[-4000:])
        os._exit(SANDBOX_FAILURE)
    if judged:
        runner.serve_candidate(program["code"], program.get("entry_point"), requests_r, replies_w)
    runner.run_program(program["code"])


def _judge_main(config: SandboxConfig, channel: socket.socket) -> NoReturn:
    try:
        # The worker gone means nobody enforces limits any more: die with it.
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        linux.set_process_name(_NAMES["judge"])
        if config.isolated:
            if config.cgroup is not None:
                config.cgroup.leave()  # the candidates' memory limit is not the judge's
            jail.enter_judge_sandbox(config.scratch_mb)
        os.setsid()
        if config.cpu is not None:
            os.sched_setaffinity(0, {config.cpu})
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):  # the test code's own prints go nowhere
            os.dup2(devnull, fd)
        runner.close_fds_except((channel.fileno(),))
        memory = config.judge_memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if config.isolated:
            seccomp.Filter(seccomp.sandbox_rules()).install()
        runner.serve_judge(channel)
    finally:  # a forked child must never return into the zygote's loop
        os._exit(SANDBOX_FAILURE)
