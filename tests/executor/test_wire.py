from __future__ import annotations

import json
import math
import os
import threading
import time

import pytest

from codeprm.services.executor import wire


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**80),
        3.5,
        "x",
        b"\x00\xff",
        [1, [2]],
        (1, (2,)),
        {"a": (1, 2), 3: None},
        {1, 2},
        frozenset({"a"}),
        1 + 2j,
        [],
        {},
        (),
    ],
)
def test_plain_values_round_trip_exactly(value: object) -> None:
    decoded = wire.decode_plain(wire.encode_plain(value))
    assert decoded == value and type(decoded) is type(value)


def test_special_floats_round_trip() -> None:
    inf, nan = wire.decode_plain(wire.encode_plain([math.inf, math.nan]))
    assert inf == math.inf and math.isnan(nan)


@pytest.mark.parametrize(
    "value",
    [
        type("Sneaky", (int,), {"__eq__": lambda s, o: True})(1),
        type("Evil", (), {"__eq__": lambda s, o: True})(),
        [1, object()],
        {"k": lambda: 1},
    ],
)
def test_anything_else_is_refused(value: object) -> None:
    with pytest.raises(wire.NotPlainData):
        wire.encode_plain(value)


def test_deep_nesting_is_refused() -> None:
    value: list[object] = []
    for _ in range(200):
        value = [value]
    with pytest.raises(wire.NotPlainData):
        wire.encode_plain(value)
    with pytest.raises(wire.NotPlainData):
        wire.check_plain(value)


@pytest.mark.parametrize(
    "value",
    [
        type("Sneaky", (int,), {"__eq__": lambda s, o: True})(1),
        bytearray(b"x"),  # marshal would carry it, as bytes: not what the test code passed
        [1, compile("1", "x", "eval")],  # marshal would carry a code object
        {"k": range(3)},
        {(1, object()): 2},
        ({1, 2}, frozenset({object()})),
    ],
)
def test_check_plain_refuses_what_encode_plain_refuses(value: object) -> None:
    with pytest.raises(wire.NotPlainData):
        wire.encode_plain(value)
    with pytest.raises(wire.NotPlainData):
        wire.check_plain(value)


def test_trusted_frames_carry_plain_data_exactly() -> None:
    value = [None, True, -(2**80), 3.5, "\ud800", b"\x00", (1,), {1: {2}}, frozenset({"a"}), 1j]
    wire.check_plain(value)
    r, w = os.pipe()
    wire.write_all(w, wire.encode_trusted({"args": value}))
    os.close(w)
    reader = wire.FrameReader(r)
    decoded = wire.read_trusted(reader)["args"]
    assert decoded == value and [type(v) for v in decoded] == [type(v) for v in value]
    assert wire.read_trusted(reader) is None


def test_frames_survive_a_pipe() -> None:
    r, w = os.pipe()
    wire.write_frame(w, {"x": [1, 2]})
    wire.write_frame(w, "second")
    os.close(w)
    assert wire.read_frame(r) == {"x": [1, 2]}
    assert wire.read_frame(r) == "second"
    assert wire.read_frame(r) is None


@pytest.mark.parametrize(
    "value",
    [10**5000, -(10**5000), 2**53, -(2**53), complex(math.inf, -math.inf), {10**5000: (10**4400,)}],
    ids=["huge", "minus_huge", "2**53", "-2**53", "complex_inf", "huge_key"],
)
def test_big_ints_and_special_parts_round_trip(value: object) -> None:
    # Big ints travel in hex: no str-digits limit applies, and the frame is plain JSON.
    encoded = wire.encode_plain(value)
    frame = wire.encode_frame(encoded)
    assert b"NaN" not in frame and b"Infinity" not in frame
    assert wire.decode_plain(json.loads(frame[wire.HEADER_BYTES :])) == value


def test_encoding_never_fails_with_anything_but_not_plain_data() -> None:
    import sys

    limit = sys.getrecursionlimit()
    value: list[object] = []
    for _ in range(50):
        value = [value]
    sys.setrecursionlimit(60)  # as a program might
    try:
        with pytest.raises(wire.NotPlainData):
            wire.encode_plain(value)
    finally:
        sys.setrecursionlimit(limit)


def test_frames_are_read_whole_in_order() -> None:
    frame = wire.encode_frame({"value": "x" * 100})
    r, w = os.pipe()
    try:
        reader = wire.FrameReader(r)
        wire.write_all(w, frame)
        assert reader.next() == frame[wire.HEADER_BYTES :]
        # Written in pieces, the header split too: read on until the frame is whole.
        writer = threading.Thread(
            target=lambda: [
                (wire.write_all(w, frame[i : i + 3]), time.sleep(0.001))
                for i in range(0, len(frame), 3)
            ]
        )
        writer.start()
        assert reader.next() == frame[wire.HEADER_BYTES :]
        writer.join()
        second = wire.encode_frame("second")
        wire.write_all(w, frame + second + frame[:2])  # read ahead, kept for the next ones
        assert reader.next() == frame[wire.HEADER_BYTES :]
        assert reader.next() == second[wire.HEADER_BYTES :]
        wire.write_all(w, frame[2:])
        assert reader.next() == frame[wire.HEADER_BYTES :] and reader.pending == b""
        wire.write_all(w, frame)
        with pytest.raises(wire.FrameTooLarge):  # refused from its header alone
            reader.next(limit=len(frame) - wire.HEADER_BYTES - 1)
        reader.pending = b""
        wire.write_all(w, frame[:-1])  # cut short by the writer's end
    finally:
        os.close(w)
    assert reader.next() is None
    assert reader.next() is None
    os.close(r)
