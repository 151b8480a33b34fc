"""Reply checking (services/executor/replies.py): every reply is a well-formed answer or a
MalformedReply, never another exception; plain values round-trip exactly."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codeprm.services.executor import replies, wire
from tests.executor.malformed import MALFORMED_CALL_REPLIES

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**6000), max_value=10**6000)
    | st.floats()
    | st.text()
    | st.binary(max_size=20)
    | st.complex_numbers(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=4) | st.integers() | st.floats(allow_nan=False), inner)
        | st.frozensets(st.integers() | st.text(max_size=4), max_size=4)
        | st.sets(st.integers() | st.binary(max_size=4), max_size=4)
    ),
    max_leaves=30,
)


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (nan equal to nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, complex):
        return _same(a.real, b.real) and _same(a.imag, b.imag)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(plain)
def test_every_plain_value_round_trips_through_a_reply(value: Any) -> None:
    payload = wire.encode_frame({"value": wire.encode_plain(value)})[wire.HEADER_BYTES :]
    reply = replies.parse_reply(payload, "call")
    assert isinstance(reply, replies.Value)
    assert _same(reply.value, value)
    json.dumps(replies.shown(reply.value), allow_nan=False).encode("utf-8")  # always showable


@pytest.mark.parametrize(("name", "payload"), MALFORMED_CALL_REPLIES, ids=lambda v: str(v)[:20])
def test_malformed_replies_are_refused(name: str, payload: bytes) -> None:
    with pytest.raises(replies.MalformedReply):
        replies.parse_reply(payload, "call")


@given(st.binary(max_size=200), st.sampled_from(["load", "get", "call"]))
def test_any_bytes_are_an_answer_or_refused(payload: bytes, question: replies.Question) -> None:
    try:
        reply = replies.parse_reply(payload, question)
    except replies.MalformedReply:
        return
    assert isinstance(reply, replies.Reply)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["value", "raise", "int", "float", "tuple", "dict", "set", "bytes"])
            | st.text(max_size=4),
            inner,
            max_size=3,
        )
    ),
    max_leaves=15,
)


@given(json_values, st.sampled_from(["load", "get", "call"]))
def test_any_json_is_an_answer_or_refused(value: Any, question: replies.Question) -> None:
    payload = json.dumps(value).encode()  # NaN and Infinity included
    try:
        reply = replies.parse_reply(payload, question)
    except replies.MalformedReply:
        return
    assert isinstance(reply, replies.Reply)
    if isinstance(reply, replies.Raised):
        reply.message.encode("utf-8")  # no lone surrogate reaches the service


@given(st.text())
def test_exception_messages_are_made_printable(message: str) -> None:
    payload = json.dumps({"raise": ["ValueError", message]}).encode()
    reply = replies.parse_reply(payload, "call")
    assert isinstance(reply, replies.Raised)
    reply.message.encode("utf-8")


def test_answers_must_fit_their_question() -> None:
    assert isinstance(replies.parse_reply(b'{"callable": true}', "get"), replies.IsCallable)
    assert isinstance(replies.parse_reply(b'{"missing": true}', "get"), replies.Missing)
    assert replies.parse_reply(b'{"loaded": true}', "load") == replies.Loaded(None)
    for flag in (True, False):  # the entry point's lookup, folded into the load reply
        payload = json.dumps({"loaded": True, "callable": flag}).encode()
        assert replies.parse_reply(payload, "load") == replies.Loaded(flag)
    for payload, question in [
        (b'{"loaded": true, "callable": 1}', "load"),
        (b'{"loaded": true, "callable": null}', "load"),
        (b'{"loaded": false, "callable": true}', "load"),
        (b'{"loaded": true, "callable": true}', "get"),
        (b'{"callable": true}', "call"),
        (b'{"value": 1}', "load"),
        (b'{"missing": 1}', "get"),
        (b'{"callable": false}', "get"),
    ]:
        with pytest.raises(replies.MalformedReply):
            replies.parse_reply(payload, question)  # type: ignore[arg-type]
