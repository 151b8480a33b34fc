"""A sandbox worker: one process, one execution at a time, started by the service's pool.

The worker confines itself once (`jail.isolate_worker`: unprivileged uid, own user namespace,
empty network namespace, minimal read-only root), then loops: read a job from stdin, run it in
a sandbox, write the result to stdout. The next sandbox (fresh pid, mount, IPC and UTS
namespaces, procfs, scratch tmpfs, no capabilities) is built right after each result is sent,
so a request never waits for namespace set-up. Everything about an execution is decided here,
outside the sandbox: the wall-clock deadline, output caps, and the process's fate.

Run as `python -m services.executor.worker`; speaks `wire` frames on stdin/stdout.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, NoReturn

from services.executor import jail, linux, runner, wire

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
    "random",
    "typing",
    "json",
    "hashlib",
    "fractions",
    "decimal",
    "statistics",
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
SANDBOX_FAILURE = 70  # exit code of a sandbox whose set-up failed (EX_SOFTWARE)
PER_EXECUTION_NAMESPACES = (
    linux.CLONE_NEWPID | linux.CLONE_NEWNS | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS
)


@dataclass
class Sandbox:
    pid: int
    job_w: int
    report_r: int
    stdin_w: int
    stdout_r: int
    stderr_r: int


@dataclass
class Outcome:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    report: bytearray = field(default_factory=bytearray)
    killed_for: str | None = None  # "timeout" | "output_limit"
    wait_status: int = 0
    cpu_s: float = 0.0
    maxrss_kb: int = 0


class Worker:
    def __init__(self, *, scratch_mb: int, isolated: bool) -> None:
        self.scratch_mb = scratch_mb
        self.isolated = isolated
        self.next: Sandbox | None = None

    # -- sandbox creation ------------------------------------------------------------------

    def spawn(self) -> Sandbox:
        job_r, job_w = os.pipe()
        report_r, report_w = os.pipe()
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        pid = linux.fork_into_namespaces(PER_EXECUTION_NAMESPACES) if self.isolated else os.fork()
        if pid == 0:
            for fd in (job_w, report_r, stdin_w, stdout_r, stderr_r):
                os.close(fd)
            self._sandbox_main(job_r, report_w, stdin_r, stdout_w, stderr_w)
        for fd in (job_r, report_w, stdin_r, stdout_w, stderr_w):
            os.close(fd)
        return Sandbox(pid, job_w, report_r, stdin_w, stdout_r, stderr_r)

    def _sandbox_main(
        self, job_r: int, report_w: int, stdin_r: int, stdout_w: int, stderr_w: int
    ) -> NoReturn:
        try:
            devnull = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1):  # the worker's protocol pipes are not the sandbox's business
                os.dup2(devnull, fd)
            # The worker gone means nobody enforces limits any more: die with it.
            linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
            if self.isolated:
                jail.enter_sandbox(self.scratch_mb)
            # Own session: kill(0, ...) inside reaches only this execution's processes.
            os.setsid()
            program = wire.read_frame(job_r)
            if program is None:
                os._exit(0)
            limits = runner.Limits(**program["limits"])
            if program["mode"] == "program":
                runner.become_program(limits, stdin_r, stdout_w, stderr_w)
                runner.run_program(program["code"])
            _judge_main(program, limits, job_r, report_w, stdin_r, stdout_w, stderr_w)
        except BaseException:
            # Our own failure, before any untrusted code ran: say why, as a sandbox_error.
            os.write(stderr_w, traceback.format_exc().encode()[-4000:])
            os._exit(SANDBOX_FAILURE)

    # -- one execution ---------------------------------------------------------------------

    def execute(self, job: dict[str, Any], program: bytearray, judge: bytearray) -> dict[str, Any]:
        sandbox = self.next or self.spawn()
        self.next = None
        started = time.monotonic()
        try:
            wire.write_all(sandbox.job_w, program)
            wire.write_all(sandbox.job_w, judge)
        except BrokenPipeError:
            pass  # the sandbox died before reading its job: supervision reports it
        finally:
            os.close(sandbox.job_w)
        outcome = self._supervise(sandbox, job, started)
        wall = time.monotonic() - started
        return _result(job, outcome, wall)

    def _supervise(self, sb: Sandbox, job: dict[str, Any], started: float) -> Outcome:
        out = Outcome()
        deadline = started + float(job["timeout_s"])
        cap = int(job["output_limit_bytes"])
        stdin = memoryview(job.get("stdin", "").encode())
        readers = {sb.stdout_r: out.stdout, sb.stderr_r: out.stderr, sb.report_r: out.report}
        writers = {sb.stdin_w} if stdin else set()
        if not stdin:
            os.close(sb.stdin_w)
        poller = select.poll()
        for fd in readers:
            poller.register(fd, select.POLLIN)
        if writers:
            os.set_blocking(sb.stdin_w, False)
            poller.register(sb.stdin_w, select.POLLOUT)
        while readers:
            left = deadline - time.monotonic()
            if left <= 0 and out.killed_for is None:
                out.killed_for = "timeout"
                self._kill(sb.pid)
            for fd, _ in poller.poll(max(left, 0.05) * 1000 if out.killed_for is None else 100):
                if fd in writers:
                    stdin = self._feed(sb.stdin_w, stdin)
                    if not stdin:
                        poller.unregister(fd)
                        writers.clear()
                        os.close(fd)
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    poller.unregister(fd)
                    os.close(fd)
                    del readers[fd]
                    continue
                buffer = readers[fd]
                buffer += chunk
                if fd != sb.report_r and len(buffer) > cap and out.killed_for is None:
                    out.killed_for = "output_limit"
                    self._kill(sb.pid)
        for fd in writers:
            os.close(fd)
        _, out.wait_status, usage = os.wait4(sb.pid, 0)
        out.cpu_s = usage.ru_utime + usage.ru_stime
        out.maxrss_kb = usage.ru_maxrss
        return out

    def _kill(self, pid: int) -> None:
        # With namespaces, pid is the sandbox's init: the kernel then kills everything inside.
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


def _judge_main(
    program: dict[str, Any],
    limits: runner.Limits,
    job_r: int,
    report_w: int,
    stdin_r: int,
    stdout_w: int,
    stderr_w: int,
) -> NoReturn:
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        # Forked before the judge reads the tests, and its copy of the job pipe closed before
        # any of its code runs: the tests never exist in the candidate's memory.
        runner.become_program(limits, stdin_r, stdout_w, stderr_w, keep=(requests_r, replies_w))
        runner.serve_candidate(program["code"], requests_r, replies_w)
    del program
    job = wire.read_frame(job_r)
    os.close(job_r)
    for fd in (requests_r, replies_w, stdin_r, stdout_w, stderr_w):
        os.close(fd)
    os.dup2(os.open("/dev/null", os.O_RDWR), 2)  # the test code's own prints go nowhere
    state = runner.JudgeState()
    candidate = runner.Candidate(requests_w, replies_r, state)
    completed, error = False, None
    try:
        loaded = candidate.loaded()
        if not loaded["loaded"]:
            state.raised = True
            kind, message = loaded["raise"]
            state.memory_error = kind == "MemoryError"
            error = f"{kind}: {message}"
        elif "test_code" in job:
            runner.judge_asserts(candidate, job["test_code"], job.get("entry_point"))
            completed = True
        else:
            runner.judge_calls(candidate, job["entry_point"], job["cases"], report_w)
            completed = True
    except BaseException as exc:
        error = runner.describe_failure(exc)
    os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    wire.write_frame(
        report_w,
        {
            "done": True,
            "completed": completed,
            "error": error,
            "raised": state.raised,
            "memory_error": state.memory_error,
            "died": state.died,
            "candidate_status": status,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "maxrss_kb": usage.ru_maxrss,
        },
    )
    os._exit(0)


def _result(job: dict[str, Any], out: Outcome, wall: float) -> dict[str, Any]:
    stdout = out.stdout[: int(job["output_limit_bytes"])].decode("utf-8", "replace")
    stderr = out.stderr[: int(job["output_limit_bytes"])].decode("utf-8", "replace")
    cpu_limit = float(job["limits"]["cpu_s"])
    memory_limit_mb = int(job["limits"]["memory_mb"])
    result: dict[str, Any] = {"stdout": stdout, "stderr": stderr, "wall_time_s": wall}
    if job["mode"] == "program":
        status, exit_code = _program_status(
            out.wait_status, out.cpu_s, cpu_limit, stderr, out.maxrss_kb, memory_limit_mb
        )
        result.update(
            cpu_time_s=out.cpu_s, peak_memory_mb=out.maxrss_kb / 1024, exit_code=exit_code
        )
    else:
        frames = wire.decode_frames(bytes(out.report))
        done = next((f for f in frames if f.get("done")), None)
        cases = {f["case"]: f for f in frames if "case" in f}
        result["judge"] = {
            "completed": bool(done and done["completed"]),
            "error": done["error"] if done else None,
            "cases": cases,
        }
        if done is None:
            status, exit_code = "sandbox_error", None
            if out.killed_for is None:
                result["judge"]["error"] = "the judge process died"
        else:
            status, exit_code = _judged_status(done, cpu_limit, stderr, memory_limit_mb)
            result.update(cpu_time_s=done["cpu_s"], peak_memory_mb=done["maxrss_kb"] / 1024)
        result.setdefault("cpu_time_s", out.cpu_s)
        result.setdefault("peak_memory_mb", out.maxrss_kb / 1024)
    if out.killed_for is not None:
        status = out.killed_for
    result.update(status=status, exit_code=exit_code)
    return result


def _cpu_exhausted(sig: int, cpu_s: float, cpu_limit: float) -> bool:
    """Killed by RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one."""
    return sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= cpu_limit - 0.05)


def _memory_exhausted(stderr: str, maxrss_kb: int, limit_mb: int) -> bool:
    tail = stderr.rstrip().rsplit("\n", 1)[-1]
    return tail.startswith("MemoryError") or maxrss_kb >= 0.9 * limit_mb * 1024


def _program_status(
    wait_status: int, cpu_s: float, cpu_limit: float, stderr: str, maxrss_kb: int, memory_mb: int
) -> tuple[str, int]:
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        if _cpu_exhausted(sig, cpu_s, cpu_limit):
            return "timeout", -sig
        if _memory_exhausted(stderr, maxrss_kb, memory_mb):
            return "memory_limit", -sig
        return "runtime_error", -sig
    code = os.WEXITSTATUS(wait_status)
    if code == 0:
        return "ok", 0
    if code == SANDBOX_FAILURE and "Traceback" in stderr and "services/executor" in stderr:
        return "sandbox_error", code
    if _memory_exhausted(stderr, 0, memory_mb):
        return "memory_limit", code
    return "runtime_error", code


def _judged_status(
    done: dict[str, Any], cpu_limit: float, stderr: str, memory_mb: int
) -> tuple[str, int]:
    candidate = int(done["candidate_status"])
    if done["died"] and os.WIFSIGNALED(candidate):
        sig = os.WTERMSIG(candidate)
        if _cpu_exhausted(sig, done["cpu_s"], cpu_limit):
            return "timeout", -sig
    if done["memory_error"] or (
        done["died"] and _memory_exhausted(stderr, done["maxrss_kb"], memory_mb)
    ):
        return "memory_limit", 1
    if done["raised"] or done["died"]:
        return "runtime_error", 1
    error = done["error"] or ""
    if done["completed"] or error.startswith("AssertionError"):
        return "ok", 0  # the program ran; whether its answers were right is the verdict
    return "runtime_error", 1


def main() -> None:
    config = wire.read_frame(0)
    for module in PRELOAD:
        __import__(module)
    try:
        host_dir = None
        if config["isolated"]:
            host_dir = jail.isolate_worker(jail.RootSpec(extra_paths=config["extra_paths"]))
            # One empty network namespace per worker: it runs one execution at a time and
            # nothing of an execution outlives it, so none can reach another through it.
            linux.unshare(linux.CLONE_NEWNET)
    except OSError as exc:
        wire.write_frame(1, {"ready": False, "error": f"isolation failed: {exc}"})
        return
    # Set after isolation: changing uid clears it. A worker outliving its service would be
    # an unsupervised sandbox factory.
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != config["parent_pid"]:
        return  # the service died before we could ask to die with it
    sys.path[:] = [p for p in sys.path if os.path.isdir(p)]
    gc.freeze()  # fewer copy-on-write faults in every forked sandbox
    worker = Worker(scratch_mb=config["scratch_mb"], isolated=config["isolated"])
    worker.next = worker.spawn()
    wire.write_frame(1, {"ready": True, "host_dir": host_dir, "pid": os.getpid()})
    while (job := wire.read_frame(0)) is not None:
        program, judge = wire.read_raw_frame(0), wire.read_raw_frame(0)
        if program is None or judge is None:
            break
        result = worker.execute(job, program, judge)
        wire.scrub(program)
        wire.scrub(judge)
        wire.write_frame(1, result)
        worker.next = worker.spawn()
    if worker.next is not None:
        os.close(worker.next.job_w)  # the waiting sandbox reads EOF and exits
        os.waitpid(worker.next.pid, 0)


if __name__ == "__main__":
    main()
