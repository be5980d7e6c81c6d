"""The lean HTTP/1.1 protocol (`relay.hls.http1`) over real sockets with a scripted handler:
framing, keep-alive, pipelining, the head bounds, the timeouts and flow control, and the
hand-off of what it does not serve."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from relay.hls import http1
from relay.hls.http1 import Http1Protocol, Request, Response, bound_protocol
from relay.http_limits import ConnectionTable, HttpCounters, HttpLimits

pytestmark = pytest.mark.anyio

BIG = 4 * 1024 * 1024


@dataclass
class Script:
    """Answers by path: "/slow" waits for `release`; "/big" is BIG bytes; "/api" is not
    served (handed over); anything else echoes the path."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    seen: list[str] = field(default_factory=list)
    answered: list[tuple[str, int]] = field(default_factory=list)

    def handle(self, request: Request) -> http1.Answer:
        self.seen.append(request.path)
        if request.path == "/api":
            return None
        if request.path == "/slow":
            return self._slow(request)
        if request.path == "/big":
            return Response(200, b"content-type: video/mp4\r\n", bytes(BIG), "segment")
        return Response(200, b"content-type: text/plain\r\n", request.path.encode(), "echo")

    async def _slow(self, request: Request) -> Response:
        await self.release.wait()
        return Response(200, b"", b"slow", "echo")

    def answered_hook(self, request: Request, response: Response) -> None:
        self.answered.append((request.path, response.status))


class Fallback(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        answered = b"\r\n\r\n" in self.data
        self.data += data
        if not answered and b"\r\n\r\n" in self.data and self.transport is not None:
            self.transport.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")


@dataclass
class Lean:
    port: int
    script: Script
    counters: HttpCounters
    protocols: list[Http1Protocol]
    fallbacks: list[Fallback]
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.append(writer)
        return reader, writer


@contextlib.asynccontextmanager
async def lean(limits: HttpLimits | None = None) -> AsyncIterator[Lean]:
    limits = limits if limits is not None else HttpLimits()
    counters = HttpCounters()
    table = ConnectionTable(limits.max_connections, limits.max_connections_per_address,
                            counters)
    script = Script()
    handler = type("Handler", (), {"handle": staticmethod(script.handle),
                                   "answered": staticmethod(script.answered_hook)})()
    cls = bound_protocol(limits, table, handler)
    protocols: list[Http1Protocol] = []
    fallbacks: list[Fallback] = []
    loop = asyncio.get_running_loop()

    def fallback() -> Fallback:
        fallbacks.append(Fallback())
        return fallbacks[-1]

    def make() -> Http1Protocol:
        protocols.append(cls(fallback, loop))
        return protocols[-1]

    server = await loop.create_server(make, "127.0.0.1", 0)
    running = Lean(server.sockets[0].getsockname()[1], script, counters, protocols, fallbacks)
    try:
        yield running
    finally:
        for writer in running.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        server.close()
        for protocol in protocols:
            protocol.shutdown()


def get(path: str, extra: bytes = b"", method: bytes = b"GET") -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: relay\r\n%s\r\n" % (method, path.encode(), extra)


async def read_response(reader: asyncio.StreamReader, *, head: bool = False
                        ) -> tuple[int, dict[str, str], bytes]:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = b"" if head else await asyncio.wait_for(reader.readexactly(length), 10)
    return status, headers, body


async def closed(reader: asyncio.StreamReader, within: float = 10) -> bool:
    """Whether the server closes the connection within `within` seconds (what it sent
    before is read and dropped)."""
    async def drain() -> None:
        while await reader.read(1 << 16):
            pass

    try:
        await asyncio.wait_for(drain(), within)
    except ConnectionError:
        pass
    except TimeoutError:
        return False
    return True


async def until(condition: Callable[[], bool], within: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def test_keep_alive_answers_requests_one_after_another() -> None:
    async with lean() as server:
        reader, writer = await server.connect()
        for path in ("/a", "/b", "/c"):
            writer.write(get(path))
            status, headers, body = await read_response(reader)
            assert (status, body) == (200, path.encode())
            assert "connection" not in headers
        assert len(server.protocols) == 1
        assert server.script.answered == [("/a", 200), ("/b", 200), ("/c", 200)]
        writer.close()


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with lean() as server:
        reader, writer = await server.connect()
        writer.write(get("/slow") + get("/one") + get("/two"))
        await until(lambda: server.script.seen == ["/slow"])
        await asyncio.sleep(0.05)
        assert server.script.seen == ["/slow"], "one request at a time"
        server.script.release.set()
        bodies = [(await read_response(reader))[2] for _ in range(3)]
        assert bodies == [b"slow", b"/one", b"/two"]
        writer.close()


async def test_a_request_split_across_many_reads() -> None:
    async with lean() as server:
        reader, writer = await server.connect()
        request = get("/split", b"Accept-Encoding: gzip\r\n")
        for byte in request:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0)
        status, _, body = await read_response(reader)
        assert (status, body) == (200, b"/split")
        assert server.script.seen == ["/split"]
        writer.close()


async def test_an_oversized_head_is_refused_with_431() -> None:
    async with lean() as server:
        reader, writer = await server.connect()
        writer.write(b"GET /a HTTP/1.1\r\nHost: relay\r\n")
        writer.write(b"X-Filler: " + b"x" * http1.MAX_HEAD_BYTES + b"\r\n")
        status, _, _ = await read_response(reader)
        assert status == 431
        assert await closed(reader)
        assert server.script.seen == []


async def test_too_many_headers_are_431_and_a_long_request_line_414() -> None:
    async with lean() as server:
        reader, writer = await server.connect()
        writer.write(get("/a", b"X-A: 1\r\n" * (http1.MAX_HEADERS + 1)))
        assert (await read_response(reader))[0] == 431
        reader, writer = await server.connect()
        writer.write(b"GET /" + b"a" * http1.MAX_REQUEST_LINE_BYTES)
        assert (await read_response(reader))[0] == 414
        assert await closed(reader)


@pytest.mark.parametrize("head", [
    b"GET /a HTTP/1.1\r\n\r\n",  # no Host
    b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: relay\r\n folded\r\n\r\n",  # obs-fold
    b"GET /a HTTP/1.1\r\nHost: relay\r\nBad Name: x\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: re\x01lay\r\n\r\n",
    b"GET /a FTP/1.0\r\nHost: relay\r\n\r\n",
])
async def test_malformed_requests_are_400_and_closed(head: bytes) -> None:
    async with lean() as server:
        reader, writer = await server.connect()
        writer.write(head)
        assert (await read_response(reader))[0] == 400
        assert await closed(reader)
        assert server.script.seen == []


async def test_a_connection_without_a_complete_head_is_closed_after_the_header_timeout(
        ) -> None:
    async with lean(HttpLimits(header_timeout=0.2)) as server:
        reader, writer = await server.connect()
        writer.write(b"GET /a HTTP/1.1\r\nHost: re")
        assert await closed(reader)
        assert server.counters.header_timeouts == 1
        assert server.script.seen == []


async def test_an_idle_keep_alive_connection_is_closed(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    monkeypatch.setattr(http1, "KEEP_ALIVE_TIMEOUT", 0.1)
    async with lean() as server:
        reader, writer = await server.connect()
        writer.write(get("/a"))
        assert (await read_response(reader))[0] == 200
        assert await closed(reader)
        assert server.counters.header_timeouts == 0  # a normal end, not a slow client


async def test_a_client_that_stops_reading_stops_being_read_then_is_cut_off() -> None:
    async with lean(HttpLimits(send_timeout=0.5)) as server:
        reader, writer = await server.connect()
        writer.transport.set_write_buffer_limits(high=BIG * 8)
        # Many pipelined requests for a large body, none of whose answers is read.
        writer.write(get("/big") * 200)
        await until(lambda: bool(server.protocols) and server.protocols[0]._reading_paused)
        assert server.protocols[0]._writing_paused
        await until(lambda: server.counters.send_timeouts == 1)
        # What the socket buffers on both sides took, and no more: the rest of the
        # pipelined requests were never read, let alone answered.
        assert len(server.script.answered) < 20, server.script.answered
        assert await closed(reader)


async def test_head_gets_the_headers_and_length_without_the_body() -> None:
    async with lean() as server:
        reader, writer = await server.connect()
        writer.write(get("/head", method=b"HEAD") + get("/next"))
        status, headers, _ = await read_response(reader, head=True)
        assert status == 200 and headers["content-length"] == str(len(b"/head"))
        status, _, body = await read_response(reader)
        assert (status, body) == (200, b"/next"), "no body bytes followed the HEAD answer"
        writer.close()


@pytest.mark.parametrize("request_bytes", [
    get("/api"),  # the handler declines the path
    get("/a", method=b"POST", extra=b"Content-Length: 2\r\n") + b"{}",
    get("/a%2Fb"),  # percent-encoded: the fallback decodes
    get("/a", b"Transfer-Encoding: chunked\r\n"),
])
async def test_what_it_does_not_serve_goes_to_the_fallback_whole(request_bytes: bytes) -> None:
    async with lean() as server:
        reader, writer = await server.connect()
        writer.write(get("/first") + request_bytes)
        assert (await read_response(reader))[2] == b"/first"
        assert (await read_response(reader))[0] == 405
        assert len(server.fallbacks) == 1
        assert bytes(server.fallbacks[0].data) == request_bytes
        writer.close()


async def test_connection_close_and_http_1_0_end_the_connection() -> None:
    async with lean() as server:
        for head in (get("/a", b"Connection: close\r\n"), b"GET /a HTTP/1.0\r\n\r\n"):
            reader, writer = await server.connect()
            writer.write(head)
            status, headers, _ = await read_response(reader)
            assert status == 200 and headers["connection"] == "close"
            assert await closed(reader)


async def test_the_connection_caps_are_the_tables() -> None:
    async with lean(HttpLimits(max_connections_per_address=1)) as server:
        first_reader, first = await server.connect()
        first.write(get("/busy"))
        assert (await read_response(first_reader))[0] == 200
        reader, _ = await server.connect()
        status, headers, _ = await read_response(reader)
        assert status == 503 and headers["retry-after"] == "1"
        assert server.counters.refused_per_address == 1
        first.close()

