"""The PRM server's own error rules, on top of the shared ones in `codeprm.serving.errors`.

* Text the tokenizer cannot take (a lone surrogate such as "\\ud800" is valid JSON but not
  valid Unicode) is refused with 422 before it reaches the tokenizer.
* An item that fails the forward pass on its own, after its batch was split, is refused with
  422; running out of memory is 503 (retry later, or send less at once).
* Anything unexpected still becomes a 500 *answer* without closing the connection: Starlette's
  outermost error handler re-raises after answering, and uvicorn then drops the keep-alive
  connection, so the client's next request on it would fail too.
"""

from __future__ import annotations

import logging

import torch
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from codeprm.serving.errors import BadInput, CodeprmError, Overloaded

log = logging.getLogger(__name__)


def check_text(where: str, text: str) -> None:
    """Raises BadInput when `text` cannot be encoded as UTF-8 (lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadInput(
            f"{where}: not valid Unicode text (lone surrogate at character {exc.start})"
        ) from None


def scoring_error(exc: BaseException) -> CodeprmError:
    """What the caller of an item hears when its forward pass failed."""
    if isinstance(exc, CodeprmError):
        return exc
    if isinstance(exc, torch.OutOfMemoryError):
        return Overloaded("out of memory while scoring; retry later or send fewer items")
    return BadInput(f"this item cannot be scored by this model: {exc!r}"[:1000])


class ContainUnexpectedErrors:
    """Answers 500 for an exception nothing else handled, and keeps the connection open."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:  # half a response is out: only closing the connection is honest
                raise
            log.exception("unhandled error", extra={"path": scope.get("path")})
            response = JSONResponse({"detail": "internal error"}, status_code=500)
            await response(scope, receive, send)
