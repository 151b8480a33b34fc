"""What runs inside a sandbox, after its worker hands it a job.

Two shapes:

* program (`/v1/run`, stdio tests): the sandbox's first process becomes the program itself.
* judge + candidate (assert and call tests): a trusted judge, in a sandbox of its own, runs
  the test code; the untrusted solution runs in the candidate and answers the judge's calls
  with plain data over a pipe. Nothing the candidate does in its own process (exiting early,
  patching builtins, printing markers, returning objects that equal everything) can reach
  the judge's verdict: the judge only ever receives plain values.
"""

from __future__ import annotations

import atexit
import builtins
import functools
import linecache
import os
import resource
import socket
import sys
import traceback
import types
from dataclasses import dataclass, field
from typing import Any, NoReturn

from codeprm.services.executor import replies, verdicts, wire
from codeprm.serving.strict_json import printable

SOLUTION_FILE = "/tmp/solution.py"
TEST_FILE = "/tmp/test.py"


@dataclass
class Limits:
    cpu_s: float
    memory_mb: int
    nproc: int
    fsize_mb: int
    nofile: int

    def apply_to(self, pid: int, *, cgroup_first: bool) -> None:
        """Set a candidate's limits from outside (its parent, the worker, before it hands over
        the job: nothing of the candidate's own runs meanwhile, and a freshly forked process
        would pay copy-on-write faults for every object these calls touch). Hard limits
        (soft = hard), so the program cannot raise them again.

        With a memory cgroup (`cgroup_first`) RLIMIT_AS is the second wall, set well above
        memory_mb: Python maps address space it never touches, and a program that really uses
        its memory must meet the cgroup's limit (a kernel fact: `memory_limit`) first, not a
        MemoryError it could as well have raised itself."""
        cpu = max(1, int(self.cpu_s + 0.999))
        mem = self.memory_mb * 1024 * 1024
        address_space = 2 * mem + (256 << 20) if cgroup_first else mem
        # glibc sizes thread stacks from RLIMIT_STACK: keep it small so threads stay cheap.
        stack = min(16, self.memory_mb // 8) * 1024 * 1024
        fsize = self.fsize_mb * 1024 * 1024
        for limit, soft, hard in (
            # The kernel sends SIGXCPU at the soft limit and SIGKILL at the hard one.
            (resource.RLIMIT_CPU, cpu, cpu + 1),
            (resource.RLIMIT_AS, address_space, address_space),
            (resource.RLIMIT_STACK, stack, stack),
            (resource.RLIMIT_NPROC, self.nproc, self.nproc),
            (resource.RLIMIT_FSIZE, fsize, fsize),
            (resource.RLIMIT_NOFILE, self.nofile, self.nofile),
            (resource.RLIMIT_CORE, 0, 0),
            (resource.RLIMIT_MSGQUEUE, 0, 0),
        ):
            resource.prlimit(pid, limit, (soft, hard))


def standard_streams() -> None:
    """Give this process the sys.stdin/stdout/stderr a fresh `python solution.py` has, on
    fds 0-2. Called once in the zygote: every sandbox inherits them, with empty buffers,
    instead of building three text wrappers after each fork."""
    # Made on a pipe, so that they know themselves unseekable, as on the sandbox's pipes.
    r, w = os.pipe()
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    for fd, end in ((0, r), (1, w), (2, w)):
        os.dup2(end, fd)
    streams = {
        "stdin": open(0, encoding="utf-8", errors="replace", closefd=False),
        "stdout": open(1, "w", encoding="utf-8", errors="replace", closefd=False),
        "stderr": open(
            2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1
        ),
    }
    for name, stream in streams.items():  # sys.__stdout__ and friends too, as at start-up
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    for fd, original in enumerate(saved):
        os.dup2(original, fd)
        os.close(original)
    os.close(r)
    os.close(w)


def become_program(stdin_fd: int, stdout_fd: int, stderr_fd: int, keep: tuple[int, ...]) -> None:
    """Make this forked process look like a fresh `python solution.py` (its limits are set by
    its worker once the job is known: `Limits.apply_to`). Keeps only fds 0-2 and `keep` open."""
    os.dup2(stdin_fd, 0)
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    close_fds_except(keep)
    sys.argv = [SOLUTION_FILE]


def close_fds_except(keep: tuple[int, ...]) -> None:
    start = 3
    for fd in sorted(keep):
        if fd >= start:
            os.closerange(start, fd)
            start = fd + 1
    os.closerange(start, 1 << 16)


def _fresh_main(code: str, filename: str) -> tuple[types.ModuleType, types.CodeType]:
    main = types.ModuleType("__main__")
    main.__file__ = filename
    main.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules["__main__"] = main
    # Tracebacks show source lines without the file having to exist on disk.
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    return main, compile(code, filename, "exec", dont_inherit=True)


def print_user_traceback(exc: BaseException) -> None:
    """The traceback `python solution.py` would print: from the program's first frame on.
    The executor's own frames (which would show its paths on the host) are left out."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != SOLUTION_FILE:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb)


def run_program(code: str) -> NoReturn:
    """Run `code` as __main__ and exit the way `python file.py` would."""
    try:
        main, compiled = _fresh_main(code, SOLUTION_FILE)
        exec(compiled, main.__dict__)
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException as exc:
        print_user_traceback(exc)
        status = 1
    _finish(status)


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _finish(status: int) -> NoReturn:
    try:
        # Never imported before the program runs: threading's fork hooks would cost every
        # sandbox; a program that starts threads has imported it.
        threading = sys.modules.get("threading")
        if threading is not None:
            for thread in threading.enumerate():
                if thread is not threading.main_thread() and not thread.daemon:
                    thread.join()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        status = status or 1
    os._exit(status)


# -- the candidate: untrusted solution answering calls ----------------------------------------


def serve_candidate(
    code: str, entry_point: str | None, requests_fd: int, replies_fd: int
) -> NoReturn:
    """Run the solution, then answer the judge's `get`/`call` requests until it hangs up.
    The load reply also says whether `entry_point` is a function: the judge needs it first,
    and a request of its own would cost a round trip (two context switches) per job."""
    try:
        main, compiled = _fresh_main(code, SOLUTION_FILE)
        exec(compiled, main.__dict__)
    except BaseException as exc:
        print_user_traceback(exc)
        wire.write_frame(replies_fd, {"loaded": False, "raise": _describe(exc)})
        _finish(1)
    namespace = main.__dict__
    loaded: dict[str, Any] = {"loaded": True}
    if entry_point is not None:
        try:  # a key of the program's own str subclass runs its __eq__ here
            loaded["callable"] = callable(namespace.get(entry_point))
        except BaseException:
            loaded["callable"] = False
    wire.write_frame(replies_fd, loaded)
    request: wire.Request | None
    requests = wire.FrameReader(requests_fd)
    while (request := wire.read_trusted(requests)) is not None:
        wire.write_frame(replies_fd, _answer(namespace, request))
    _finish(0)


def _answer(namespace: dict[str, Any], request: wire.Request) -> dict[str, Any]:
    """The reply `replies.read_reply` checks on the judge's side."""
    name = request["name"]
    if name not in namespace:
        return {"missing": True}
    target = namespace[name]
    try:
        if request["op"] == "get":
            if callable(target):
                return {"callable": True}
            return {"value": wire.encode_plain(target)}
        return {"value": wire.encode_plain(target(*request["args"], **request["kwargs"]))}
    except BaseException as exc:  # the candidate's own failure is data for the judge
        return {"raise": _describe(exc)}


def _describe(exc: BaseException) -> list[str]:
    return [type(exc).__name__, str(exc)[:2000]]


# -- the judge: trusted test code, calling the candidate across the boundary ------------------


class CandidateError(Exception):
    """The candidate raised an exception that is not a builtin one."""


class CandidateFailed(BaseException):
    """The candidate is gone (exited or killed) or sent something that is not a well-formed
    answer (`replies`). Decided before the test code sees anything: the execution is the
    candidate's failure even if the test code catches this, and every later call fails too."""


@dataclass
class JudgeState:
    raised: bool = False
    memory_error: bool = False
    died: bool = False
    failure: str | None = None  # why the candidate failed (`CandidateFailed`)
    status: str | None = None  # the status a malformed reply gives: runtime_error, output_limit
    shown_bytes: int = 0  # of the call results shown so far (`Candidate.show`)


class Candidate:
    """The judge's end of the pipe to the candidate process."""

    def __init__(
        self, requests_fd: int, replies_fd: int, state: JudgeState, reply_limit: int
    ) -> None:
        self.requests_fd = requests_fd
        self.reader = wire.FrameReader(replies_fd)  # this execution's pipe, read in order
        self.state = state
        self.reply_limit = reply_limit

    def ask(self, request: wire.Request | None, question: replies.Question) -> replies.Reply:
        """The candidate's well-formed answer; raises CandidateFailed otherwise."""
        if self.state.failure is not None:  # caught by the tests: it stays failed
            raise CandidateFailed(self.state.failure)
        try:
            if request is not None:  # "load": the candidate speaks first
                wire.write_all(self.requests_fd, wire.encode_trusted(request))
            reply = replies.read_reply(self.reader, question, self.reply_limit)
        except OSError:
            reply = None
        except replies.MalformedReply as exc:
            self.fail(str(exc), exc.status)
        if reply is None:
            self.state.died = True  # how it ended decides the status (the worker's part)
            when = "while loading" if question == "load" else "during a test"
            self.fail(f"the program exited or was killed {when}", None)
        return reply

    def fail(self, reason: str, status: str | None) -> NoReturn:
        self.state.failure = self.state.failure or reason
        self.state.status = self.state.status or status
        raise CandidateFailed(self.state.failure)

    def note_raise(self, reply: replies.Raised) -> str:
        """Record that the candidate raised; returns "<type name>: <message>"."""
        self.state.raised = True
        self.state.memory_error |= reply.kind == "MemoryError"
        return f"{reply.kind}: {reply.message}"

    def entry_point(self, name: str, loaded: replies.Loaded) -> RemoteFunction:
        """The job's entry point, which the candidate looked up as it loaded."""
        if not loaded.entry_point_callable:
            raise NameError(f"the solution defines no function {name!r}")
        return RemoteFunction(self, name)

    def unwrap(self, reply: replies.Reply) -> Any:
        """The value the candidate answered, or its exception raised here."""
        if isinstance(reply, replies.Value):
            return reply.value
        if not isinstance(reply, replies.Raised):
            self.fail("the program's answer does not fit the question", "runtime_error")
        description = self.note_raise(reply)
        if reply.kind == "NotPlainData":  # what it returned cannot cross: its failure
            self.fail(f"the solution's value cannot be compared: {reply.message}", "runtime_error")
        exc_type = getattr(builtins, reply.kind, None)
        if isinstance(exc_type, type) and issubclass(exc_type, Exception):
            try:
                exc = exc_type(reply.message)
            except Exception:  # e.g. UnicodeDecodeError wants five arguments
                exc = CandidateError(description)
            raise exc
        raise CandidateError(description)

    def show(self, value: replies.Value) -> Any:
        """What the response shows of a call's result: all of it, within a budget per
        execution, so that the result frame stays small."""
        if self.state.shown_bytes + value.size > self.reply_limit:
            return f"<not shown: {value.size} bytes>"
        self.state.shown_bytes += value.size
        return replies.shown(value.value)


@dataclass
class RemoteFunction:
    """Stands in for a function of the solution: calls it in the candidate process."""

    candidate: Candidate
    name: str
    __name__: str = field(init=False)

    def __post_init__(self) -> None:
        self.__name__ = self.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            wire.check_plain(args)
            wire.check_plain(kwargs)
        except wire.NotPlainData as exc:
            raise TypeError(f"cannot pass to the solution: {exc}") from None
        request: wire.Request = {
            "op": "call",
            "name": self.name,
            "args": list(args),
            "kwargs": kwargs,
        }
        return self.candidate.unwrap(self.candidate.ask(request, "call"))


class SolutionNames(dict[str, Any]):
    """Test-code globals: a name the tests do not define and that is not a builtin resolves to
    the solution's global of that name (functions as RemoteFunction, data as a copy)."""

    def __init__(self, candidate: Candidate, *args: Any) -> None:
        super().__init__(*args)
        self.candidate = candidate

    def __missing__(self, name: str) -> Any:
        if hasattr(builtins, name) or name.startswith("__"):
            raise KeyError(name)
        reply = self.candidate.ask({"op": "get", "name": name}, "get")
        if isinstance(reply, replies.Missing):
            raise KeyError(name)
        if isinstance(reply, replies.IsCallable):
            function = RemoteFunction(self.candidate, name)
            self[name] = function
            return function
        return self.candidate.unwrap(reply)


def judge_asserts(
    candidate: Candidate, loaded: replies.Loaded, test_code: str, entry_point: str | None
) -> None:
    """Run HumanEval/MBPP-style test code; returns only if every test ran and passed."""
    names = SolutionNames(candidate, {"__name__": "__main__", "__builtins__": builtins})
    if entry_point is not None:
        names[entry_point] = candidate.entry_point(entry_point, loaded)
    linecache.cache[TEST_FILE] = (len(test_code), None, test_code.splitlines(True), TEST_FILE)
    exec(_compiled_tests(test_code), names)
    check = dict.get(names, "check")
    if entry_point is not None and callable(check):
        check(names[entry_point])


@functools.lru_cache(maxsize=64)
def _compiled_tests(test_code: str) -> types.CodeType:
    # The judge lives on, and RL and labeling send the same problem's tests again and again.
    return compile(test_code, TEST_FILE, "exec", dont_inherit=True)


def judge_calls(
    candidate: Candidate,
    loaded: replies.Loaded,
    entry_point: str,
    cases: list[list[Any]],
    tolerance: float,
    report_fd: int,
) -> None:
    """Call the solution once per case, compare its result with the expected value here, in
    the sandbox (the service never decodes what a program returned), and report each outcome
    as soon as it is known."""
    candidate.entry_point(entry_point, loaded)
    for index, (args, kwargs, expected) in enumerate(cases):
        # Fresh builtin values, decoded here from the service's tagged form (`encode_plain`).
        request: wire.Request = {
            "op": "call",
            "name": entry_point,
            "args": wire.decode_plain(args),
            "kwargs": wire.decode_plain(kwargs),
        }
        reply = candidate.ask(request, "call")
        report: wire.CaseReport
        if isinstance(reply, replies.Value):
            passed = verdicts.values_equal(reply.value, expected, tolerance)
            report = {"case": index, "passed": passed, "actual": candidate.show(reply)}
        elif isinstance(reply, replies.Raised):
            report = {"case": index, "error": candidate.note_raise(reply)}
        else:
            candidate.fail("the program's answer does not fit the question", "runtime_error")
        wire.write_frame(report_fd, report)


def describe_failure(exc: BaseException) -> str:
    try:
        lines = traceback.format_exception_only(type(exc), exc)
    except Exception:  # an exception whose str() fails (a test's own class, say)
        lines = [type(exc).__name__]
    return printable("".join(lines).strip()[:4000])


def serve_judge(channel: socket.socket) -> NoReturn:
    """The judge's loop: per job, the candidate's pipe ends (SCM_RIGHTS) and then a frame
    with the tests come in; case frames and a final `done` frame go out."""
    fd = channel.fileno()
    while True:
        message, fds, _, _ = socket.recv_fds(channel, 1, 2)
        if not message:
            os._exit(0)
        requests_w, replies_r = fds
        try:
            job: wire.JudgeJob = wire.read_frame(fd)
            candidate = Candidate(requests_w, replies_r, JudgeState(), job["reply_limit_bytes"])
            done = judge(candidate, job, fd)
        finally:
            os.close(requests_w)
            os.close(replies_r)
        wire.write_frame(fd, done)


def judge(candidate: Candidate, job: wire.JudgeJob, report_fd: int) -> wire.JudgeDone:
    """Run one job's tests against the candidate; the summary for the worker."""
    state = candidate.state
    completed, error = False, None
    try:
        loaded = candidate.ask(None, "load")
        if isinstance(loaded, replies.Raised):
            error = candidate.note_raise(loaded)
        elif not isinstance(loaded, replies.Loaded) or (loaded.entry_point_callable is None) != (
            "entry_point" not in job
        ):  # the entry point's lookup, and only if one was named
            candidate.fail("the program's answer does not fit the question", "runtime_error")
        elif "test_code" in job:
            judge_asserts(candidate, loaded, job["test_code"], job.get("entry_point"))
            completed = True
        else:
            judge_calls(
                candidate,
                loaded,
                job["entry_point"],
                job["cases"],
                job["float_tolerance"],
                report_fd,
            )
            completed = True
    except BaseException as exc:  # the tests' own SystemExit included: a job ends, not us
        error = describe_failure(exc)
    if state.failure is not None:  # whatever the tests made of it
        completed, error = False, printable(state.failure)
    return {
        "done": True,
        "completed": completed,
        "error": error,
        "raised": state.raised,
        "memory_error": state.memory_error,
        "died": state.died,
        "status": state.status,
    }
