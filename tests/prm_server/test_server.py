"""The PRM server over real HTTP: a `codeprm prm serve` subprocess with a tiny checkpoint
built by the test and loaded with `from_pretrained`."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from codeprm.lines import split_lines
from tests.servers import start_prm_server as start

pytestmark = pytest.mark.slow

PROGRAM = "def add(a, b):\n    # sum\n    return a + b\n\n"


@pytest.fixture(scope="module")
def server(tiny_prm_dir: Path) -> Iterator[str]:
    proc, url = start(tiny_prm_dir, CODEPRM_PRM_MAX_WAIT_MS="20", CODEPRM_PRM_MAX_ITEMS="64")
    yield url
    proc.terminate()
    proc.wait(30)


def score(url: str, items: list[dict[str, str]], **extra: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/score", json={"items": items, **extra}, timeout=60)


def test_line_scores_follow_the_line_convention(server: str) -> None:
    response = score(server, [{"prompt": "# add\n", "code": PROGRAM}])
    assert response.status_code == 200, response.text
    body = response.json()
    (result,) = body["results"]
    lines = split_lines(PROGRAM)
    assert [s["kind"] for s in result["line_scores"]] == [line.kind for line in lines]
    assert [(s["start"], s["end"]) for s in result["line_scores"]] == [
        (line.start, line.end) for line in lines
    ]
    assert all(isinstance(s["score"], float) for s in result["line_scores"][:3])
    assert result["line_scores"][3]["score"] is None  # an empty line has no token
    code_scores = [s["score"] for s in result["line_scores"] if s["kind"] == "code"]
    assert result["aggregate"] == pytest.approx(min(code_scores))
    assert result["num_tokens"] > 5 and body["model"] == "tiny-prm"
    mean = score(server, [{"prompt": "# add\n", "code": PROGRAM}], aggregate="mean").json()
    assert mean["results"][0]["aggregate"] == pytest.approx(sum(code_scores) / 2)


def test_batched_scores_equal_single_scores(server: str) -> None:
    items = [
        {"prompt": "", "code": "x = 1\n"},
        {"prompt": "# long\n", "code": "".join(f"v{i} = {i} * 2\n" for i in range(40))},
        {"prompt": "p", "code": PROGRAM},
    ]
    together = score(server, items).json()["results"]
    alone = [score(server, [item]).json()["results"][0] for item in items]
    for a, b in zip(together, alone, strict=True):
        for x, y in zip(a["line_scores"], b["line_scores"], strict=True):
            assert x["score"] == pytest.approx(y["score"], abs=1e-4)  # padding changes nothing


def batch_count(url: str) -> tuple[float, float]:
    text = httpx.get(f"{url}/metrics").text
    count = float(re.search(r"^prm_batch_items_count (\S+)", text, re.M)[1])  # type: ignore[index]
    total = float(re.search(r"^prm_batch_items_sum (\S+)", text, re.M)[1])  # type: ignore[index]
    return count, total


def test_concurrent_requests_are_batched_and_answered_each_their_own(server: str) -> None:
    codes = [f"def f{i}(x):\n    return x + {i}\n" for i in range(48)]
    expected = {c: score(server, [{"code": c}]).json()["results"][0]["aggregate"] for c in codes}
    before = batch_count(server)

    async def one(client: httpx.AsyncClient, code: str) -> float:
        response = await client.post("/v1/score", json={"items": [{"code": code}]})
        return float(response.json()["results"][0]["aggregate"])

    async def all_at_once() -> list[float]:
        async with httpx.AsyncClient(base_url=server, timeout=60) as client:
            return list(await asyncio.gather(*(one(client, c) for c in codes)))

    got = asyncio.run(all_at_once())
    after = batch_count(server)
    assert got == [pytest.approx(expected[c], abs=1e-4) for c in codes]
    batches, items = after[0] - before[0], after[1] - before[1]
    assert items == 48 and batches < 48, f"{batches} forward passes for 48 requests"


def test_get_reward_speaks_openrlhf(server: str) -> None:
    prompt = "Write add.\n"
    response = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    body = {"query": [prompt + response + "<|endoftext|>"], "prompts": [prompt], "labels": [""]}
    answer = httpx.post(f"{server}/get_reward", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert set(out) == {"rewards", "scores", "extra_logs"}
    direct = score(server, [{"prompt": prompt, "code": "def add(a, b):\n    return a + b"}])
    assert out["rewards"] == [pytest.approx(direct.json()["results"][0]["aggregate"], abs=1e-4)]
    assert out["scores"] == out["rewards"] and out["extra_logs"]["prm_lines"] == [2.0]
    empty = httpx.post(f"{server}/get_reward", json={"query": [], "prompts": [], "labels": []})
    assert empty.json() == {
        "rewards": [],
        "scores": [],
        "extra_logs": {"prm_lines": [], "prm_tokens": []},
    }
    only_query = httpx.post(f"{server}/get_reward", json={"query": ["x = 1"]}, timeout=60)
    assert only_query.status_code == 200 and len(only_query.json()["rewards"]) == 1


def test_bad_input_gets_clear_errors_and_the_server_keeps_serving(server: str) -> None:
    assert score(server, []).status_code == 422
    assert httpx.post(f"{server}/v1/score", json={"items": [{"prompt": "x"}]}).status_code == 422
    assert httpx.post(f"{server}/v1/score", content=b"{not json").status_code == 422
    too_many = score(server, [{"code": "x = 1"}] * 65)
    assert too_many.status_code == 413 and "at most 64" in too_many.json()["detail"]
    too_long = score(server, [{"code": "x = 1\n" * 3000}])
    assert too_long.status_code == 413 and "tokens" in too_long.json()["detail"]
    assert score(server, [{"code": "x = 1"}], aggregate="median").status_code == 422
    assert score(server, [{"code": "x = 1\n"}]).status_code == 200


def test_bearer_token_is_required_when_configured(tiny_prm_dir: Path) -> None:
    proc, url = start(tiny_prm_dir, CODEPRM_API_KEY="s3cret")
    try:
        assert score(url, [{"code": "x = 1"}]).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.post(f"{url}/get_reward", json={"query": []}, headers=wrong).status_code == 401
        ok = httpx.post(
            f"{url}/v1/score",
            json={"items": [{"code": "x = 1"}]},
            headers={"Authorization": "Bearer s3cret"},
        )
        assert ok.status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 200  # probes stay open
    finally:
        proc.terminate()
        proc.wait(30)


def test_empty_programs_score_without_a_forward_pass(server: str) -> None:
    # OpenRLHF's realistic worst case: an empty response to an empty prompt (zero tokens).
    answer = httpx.post(f"{server}/get_reward", json={"query": [""]}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["rewards"] == [0.0]
    mixed = score(server, [{"prompt": "", "code": ""}, {"code": "x = 1\n"}, {"code": ""}])
    assert mixed.status_code == 200, mixed.text
    empty, real, again = mixed.json()["results"]
    assert empty["aggregate"] is None and empty["num_tokens"] == 0 and again == empty
    assert isinstance(real["aggregate"], float)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/score", '{"items": [{"code": "x = \\ud800\\n"}]}'),
        ("/v1/score", '{"items": [{"prompt": "\\udfff", "code": "x = 1"}]}'),
        ("/get_reward", '{"query": ["ok", "\\ud83d"]}'),
        ("/get_reward", '{"query": ["x = 1"], "prompts": ["\\udc00"]}'),
    ],
)
def test_lone_surrogates_are_refused_clearly(server: str, path: str, body: str) -> None:
    answer = httpx.post(
        f"{server}{path}", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    assert "surrogate" in answer.text


def exchange(sock: socket.socket, method: str, path: str, body: bytes = b"") -> int:
    """One request on an open connection; returns the status once the whole answer is read."""
    head = (
        f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    header, rest = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"content-length: (\d+)", header, re.I)[1])  # type: ignore[index]
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-answer"
        rest += chunk
    return int(header.split()[1])


def test_the_connection_survives_every_error(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        assert exchange(sock, "POST", "/v1/score", b"{not json") == 422
        assert exchange(sock, "POST", "/v1/score", json.dumps({"items": []}).encode()) == 422
        surrogate = b'{"items": [{"code": "\\ud800"}]}'
        assert exchange(sock, "POST", "/v1/score", surrogate) == 422
        many = json.dumps({"items": [{"code": "x"}] * 65}).encode()
        assert exchange(sock, "POST", "/v1/score", many) == 413
        assert exchange(sock, "GET", "/nowhere") == 404
        assert exchange(sock, "POST", "/get_reward", b'{"query": [""]}') == 200
        assert exchange(sock, "POST", "/v1/score", b'{"items": [{"code": "x = 1"}]}') == 200


def test_a_request_that_can_never_fit_the_queue_is_too_large(tiny_prm_dir: Path) -> None:
    proc, url = start(tiny_prm_dir, CODEPRM_PRM_MAX_PENDING="4")
    try:
        answer = score(url, [{"code": "x = 1"}] * 5)
        assert answer.status_code == 413, answer.text
        assert "never fit" in answer.json()["detail"]
        assert score(url, [{"code": "x = 1"}] * 4).status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
