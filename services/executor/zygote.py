"""The sandbox factory: a small process that forks every sandbox of its worker.

A worker starts its zygote once, before it reads any job, and never forks again. So no
sandbox is ever forked from memory that has held another job's program or tests, and the
worker's own work (reading jobs, supervising them) causes no copy-on-write faults in it or
in the sandboxes. The zygote only ever receives one-byte orders; each answer is the new
sandbox's pid and the worker's ends of its pipes, passed as SCM_RIGHTS. Sandboxes are cloned
with CLONE_PARENT, so they are the worker's children: the worker reaps them, gets their
resource usage, and kills them without racing a reused pid.

Two kinds of sandbox, both in fresh pid, mount, IPC and UTS namespaces (`jail.enter_sandbox`):

* candidate, one per execution: reads its program from a pipe, then becomes that program
  (`runner.run_program`) or, for assert and call tests, answers the judge's calls
  (`runner.serve_candidate`).
* judge, long-lived, one per worker: runs the trusted test code of each judged execution
  against the candidate it is handed pipes to (`runner.serve_judge`). It lives on so that a
  judged execution costs one fork, not two; it never shares a namespace with a candidate.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import traceback
from dataclasses import dataclass
from typing import NoReturn

from services.executor import jail, linux, runner, wire

SANDBOX_FAILURE = 70  # exit code of a sandbox whose set-up failed (EX_SOFTWARE)
PER_EXECUTION_NAMESPACES = (
    linux.CLONE_NEWPID | linux.CLONE_NEWNS | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS
)
_CANDIDATE, _JUDGE = b"c", b"j"
_PID = 4  # bytes of the pid in an answer
_NAMES = {role: linux.process_name(f"codeprm-{role}") for role in ("zygote", "sandbox", "judge")}


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


class Zygote:
    """The worker's handle on its zygote."""

    def __init__(self, pid: int, control: socket.socket) -> None:
        self.pid = pid
        self.control = control
        self._ordered = False

    @classmethod
    def start(cls, config: SandboxConfig) -> Zygote:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        worker_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            ours.close()
            _serve(theirs, config, worker_pid)
        theirs.close()
        return cls(pid, ours)

    def order_candidate(self) -> None:
        """Have the next candidate forked now, while the worker does something else."""
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
        os.waitpid(self.pid, 0)


# -- inside the zygote ----------------------------------------------------------------------


def _serve(control: socket.socket, config: SandboxConfig, worker_pid: int) -> NoReturn:
    try:
        linux.set_process_name(_NAMES["zygote"])
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != worker_pid:
            os._exit(0)
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1):  # the worker's protocol pipes: no business of the zygote's
            os.dup2(devnull, fd)
        os.close(devnull)
        if config.isolated:
            jail.prepare_sandboxes()  # inherited by every sandbox: done once, not per fork
        runner.standard_streams()
        flags = linux.CLONE_PARENT | (PER_EXECUTION_NAMESPACES if config.isolated else 0)
    except BaseException:
        traceback.print_exc()
        os._exit(SANDBOX_FAILURE)
    while order := control.recv(1):
        try:
            if order == _CANDIDATE:
                pid, fds = _fork_candidate(control, flags, config)
            else:
                pid, fds = _fork_judge(control, flags, config)
        except OSError as exc:  # e.g. EAGAIN: out of processes; the worker reports it
            control.send(b"\0" * _PID + f"could not fork a sandbox: {exc}".encode()[:500])
            continue
        socket.send_fds(control, [pid.to_bytes(_PID, "little")], fds)
        for fd in fds:
            os.close(fd)
    os._exit(0)


def _fork_candidate(
    control: socket.socket, flags: int, config: SandboxConfig
) -> tuple[int, list[int]]:
    job_r, job_w = os.pipe()
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    ours = [job_w, stdin_w, stdout_r, stderr_r, requests_w, replies_r]
    theirs = [job_r, stdin_r, stdout_w, stderr_w, requests_r, replies_w]
    pid = linux.fork_into_namespaces(flags)
    if pid == 0:
        control.close()
        for fd in ours:
            os.close(fd)
        _candidate_main(config, *theirs)
    for fd in theirs:
        os.close(fd)
    return pid, ours


def _fork_judge(control: socket.socket, flags: int, config: SandboxConfig) -> tuple[int, list[int]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = linux.fork_into_namespaces(flags)
    if pid == 0:
        control.close()
        ours.close()
        _judge_main(config, theirs)
    theirs.close()
    return pid, [ours.detach()]


# -- inside a sandbox, before any untrusted code --------------------------------------------


def _enter(config: SandboxConfig, role: str) -> None:
    # The worker gone means nobody enforces limits any more: die with it.
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    linux.set_process_name(_NAMES[role])
    if config.isolated:
        jail.enter_sandbox(config.scratch_mb)
    # Own session: kill(0, ...) inside reaches only this sandbox's processes.
    os.setsid()


def _candidate_main(
    config: SandboxConfig,
    job_r: int,
    stdin_r: int,
    stdout_w: int,
    stderr_w: int,
    requests_r: int,
    replies_w: int,
) -> NoReturn:
    failures = stderr_w  # where our own failure is told: the program's stderr
    try:
        _enter(config, "sandbox")
        # Everything that does not depend on the job is done before it arrives.
        runner.become_program(stdin_r, stdout_w, stderr_w, keep=(job_r, requests_r, replies_w))
        failures = 2
        program = wire.read_frame(job_r)
        os.close(job_r)
        if program is None:
            os._exit(0)
        limits = runner.Limits(**program["limits"])
        if program["mode"] == "program":
            os.close(requests_r)
            os.close(replies_w)
            limits.apply()
            runner.run_program(program["code"])
        if config.cpu is not None:
            os.sched_setaffinity(0, {config.cpu})
        limits.apply()
        runner.serve_candidate(program["code"], requests_r, replies_w)
    except BaseException:
        # Our own failure, before any untrusted code ran: say why, as a sandbox_error.
        os.write(failures, traceback.format_exc().encode()[-4000:])
        os._exit(SANDBOX_FAILURE)


def _judge_main(config: SandboxConfig, channel: socket.socket) -> NoReturn:
    try:
        _enter(config, "judge")
        if config.cpu is not None:
            os.sched_setaffinity(0, {config.cpu})
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):  # the test code's own prints go nowhere
            os.dup2(devnull, fd)
        runner.close_fds_except((channel.fileno(),))
        memory = config.judge_memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        runner.serve_judge(channel)
    finally:  # a forked child must never return into the zygote's loop
        os._exit(SANDBOX_FAILURE)
