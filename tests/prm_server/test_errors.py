"""The PRM server's last line of defence: an unexpected error is a 500 answer on a connection
that stays open (uvicorn drops the connection when an exception leaves the app)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from codeprm.services.prm_server.app import create_app
from codeprm.services.prm_server.settings import PrmSettings
from codeprm.stack import free_port
from tests.prm_server.test_server import exchange


@pytest.fixture
def broken_server() -> Iterator[int]:
    app = create_app(PrmSettings(model=None))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug nobody anticipated")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield port
    server.should_exit = True
    thread.join(10)


def test_an_unexpected_error_answers_500_and_keeps_the_connection(broken_server: int) -> None:
    with socket.create_connection(("127.0.0.1", broken_server), timeout=10) as sock:
        assert exchange(sock, "GET", "/boom") == 500
        assert exchange(sock, "GET", "/healthz") == 200
        assert exchange(sock, "POST", "/v1/score", b'{"items": [{"code": "x"}]}') == 503
        assert exchange(sock, "GET", "/boom") == 500
        assert exchange(sock, "GET", "/healthz") == 200
