"""Errors every service can raise, and the one handler that turns them into JSON responses.

    CodeprmError            500
    ├── BadInput            422  the request is well-formed JSON but asks for something invalid
    ├── PayloadTooLarge     413
    ├── Unauthorized        401
    ├── NotFound            404
    ├── Conflict            409  the resource is not in a state that allows this yet
    └── Unavailable         503  (+ Retry-After)
        ├── Overloaded           the queue is full; try again shortly
        └── NotReady             still starting (model loading, self-test running)

A failing *program* is never an HTTP error: it is a result with a `status`.

Request bodies are checked before any route sees them (`StrictJSONMiddleware`): JSON that
Python's parser accepts but nothing downstream can carry (NaN, Infinity, numbers that overflow
a float such as 1e999, lone surrogates such as "\\ud800" in a string, integers beyond the
str-digits limit, nesting beyond the recursion limit) is a 422 saying so. Validation errors
are rendered safely whatever the input held.
"""

from __future__ import annotations

import json
import logging
import math
import re
from email.message import Message as EmailMessage
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from codeprm.serving.strict_json import Unrepresentable, finite_float, printable, refuse_constant

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


class Conflict(CodeprmError):
    status_code = 409


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


async def _handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # FastAPI's own handler echoes each error's input into JSON that refuses NaN and lone
    # surrogates (a 500); ours makes every part of the echo representable, and short.
    errors = [
        {
            "type": str(error.get("type", "invalid")),
            "loc": [_echo(part, 1) for part in error.get("loc", ())],
            "msg": printable(str(error.get("msg", ""))),
            "input": _echo(error.get("input"), 4),
        }
        for error in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


def _echo(value: Any, depth: int) -> Any:
    """`value` as JSON can carry it, truncated: for error messages only."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 10**100 else f"<int of {value.bit_length()} bits>"
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return printable(value[:1000])
    if depth <= 0:
        return "..."
    if isinstance(value, dict):
        return {printable(str(k)[:100]): _echo(v, depth - 1) for k, v in list(value.items())[:50]}
    if isinstance(value, list | tuple):
        return [_echo(v, depth - 1) for v in list(value)[:50]]
    return printable(repr(value)[:200])


# -- request bodies ---------------------------------------------------------------------------


# A lone surrogate can only arrive as a \uD800-\uDFFF escape (UTF-8 cannot encode one):
# bodies without such an escape, nearly all, skip the walk over their strings.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def body_problem(body: bytes) -> str | None:
    """Why a JSON request body is refused before validation, or None. Bodies that are not
    JSON at all are left to FastAPI, which reports where they break."""
    if not body:
        return None
    try:
        value = json.loads(body, parse_constant=refuse_constant, parse_float=finite_float)
    except Unrepresentable as exc:
        return f"{exc}; send finite numbers only"
    except json.JSONDecodeError:
        return None
    except UnicodeDecodeError:
        return None
    except RecursionError:
        return "the JSON body is nested too deeply"
    except ValueError as exc:  # an integer beyond the str-digits limit
        return f"the JSON body cannot be read: {exc}"
    if _SURROGATE_ESCAPE.search(body):
        where = _lone_surrogate(value)
        if where is not None:
            return (
                f"a string at {where} holds a lone surrogate (\\ud800-\\udfff escapes must "
                "come in pairs); send valid Unicode"
            )
    return None


def _lone_surrogate(value: Any) -> str | None:
    """The path of the first string (or key) with a lone surrogate, e.g. `body.items[0].code`."""
    todo: list[tuple[str, Any]] = [("body", value)]
    while todo:
        path, node = todo.pop()
        if isinstance(node, str):
            if printable(node) is not node:
                return path
        elif isinstance(node, dict):
            for key, item in node.items():
                if printable(key) is not key:
                    return path
                todo.append((f"{path}.{printable(key)[:50]}", item))
        elif isinstance(node, list):
            todo.extend((f"{path}[{i}]", item) for i, item in enumerate(node))
    return None


def _is_json(scope: Scope) -> bool:
    """FastAPI's rule: a body is JSON without a content type, or with a json one."""
    for key, value in scope["headers"]:
        if key == b"content-type":
            message = EmailMessage()
            message["content-type"] = value.decode("latin-1")
            subtype = message.get_content_subtype()
            return subtype == "json" or subtype.endswith("+json")
    return True


class StrictJSONMiddleware:
    """422 for JSON bodies that no service can carry (`body_problem`); other requests pass
    untouched. Plain ASGI: the body is read once here and handed on as it came."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        if not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks, more, disconnected = [], True, False
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
                break
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        problem = None if disconnected else body_problem(body)
        if problem is not None:
            detail = [{"type": "json_invalid", "loc": ["body"], "msg": problem, "input": None}]
            await JSONResponse({"detail": detail}, status_code=422)(scope, receive, send)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                if disconnected:
                    return {"type": "http.disconnect"}
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_middleware(StrictJSONMiddleware)
    app.add_exception_handler(CodeprmError, _handle_codeprm_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(Exception, _handle_unexpected)
