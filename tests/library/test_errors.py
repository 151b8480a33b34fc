"""The shared error handling (codeprm/serving/errors.py): what JSON bodies are refused, and that
validation errors always render, whatever the input held."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from codeprm.serving.errors import BadInput, body_problem, install_error_handlers

any_text = st.text(st.characters(exclude_categories=())) | st.sampled_from(
    ["\ud800", "a\udfffb", "\udc00\ud800", "\ud83d\ude00", "\\ud800"]
)
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)


def _unrepresentable(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, list):
        return any(_unrepresentable(v) for v in value)
    if isinstance(value, dict):
        return any(_unrepresentable(k) or _unrepresentable(v) for k, v in value.items())
    return False


@given(json_like)
def test_a_body_is_refused_exactly_when_json_cannot_carry_it(value: Any) -> None:
    body = json.dumps(value).encode()  # NaN, Infinity; lone surrogates as \\u escapes
    # What the body says once read: "\\ud800\\udc00" is a pair, one valid character.
    assert (body_problem(body) is not None) is _unrepresentable(json.loads(body))


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"x": NaN}', "NaN is not a JSON number"),
        (b'{"x": [1, -Infinity]}', "-Infinity is not a JSON number"),
        (b'{"x": 1e999}', "overflows a float"),
        (b'{"x": -2.5e400}', "overflows a float"),
        (b'{"x": "\\ud800"}', "body.x holds a lone surrogate"),
        (b'{"x": ["ok", "a\\udc00"]}', "body.x[1] holds a lone surrogate"),
        (b'{"\\ud800": 1}', "body holds a lone surrogate"),
        (b'{"x": ' + b"1" * 5000 + b"}", "cannot be read"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_refusals_say_what_is_wrong(body: bytes, fragment: str) -> None:
    assert fragment in (body_problem(body) or "")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'{"x": "\\ud83d\\ude00"}',  # a surrogate pair is valid Unicode
        b'{"x": "\\\\ud800"}',  # an escaped backslash, then text
        b'{"x": 1.7976931348623157e308, "y": -0.0, "z": 1e-400}',
        b"not json",  # left to FastAPI, which says where it breaks
    ],
)
def test_other_bodies_pass(body: bytes) -> None:
    assert body_problem(body) is None


class Item(BaseModel):
    x: float = Field(ge=-1e9)
    name: str = "n"


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/item")
    async def item(body: Item) -> dict[str, float]:
        if body.x < 0:
            raise BadInput("x must not be negative")
        return {"x": body.x}

    @app.post("/text")
    async def text(body: dict[str, Any]) -> dict[str, int]:
        return {"keys": len(body)}

    return app


async def _post(path: str, content: bytes, **headers: str) -> httpx.Response:
    headers.setdefault("content-type", "application/json")
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        return await client.post(path, content=content, headers=headers)


@pytest.mark.parametrize(
    "content",
    [
        b'{"x": NaN}',
        b'{"x": Infinity}',
        b'{"x": 1e999}',
        b'{"x": 1, "name": "\\ud800"}',
        b'{"x": "nan"}',  # a string pydantic reads as nan: out of bounds, echoed safely
        b'{"x": {"deep": ' + b"[" * 900 + b"]" * 900 + b"}}",
        b'{"x": "' + b"\\ud800" * 3 + b'"}',
    ],
)
@pytest.mark.asyncio
async def test_bad_bodies_are_422_never_500(content: bytes) -> None:
    response = await _post("/item", content)
    assert response.status_code == 422, response.text
    json.loads(response.text, parse_constant=lambda c: pytest.fail(f"{c} in a response"))


@pytest.mark.asyncio
async def test_good_bodies_and_other_errors_are_unchanged() -> None:
    assert (await _post("/item", b'{"x": 1.5}')).json() == {"x": 1.5}
    bad = await _post("/item", b'{"x": -1}')
    assert bad.status_code == 422 and bad.json() == {"detail": "x must not be negative"}
    bad = await _post("/item", b'{"x": -1e10}')
    assert bad.status_code == 422 and "greater than or equal" in bad.text
    bad = await _post("/item", b'{"x": -1}')
    assert bad.status_code == 422 and bad.json() == {"detail": "x must not be negative"}
    missing = await _post("/item", b"{}")
    assert missing.status_code == 422 and "Field required" in missing.text
    # Not JSON by its content type: not ours to judge.
    form = await _post("/text", b"x=NaN", **{"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 422 and "NaN is not" not in form.text
