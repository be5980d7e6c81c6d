"""A real HTTP/1.1 server on 127.0.0.1 that stands for an owner node: it answers what a test
sets per path, counts the requests and connections it gets, and can hold its answers until
the test releases them (so concurrent viewer requests are in flight together)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class Canned:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    never: bool = False  # accept the request and never answer it


@dataclass
class Seen:
    target: str  # the request target as received (path and query)
    headers: dict[str, str]


class CountingServer:
    """Answers GETs from `routes` (path without query -> Canned); anything else is a 404."""

    def __init__(self) -> None:
        self.routes: dict[str, Canned] = {}
        self.requests: Counter[str] = Counter()  # by request target
        self.seen: list[Seen] = []
        self.connections = 0
        #: While set, answers wait for `release`.
        self.hold = False
        self.arrived = asyncio.Event()  # a request has arrived (while holding)
        self._released = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.url = ""

    def release(self) -> None:
        self._released.set()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield self.url
        finally:
            self._server.close()
            self._released.set()
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                _, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                self.requests[target] += 1
                self.seen.append(Seen(target, headers))
                canned = self.routes.get(target.partition("?")[0], Canned(404, [], b"nope\n"))
                if self.hold:
                    self.arrived.set()
                    await self._released.wait()
                if canned.never:
                    await asyncio.Event().wait()
                fields = "".join(f"{name}: {value}\r\n" for name, value in canned.headers)
                writer.write(f"HTTP/1.1 {canned.status} X\r\n{fields}content-length: "
                             f"{len(canned.body)}\r\n\r\n".encode("latin-1") + canned.body)
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
