"""The lean HTTP/1.1 protocol (`relay.hls.http1`) over real sockets with a scripted handler:
framing, keep-alive, pipelining, the head bounds, the timeouts and flow control, and the
hand-off of what it does not serve."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from relay.hls import http1
from relay.hls.holding import HeldRequests, HoldOutcome
from relay.hls.http1 import Held, Http1Protocol, Request, Response, bound_protocol
from relay.http_limits import ConnectionTable, HttpCounters, HttpLimits

pytestmark = pytest.mark.anyio

BIG = 4 * 1024 * 1024


class Stream:
    """A packager's change signal and a level the held requests wait for (`/held/N`: until
    the level reaches N)."""

    def __init__(self) -> None:
        self.ended = False
        self.level = 0
        self.broken = False  # the conditions raise
        self._change: asyncio.Future[None] | None = None

    async def wait_change(self) -> None:
        if self.ended:
            return
        if self._change is None:
            self._change = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._change)

    def change(self, level: int) -> None:
        self.level = level
        change, self._change = self._change, None
        if change is not None and not change.done():
            change.set_result(None)

    def reached(self, wanted: int) -> bool:
        if self.broken:
            raise RuntimeError("a bug in a condition")
        return self.level >= wanted


@dataclass
class Script:
    """Answers by path: "/slow" waits for `release`; "/big" is BIG bytes; "/api" is not
    served (handed over); "/held/N" is held until the stream's level reaches N (0.2 s at
    most; "/held-long/N": an hour); anything else echoes the path."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    seen: list[str] = field(default_factory=list)
    answered: list[tuple[str, int]] = field(default_factory=list)
    holds: HeldRequests = field(default_factory=lambda: HeldRequests(max_per_stream=50))
    stream: Stream = field(default_factory=Stream)

    def handle(self, request: Request) -> http1.Answer:
        self.seen.append(request.path)
        if request.path == "/api":
            return None
        if request.path == "/slow":
            return self._slow(request)
        if request.path.startswith(("/held/", "/held-long/")):
            wanted = int(request.path.rsplit("/", 1)[1])
            return Held(self.holds, self.stream,
                        0.2 if request.path.startswith("/held/") else 3600.0,
                        lambda: self.stream.reached(wanted),
                        lambda outcome: self._held(request, outcome))
        if request.path == "/big":
            return Response(200, b"content-type: video/mp4\r\n", bytes(BIG), "segment")
        return Response(200, b"content-type: text/plain\r\n", request.path.encode(), "echo")

    def _held(self, request: Request, outcome: HoldOutcome) -> Response:
        status = 200 if outcome is HoldOutcome.READY else 503
        return Response(status, b"", b"%s %s" % (request.path.encode(),
                                                 outcome.name.encode()), "playlist")

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
    b"GET /a HTTP/1.1\r\nHost: relay\r\nNo-Colon\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: relay\r\n: no name\r\n\r\n",
    b"GET /a HTTP/1.1\r\nUser-Agent: a\x7fb\r\nHost: relay\r\n\r\n",
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



async def test_held_requests_are_answered_at_the_change_without_a_task_each() -> None:
    async with lean() as server:
        connections = [await server.connect() for _ in range(20)]
        for _, writer in connections:
            writer.write(get("/held-long/1"))
        await until(lambda: server.script.holds.held == 20)
        tasks = {t.get_name() for t in asyncio.all_tasks()}
        assert "relay-hls-held-requests" in tasks
        server.script.stream.change(1)
        for reader, _ in connections:
            assert (await read_response(reader))[::2] == (200, b"/held-long/1 READY")
        holds = server.script.holds
        assert (holds.held, holds.waiters_created) == (0, 20)
        assert server.script.answered == [("/held-long/1", 200)] * 20


async def test_a_held_request_times_out_refuses_at_the_cap_and_fails_alone() -> None:
    async with lean() as server:
        script = server.script
        script.holds = HeldRequests(max_total=2, max_per_stream=2)
        reader, writer = await server.connect()
        writer.write(get("/held/1"))
        assert (await read_response(reader))[::2] == (503, b"/held/1 TIMED_OUT")
        # Two held, a third refused at once (the answer's builder is told).
        held = [await server.connect() for _ in range(2)]
        for _, other in held:
            other.write(get("/held-long/5"))
        await until(lambda: script.holds.held == 2)
        writer.write(get("/held-long/5"))
        assert (await read_response(reader))[::2] == (503, b"/held-long/5 REFUSED")
        # A condition that raises fails its own requests with 500; the connections live on.
        script.stream.broken = True
        script.stream.change(1)
        for other_reader, other in held:
            assert (await read_response(other_reader))[0] == 500
            other.write(get("/after"))
            assert (await read_response(other_reader))[::2] == (200, b"/after")
        assert script.holds.held == 0


async def test_a_connection_closed_while_held_leaves_nothing_held() -> None:
    async with lean() as server:
        _, writer = await server.connect()
        writer.write(get("/held-long/1"))
        await until(lambda: server.script.holds.held == 1)
        # A reset, so the server's connection is lost (a half-close would still be
        # answered: eof_received).
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        await until(lambda: server.script.holds.held == 0)
        assert server.script.holds.held_for(server.script.stream) == 0
        assert not [t for t in asyncio.all_tasks()
                    if t.get_name() == "relay-hls-held-requests" and not t.done()]
        server.script.stream.change(1)
        await asyncio.sleep(0.05)
        assert server.script.answered == []


async def test_requests_pipelined_behind_a_held_one_are_answered_after_it_in_order() -> None:
    async with lean() as server:
        reader, writer = await server.connect()
        writer.write(get("/held-long/1") + get("/one") + get("/held-long/2") + get("/two"))
        await until(lambda: server.script.holds.held == 1)
        await asyncio.sleep(0.05)
        assert server.script.seen == ["/held-long/1"], "one request at a time"
        server.script.stream.change(1)
        assert (await read_response(reader))[2] == b"/held-long/1 READY"
        assert (await read_response(reader))[2] == b"/one"
        await until(lambda: server.script.holds.held == 1)
        server.script.stream.change(2)
        bodies = [(await read_response(reader))[2] for _ in range(2)]
        assert bodies == [b"/held-long/2 READY", b"/two"]
        writer.close()
