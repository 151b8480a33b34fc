"""Completion backends: where continuations of a program prefix and teacher answers come from.

Two kinds, one interface:

* `OpenAIBackend`: any server speaking OpenAI's `/v1/completions` and `/v1/chat/completions`
  (vLLM, SGLang, TGI, llama.cpp, the OpenAI API itself). Requests in flight are bounded, 429 /
  5xx / connection errors are retried with backoff, and every request has a timeout.
* `HFBackend`: `transformers` generate on a local checkpoint, for small models and tests.

A *continuation* is the text a policy writes after `prompt + prefix`, the operation both search
strategies are built on. With the chat API the prefix is a prefilled assistant message that the
server continues (vLLM/SGLang: `continue_final_message`).

Errors: `ServiceUnavailable` (the backend could not be reached or stayed overloaded: the job is
retried later) and `ServiceRejected` (it refused the request or answered nonsense: retrying
will not help), the same pair the executor client raises.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from codeprm.api.labeler import BackendSpec, SamplingOptions
from codeprm.client import AsyncServiceClient, ServiceRejected, ServiceUnavailable

Message = dict[str, str]
R = TypeVar("R", bound=BaseModel)


class CompletionBackend(Protocol):
    name: str
    """For provenance: what produced a sample."""

    async def continuations(
        self, prompt: str, prefix: str, n: int, sampling: SamplingOptions
    ) -> list[str]: ...

    async def chat(
        self, messages: list[Message], n: int, sampling: SamplingOptions
    ) -> list[str]: ...

    async def aclose(self) -> None: ...


@dataclass
class Usage:
    """Completions returned so far, summed over every call (labels report their cost)."""

    completions: int = 0


class _Choice(BaseModel):
    text: str


class _CompletionResponse(BaseModel):
    choices: list[_Choice]


class _ChatMessage(BaseModel):
    content: str | None = None


class _ChatChoice(BaseModel):
    message: _ChatMessage


class _ChatResponse(BaseModel):
    choices: list[_ChatChoice]


class OpenAIBackend:
    def __init__(self, spec: BackendSpec, *, api_key: str | None = None) -> None:
        assert spec.url is not None  # BackendSpec validates this
        self.spec = spec
        self.name = f"openai:{spec.model}@{spec.url}"
        self.usage = Usage()
        self._client = AsyncServiceClient(
            spec.url,
            timeout_s=spec.timeout_s,
            retries=spec.retries,
            api_key=api_key,
            max_connections=spec.max_concurrency,
        )
        self._slots = asyncio.Semaphore(spec.max_concurrency)

    async def continuations(
        self, prompt: str, prefix: str, n: int, sampling: SamplingOptions
    ) -> list[str]:
        if self.spec.api == "chat":
            messages = [{"role": "user", "content": prompt}]
            if prefix:
                messages.append({"role": "assistant", "content": prefix})
                extra = {"continue_final_message": True, "add_generation_prompt": False}
            else:
                extra = {}
            return await self._chat(messages, n, sampling, extra)
        return await self._fan_out(n, lambda m: self._complete(prompt + prefix, m, sampling))

    async def chat(self, messages: list[Message], n: int, sampling: SamplingOptions) -> list[str]:
        return await self._chat(messages, n, sampling, {})

    async def _chat(
        self,
        messages: list[Message],
        n: int,
        sampling: SamplingOptions,
        extra: dict[str, Any],
    ) -> list[str]:
        async def one(m: int) -> list[str]:
            body = {"model": self.spec.model, "messages": messages, "n": m, **_sampling(sampling)}
            answer = await self._post("/chat/completions", {**body, **extra}, _ChatResponse)
            return [choice.message.content or "" for choice in answer.choices]

        return await self._fan_out(n, one)

    async def _complete(self, text: str, n: int, sampling: SamplingOptions) -> list[str]:
        body = {"model": self.spec.model, "prompt": text, "n": n, **_sampling(sampling)}
        answer = await self._post("/completions", body, _CompletionResponse)
        return [choice.text for choice in answer.choices]

    async def _fan_out(self, n: int, call: Any) -> list[str]:
        step = self.spec.max_n_per_request
        parts = await asyncio.gather(*(call(min(step, n - i)) for i in range(0, n, step)))
        texts = [text for part in parts for text in part]
        if len(texts) != n:
            raise ServiceRejected(502, f"{self.name} returned {len(texts)} choices for n={n}")
        self.usage.completions += n
        return texts

    async def _post(self, path: str, body: dict[str, Any], shape: type[R]) -> R:
        async with self._slots:
            try:
                raw = await self._client.post(path, body)
            except ServiceUnavailable as exc:
                raise ServiceUnavailable(f"{self.name}: {exc}") from exc
            except ServiceRejected as exc:
                raise ServiceRejected(exc.status_code, f"{self.name}{path}: {exc.detail}") from exc
        try:
            return shape.model_validate(raw)
        except ValidationError as exc:
            raise ServiceRejected(502, f"{self.name}{path}: not an OpenAI answer: {exc}") from exc

    async def aclose(self) -> None:
        await self._client.aclose()


def _sampling(options: SamplingOptions) -> dict[str, Any]:
    body: dict[str, Any] = {
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
        "top_p": options.top_p,
    }
    if options.stop:
        body["stop"] = options.stop
    return body


@dataclass(eq=False)  # compared by identity: two calls may ask the same
class _Pending:
    """One `continuations` call waiting for the generation thread."""

    text: str
    n: int
    sampling: SamplingOptions
    done: threading.Event = field(default_factory=threading.Event)
    texts: list[str] = field(default_factory=list)
    error: BaseException | None = None


@dataclass
class HFBackend:
    """A local checkpoint, loaded once. Generation runs in threads, one `generate` at a time;
    the calls that arrive while one runs wait and are then served together, up to `max_batch`
    calls in one batch (binary search keeps several probes in flight, and a batch of them costs
    little more than one; `bench/labeling.py`)."""

    path: Path
    device: str = "cpu"
    max_batch: int = 16
    name: str = ""
    usage: Usage = field(default_factory=Usage)

    def __post_init__(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not (self.path / "config.json").is_file():
            raise ServiceRejected(400, f"{self.path} is not a Hugging Face checkpoint directory")
        self.name = self.name or f"hf:{self.path}"
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"  # every prompt ends where generation starts
        # dtype="auto": the checkpoint's own dtype (bf16 checkpoints stay bf16 on a GPU).
        model = AutoModelForCausalLM.from_pretrained(self.path, dtype="auto")
        # transformers' stub types `.to` through a decorator that mypy mis-reads.
        self.model = model.to(torch.device(self.device)).eval()  # type: ignore[arg-type]
        self._generating = threading.Lock()
        self._waiting: list[_Pending] = []
        self._waiting_lock = threading.Lock()

    async def continuations(
        self, prompt: str, prefix: str, n: int, sampling: SamplingOptions
    ) -> list[str]:
        texts = await asyncio.to_thread(self._generate, prompt + prefix, n, sampling)
        self.usage.completions += n
        return texts

    async def chat(self, messages: list[Message], n: int, sampling: SamplingOptions) -> list[str]:
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        else:  # a base model: a plain transcript it can continue
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return await self.continuations(str(text), "", n, sampling)

    def _generate(self, text: str, n: int, sampling: SamplingOptions) -> list[str]:
        pending = _Pending(text, n, sampling)
        with self._waiting_lock:
            self._waiting.append(pending)
        with self._generating:
            # Whoever gets the model serves the calls waiting longest, its own among them
            # unless an earlier holder served it; a call left waiting is served by its own
            # thread's turn, if not before.
            if not pending.done.is_set():
                with self._waiting_lock:
                    batch = self._waiting[: self.max_batch]
                    if pending not in batch:
                        batch[-1:] = [pending]
                    self._waiting = [p for p in self._waiting if p not in batch]
                self._serve(batch)
        if pending.error is not None:
            raise pending.error
        return pending.texts

    def _serve(self, batch: list[_Pending]) -> None:
        groups: dict[str, list[_Pending]] = {}
        for pending in batch:  # one generate per set of sampling options
            groups.setdefault(pending.sampling.model_dump_json(), []).append(pending)
        for group in groups.values():
            try:
                texts = self._generate_rows(
                    [p.text for p in group for _ in range(p.n)], group[0].sampling
                )
                for pending in group:
                    pending.texts, texts = texts[: pending.n], texts[pending.n :]
            except Exception as exc:  # each waiting call raises it in its own thread
                for pending in group:
                    pending.error = exc
            finally:
                for pending in group:
                    pending.done.set()

    def _generate_rows(self, rows: list[str], sampling: SamplingOptions) -> list[str]:
        import torch

        inputs = self.tokenizer(rows, return_tensors="pt", padding=True).to(self.device)
        sample = sampling.temperature > 0
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                do_sample=sample,
                temperature=sampling.temperature if sample else None,
                top_p=sampling.top_p if sample else None,
                max_new_tokens=sampling.max_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = output[:, inputs["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [cut_at_stop(str(t), sampling.stop) for t in texts]

    async def aclose(self) -> None:
        return None


def cut_at_stop(text: str, stop: list[str]) -> str:
    """The text up to the first stop sequence (servers do this themselves)."""
    cut = len(text)
    for sequence in stop:
        found = text.find(sequence)
        if found != -1:
            cut = min(cut, found)
    return text[:cut]


class BackendUnreachable(ValueError):
    """Checked at submission, so a run aimed at a dead backend is refused, not left to fail."""


async def check_reachable(spec: BackendSpec, api_key: str | None = None) -> None:
    """An OpenAI-compatible backend answers `GET /models` (vLLM, SGLang, TGI and OpenAI do).
    Local checkpoints live on the workers' disks, which the API cannot see: not checked."""
    if spec.kind != "openai":
        return
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = f"{str(spec.url).rstrip('/')}/models"
    try:
        async with httpx.AsyncClient(timeout=5.0, headers=headers) as http:
            response = await http.get(url)
    except httpx.HTTPError as exc:
        raise BackendUnreachable(f"backend {spec.url} does not answer: {exc!r}") from None
    if response.status_code in (401, 403):
        raise BackendUnreachable(f"backend {spec.url} refused the API key ({response.status_code})")
    if response.status_code >= 500:
        raise BackendUnreachable(f"backend {spec.url} is failing: {response.status_code}")


def open_backend(
    spec: BackendSpec, *, api_key: str | None = None, device: str = "cpu"
) -> CompletionBackend:
    if spec.kind == "openai":
        return OpenAIBackend(spec, api_key=api_key)
    return HFBackend(Path(spec.model), device=device, max_batch=spec.max_concurrency)
