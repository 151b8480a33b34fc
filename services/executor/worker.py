"""A sandbox worker: one process, one execution at a time, started by the service's pool.

The worker confines itself once (`jail.isolate_worker`: unprivileged uid, own user namespace,
empty network namespace, minimal read-only root), starts its zygote (`zygote`), which forks
every sandbox from then on, and loops: read a job from stdin, hand the program to a candidate
sandbox forked ahead of time and, for assert and call tests, the tests to its long-lived judge
sandbox; supervise; write the result to stdout. Everything about an execution is decided
here, outside the sandboxes: the wall-clock deadline, output caps, and the processes' fate.

Run as `python -m codeprm.services.executor.worker`; speaks `wire` frames on stdin/stdout.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from codeprm.services.executor import cgroup, jail, linux, runner, wire
from codeprm.services.executor.cgroup import MemoryCgroup
from codeprm.services.executor.zygote import (
    STARTED,
    CandidateSandbox,
    JudgeSandbox,
    SandboxConfig,
    Zygote,
    ZygoteFailed,
)

# Imported once here so that sandboxed programs find them already loaded (fork shares them).
PRELOAD = (
    "math",
    "re",
    "collections",
    "itertools",
    "functools",
    "heapq",
    "bisect",
    "string",
    "typing",
    "json",
    "hashlib",
    "fractions",
    "decimal",
    "copy",
    "operator",
    "datetime",
    "array",
    "dataclasses",
    "enum",
    "io",
    "textwrap",
    "unicodedata",
)
JUDGE_GRACE_S = 1.0  # after the candidate is killed, for the judge to report
JUDGE_JOBS = 1000  # a fresh judge after this many jobs: test code may leave state behind


@dataclass
class Outcome:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    # The judge's frames: a report per call-test case, then its summary.
    cases: dict[str, wire.CaseReport] = field(default_factory=dict)  # by str(case index)
    done: wire.JudgeDone | None = None
    killed_for: str | None = None  # "timeout" | "output_limit"
    wait_status: int = 0
    cpu_s: float = 0.0
    maxrss_kb: int = 0
    # Facts the program cannot forge, which its status is read from:
    started: bool = False  # its sandbox's set-up finished (`zygote.STARTED` came first)
    oom_killed: bool = False  # the memory cgroup killed one of its processes
    memory_accounted: bool = False  # a memory cgroup watched it (else: rlimits only)


class Worker:
    def __init__(
        self,
        zygote: Zygote,
        *,
        isolated: bool,
        memory: MemoryCgroup | None = None,
        cpu: int | None = None,
    ) -> None:
        self.zygote = zygote
        self.isolated = isolated
        self.memory = memory
        self.cpu = cpu  # the judge's: a judged candidate joins it (`SandboxConfig.cpu`)
        self.oom_kills = memory.oom_kills() if memory is not None else 0
        self.judge: JudgeSandbox | None = None

    def execute(self, job: wire.Job, program: bytearray, tests: bytearray) -> wire.Result:
        sandbox = self.zygote.candidate()
        judged = job["mode"] != "program"
        if self.memory is not None:
            self.memory.set_limit(int(job["limits"]["memory_mb"]) << 20)
        started = time.monotonic()
        handover_failure = None
        try:
            # Set from here, before the candidate has its job: it cannot run anything before.
            limits = runner.Limits(**job["limits"])
            limits.apply_to(sandbox.pid, cgroup_first=self.memory is not None)
            if judged and self.cpu is not None:
                os.sched_setaffinity(sandbox.pid, {self.cpu})
            wire.write_all(sandbox.job_w, program)
        except OSError as exc:
            # It died before reading its job, or we could not set its limits (then it gets
            # no job, and exits without STARTED: a sandbox error). Supervision reports it.
            handover_failure = f"could not hand the job to its sandbox: {exc}"
        finally:
            os.close(sandbox.job_w)
        judge = self._hand_over(sandbox, tests) if judged else None
        os.close(sandbox.requests_w)
        os.close(sandbox.replies_r)
        outcome = self._supervise(sandbox, judge, job, started)
        if handover_failure is not None and not outcome.started:
            outcome.stderr += handover_failure.encode()
        wall = time.monotonic() - started
        if self.memory is not None:
            oom_kills = self.memory.oom_kills()
            outcome.oom_killed = oom_kills > self.oom_kills
            outcome.memory_accounted = True
            self.oom_kills = oom_kills
        return _result(job, outcome, wall, isolated=self.isolated)

    # -- the judge ------------------------------------------------------------------------

    def _hand_over(self, sandbox: CandidateSandbox, tests: bytearray) -> JudgeSandbox:
        """Give the judge this candidate's pipes and the tests (a fresh judge if need be)."""
        if self.judge is not None and self.judge.jobs >= JUDGE_JOBS:
            self.drop_judge()
        try:
            return self._send(sandbox, tests)
        except OSError:  # it died while idle (killed from outside, say): once more, afresh
            self.drop_judge()
            return self._send(sandbox, tests)

    def _send(self, sandbox: CandidateSandbox, tests: bytearray) -> JudgeSandbox:
        if self.judge is None:
            self.judge = self.zygote.judge()
        judge = self.judge
        socket.send_fds(judge.channel, [b"j"], [sandbox.requests_w, sandbox.replies_r])
        judge.channel.sendall(tests)
        judge.jobs += 1
        return judge

    def drop_judge(self) -> None:
        if self.judge is not None:
            self._kill(self.judge.pid)
            self.judge.channel.close()
            os.waitpid(self.judge.pid, 0)
            self.judge = None

    # -- supervision ----------------------------------------------------------------------

    def _supervise(
        self, sb: CandidateSandbox, judge: JudgeSandbox | None, job: wire.Job, started: float
    ) -> Outcome:
        """Until the candidate is gone (and, for judged jobs, the judge has reported): feed
        stdin, collect output within caps, kill at the deadline."""
        out = Outcome()
        deadline = started + float(job["timeout_s"])
        judge_deadline = float("inf")
        cap = int(job["output_limit_bytes"])
        stdin = memoryview(job.get("stdin", "").encode())
        pidfd = os.pidfd_open(sb.pid)
        readers = {sb.stdout_r: out.stdout, sb.stderr_r: out.stderr}
        poller = select.poll()
        for fd in (*readers, pidfd):
            poller.register(fd, select.POLLIN)
        if stdin:
            os.set_blocking(sb.stdin_w, False)
            poller.register(sb.stdin_w, select.POLLOUT)
        else:
            os.close(sb.stdin_w)
        report = wire.FrameBuffer()
        if judge is not None:
            poller.register(judge.channel.fileno(), select.POLLIN)
        exited = False
        while readers or not exited or judge is not None:
            now = time.monotonic()
            if now >= deadline and out.killed_for is None:
                out.killed_for = "timeout"
                self._kill(sb.pid)
                judge_deadline = now + JUDGE_GRACE_S
            if judge is not None and now >= judge_deadline:  # stuck in its own test code
                poller.unregister(judge.channel.fileno())
                self.drop_judge()
                judge = None
                continue
            wait = min(deadline, judge_deadline) - now if out.killed_for is None else 0.1
            for fd, _ in poller.poll(max(wait, 0.01) * 1000):
                if fd == pidfd:
                    exited = True
                    poller.unregister(fd)
                    # What it started dies with it: no daemon holds its pipes or outlives
                    # it, and the next candidate is forked only after that.
                    self.zygote.sweep()
                elif fd == sb.stdin_w:
                    stdin = self._feed(fd, stdin)
                    if not stdin:
                        poller.unregister(fd)
                        os.close(fd)
                elif judge is not None and fd == judge.channel.fileno():
                    chunk = os.read(fd, 1 << 16)
                    for frame in report.feed(chunk) if chunk else []:
                        if frame.get("done"):
                            out.done = frame
                        else:
                            out.cases[str(frame["case"])] = frame
                    if not chunk or out.done is not None:
                        if not chunk:  # the judge died: nothing of this job to wait for
                            self.drop_judge()
                        poller.unregister(fd)
                        judge = None
                        self._kill(sb.pid)  # its part is over once the tests are
                else:
                    self._read(fd, readers, poller, out, sb.pid, cap)
            if exited and out.killed_for is not None and time.monotonic() > deadline + 2:
                break  # weak isolation only: an escaped process holds a pipe open
        if judge is not None:  # mid-job: it must not carry this job's report into the next
            self.drop_judge()
        for fd in readers:
            os.close(fd)
        if stdin:
            os.close(sb.stdin_w)
        os.close(pidfd)
        _, out.wait_status, usage = os.wait4(sb.pid, 0)
        out.cpu_s = usage.ru_utime + usage.ru_stime
        out.maxrss_kb = usage.ru_maxrss
        return out

    def _read(
        self,
        fd: int,
        readers: dict[int, bytearray],
        poller: select.poll,
        out: Outcome,
        pid: int,
        cap: int,
    ) -> None:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            poller.unregister(fd)
            os.close(fd)
            del readers[fd]
            return
        buffer = readers[fd]
        if buffer is out.stdout and not out.started and chunk[:1] == STARTED:
            out.started = True
            chunk = chunk[1:]
        buffer += chunk
        if len(buffer) > cap and out.killed_for is None:
            out.killed_for = "output_limit"
            self._kill(pid)

    def _kill(self, pid: int) -> None:
        # With namespaces, what the candidate started is swept once it is dead (`_supervise`),
        # and a judge is its namespace's init: the kernel then kills everything inside.
        # Without, the best we can do is its process group (daemons that setsid escape it).
        try:
            if self.isolated:
                os.kill(pid, signal.SIGKILL)
            else:
                os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @staticmethod
    def _feed(fd: int, data: memoryview) -> memoryview:
        try:
            return data[os.write(fd, data[: 1 << 16]) :]
        except BlockingIOError:
            return data
        except BrokenPipeError:  # the program stopped reading: fine, like a shell pipe
            return memoryview(b"")


def _result(job: wire.Job, out: Outcome, wall: float, *, isolated: bool) -> wire.Result:
    cpu_limit = float(job["limits"]["cpu_s"])
    memory_limit_mb = int(job["limits"]["memory_mb"])
    judge: wire.JudgeOutcome | None = None
    exit_code: int | None
    if job["mode"] == "program":
        status, exit_code = _program_status(out, cpu_limit, memory_limit_mb, isolated)
    else:
        done = out.done
        judge = {
            "completed": bool(done and done["completed"]),
            "error": done["error"] if done else None,
            "cases": out.cases,
        }
        if done is None:
            status, exit_code = "sandbox_error", None
            if out.killed_for is None:
                judge["error"] = "the judge process died"
        else:
            status, exit_code = _judged_status(done, out, cpu_limit, memory_limit_mb, isolated)
    if out.killed_for is not None:
        status = out.killed_for
    elif not out.started:  # the sandbox failed before the program's first instruction
        status, exit_code = "sandbox_error", None
    cap = int(job["output_limit_bytes"])
    result: wire.Result = {
        "status": status,
        "exit_code": exit_code,
        "stdout": out.stdout[:cap].decode("utf-8", "replace"),
        "stderr": out.stderr[:cap].decode("utf-8", "replace"),
        "wall_time_s": wall,
        "cpu_time_s": out.cpu_s,
        "peak_memory_mb": out.maxrss_kb / 1024,
    }
    if judge is not None:
        result["judge"] = judge
    return result


# Statuses come only from facts the program cannot forge: how its process ended (the wait
# status and resource usage the kernel gives its parent, the worker), the memory cgroup's
# events, and the worker's own bookkeeping. Never from its output: a program can print a
# MemoryError or a traceback naming the service, and exit with any code it likes.


def _cpu_exhausted(out: Outcome, cpu_limit: float) -> bool:
    """Killed by RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one (a program
    can send itself either; it cannot have used the CPU time without using it)."""
    if not os.WIFSIGNALED(out.wait_status):
        return False
    sig = os.WTERMSIG(out.wait_status)
    return sig in (signal.SIGXCPU, signal.SIGKILL) and out.cpu_s >= cpu_limit - 0.05


def _memory_exhausted(out: Outcome, limit_mb: int, isolated: bool) -> bool:
    if out.oom_killed:  # the memory cgroup's own count
        return True
    if os.WIFEXITED(out.wait_status) and os.WEXITSTATUS(out.wait_status) == 0:
        return False
    # SIGSYS: the sandbox's seccomp filter killed it for a mapping beyond its limit; the
    # filters refuse every way of sending it oneself. Without namespaces there is no filter.
    if os.WIFSIGNALED(out.wait_status) and os.WTERMSIG(out.wait_status) == signal.SIGSYS:
        return isolated
    # Without a cgroup: it failed with its peak resident memory at the limit (RLIMIT_AS).
    return not out.memory_accounted and out.maxrss_kb >= 0.9 * limit_mb * 1024


def _program_status(
    out: Outcome, cpu_limit: float, memory_mb: int, isolated: bool
) -> tuple[str, int]:
    if os.WIFSIGNALED(out.wait_status):
        code = -os.WTERMSIG(out.wait_status)
    else:
        code = os.WEXITSTATUS(out.wait_status)
    if _memory_exhausted(out, memory_mb, isolated):
        return "memory_limit", code
    if _cpu_exhausted(out, cpu_limit):
        return "timeout", code
    return ("ok" if code == 0 else "runtime_error"), code


def _judged_status(
    done: wire.JudgeDone, out: Outcome, cpu_limit: float, memory_mb: int, isolated: bool
) -> tuple[str, int]:
    # The candidate is killed once the tests are over: its end says something only when the
    # judge saw it die during the tests.
    if out.oom_killed or (done["died"] and _memory_exhausted(out, memory_mb, isolated)):
        return "memory_limit", 1
    if done["status"]:  # the judge refused a reply of the candidate's (`replies`)
        return done["status"], 1
    if done["died"] and _cpu_exhausted(out, cpu_limit):
        return "timeout", 1
    # An exception the tests caught is part of the tests (`except ValueError: pass`): only one
    # that ended them makes the run a runtime error.
    if done["died"] or (done["raised"] and not done["completed"]):
        return "runtime_error", 1
    error = done["error"] or ""
    if done["completed"] or error.startswith("AssertionError"):
        return "ok", 0  # the program ran; whether its answers were right is the verdict
    return "runtime_error", 1


def _hello(message: wire.WorkerHello) -> None:
    wire.write_frame(1, message)


def main() -> None:
    config: wire.WorkerConfig = wire.read_frame(0)
    linux.set_process_name(linux.process_name("codeprm-worker"))
    for module in PRELOAD:
        __import__(module)
    memory = None
    try:
        host_dir = None
        if config["isolated"]:
            memory = cgroup.create()  # while /sys is still there and we may still be root
            host_dir = jail.isolate_worker(jail.RootSpec(extra_paths=config["extra_paths"]))
            # One empty network namespace per worker: it runs one execution at a time and
            # nothing of an execution outlives it, so none can reach another through it.
            linux.unshare(linux.CLONE_NEWNET)
    except OSError as exc:
        _hello({"ready": False, "error": f"isolation failed: {exc}"})
        return
    # Set after isolation: changing uid clears it. A worker outliving its service would be
    # an unsupervised sandbox factory.
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != config["parent_pid"]:
        return  # the service died before we could ask to die with it
    sys.path[:] = [p for p in sys.path if os.path.isdir(p)]
    gc.freeze()  # fewer copy-on-write faults in every forked sandbox
    # Before the first job: no sandbox is ever forked from memory that has seen one.
    zygote = Zygote.start(
        SandboxConfig(
            isolated=config["isolated"],
            scratch_mb=config["scratch_mb"],
            judge_memory_mb=config["judge_memory_mb"],
            cpu=config["cpu"],
            cgroup=memory,
        )
    )
    worker = Worker(zygote, isolated=config["isolated"], memory=memory, cpu=config["cpu"])
    try:
        worker.judge = zygote.judge()
        zygote.order_candidate()
    except ZygoteFailed as exc:
        _hello({"ready": False, "error": f"no sandbox: {exc}"})
        return
    _hello(
        {
            "ready": True,
            "host_dir": host_dir,
            "pid": os.getpid(),
            "memory_cgroup": memory.path if memory is not None else None,
        },
    )
    job: wire.Job | None
    while (job := wire.read_frame(0)) is not None:
        program, tests = wire.read_raw_frame(0), wire.read_raw_frame(0)
        if program is None or tests is None:
            break
        wire.write_frame(1, worker.execute(job, program, tests))
        zygote.order_candidate()  # once the sweep is over; forked while the result goes out
    worker.drop_judge()
    zygote.close()


if __name__ == "__main__":
    main()
