"""Completion backends against a real local HTTP server speaking the OpenAI API, and once
against a tiny Hugging Face model loaded from disk."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from codeprm.api.labeler import BackendSpec, SamplingOptions
from codeprm.client import ServiceRejected, ServiceUnavailable
from codeprm.scripted_llm import ScriptedLLM
from codeprm.services.labeler.completions import (
    BackendUnreachable,
    HFBackend,
    OpenAIBackend,
    check_reachable,
)
from codeprm.stack import free_port

SAMPLING = SamplingOptions(max_tokens=32, temperature=0.5)


def spec(url: str, **extra: object) -> BackendSpec:
    return BackendSpec.model_validate(
        {"kind": "openai", "url": url, "model": "scripted", "retries": 2, **extra}
    )


def numbered(text: str, n: int) -> list[str]:
    return [f"{len(text)}:{i}\nSTOP tail" for i in range(n)]


async def test_completions_split_n_and_apply_stop() -> None:
    with ScriptedLLM(complete=numbered) as llm:
        backend = OpenAIBackend(spec(llm.url, max_n_per_request=2))
        sampling = SamplingOptions(max_tokens=8, stop=["\nSTOP"])
        texts = await backend.continuations("abc", "de", 5, sampling)
        await backend.aclose()
    assert texts == ["5:0", "5:1", "5:0", "5:1", "5:0"]  # 3 requests of n = 2, 2, 1
    assert sorted(r["n"] for r in llm.requests) == [1, 2, 2]  # sent concurrently
    assert llm.requests[0]["prompt"] == "abcde" and llm.requests[0]["stop"] == ["\nSTOP"]
    assert backend.usage.completions == 5


async def test_chat_continues_a_prefilled_assistant_message() -> None:
    seen: list[str] = []

    def complete(text: str, n: int) -> list[str]:
        seen.append(text)
        return ["    return x\n"] * n

    with ScriptedLLM(complete=complete) as llm:
        backend = OpenAIBackend(spec(llm.url, api="chat"))
        texts = await backend.continuations("Write f.", "def f(x):\n", 2, SAMPLING)
        await backend.aclose()
    assert texts == ["    return x\n"] * 2
    assert seen == ["Write f.def f(x):\n"]
    body = llm.requests[0]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["messages"][-1] == {"role": "assistant", "content": "def f(x):\n"}


async def test_retries_on_429_and_503_then_succeeds() -> None:
    with ScriptedLLM(complete=numbered) as llm:
        llm.fail_next = [429, 503]
        backend = OpenAIBackend(spec(llm.url))
        backend._client.backoff_s = 0.01
        texts = await backend.continuations("x", "", 1, SAMPLING)
        await backend.aclose()
    assert texts == ["1:0\nSTOP tail"]
    assert llm.fail_next == []


async def test_a_4xx_is_rejected_at_once_and_names_the_backend() -> None:
    with ScriptedLLM(complete=numbered) as llm:
        backend = OpenAIBackend(spec(llm.url).model_copy(update={"model": "other"}))
        with pytest.raises(ServiceRejected, match="scripted|other|404") as info:
            await backend.continuations("x", "", 1, SAMPLING)
        await backend.aclose()
    assert info.value.status_code == 404 and llm.url in str(info.value)
    assert len(llm.requests) == 1  # not retried


async def test_wrong_number_of_choices_is_rejected() -> None:
    with ScriptedLLM(complete=lambda text, n: ["only one"]) as llm:
        backend = OpenAIBackend(spec(llm.url))
        with pytest.raises(ServiceRejected, match="1 choices for n=3"):
            await backend.continuations("x", "", 3, SAMPLING)
        await backend.aclose()


async def test_unreachable_backend_is_unavailable_after_retries() -> None:
    backend = OpenAIBackend(spec(f"http://127.0.0.1:{free_port()}/v1", retries=1))
    backend._client.backoff_s = 0.01
    with pytest.raises(ServiceUnavailable, match="127.0.0.1"):
        await backend.continuations("x", "", 1, SAMPLING)
    await backend.aclose()


async def test_timeout_is_enforced() -> None:
    with ScriptedLLM(complete=numbered, delay_s=2.0) as llm:
        backend = OpenAIBackend(spec(llm.url, timeout_s=0.3, retries=0))
        start = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            await backend.continuations("x", "", 1, SAMPLING)
        assert time.monotonic() - start < 1.5
        await backend.aclose()


async def test_requests_in_flight_are_bounded() -> None:
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most

    def slow(text: str, n: int) -> list[str]:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight[1], in_flight[0])
        time.sleep(0.1)
        with lock:
            in_flight[0] -= 1
        return ["ok"] * n

    with ScriptedLLM(complete=slow) as llm:
        backend = OpenAIBackend(spec(llm.url, max_concurrency=2))
        results = await asyncio.gather(
            *(backend.continuations(str(i), "", 1, SAMPLING) for i in range(8))
        )
        await backend.aclose()
    assert results == [["ok"]] * 8
    assert in_flight[1] == 2


async def test_check_reachable() -> None:
    with ScriptedLLM(complete=numbered) as llm:
        await check_reachable(spec(llm.url))
        llm.fail_next = [401]
        with pytest.raises(BackendUnreachable, match="API key"):
            await check_reachable(spec(llm.url))
    with pytest.raises(BackendUnreachable, match="does not answer"):
        await check_reachable(spec(f"http://127.0.0.1:{free_port()}/v1"))


@pytest.fixture(scope="module")
def tiny_policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from codeprm.tiny import build_tiny_policy

    return build_tiny_policy(tmp_path_factory.mktemp("models") / "tiny-policy")


async def test_hf_backend_generates_from_a_local_checkpoint(tiny_policy_dir: Path) -> None:
    backend = HFBackend(tiny_policy_dir)
    sampling = SamplingOptions(max_tokens=12, temperature=1.0)
    texts = await backend.continuations("def add(a, b):\n", "    return", 3, sampling)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    greedy = SamplingOptions(max_tokens=12, temperature=0.0)
    first = await backend.continuations("def add(a, b):\n", "", 1, greedy)
    again = await backend.continuations("def add(a, b):\n", "", 1, greedy)
    assert first == again  # temperature 0 is greedy decoding
    replies = await backend.chat([{"role": "user", "content": "hi"}], 2, sampling)
    assert len(replies) == 2
    assert backend.usage.completions == 7


async def test_hf_backend_serves_calls_that_wait_together(tiny_policy_dir: Path) -> None:
    backend = HFBackend(tiny_policy_dir)
    rows: list[int] = []
    generate = backend.model.generate

    def held(**kwargs: Any) -> Any:  # the real generate, slowed so that calls pile up
        rows.append(int(kwargs["input_ids"].shape[0]))
        time.sleep(0.3)
        return generate(**kwargs)

    backend.model.generate = held
    sampled = SamplingOptions(max_tokens=8, temperature=1.0)
    greedy = SamplingOptions(max_tokens=8, temperature=0.0)
    calls = [backend.continuations(f"def f{i}(x):\n", "", i + 1, sampled) for i in range(4)]
    calls.append(backend.continuations("def g(x):\n", "", 2, greedy))
    results = await asyncio.gather(*calls)
    assert [len(r) for r in results] == [1, 2, 3, 4, 2]
    assert sum(rows) == 12
    # The first call runs alone; the rest wait and go in one batch per set of sampling options.
    assert len(rows) <= 3, rows
    assert backend.usage.completions == 12


async def test_hf_backend_batches_at_most_max_batch_calls(tiny_policy_dir: Path) -> None:
    backend = HFBackend(tiny_policy_dir, max_batch=2)
    rows: list[int] = []
    generate = backend.model.generate

    def held(**kwargs: Any) -> Any:
        rows.append(int(kwargs["input_ids"].shape[0]))
        time.sleep(0.2)
        return generate(**kwargs)

    backend.model.generate = held
    sampling = SamplingOptions(max_tokens=4, temperature=1.0)
    calls = [backend.continuations(f"def f{i}(x):\n", "", 1, sampling) for i in range(7)]
    results = await asyncio.gather(*calls)
    assert [len(r) for r in results] == [1] * 7  # every call served, none twice
    assert sum(rows) == 7 and max(rows) <= 2, rows
    assert backend._waiting == []


async def test_hf_backend_failure_reaches_every_waiting_call(tiny_policy_dir: Path) -> None:
    backend = HFBackend(tiny_policy_dir)

    def broken(**kwargs: Any) -> Any:
        time.sleep(0.2)
        raise RuntimeError("out of memory")

    backend.model.generate = broken
    calls = [backend.continuations(f"p{i}", "", 2, SAMPLING) for i in range(3)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert backend._waiting == []  # nothing left behind for a later call to serve


def test_hf_backend_refuses_a_directory_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(ServiceRejected, match="not a Hugging Face checkpoint"):
        HFBackend(tmp_path)
