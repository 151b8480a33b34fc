"""Errors every service can raise, and the one handler that turns them into JSON responses.

    CodeprmError            500
    ├── BadInput            422  the request is well-formed JSON but asks for something invalid
    ├── PayloadTooLarge     413
    ├── Unauthorized        401
    ├── NotFound            404
    └── Unavailable         503  (+ Retry-After)
        ├── Overloaded           the queue is full; try again shortly
        └── NotReady             still starting (model loading, self-test running)

A failing *program* is never an HTTP error: it is a result with a `status`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)


class CodeprmError(Exception):
    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def headers(self) -> dict[str, str]:
        return {}


class BadInput(CodeprmError):
    status_code = 422


class PayloadTooLarge(CodeprmError):
    status_code = 413


class Unauthorized(CodeprmError):
    status_code = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class NotFound(CodeprmError):
    status_code = 404


class Unavailable(CodeprmError):
    status_code = 503

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class Overloaded(Unavailable):
    pass


class NotReady(Unavailable):
    pass


async def _handle_codeprm_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CodeprmError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers())


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Tracebacks go to the log, never to the client.
    log.exception("unhandled error", extra={"path": request.url.path})
    return JSONResponse({"detail": "internal error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CodeprmError, _handle_codeprm_error)
    app.add_exception_handler(Exception, _handle_unexpected)
