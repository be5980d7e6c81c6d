"""The HTTPS acceptor (`relay.https`) over real sockets, with the lean protocol behind it:
keep-alive over TLS, a handshake's slot counted from accept and handed to the protocol, the
per-address cap applied at accept, the handshake deadline, and eviction of a handshake."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from relay.hls import http1
from relay.hls.http1 import Http1Protocol, Request, Response, bound_protocol
from relay.http_limits import ConnectionTable, HttpCounters, HttpLimits
from relay.https import TlsAcceptor
from testkit.tls import self_signed

pytestmark = pytest.mark.anyio


class Echo:
    def handle(self, request: Request) -> http1.Answer:
        return Response(200, b"content-type: text/plain\r\n", request.path.encode(), "echo")

    def answered(self, request: Request, response: Response) -> None:
        pass


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    directory: Path = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(directory)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server


@dataclass
class Served:
    port: int
    acceptor: TlsAcceptor
    table: ConnectionTable
    counters: HttpCounters


@contextlib.asynccontextmanager
async def serving(context: ssl.SSLContext, limits: HttpLimits) -> AsyncIterator[Served]:
    counters = HttpCounters()
    table = ConnectionTable(limits.max_connections, limits.max_connections_per_address,
                            counters)
    cls = bound_protocol(limits, table, Echo())
    protocols: list[Http1Protocol] = []
    loop = asyncio.get_running_loop()

    def make() -> Http1Protocol:
        protocols.append(cls(None, loop))
        return protocols[-1]

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    acceptor = TlsAcceptor(sock, context, table, limits, counters, make)
    acceptor.start()
    try:
        yield Served(sock.getsockname()[1], acceptor, table, counters)
    finally:
        await acceptor.close()
        for protocol in protocols:
            protocol.shutdown()
        sock.close()


def client_context() -> ssl.SSLContext:
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE  # the test's self-signed certificate
    return client


async def until(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"never: {what}"
        await asyncio.sleep(0.02)


async def closed(reader: asyncio.StreamReader) -> bool:
    """The peer closed (EOF or reset) within 10 s."""
    try:
        return await asyncio.wait_for(reader.read(1), 10) == b""
    except ConnectionError:
        return True


async def request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  path: str) -> bytes:
    writer.write(b"GET %s HTTP/1.1\r\nHost: stream.relay.test\r\n\r\n" % path.encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return await reader.readexactly(length)


async def test_keep_alive_over_tls_holds_one_slot(context: ssl.SSLContext) -> None:
    async with serving(context, HttpLimits()) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port,
                                                       ssl=client_context())
        try:
            assert await request(reader, writer, "/a.m3u8") == b"/a.m3u8"
            assert await request(reader, writer, "/b.m3u8") == b"/b.m3u8"  # same connection
            # The handshake's slot went to the protocol: one connection, one count.
            assert len(served.table) == 1 and served.acceptor.handshaking == 0
        finally:
            writer.close()
        await until(lambda: len(served.table) == 0, "the connection forgotten")


async def test_handshakes_count_from_accept_and_expire(context: ssl.SSLContext) -> None:
    limits = HttpLimits(max_connections_per_address=1, tls_handshake_timeout=1.0)
    async with serving(context, limits) as served:
        silent, silent_writer = await asyncio.open_connection("127.0.0.1", served.port)
        await until(lambda: served.acceptor.handshaking == 1, "the silent handshake")
        assert len(served.table) == 1
        # The address has its one slot: the next connection is closed at accept.
        refused, refused_writer = await asyncio.open_connection("127.0.0.1", served.port)
        assert await closed(refused)
        assert served.counters.refused_per_address == 1
        # The silent one sent no ClientHello: closed at the handshake deadline.
        assert await closed(silent)
        await until(lambda: len(served.table) == 0, "the expired handshake forgotten")
        assert served.counters.tls_handshake_failures == 1
        for writer in (silent_writer, refused_writer):
            writer.close()


async def test_a_handshake_is_evicted_for_a_newcomer_at_the_cap(
        context: ssl.SSLContext) -> None:
    async with serving(context, HttpLimits(max_connections=1)) as served:
        silent, silent_writer = await asyncio.open_connection("127.0.0.1", served.port)
        await until(lambda: served.acceptor.handshaking == 1, "the silent handshake")
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port,
                                                       ssl=client_context())
        try:
            assert await request(reader, writer, "/x.m3u8") == b"/x.m3u8"
            assert await closed(silent)
            assert served.counters.evicted == 1 and len(served.table) == 1
        finally:
            writer.close()
            silent_writer.close()
