"""HTTP connection bounds without sockets: the table (caps, eviction order), the address
key, and the protocol's phases driven through a fake transport. Deadlines are checked as
armed timers (and fired by hand), never by waiting; the real sockets are
tests/integration/test_http_limits.py's part."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import pytest
import uvicorn
from uvicorn.server import ServerState

from relay.http_limits import (
    Admission,
    ConnectionTable,
    HttpLimits,
    LimitedH11Protocol,
    limited_protocol,
)

pytestmark = pytest.mark.anyio


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True

    def __repr__(self) -> str:
        return self.name


def test_one_address_gets_its_share_and_others_are_unaffected() -> None:
    table = ConnectionTable(max_connections=10, max_per_address=2)
    a1, a2, a3, b1 = Conn("a1"), Conn("a2"), Conn("a3"), Conn("b1")
    assert table.open(a1, "a") is Admission.ADMITTED
    assert table.open(a2, "a") is Admission.ADMITTED
    assert table.open(a3, "a") is Admission.REFUSED_PER_ADDRESS
    assert table.open(b1, "b") is Admission.ADMITTED
    assert (len(table), table.from_address("a"), table.counters.refused_per_address) == \
        (3, 2, 1)
    table.close(a1)
    table.close(a1)  # safe to repeat
    assert table.open(a3, "a") is Admission.ADMITTED
    assert not any(c.evicted for c in (a1, a2, a3, b1))


def test_at_the_cap_the_longest_waiting_connection_makes_room() -> None:
    table = ConnectionTable(max_connections=3, max_per_address=10)
    first, second, third = Conn("first"), Conn("second"), Conn("third")
    for conn in (first, second, third):
        table.open(conn, "a")
    table.busy(first)  # in a request: never evicted
    table.busy(second)
    table.waiting(second)  # its response is done: waiting again, the newest waiter
    newcomer = Conn("newcomer")
    assert table.open(newcomer, "b") is Admission.ADMITTED
    assert third.evicted and not second.evicted and not first.evicted
    assert len(table) == 3 and table.counters.evicted == 1
    table.close(third)  # its socket goes later: nothing to undo
    assert len(table) == 3
    late = Conn("late")
    assert table.open(late, "c") is Admission.ADMITTED
    assert second.evicted  # the oldest waiter now


def test_when_every_connection_is_busy_a_new_one_is_refused() -> None:
    table = ConnectionTable(max_connections=2, max_per_address=10)
    busy = [Conn("x"), Conn("y")]
    for conn in busy:
        table.open(conn, "a")
        table.busy(conn)
    assert table.open(Conn("z"), "b") is Admission.REFUSED_FULL
    assert table.counters.refused_full == 1 and not any(c.evicted for c in busy)


def test_caps_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionTable(max_connections=0, max_per_address=1)


# -- the protocol, through a fake transport ---------------------------------------------

class FakeTransport:
    def __init__(self, peer: tuple[str, int] = ("192.0.2.1", 40000)) -> None:
        self.peer = peer
        self.written = b""
        self.closing = False
        self.aborted = False
        self.protocol: asyncio.Protocol | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.peer, "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.aborted = self.closing = True
        if self.protocol is not None:
            self.protocol.connection_lost(None)
            self.protocol = None

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def hello(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class Listener:
    def __init__(self, **limits: Any) -> None:
        self.limits = HttpLimits(**limits)
        self.protocol_class = limited_protocol(self.limits)
        self.config = uvicorn.Config(hello, http=self.protocol_class, ws="none",
                                     log_config=None, lifespan="off")
        self.config.load()
        self.state = ServerState()

    def connect(self, peer: tuple[str, int] = ("192.0.2.1", 40000)
                ) -> tuple[LimitedH11Protocol, FakeTransport]:
        protocol = self.protocol_class(config=self.config, server_state=self.state,
                                       app_state={})
        transport = FakeTransport(peer)
        transport.protocol = protocol
        protocol.connection_made(transport)  # type: ignore[arg-type]
        return protocol, transport


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_the_header_deadline_is_not_renewed_by_trickling_bytes() -> None:
    listener = Listener(header_timeout=10.0)
    protocol, transport = listener.connect()
    deadline = protocol._deadline
    assert deadline is not None
    loop = asyncio.get_running_loop()
    assert deadline.when() <= loop.time() + 10.0
    for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ":
        protocol.data_received(bytes([byte]))
        assert protocol._deadline is deadline  # the same timer keeps running
    deadline._run()  # what the loop does when it falls due
    assert transport.aborted and len(listener.protocol_class.table) == 0
    assert listener.protocol_class.table.counters.header_timeouts == 1


async def test_each_phase_has_its_own_bound() -> None:
    listener = Listener(header_timeout=10.0, body_timeout=20.0)
    protocol, transport = listener.connect()
    table = listener.protocol_class.table
    loop = asyncio.get_running_loop()
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
    assert protocol.conn.their_state is h11.SEND_BODY
    body_deadline = protocol._deadline
    assert body_deadline is not None and body_deadline.when() > loop.time() + 15
    assert not table._waiting  # in a request: not evicted
    protocol.data_received(b"cd")
    assert protocol._deadline is None  # the application's turn: no deadline
    await settle()
    assert transport.written.startswith(b"HTTP/1.1 200 ")
    # The response is complete: waiting for the next request, with a fresh deadline.
    assert protocol.conn.their_state is h11.IDLE
    assert protocol._deadline is not None and protocol._deadline is not body_deadline
    assert protocol in table._waiting
    protocol.connection_lost(None)
    assert len(table) == 0 and protocol._deadline is None


async def test_a_body_that_never_ends_is_closed_at_its_deadline() -> None:
    listener = Listener(body_timeout=20.0)
    protocol, transport = listener.connect()
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\na")
    assert protocol._deadline is not None
    protocol._deadline._run()
    await settle()
    assert transport.aborted and listener.protocol_class.table.counters.body_timeouts == 1


async def test_a_response_nobody_reads_is_closed_after_the_send_timeout() -> None:
    listener = Listener(send_timeout=30.0)
    protocol, transport = listener.connect()
    protocol.pause_writing()
    stall = protocol._stall
    assert stall is not None
    protocol.resume_writing()
    assert protocol._stall is None and stall.cancelled()
    protocol.pause_writing()
    assert protocol._stall is not None
    protocol._stall._run()
    assert transport.aborted and listener.protocol_class.table.counters.send_timeouts == 1


async def test_refused_connections_get_a_503_and_are_not_counted() -> None:
    listener = Listener(max_connections=10, max_connections_per_address=1)
    first, _ = listener.connect()
    refused, transport = listener.connect()
    assert transport.written.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nRetry-After: 1\r\n" in transport.written and transport.closing
    assert refused not in listener.state.connections and first in listener.state.connections
    refused.pause_writing()  # harmless on a refused connection, as is a late request
    refused.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.written.count(b"HTTP/1.1") == 1
    refused.connection_lost(None)
    assert len(listener.protocol_class.table) == 1


async def test_a_new_connection_evicts_the_oldest_waiting_one() -> None:
    listener = Listener(max_connections=2)
    _, oldest_transport = listener.connect(("192.0.2.1", 1))
    busy, _ = listener.connect(("192.0.2.2", 2))
    busy.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
    newest, newest_transport = listener.connect(("192.0.2.3", 3))
    assert oldest_transport.aborted and not newest_transport.closing
    assert listener.protocol_class.table.counters.evicted == 1
    for protocol in (busy, newest):
        protocol.connection_lost(None)
    assert len(listener.protocol_class.table) == 0


async def test_uvicorn_lines_a_peer_can_repeat_are_written_once_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    listener = Listener()
    caplog.set_level(logging.INFO)
    for port in range(5):
        protocol, transport = listener.connect(("192.0.2.9", port))
        protocol.data_received(b"NOT HTTP AT ALL\r\n\r\n")
        assert transport.written.startswith(b"HTTP/1.1 400 ") and transport.closing
        protocol.connection_lost(None)
    invalid = [r for r in caplog.records if "Invalid HTTP request" in r.getMessage()]
    assert len(invalid) == 1
    # A second listener keeps its own count, and a line with an exception always passes.
    other = Listener()
    other.protocol_class.uvicorn_log.error("boom", exc_info=ValueError("x"))
    other.protocol_class.uvicorn_log.error("boom", exc_info=ValueError("x"))
    assert sum(r.getMessage() == "boom" for r in caplog.records) == 2
