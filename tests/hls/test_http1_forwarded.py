"""The lean HTTP/1.1 protocol behind a trusted proxy: the handler's `Request.client` is the
client X-Forwarded-For names when the socket peer is trusted, the peer otherwise; a trusted
peer's connections are not capped per address."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator

import pytest

from relay.hls import http1
from relay.hls.http1 import Request, Response, bound_protocol
from relay.http_limits import ConnectionTable, HttpLimits
from relay.trusted_proxies import TrustedProxies

pytestmark = pytest.mark.anyio


class Clients:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def handle(self, request: Request) -> http1.Answer:
        self.seen.append(request.client)
        return Response(200, b"", b"ok", "echo")

    def answered(self, request: Request, response: Response) -> None:
        pass


@contextlib.asynccontextmanager
async def server(trusted: str, per_address: int = 1000
                 ) -> AsyncIterator[tuple[int, Clients]]:
    limits = HttpLimits(max_connections_per_address=per_address)
    table = ConnectionTable(limits.max_connections, per_address,
                            proxies=TrustedProxies([ipaddress.ip_network(trusted)]))
    clients = Clients()
    cls = bound_protocol(limits, table, clients)
    loop = asyncio.get_running_loop()
    listening = await loop.create_server(lambda: cls(None, loop), "127.0.0.1", 0)
    try:
        yield listening.sockets[0].getsockname()[1], clients
    finally:
        listening.close()


async def ask(port: int, headers: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: relay\r\n" + headers + b"Connection: close\r\n\r\n")
    try:
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


FORWARDED = b"X-Forwarded-For: 6.6.6.6, 203.0.113.9\r\nX-Forwarded-For: 10.0.0.3\r\n"


async def test_a_trusted_peer_names_the_client() -> None:
    async with server("127.0.0.0/8") as (port, clients):
        await ask(port, FORWARDED)
        await ask(port)
        # 10.0.0.3 is not trusted here: it is the right-most entry, so it is the client.
        assert clients.seen == ["10.0.0.3", "127.0.0.1"]
    async with server("127.0.0.0/8") as (port, clients):
        await ask(port, b"X-Forwarded-For: 6.6.6.6, 203.0.113.9\r\n")
        assert clients.seen == ["203.0.113.9"]


async def test_another_peer_is_its_own_client() -> None:
    async with server("10.0.0.0/8") as (port, clients):
        await ask(port, FORWARDED)
        assert clients.seen == ["127.0.0.1"]


async def test_a_trusted_peer_is_not_capped_per_address() -> None:
    for trusted, answered in (("127.0.0.1/32", 3), ("10.0.0.0/8", 1)):
        async with server(trusted, per_address=1) as (port, _clients):
            opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            try:
                for _, writer in opened:
                    writer.write(b"GET /x HTTP/1.1\r\nHost: relay\r\n\r\n")
                statuses = []
                for reader, _ in opened:
                    async with asyncio.timeout(10):
                        statuses.append((await reader.readuntil(b"\r\n"))[9:12])
                assert statuses.count(b"200") == answered, (trusted, statuses)
            finally:
                for _, writer in opened:
                    writer.close()
