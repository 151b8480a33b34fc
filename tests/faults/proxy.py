"""A TCP proxy that injects faults between a client and a real service.

Modes, switched at any time (they apply to connections accepted from then on; `cut` also
drops the ones open): `pass` forwards bytes; `slow` forwards after `delay_s`; `refuse` closes
every connection at once (a dead service); `hang` accepts and never answers; `garbage`
answers every request with `200 OK` and a body that is not what the client expects.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Literal

from codeprm.stack import free_port

Mode = Literal["pass", "slow", "refuse", "hang", "garbage"]
GARBAGE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 23\r\n"
    b'connection: close\r\n\r\n{"surprise": [1, 2, 3]'
)


class FaultyProxy:
    def __init__(self, upstream_port: int, *, mode: Mode = "pass", delay_s: float = 1.0) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mode: Mode = mode
        self.delay_s = delay_s
        self._loop = asyncio.new_event_loop()
        self._open: set[asyncio.StreamWriter] = set()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        assert self._started.wait(10), "proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        self._close_all()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop.stop()

    def cut(self) -> None:
        """Drop every open connection now (the service died mid-request)."""
        self._loop.call_soon_threadsafe(self._close_all)

    def _close_all(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port)
        )
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._close_all()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            mode = self.mode
            if mode == "refuse":
                writer.transport.abort()
                return
            if mode == "hang":
                await reader.read()  # until the client gives up
                return
            if mode == "garbage":
                await reader.read(65536)
                writer.write(GARBAGE)
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._open.add(up_writer)
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
            )
        except OSError:
            pass
        finally:
            self._open.discard(writer)
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.mode == "slow":
                    await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        finally:
            self._open.discard(writer)
            writer.close()
