"""The judge (services/executor/runner.py) against a scripted candidate over real pipes.

The scripted candidate is this test's own thread speaking the wire protocol: no untrusted
code runs here, so no sandbox is needed. What a hostile program does over HTTP is in
test_replies_hostile.py.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from codeprm.services.executor import wire
from codeprm.services.executor.runner import Candidate, JudgeState, judge
from tests.executor.malformed import MALFORMED_CALL_REPLIES

LIMIT = 1 << 20
CATCHES_VALUE_ERROR = """
def check(candidate):
    try:
        candidate(1)
    except ValueError:
        pass
"""
CATCH_ALL = """
def check(candidate):
    for _ in range(3):
        try:
            assert candidate(1) == 2
        except BaseException:
            pass
"""


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def honest(function: Callable[..., Any]) -> Callable[[dict[str, Any]], bytes]:
    def answer(request: dict[str, Any]) -> bytes:
        if request["op"] == "get":
            return wire.encode_frame({"callable": True})
        return wire.encode_frame({"value": wire.encode_plain(function(*request["args"]))})

    return answer


@contextmanager
def scripted(
    answers: Callable[[dict[str, Any]], bytes], load: bytes | None = None
) -> Iterator[tuple[Candidate, list[dict[str, Any]]]]:
    """A candidate whose replies `answers(request)` writes (raw frames); yields the judge's
    Candidate and the list of requests the scripted side received."""
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    received: list[dict[str, Any]] = []

    def serve() -> None:
        try:
            # The jobs here name an entry point "f": the load reply says whether it is callable.
            loaded = {"loaded": True, "callable": True}
            wire.write_all(replies_w, load or wire.encode_frame(loaded))
            requests = wire.FrameReader(requests_r)
            while (request := wire.read_trusted(requests)) is not None:
                received.append(request)
                wire.write_all(replies_w, answers(request))
        except OSError:
            pass  # the judge hung up mid-reply (an oversized one, say)
        finally:
            os.close(replies_w)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield Candidate(requests_w, replies_r, JudgeState(), LIMIT), received
    finally:
        os.close(requests_w)
        os.close(replies_r)
        thread.join(10)
        os.close(requests_r)


def run(candidate: Candidate, job: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    report_r, report_w = os.pipe()
    reports: list[Any] = []

    def drain() -> None:
        while (frame := wire.read_frame(report_r)) is not None:
            reports.append(frame)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        done = judge(candidate, job, report_w)
    finally:
        os.close(report_w)
        reader.join(10)
        os.close(report_r)
    return done, reports


def assert_job(check: str) -> dict[str, Any]:
    return {"test_code": check, "entry_point": "f", "reply_limit_bytes": LIMIT}


def call_job(*cases: tuple[list[Any], Any]) -> dict[str, Any]:
    return {
        "entry_point": "f",
        "cases": [[wire.encode_plain(a), wire.encode_plain({}), e] for a, e in cases],
        "float_tolerance": 1e-6,
        "reply_limit_bytes": LIMIT,
    }


def test_an_honest_candidate_passes_and_fails_as_it_should() -> None:
    with scripted(honest(lambda x: x + 1)) as (candidate, _):
        done, _ = run(
            candidate, assert_job("def check(candidate):\n    assert candidate(1) == 2\n")
        )
    assert done["completed"] and done["status"] is None
    with scripted(honest(lambda x: x + 1)) as (candidate, _):
        done, reports = run(candidate, call_job(([1], 2), ([2], 4), ([10**5000], 10**5000 + 1)))
    assert done["completed"]
    assert [r["passed"] for r in reports] == [True, False, True]
    assert reports[2]["actual"].startswith("0x")  # too long for decimal JSON: shown in hex


def _malformed_after_get(payload: bytes) -> Callable[[dict[str, Any]], bytes]:
    def answer(request: dict[str, Any]) -> bytes:
        if request["op"] == "get":
            return wire.encode_frame({"callable": True})
        return _frame(payload)

    return answer


@pytest.mark.parametrize(("name", "payload"), MALFORMED_CALL_REPLIES, ids=lambda v: str(v)[:20])
def test_a_malformed_reply_fails_the_execution_even_if_the_tests_catch_everything(
    name: str, payload: bytes
) -> None:
    with scripted(_malformed_after_get(payload)) as (candidate, received):
        done, _ = run(candidate, assert_job(CATCH_ALL))
    assert not done["completed"], name
    assert done["status"] == "runtime_error"
    assert "answer" in done["error"]
    # Decided at the first bad reply: the tests' later calls never reach the program.
    assert [r["op"] for r in received] == ["call"]


@pytest.mark.parametrize(("name", "payload"), MALFORMED_CALL_REPLIES, ids=lambda v: str(v)[:20])
def test_a_malformed_reply_to_a_call_case_fails_the_execution(name: str, payload: bytes) -> None:
    replies = iter([wire.encode_frame({"value": 2}), _frame(payload)])

    def answer(request: dict[str, Any]) -> bytes:
        return wire.encode_frame({"callable": True}) if request["op"] == "get" else next(replies)

    with scripted(answer) as (candidate, _):
        done, reports = run(candidate, call_job(([1], 2), ([2], 3), ([3], 4)))
    assert [r["case"] for r in reports] == [0], name  # the first case stands, no later one
    assert not done["completed"] and done["status"] == "runtime_error"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"loaded": 1}',
        b'{"loaded": false}',
        b'{"loaded": false, "raise": "x"}',
        b'{"loaded": true, "extra": 1}',
        # The jobs name an entry point: its lookup must come with the load reply, as a bool.
        b'{"loaded": true}',
        b'{"loaded": true, "callable": 1}',
        b'{"loaded": true, "callable": "yes"}',
        b'{"loaded": true, "callable": null}',
        b'{"loaded": false, "callable": true}',
        b'{"loaded": true, "callable": true, "callable": true}',
        b'{"callable": true}',
        b'{"value": 1}',
        b"[]",
        b"\x00",
    ],
)
def test_a_malformed_load_reply_fails_the_execution(payload: bytes) -> None:
    with scripted(honest(lambda x: x + 1), load=_frame(payload)) as (candidate, received):
        done, _ = run(candidate, assert_job(CATCH_ALL))
    assert not done["completed"] and done["status"] == "runtime_error"
    assert received == []


@pytest.mark.parametrize("size", [LIMIT + 1, 1 << 31, (1 << 32) - 1])
def test_a_reply_over_the_limit_is_output_limit(size: int) -> None:
    def answer(request: dict[str, Any]) -> bytes:
        if request["op"] == "get":
            return wire.encode_frame({"callable": True})
        return size.to_bytes(4, "big") + b'{"value": "' + b"x" * 1000

    with scripted(answer) as (candidate, _):
        done, _ = run(candidate, assert_job(CATCH_ALL))
    assert not done["completed"] and done["status"] == "output_limit"


def test_a_value_that_cannot_cross_is_the_programs_failure() -> None:
    def answer(request: dict[str, Any]) -> bytes:
        if request["op"] == "get":
            return wire.encode_frame({"callable": True})
        return wire.encode_frame({"raise": ["NotPlainData", "a value of type T is not plain"]})

    with scripted(answer) as (candidate, _):
        done, _ = run(candidate, assert_job(CATCH_ALL))
    assert not done["completed"] and done["status"] == "runtime_error"
    assert "cannot be compared" in done["error"]


def test_an_exception_the_program_raised_is_still_the_tests_to_catch() -> None:
    def answer(request: dict[str, Any]) -> bytes:
        if request["op"] == "get":
            return wire.encode_frame({"callable": True})
        return wire.encode_frame({"raise": ["ValueError", "bad \ud800 input"]})

    tests = CATCHES_VALUE_ERROR
    with scripted(answer) as (candidate, _):
        done, _ = run(candidate, assert_job(tests))
    assert done["completed"] and done["status"] is None and done["raised"]
    with scripted(answer) as (candidate, _):
        done, _ = run(candidate, assert_job("def check(candidate):\n    candidate(1)\n"))
    assert not done["completed"]
    assert "\ud800" not in done["error"] and "\\ud800" in done["error"]


PASSES_ONLY_PLAIN_DATA = """
def check(candidate):
    for value in (bytearray(b"x"), [range(2)], {"k": object()}):
        try:
            candidate(value)
        except TypeError as exc:
            assert "cannot pass to the solution" in str(exc)
        else:
            raise AssertionError(f"{value!r} was passed")
    assert candidate([1, (2,)]) == [1, (2,), 0]
"""


def test_the_judge_passes_the_solution_plain_data_only() -> None:
    # Requests cross as marshal, which would carry a bytearray (as bytes) or a code object:
    # the judge refuses what is not plain data before anything is sent.
    with scripted(honest(lambda xs: [*xs, 0])) as (candidate, received):
        done, _ = run(candidate, assert_job(PASSES_ONLY_PLAIN_DATA))
    assert done["completed"] and done["error"] is None
    assert [r["op"] for r in received] == ["call"]
    assert received[0]["args"] == [[1, (2,)]] and type(received[0]["args"][0][1]) is tuple


def test_the_entry_points_lookup_comes_with_the_load_reply() -> None:
    # Not a function (or no such name): the tests get a NameError, as before, and the
    # candidate is asked nothing.
    not_callable = _frame(b'{"loaded": true, "callable": false}')
    check = "def check(candidate):\n    assert candidate(1) == 2\n"
    with scripted(honest(lambda x: x + 1), load=not_callable) as (candidate, received):
        done, _ = run(candidate, assert_job(check))
    assert not done["completed"] and done["status"] is None
    assert done["error"].startswith("NameError") and received == []
    with scripted(honest(lambda x: x + 1), load=not_callable) as (candidate, received):
        done, reports = run(candidate, call_job(([1], 2)))
    assert not done["completed"] and reports == [] and received == []
    # A job that names no entry point: a lookup in the reply does not fit the question.
    no_entry = {"test_code": "assert f(1) == 2\n", "reply_limit_bytes": LIMIT}
    with scripted(honest(lambda x: x + 1)) as (candidate, received):
        done, _ = run(candidate, no_entry)
    assert not done["completed"] and done["status"] == "runtime_error" and received == []
    with scripted(honest(lambda x: x + 1), load=_frame(b'{"loaded": true}')) as (candidate, _):
        done, _ = run(candidate, no_entry)
    assert done["completed"] and done["error"] is None


def test_answers_nobody_asked_for_answer_the_next_questions_in_order() -> None:
    # The judge reads ahead (a whole frame per read): what lies beyond a frame must still be
    # taken as the next answers, in order, as exact reads would have taken it from the pipe.
    def answer(request: dict[str, Any]) -> bytes:
        x = request["args"][0]
        return wire.encode_frame({"value": x}) + wire.encode_frame({"value": x + 100})

    tests = "def check(candidate):\n    assert [candidate(i) for i in (1, 2, 3)] == [1, 101, 2]\n"
    with scripted(answer) as (candidate, received):
        done, _ = run(candidate, assert_job(tests))
    assert done["completed"], done
    assert [r["args"] for r in received] == [[1], [2], [3]]
