"""Bytes that cross a sandbox boundary.

* Frames: a 4-byte big-endian length, then UTF-8 JSON. Used between the service and its
  workers, and between a worker and its sandboxes.
* Plain data: values returned by sandboxed code cross as tagged JSON built from exact builtin
  types only (None, bool, int, float, complex, str, bytes, list, tuple, dict, set,
  frozenset). Subclasses are refused, so an object whose `__eq__` always says True cannot
  cross; decoding builds fresh builtin objects, never calls code.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from typing import Any

MAX_FRAME = 256 * 1024 * 1024
_LEN = struct.Struct(">I")


class NotPlainData(TypeError):
    pass


HEADER_BYTES = _LEN.size


def encode_frame(message: Any) -> bytes:
    payload = json.dumps(message, separators=(",", ":")).encode()
    return _LEN.pack(len(payload)) + payload


def frame_size(header: bytes) -> int:
    """The payload length announced by a frame's header."""
    (size,) = _LEN.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
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


def encode_job(job: dict[str, Any]) -> bytes:
    """A job for a worker: a frame the worker reads, then the program's part and the judge's
    part (the tests), which the worker forwards to its sandboxes as they are (`read_raw_frame`)
    rather than decoding and encoding them again."""
    meta = {k: v for k, v in job.items() if k not in ("program", "judge")}
    return encode_frame(meta) + encode_frame(job["program"]) + encode_frame(job["judge"])


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
    header = read_exact(fd, HEADER_BYTES)
    if header is None:
        return None
    payload = read_exact(fd, frame_size(header))
    if payload is None:
        return None
    return json.loads(payload)


def encode_plain(value: Any, depth: int = 0) -> Any:
    """A JSON-able tagged form of `value`; NotPlainData if any part is not plain data."""
    if depth > 100:
        raise NotPlainData("value nested more than 100 levels deep")
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if -(2**53) < value < 2**53 else {"int": str(value)}
    if t is float:
        return (
            value
            if value == value and value not in (float("inf"), float("-inf"))
            else {"float": repr(value)}
        )
    if t is list:
        return [encode_plain(v, depth + 1) for v in value]
    if t is tuple:
        return {"tuple": [encode_plain(v, depth + 1) for v in value]}
    if t is dict:
        return {
            "dict": [
                [encode_plain(k, depth + 1), encode_plain(v, depth + 1)] for k, v in value.items()
            ]
        }
    if t is set or t is frozenset:
        items = [encode_plain(v, depth + 1) for v in value]
        return {"set" if t is set else "frozenset": items}
    if t is bytes:
        return {"bytes": base64.b64encode(value).decode()}
    if t is complex:
        return {"complex": [value.real, value.imag]}
    raise NotPlainData(f"a value of type {t.__module__}.{t.__qualname__} is not plain data")


def decode_plain(data: Any) -> Any:
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if isinstance(data, list):
        return [decode_plain(v) for v in data]
    if not isinstance(data, dict) or len(data) != 1:
        raise ValueError("malformed plain-data value")
    ((tag, inner),) = data.items()
    if tag == "int":
        return int(inner)
    if tag == "float":
        return float(inner)
    if tag == "tuple":
        return tuple(decode_plain(v) for v in inner)
    if tag == "dict":
        return {_hashable(decode_plain(k)): decode_plain(v) for k, v in inner}
    if tag in ("set", "frozenset"):
        items = {_hashable(decode_plain(v)) for v in inner}
        return items if tag == "set" else frozenset(items)
    if tag == "bytes":
        return base64.b64decode(inner)
    if tag == "complex":
        return complex(inner[0], inner[1])
    raise ValueError(f"unknown plain-data tag {tag!r}")


def _hashable(value: Any) -> Any:
    hash(value)  # a list key would otherwise fail later, far from here
    return value
