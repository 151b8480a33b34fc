"""An OpenAI-compatible HTTP server whose answers come from Python functions.

For tests, benchmarks and offline pipeline checks: the labeler talks to it exactly as it talks
to vLLM (`/v1/models`, `/v1/completions`, `/v1/chat/completions`, `n`, `stop`, prefilled
assistant messages with `continue_final_message`), over real HTTP on a loopback port.

    def complete(text: str, n: int) -> list[str]: ...   # continuations of `text`
    with ScriptedLLM(complete=complete) as llm:
        ...  # point a BackendSpec at llm.url

A chat request whose last message is an assistant message and that sets
`continue_final_message` is answered like vLLM does, by continuing that message: `complete`
gets the user turn followed by the prefill. `fail_next` makes the next requests fail with the
given statuses (429, 503, ...), to exercise retries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from codeprm.services.labeler.completions import cut_at_stop
from codeprm.stack import free_port

Complete = Callable[[str, int], list[str]]
Chat = Callable[[list[dict[str, str]], int], list[str]]


def _unscripted(*_: Any) -> list[str]:
    raise NotImplementedError("this ScriptedLLM has no answer for that endpoint")


class ScriptedLLM:
    def __init__(
        self,
        complete: Complete = _unscripted,
        chat: Chat = _unscripted,
        *,
        model: str = "scripted",
        delay_s: float = 0.0,
    ) -> None:
        self.complete = complete
        self.chat = chat
        self.model = model
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        """Every request body, in arrival order."""
        self.fail_next: list[int] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._server = uvicorn.Server(
            uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._lock = threading.Lock()

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": self.model, "object": "model"}]}

        @app.post("/v1/completions")
        def completions(body: dict[str, Any]) -> Any:
            return self._answer(body, lambda n: self.complete(body["prompt"], n), "text")

        @app.post("/v1/chat/completions")
        def chat(body: dict[str, Any]) -> Any:
            messages = body["messages"]
            if body.get("continue_final_message") and messages[-1]["role"] == "assistant":
                text = "".join(m["content"] for m in messages)
                return self._answer(body, lambda n: self.complete(text, n), "message")
            return self._answer(body, lambda n: self.chat(messages, n), "message")

        @app.middleware("http")
        async def failures(request: Request, call_next: Any) -> Any:
            with self._lock:
                status = self.fail_next.pop(0) if self.fail_next else None
            if status is not None:
                return JSONResponse({"error": {"message": "scripted failure"}}, status_code=status)
            return await call_next(request)

        return app

    def _answer(self, body: dict[str, Any], make: Callable[[int], list[str]], shape: str) -> Any:
        with self._lock:
            self.requests.append(body)
        if body.get("model") != self.model:
            return JSONResponse({"error": {"message": "no such model"}}, status_code=404)
        if self.delay_s:
            time.sleep(self.delay_s)
        n = int(body.get("n", 1))
        stop = body.get("stop") or []
        texts = [cut_at_stop(text, [stop] if isinstance(stop, str) else stop) for text in make(n)]
        if shape == "text":
            choices = [
                {"index": i, "text": t, "finish_reason": "stop"} for i, t in enumerate(texts)
            ]
        else:
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": t},
                    "finish_reason": "stop",
                }
                for i, t in enumerate(texts)
            ]
        return {"id": "scripted", "object": "list", "model": self.model, "choices": choices}

    def __enter__(self) -> ScriptedLLM:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the scripted LLM server did not start")
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
