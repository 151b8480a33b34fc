"""What a program sends back can never hurt a verdict or the service (real HTTP, inside the
harness's containment): malformed replies written straight to the judge's pipe, values that
cannot be compared or encoded, answers over the size limit, data built to be slow to decode.
Every one gets a verdict in a 200 (never a 500), no worker is lost, and /healthz answers
promptly throughout."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import textwrap
import time
from typing import Any

import httpx
import pytest

from codeprm.services.executor import replies, wire
from tests.contained import ContainedExecutor, require_isolation
from tests.executor import test_judge
from tests.executor.malformed import MALFORMED_CALL_REPLIES

pytestmark = pytest.mark.slow

CATCH_ALL = {
    "kind": "assert",
    "entry_point": "f",
    "code": test_judge.CATCH_ALL,  # tests that catch everything, even BaseException
}
CALL = {"kind": "call", "entry_point": "f", "cases": [{"args": [1], "expected": 2}] * 3}
CORRECT = "def f(x):\n    return x + 1\n"

# Finds the candidate's end of the reply pipe (its only write-only descriptor above 2) and
# writes a frame of the program's choosing there, as a hostile program would.
FORGE = """
import fcntl, os

def _forge(payload):
    fd = next(
        fd for fd in range(3, 256)
        if _flags(fd) is not None and _flags(fd) & os.O_ACCMODE == os.O_WRONLY
    )
    data = memoryview(len(payload).to_bytes(4, "big") + payload)
    while data:
        data = data[os.write(fd, data):]

def _flags(fd):
    try:
        return fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        return None
"""


def forging(payload: bytes, *, at_load: bool = False) -> str:
    if at_load:
        return f"{FORGE}\n_forge(bytes.fromhex({payload.hex()!r}))\n{CORRECT}"
    return f"{FORGE}\ndef f(x):\n    _forge(bytes.fromhex({payload.hex()!r}))\n    return x + 1\n"


def batch(url: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = httpx.post(f"{url}/v1/evaluate/batch", json={"items": items}, timeout=300)
    assert response.status_code == 200, response.text[:500]
    results: list[dict[str, Any]] = response.json()["results"]
    assert len(results) == len(items)
    return results


def pool_size(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics").text
    found = re.search(r"^executor_pool_size (\S+)$", metrics, re.MULTILINE)
    assert found, metrics[:500]
    return float(found.group(1))


def assert_service_whole(executor: ContainedExecutor) -> None:
    assert httpx.get(f"{executor.url}/readyz").status_code == 200
    assert pool_size(executor.url) == 3.0
    ok = httpx.post(
        f"{executor.url}/v1/evaluate",
        json={"code": CORRECT, "tests": CALL, "timeout_s": 10},
        timeout=60,
    ).json()
    assert ok["passed"], ok


@pytest.mark.parametrize("tests", [CATCH_ALL, CALL], ids=["assert", "call"])
def test_malformed_replies_fail_the_program_and_spare_the_batch(
    contained_executor: ContainedExecutor, tests: dict[str, Any]
) -> None:
    require_isolation(contained_executor)
    items = [
        {"code": forging(payload), "tests": tests, "timeout_s": 10}
        for _, payload in MALFORMED_CALL_REPLIES
    ]
    items.append({"code": CORRECT, "tests": tests, "timeout_s": 10})
    results = batch(contained_executor.url, items)
    for (name, _), result in zip(MALFORMED_CALL_REPLIES, results, strict=False):
        assert not result["passed"], name
        assert result["status"] == "runtime_error", (name, result)
        assert "answer" in str(result["cases"]), (name, result["cases"])
    assert results[-1]["passed"], results[-1]
    assert_service_whole(contained_executor)


@pytest.mark.parametrize("tests", [CATCH_ALL, CALL], ids=["assert", "call"])
def test_malformed_replies_while_loading_fail_the_program(
    contained_executor: ContainedExecutor, tests: dict[str, Any]
) -> None:
    require_isolation(contained_executor)
    payloads = [
        b"[]",
        b'{"loaded": 1}',
        b'{"loaded": false}',
        b'{"value": 1}',
        b"\xff",
        b'{"loaded": true}',  # the tests name an entry point: its lookup must come too
        b'{"loaded": true, "callable": 1}',
    ]
    items = [{"code": forging(p, at_load=True), "tests": tests, "timeout_s": 10} for p in payloads]
    for payload, result in zip(payloads, batch(contained_executor.url, items), strict=True):
        assert not result["passed"] and result["status"] == "runtime_error", (payload, result)


def _mutated_replies(seed: int, count: int) -> list[bytes]:
    """Well-formed replies with one to three random edits: some stay well-formed, most not."""
    rng = random.Random(seed)
    values = [2, [1, (2, 3)], {"a": {1, 2}}, b"xy", 10**30, math.inf, 1 + 2j, "s", None]
    bases = [json.dumps({"value": wire.encode_plain(v)}).encode() for v in values]
    bases.append(b'{"raise": ["ValueError", "m"]}')
    alphabet = b'{}[]",:0123456789eE.-+NaInfity \\u\x00\xff'
    found = []
    for _ in range(count):
        data = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data) + 1)
            edit = rng.randrange(4)
            if edit == 0 and at < len(data):
                data[at] = rng.choice(alphabet)
            elif edit == 1 and at < len(data):
                del data[at]
            elif edit == 2:
                data[at:at] = bytes([rng.choice(alphabet)])
            else:
                data[at:at] = data[rng.randrange(len(data)) :][: rng.randint(1, 8)]
        found.append(bytes(data))
    return found


def test_randomly_edited_replies_agree_with_the_reply_checker(
    contained_executor: ContainedExecutor,
) -> None:
    """Differential: over HTTP, a program whose every answer is the edited reply passes
    tests that catch everything exactly when the checker accepts the reply (a value, or an
    exception the tests then catch); a reply it refuses fails whatever the tests catch."""
    require_isolation(contained_executor)
    payloads = _mutated_replies(seed=17, count=120)
    results = batch(
        contained_executor.url,
        [{"code": forging(p), "tests": CATCH_ALL, "timeout_s": 10} for p in payloads],
    )
    accepted = 0
    for payload, result in zip(payloads, results, strict=True):
        try:
            replies.parse_reply(payload, "call")
            well_formed = True
        except replies.MalformedReply:
            well_formed = False
            assert result["status"] == "runtime_error", (payload, result)
        accepted += well_formed
        assert result["passed"] is well_formed, (payload, result)
    assert 0 < accepted < len(payloads) // 2  # both sides of the line were exercised
    assert_service_whole(contained_executor)


# (name, solution body of f(x), expected status when compared with 2 / asserted == 2)
VALUES = [
    ("int_beyond_str_digits", "return 10**5000", "ok"),
    ("int_against_float", "return 10**400", "ok"),
    ("nested_1000", "v = []\n    for _ in range(1000): v = [v]\n    return v", "runtime_error"),
    ("object", "return object()", "runtime_error"),
    ("subclass", "return type('I', (int,), {'__eq__': lambda s, o: True})(2)", "runtime_error"),
    ("generator", "return (i for i in range(3))", "runtime_error"),
    ("escapes_beyond_the_limit", "return '\\x00' * 300_000", "output_limit"),
    ("bytes_beyond_the_limit", "return bytes(900_000)", "output_limit"),
    ("list_beyond_the_limit", "return [10**15] * 100_000", "output_limit"),
    ("recursion_limit_lowered", "import sys; sys.setrecursionlimit(60); return [[[[1]]]]", None),
    ("surrogate_string", "return '\\ud800'", "ok"),
    ("nan", "return float('nan')", "ok"),
    ("set_of_tuples", "return {(1, 2), (3, (4,))}", "ok"),
]


# A value that cannot cross fails the program even if the tests catch what they get.
CATCH_THEN_ASSERT = textwrap.dedent("""
    def check(candidate):
        try:
            candidate(1)
        except BaseException:
            pass
        assert candidate(1) == 2.5
    """)


@pytest.mark.parametrize("kind", ["assert", "call"])
def test_values_that_cannot_be_compared_or_encoded_get_a_verdict(
    contained_executor: ContainedExecutor, kind: str
) -> None:
    require_isolation(contained_executor)
    tests = (
        {"kind": "assert", "entry_point": "f", "code": CATCH_THEN_ASSERT}
        if kind == "assert"
        else {**CALL, "cases": [{"args": [1], "expected": 2.5}]}
    )
    items = [
        {"code": f"def f(x):\n    {body}\n", "tests": tests, "timeout_s": 10}
        for _, body, _ in VALUES
    ]
    for (name, _, status), result in zip(VALUES, batch(contained_executor.url, items), strict=True):
        assert not result["passed"], (name, result)
        if status is not None:
            assert result["status"] == status, (name, result)
    assert_service_whole(contained_executor)


def test_huge_ints_cross_exactly(contained_executor: ContainedExecutor) -> None:
    tests = {
        "kind": "assert",
        "entry_point": "f",
        "code": "def check(candidate):\n    assert candidate(5000) == 10**5000 + 1\n",
    }
    code = "def f(n):\n    return 10**n + 1\n"
    result = batch(contained_executor.url, [{"code": code, "tests": tests}])[0]
    assert result["passed"], result
    call = {"kind": "call", "entry_point": "f", "cases": [{"args": [20], "expected": 10**20 + 1}]}
    result = batch(contained_executor.url, [{"code": code, "tests": call}])[0]
    assert result["passed"] and result["cases"][0]["actual"] == 10**20 + 1, result


def test_a_reply_claiming_gigabytes_is_output_limit(contained_executor: ContainedExecutor) -> None:
    require_isolation(contained_executor)
    code = FORGE.replace('len(payload).to_bytes(4, "big")', "(2**31).to_bytes(4, 'big')")
    assert code != FORGE
    code += "\ndef f(x):\n    _forge(b'{\"value\": 1' * 100)\n    return x + 1\n"
    for tests in (CATCH_ALL, CALL):
        result = batch(contained_executor.url, [{"code": code, "tests": tests}])[0]
        assert not result["passed"] and result["status"] == "output_limit", result


COLLIDING_SET = (
    """
import fcntl, os
M = 2**61 - 1  # every multiple of it hashes to 0
"""
    + FORGE.split("import fcntl, os", 1)[1]
    + """
def f(x):
    items = ",".join('{{"int":"' + hex(M * k) + '"}}' for k in range(1, {n}))
    _forge(('{{"value":{{"set":[' + items + ']}}}}').encode())
    return x + 1
"""
)


@pytest.mark.parametrize("tests", [CATCH_ALL, CALL], ids=["assert", "call"])
def test_data_slow_to_decode_never_stalls_the_service(
    contained_executor: ContainedExecutor, tests: dict[str, Any]
) -> None:
    """0.6 MB of ints that all hash alike: quadratic to put in a set (about 4 s on an idle
    core, four times the program's deadline, so that the verdict does not depend on the
    machine's speed). The judge decodes it inside its sandbox, on the program's time; the
    service's loop never sees it."""
    require_isolation(contained_executor)
    code = COLLIDING_SET.format(n=20_000)
    assert len(code) < 5000

    async def main() -> tuple[dict[str, Any], float]:
        async with httpx.AsyncClient(base_url=contained_executor.url, timeout=120) as client:
            evaluation = asyncio.create_task(
                client.post("/v1/evaluate", json={"code": code, "tests": tests, "timeout_s": 1})
            )
            worst = 0.0
            while not evaluation.done():
                start = time.monotonic()
                assert (await client.get("/healthz")).status_code == 200
                worst = max(worst, time.monotonic() - start)
                await asyncio.sleep(0.05)
            response = await evaluation
            assert response.status_code == 200, response.text[:500]
            return response.json(), worst

    result, worst = asyncio.run(main())
    assert not result["passed"]
    assert result["status"] in ("timeout", "runtime_error"), result
    assert worst < 1.0, f"/healthz took {worst:.2f} s while a reply was decoded"
    assert_service_whole(contained_executor)
