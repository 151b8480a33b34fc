"""Bytes that cross a sandbox boundary.

* Frames: a 4-byte big-endian length, then UTF-8 JSON. Used between the service and its
  workers, and between a worker and its sandboxes; the messages they carry are the
  TypedDicts below (the protocol, in one place).
* Trusted frames (`encode_trusted`): the same 4-byte length, then `marshal` data. Only for
  what flows *into* a candidate from the trusted side (its job from the service, the judge's
  requests): the candidate decodes them in C with no Python code of its own to run, where JSON
  plus the plain-data tags cost it copy-on-write faults and per-call work. marshal is not safe
  to load from a hostile writer, so nothing a candidate writes is ever read as marshal: its
  replies are JSON, checked by `replies` in the judge.
* Plain data: values returned by sandboxed code cross as tagged JSON built from exact builtin
  types only (None, bool, int, float, complex, str, bytes, list, tuple, dict, set,
  frozenset). Subclasses are refused, so an object whose `__eq__` always says True cannot
  cross; decoding builds fresh builtin objects, never calls code.
"""

from __future__ import annotations

import base64
import json
import marshal
import math
import os
import re
import struct
from collections.abc import Callable
from typing import Any, Literal, NotRequired, Required, TypedDict

MAX_FRAME = 256 * 1024 * 1024
_LEN = struct.Struct(">I")


class NotPlainData(TypeError):
    pass


HEADER_BYTES = _LEN.size


# Built once: json.dumps with options builds an encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def encode_frame(message: Any) -> bytes:
    payload = _ENCODER.encode(message).encode()
    return _LEN.pack(len(payload)) + payload


def encode_trusted(message: Any) -> bytes:
    """A trusted frame (marshal) of `message`, for a candidate to read (`read_trusted`)."""
    payload = marshal.dumps(message)
    return _LEN.pack(len(payload)) + payload


class FrameTooLarge(ValueError):
    def __init__(self, size: int) -> None:
        super().__init__(f"frame of {size} bytes")
        self.size = size


def frame_size(header: bytes, limit: int = MAX_FRAME) -> int:
    """The payload length announced by a frame's header; FrameTooLarge over `limit`."""
    (size,) = _LEN.unpack(header)
    if size > limit:
        raise FrameTooLarge(size)
    return int(size)


def write_frame(fd: int, message: Any) -> None:
    write_all(fd, encode_frame(message))


def read_exact(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def encode_job(job: Job) -> bytes:
    """A job for a worker: a frame the worker reads, then the program's part and the judge's
    part (the tests), which the worker forwards to its sandboxes as they are (`read_raw_frame`)
    rather than decoding and encoding them again."""
    meta = {k: v for k, v in job.items() if k not in ("program", "judge")}  # the rest of Job
    return encode_frame(meta) + encode_trusted(job["program"]) + encode_frame(job["judge"])


def read_raw_frame(fd: int) -> bytearray | None:
    """The next frame, header included, undecoded; None at end of stream."""
    header = read_exact(fd, HEADER_BYTES)
    if header is None:
        return None
    frame = bytearray(HEADER_BYTES + frame_size(header))
    frame[:HEADER_BYTES] = header
    view = memoryview(frame)[HEADER_BYTES:]
    while view:
        n = os.readv(fd, [view])
        if n == 0:
            return None
        view = view[n:]
    return frame


class FrameBuffer:
    """Frames from a stream that arrives in arbitrary chunks."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[Any]:
        """The frames that `chunk` completes, in order."""
        self._buffer += chunk
        frames = []
        while len(self._buffer) >= HEADER_BYTES:
            end = HEADER_BYTES + frame_size(bytes(self._buffer[:HEADER_BYTES]))
            if len(self._buffer) < end:
                break
            frames.append(json.loads(self._buffer[HEADER_BYTES:end]))
            del self._buffer[:end]
        return frames


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_frame(fd: int) -> Any:
    """The next message, or None at end of stream."""
    payload = _read_payload(fd)
    return None if payload is None else json.loads(payload)


def read_trusted(reader: FrameReader) -> Any:
    """The next trusted frame's message (`encode_trusted`), or None at end of stream. Only a
    candidate calls this, on pipes that only the service and its judge write to."""
    payload = reader.next()
    return None if payload is None else marshal.loads(payload)


_READ = 1 << 16


class FrameReader:
    """Frames from a pipe whose writer sends one and waits for the answer (the judge's
    requests, the candidate's replies, a candidate's job): one read usually takes a whole
    frame, one system call per message instead of two (header, then payload), on both sides
    of every call a test makes. Bytes beyond the frame (a hostile candidate's replies nobody
    asked for, and so the requests the judge then sends ahead) are kept, in order, for the
    next frames, as exact reads would have left them in the pipe."""

    __slots__ = ("fd", "pending")  # no instance dict: less to write in a fresh candidate

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = b""

    def next(self, limit: int = MAX_FRAME) -> bytes | None:
        """The next frame's payload, or None at end of stream; FrameTooLarge if its header
        announces more than `limit` (refused before the rest is read)."""
        data, self.pending = self.pending, b""
        while len(data) < HEADER_BYTES:
            chunk = os.read(self.fd, _READ)
            if not chunk:
                return None
            data += chunk
        end = HEADER_BYTES + frame_size(data[:HEADER_BYTES], limit)
        if len(data) < end:
            rest = read_exact(self.fd, end - len(data))
            if rest is None:
                return None
            data += rest
        self.pending = data[end:]
        return data[HEADER_BYTES:end]


def _read_payload(fd: int) -> bytes | None:
    header = read_exact(fd, HEADER_BYTES)
    if header is None:
        return None
    return read_exact(fd, frame_size(header))


# -- the protocol -----------------------------------------------------------------------------
# Messages are JSON objects; these TypedDicts name their keys for the type checker and cost
# nothing at run time (a candidate decodes its job in a freshly forked process, where every
# object it builds is paid for in copy-on-write faults).

Mode = Literal["program", "assert", "call"]


class WorkerConfig(TypedDict):
    """service → worker, once, before anything else."""

    isolated: bool
    parent_pid: int
    extra_paths: list[str]
    scratch_mb: int
    judge_memory_mb: int
    cpu: int | None  # its judge's CPU (`ExecutorSettings.pin_judges`)


class WorkerHello(TypedDict, total=False):
    """worker → service, once: ready, or why not."""

    ready: Required[bool]
    error: str
    host_dir: str | None
    pid: int
    memory_cgroup: str | None


class Limits(TypedDict):
    cpu_s: float
    memory_mb: int
    nproc: int
    fsize_mb: int
    nofile: int


class ProgramJob(TypedDict):
    """worker → candidate, a trusted frame (forwarded as the service encoded it)."""

    mode: Mode
    code: str
    memory_mb: int
    entry_point: NotRequired[str]  # judged jobs: looked up as the solution loads


class JudgeJob(TypedDict, total=False):
    """worker → judge (forwarded as the service encoded it): assert tests carry `test_code`,
    call tests `cases` and `float_tolerance`."""

    reply_limit_bytes: Required[int]
    test_code: str
    entry_point: str
    cases: list[list[Any]]  # [args, kwargs, expected], args and kwargs as `encode_plain` made
    float_tolerance: float


class Job(TypedDict):
    """service → worker: the worker's part, then `program` and `judge` as two raw frames
    (`encode_job`)."""

    mode: Mode
    limits: Limits
    timeout_s: float
    stdin: str
    output_limit_bytes: int
    program: ProgramJob
    judge: JudgeJob


class CaseReport(TypedDict, total=False):
    """judge → worker, per call-test case as soon as it is known."""

    case: Required[int]
    passed: bool
    actual: Any  # what the response shows (`replies.shown`)
    error: str  # the candidate raised: "<type name>: <message>"


class JudgeDone(TypedDict):
    """judge → worker, the last frame of a job."""

    done: Literal[True]
    completed: bool  # the tests ran to their end
    error: str | None
    raised: bool
    memory_error: bool
    died: bool  # the candidate was gone during the tests
    status: str | None  # the status a malformed reply gives (`replies`)


class JudgeOutcome(TypedDict):
    completed: bool
    error: str | None
    cases: dict[str, CaseReport]  # by case index, as JSON keys are strings


class Result(TypedDict, total=False):
    """worker → service (and the pool's own for a failed worker)."""

    status: Required[str]  # a `codeprm.api.executor.RunStatus`, checked where it becomes one
    exit_code: Required[int | None]
    stdout: Required[str]
    stderr: Required[str]
    wall_time_s: Required[float]
    cpu_time_s: Required[float]
    peak_memory_mb: Required[float]
    judge: JudgeOutcome  # judged modes


def sandbox_error(reason: str) -> Result:
    """The result of a job that no sandbox answered (a failed worker, a bug of ours)."""
    return {
        "status": "sandbox_error",
        "exit_code": None,
        "stdout": "",
        "stderr": reason,
        "wall_time_s": 0.0,
        "cpu_time_s": 0.0,
        "peak_memory_mb": 0.0,
    }


class Request(TypedDict, total=False):
    """judge → candidate, a trusted frame: a global's kind or value (`get`), or a call of it."""

    op: Required[Literal["get", "call"]]
    name: Required[str]
    args: list[Any]  # plain data (`check_plain`), as marshal carries it
    kwargs: dict[str, Any]


MAX_DEPTH = 100
_HEX_INT = re.compile(r"-?0x[0-9a-f]+")
_SPECIAL_FLOATS = ("nan", "inf", "-inf")


class MalformedPlainData(ValueError):
    """Data that `encode_plain` cannot have produced."""


def encode_plain(value: Any) -> Any:
    """A JSON-able tagged form of `value`; NotPlainData if any part is not plain data (or
    the value is nested deeper than MAX_DEPTH)."""
    try:
        return _encode(value, 0)
    except RecursionError:  # a program that lowered its own recursion limit
        raise NotPlainData("value nested too deep to encode") from None


def check_plain(value: Any) -> None:
    """NotPlainData unless `value` is plain data (what `encode_plain` accepts): what the
    judge may pass to a candidate, which receives exactly these types (`encode_trusted`)."""
    try:
        _check(value, 0)
    except RecursionError:
        raise NotPlainData("value nested too deep to encode") from None


_FLAT = frozenset((type(None), bool, int, float, str, bytes, complex))
_CONTAINERS = frozenset((list, tuple, set, frozenset))


def _check(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise NotPlainData(f"value nested more than {MAX_DEPTH} levels deep")
    t = type(value)
    if t in _FLAT:
        return
    if t in _CONTAINERS:
        for v in value:
            _check(v, depth + 1)
    elif t is dict:
        for k, v in value.items():
            _check(k, depth + 1)
            _check(v, depth + 1)
    else:
        raise NotPlainData(f"a value of type {t.__module__}.{t.__qualname__} is not plain data")


def _encode(value: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise NotPlainData(f"value nested more than {MAX_DEPTH} levels deep")
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        # Hex, not decimal: int <-> str in base 10 is refused beyond 4300 digits (and slow).
        return value if -(2**53) < value < 2**53 else {"int": hex(value)}
    if t is float:
        return value if math.isfinite(value) else {"float": repr(value)}
    if t is list:
        return [_encode(v, depth + 1) for v in value]
    if t is tuple:
        return {"tuple": [_encode(v, depth + 1) for v in value]}
    if t is dict:
        return {"dict": [[_encode(k, depth + 1), _encode(v, depth + 1)] for k, v in value.items()]}
    if t is set or t is frozenset:
        return {"set" if t is set else "frozenset": [_encode(v, depth + 1) for v in value]}
    if t is bytes:
        return {"bytes": base64.b64encode(value).decode()}
    if t is complex:
        return {"complex": [_encode(value.real, depth + 1), _encode(value.imag, depth + 1)]}
    raise NotPlainData(f"a value of type {t.__module__}.{t.__qualname__} is not plain data")


def decode_plain(data: Any) -> Any:
    """Fresh builtin values from what `encode_plain` produced; MalformedPlainData for
    anything else (unknown or misshapen tags, non-finite raw floats, unhashable set members
    or keys, nesting beyond MAX_DEPTH). Never calls code of the data's choosing."""
    try:
        return _decode(data, 0)
    except RecursionError:
        raise MalformedPlainData("value nested too deep") from None


def _decode(data: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise MalformedPlainData(f"value nested more than {MAX_DEPTH} levels deep")
    t = type(data)
    if data is None or t is bool or t is str or t is int:
        return data
    if t is float:
        if not math.isfinite(data):
            raise MalformedPlainData("a raw float that is not finite")
        return data
    if t is list:
        return [_decode(v, depth + 1) for v in data]
    if t is not dict or len(data) != 1:
        raise MalformedPlainData(f"expected a value, got {_kind(data)}")
    ((tag, inner),) = data.items()
    decoder = _TAGGED.get(tag)
    if decoder is None:
        raise MalformedPlainData(f"unknown tag {str(tag)[:40]!r}")
    return decoder(inner, depth + 1)


def _items(inner: Any, depth: int) -> list[Any]:
    if type(inner) is not list:
        raise MalformedPlainData(f"expected a list of items, got {_kind(inner)}")
    return [_decode(v, depth) for v in inner]


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        raise MalformedPlainData(f"an unhashable {_kind(value)} as a key or set member") from None
    return value


def _int(inner: Any, depth: int) -> int:
    if type(inner) is not str or not _HEX_INT.fullmatch(inner):
        raise MalformedPlainData("an int tag that is not a hex string")
    return int(inner, 16)


def _float(inner: Any, depth: int) -> float:
    if inner not in _SPECIAL_FLOATS:
        raise MalformedPlainData("a float tag that is not nan, inf or -inf")
    return float(inner)


def _dict(inner: Any, depth: int) -> dict[Any, Any]:
    if type(inner) is not list:
        raise MalformedPlainData(f"expected a list of pairs, got {_kind(inner)}")
    result = {}
    for pair in inner:
        if type(pair) is not list or len(pair) != 2:
            raise MalformedPlainData("a dict item that is not a [key, value] pair")
        result[_hashable(_decode(pair[0], depth))] = _decode(pair[1], depth)
    return result


def _set(inner: Any, depth: int) -> set[Any]:
    return {_hashable(v) for v in _items(inner, depth)}


def _bytes(inner: Any, depth: int) -> bytes:
    if type(inner) is not str:
        raise MalformedPlainData("a bytes tag that is not a string")
    try:
        return base64.b64decode(inner.encode("ascii"), validate=True)
    except ValueError:  # binascii.Error and non-ASCII text alike
        raise MalformedPlainData("a bytes tag that is not base64") from None


def _complex(inner: Any, depth: int) -> complex:
    parts = _items(inner, depth)
    if len(parts) != 2 or not all(type(p) is float for p in parts):
        raise MalformedPlainData("a complex tag that is not two floats")
    return complex(parts[0], parts[1])


_TAGGED: dict[Any, Callable[[Any, int], Any]] = {
    "int": _int,
    "float": _float,
    "tuple": lambda inner, depth: tuple(_items(inner, depth)),
    "dict": _dict,
    "set": _set,
    "frozenset": lambda inner, depth: frozenset(_set(inner, depth)),
    "bytes": _bytes,
    "complex": _complex,
}


def _kind(data: Any) -> str:
    return type(data).__name__
