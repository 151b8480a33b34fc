"""The candidate's replies to the judge, checked before the test code sees anything.

The candidate runs untrusted code, which can write any bytes to its reply pipe. The judge
reads every reply through `read_reply`, which accepts only the well-formed answers below and
builds fresh builtin values from them. Anything else (a frame over the size limit, bytes that
are not UTF-8 JSON, NaN or Infinity constants, a duplicated or unknown key, an answer that does
not fit the question, a tagged value of the wrong shape, nesting beyond `wire.MAX_DEPTH`)
raises `MalformedReply`, and the judge ends the execution as the candidate's failure.

    {"loaded": true}                               load: the solution ran (no entry point)
    {"loaded": true, "callable": <bool>}           load: it ran; the entry point the job
                                                   named is a function, or not
    {"loaded": false, "raise": [kind, message]}    load: it raised
    {"missing": true}                              get: no such global
    {"callable": true}                             get: a function (then called by `call`)
    {"value": <plain data>}                        get, call: the value (`wire.encode_plain`)
    {"raise": [kind, message]}                     get, call: the exception it raised
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from codeprm.services.executor import wire
from codeprm.serving.strict_json import finite_float, printable, refuse_constant, unique_keys

Question = Literal["load", "get", "call"]
MAX_KIND = 200
MAX_MESSAGE = 10_000  # the candidate sends at most 2,000 characters


class MalformedReply(Exception):
    """The candidate's reply is not a well-formed answer: its failure, never the tests'."""

    status = "runtime_error"


class ReplyTooLarge(MalformedReply):
    """An answer over the limit once encoded: like output beyond the cap."""

    status = "output_limit"


@dataclass(slots=True)
class Loaded:
    # Whether the job's entry point is a function; None: the job named none. The judge
    # checks that this fits the job (`runner.judge`).
    entry_point_callable: bool | None = None


@dataclass(slots=True)
class Missing:
    pass


@dataclass(slots=True)
class IsCallable:
    pass


@dataclass(slots=True)
class Value:
    value: Any
    size: int  # bytes of the reply frame, to bound what is shown of it


@dataclass(slots=True)
class Raised:
    kind: str
    message: str


Reply = Loaded | Missing | IsCallable | Value | Raised


def read_reply(reader: wire.FrameReader, question: Question, limit: int) -> Reply | None:
    """The candidate's answer to `question`; None if it is gone (end of stream)."""
    try:
        payload = reader.next(limit)
    except wire.FrameTooLarge as exc:
        raise ReplyTooLarge(
            f"the program's answer is {exc.size} bytes, over the {limit}-byte limit"
        ) from None
    if payload is None:
        return None
    return parse_reply(payload, question)


def parse_reply(payload: bytes, question: Question) -> Reply:
    try:
        message = _DECODER.decode(payload.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSON, UTF-8 and int-digit errors alike
        raise MalformedReply(f"the program's answer is not valid JSON ({_short(exc)})") from None
    if type(message) is not dict:
        raise MalformedReply("the program's answer is not an object")
    try:
        return _PARSERS[question](message, len(payload))
    except wire.MalformedPlainData as exc:
        raise MalformedReply(f"the program's answer holds a malformed value ({exc})") from None


def _load(message: dict[str, Any], size: int) -> Reply:
    if _flag(message, "loaded"):
        return Loaded()
    if message.keys() == {"loaded", "callable"} and message["loaded"] is True:
        if type(message["callable"]) is bool:
            return Loaded(message["callable"])
    if message.keys() == {"loaded", "raise"} and message["loaded"] is False:
        return _raised(message["raise"])
    raise _unexpected(message, "load")


def _get(message: dict[str, Any], size: int) -> Reply:
    if _flag(message, "missing"):
        return Missing()
    if _flag(message, "callable"):
        return IsCallable()
    return _call(message, size)


def _call(message: dict[str, Any], size: int) -> Reply:
    if message.keys() == {"value"}:
        return Value(wire.decode_plain(message["value"]), size)
    if message.keys() == {"raise"}:
        return _raised(message["raise"])
    raise _unexpected(message, "call")


def _flag(message: dict[str, Any], key: str) -> bool:
    # `is True`: 1 == True, and {"loaded": 1} is not a well-formed answer.
    return len(message) == 1 and message.get(key) is True


_PARSERS = {"load": _load, "get": _get, "call": _call}


def _raised(data: Any) -> Raised:
    if type(data) is not list or len(data) != 2 or not all(type(p) is str for p in data):
        raise MalformedReply("the program's answer holds an exception that is not [name, message]")
    kind, message = data
    if not kind.isidentifier() or len(kind) > MAX_KIND or len(message) > MAX_MESSAGE:
        raise MalformedReply("the program's answer holds a malformed exception name or message")
    return Raised(kind, printable(message))


def _unexpected(message: dict[str, Any], question: str) -> MalformedReply:
    keys = sorted(str(k)[:20] for k in message)[:5]
    return MalformedReply(f"the program's answer to {question} is malformed (keys {keys})")


# Built once: json.loads with options builds a decoder per call, a third of a small reply's cost.
_DECODER = json.JSONDecoder(
    parse_constant=refuse_constant, parse_float=finite_float, object_pairs_hook=unique_keys
)


def _short(exc: BaseException) -> str:
    return printable(f"{type(exc).__name__}: {exc}")[:200]


# -- what the service shows of a value ---------------------------------------------------------


def shown(value: Any) -> Any:
    """A JSON value for a response's `actual`: containers become lists or objects, what JSON
    cannot hold (bytes, complex, nan, inf, ints of more than 4000 digits) becomes text."""
    t = type(value)
    if value is None or t is bool:
        return value
    if t is int:
        return value if value.bit_length() < 13_000 else hex(value)
    if t is float:
        return value if math.isfinite(value) else repr(value)
    if t is str:
        return printable(value)
    if t in (list, tuple, set, frozenset):
        return [shown(v) for v in value]
    if t is dict:
        return {_key(k): shown(v) for k, v in value.items()}
    return repr(value)  # bytes, complex


def _key(key: Any) -> str:
    if type(key) is str:
        return printable(key)
    if type(key) is int and key.bit_length() >= 13_000:
        return hex(key)
    return printable(repr(key))
