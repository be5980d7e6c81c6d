"""Bounds on HTTP connections: how many, from one address, and how long each may dawdle.

Theory of operation: uvicorn accepts every connection and keeps it until the peer closes it.
Its `limit_concurrency` answers 503 only once a request arrives, and its keep-alive timeout
starts only after a response, so a peer that opens sockets and sends nothing, or a header
byte every few seconds (slowloris), holds file descriptors (which RTMP and the store need
too) for as long as it likes. `LimitedH11Protocol` is uvicorn's h11 protocol with these
bounds added around it; h11's own states say where each connection is:

    waiting  (their state IDLE)       for a request line and headers: must be complete within
                                      `header_timeout` of the connection opening or of the
                                      previous response's end, however slowly bytes arrive
    body     (SEND_BODY)              the request body must be complete within `body_timeout`
    busy     (DONE and the rest)      the application works; a response the peer does not
                                      read for `send_timeout` (the transport stays paused)
                                      closes the connection

`ConnectionTable` counts the open connections, in all and per address (an IPv6 address
counts per /64, as one host usually holds a whole /64). At the per-address cap a new
connection is refused; at the total cap it takes the place of the connection that has waited
longest for a request (an idle keep-alive or a slow sender: one that costs its client
nothing to open again), and is refused only when every connection is busy. A refused
connection gets a 503 with Retry-After and is closed at once. So sockets that send nothing
cannot keep a normal request out, however many there are.

One exception to the per-address cap (issue 19): another Relay node fetching a live stream
from its owner sends every viewer's request from its one address. A connection from the
address of a live node (`ConnectionTable.nodes`: `relay.cluster.addresses`) over the cap
is admitted as `ADMITTED_AS_NODE`, and its first request head must carry the proxy's hop
header (`relay.hls.upstream.HOP_HEADER`), or it gets the per-address 503 then. A stranger's
address is refused on accept, hop header or not. The total cap applies to nodes as well.

A trusted load balancer's connections (`--trusted-proxy`) carry many clients' requests, so
they are counted in all but not capped per address; the client each request names in
X-Forwarded-For is what the per-request limits (the image limit per client, slowed auth
failures) use.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from relay.addresses import address_group
from relay.hls.upstream import HOP_HEADER
from relay.logs import LogLimiter, peer_text
from relay.trusted_proxies import TrustedProxies

log = logging.getLogger("relay.http")

#: Seconds a refused client is asked to wait before it tries again.
REFUSED_RETRY_AFTER: Final = 1
_REFUSED_BODY: Final = b"too many connections; retry shortly\n"
_REFUSED_RESPONSE: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Retry-After: %d\r\n"
    b"Connection: close\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n\r\n%s"
) % (REFUSED_RETRY_AFTER, len(_REFUSED_BODY), _REFUSED_BODY)


#: Bytes of a node's first request head awaited (h11's default head limit, as the
#: listeners'): past it without the head's end, the connection is refused.
NODE_HEAD_LIMIT: Final = 16 * 1024
_HOP_FIELD: Final = re.compile(rb"\r\n" + re.escape(HOP_HEADER.encode()) + rb"[ \t]*:",
                               re.IGNORECASE)


def carries_hop(head: bytes) -> bool:
    """Whether a request head (request line and fields, as received) has the hop header."""
    return _HOP_FIELD.search(head) is not None


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The bounds of one HTTP listener (`relay serve --http-*`)."""

    max_connections: int = 4000
    max_connections_per_address: int = 1000
    header_timeout: float = 10.0  # seconds from opening (or the last response) to headers
    body_timeout: float = 30.0  # seconds from the headers to the end of the body
    send_timeout: float = 30.0  # seconds a response may wait for the peer to read
    #: HTTPS: seconds from accept until the TLS handshake is complete (relay.https).
    tls_handshake_timeout: float = 10.0


@dataclass(slots=True)
class HttpCounters:
    """What the limits did, since start (plain counters, read at scrape time)."""

    refused_full: int = 0  # every connection was busy
    refused_per_address: int = 0  # the address had its share
    evicted: int = 0  # waiting connections closed to make room for a new one
    header_timeouts: int = 0
    body_timeouts: int = 0
    send_timeouts: int = 0
    tls_handshake_failures: int = 0  # HTTPS handshakes that failed or took too long
    #: Connections of live nodes let past the per-address cap (their first request carried
    #: the hop header).
    node_exemptions: int = 0


class Admission(enum.Enum):
    ADMITTED = "admitted"
    REFUSED_FULL = "refused: every connection is busy"
    REFUSED_PER_ADDRESS = "refused: too many connections from the address"
    #: Over the per-address cap from a live node's address: admitted, on condition that its
    #: first request carries the hop header (`carries_hop`).
    ADMITTED_AS_NODE = "admitted: a node's address over its share, if its request shows it"


class Evictable(Protocol):
    def evict(self) -> None:
        """Close now: the connection's slot was given to a new one."""


class ConnectionTable:
    """Open connections, in all and per address; which of them wait for a request."""

    def __init__(self, max_connections: int, max_per_address: int,
                 counters: HttpCounters | None = None, *,
                 nodes: Callable[[str], bool] | None = None,
                 proxies: TrustedProxies | None = None) -> None:
        if max_connections < 1 or max_per_address < 1:
            raise ValueError(f"connection caps must be at least 1, got {max_connections} "
                             f"and {max_per_address} per address")
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.counters = counters if counters is not None else HttpCounters()
        #: Whether an address group is a live Relay node's (see the module docstring).
        self.nodes: Callable[[str], bool] = nodes if nodes is not None else _nobody
        #: Peers that may name the client in X-Forwarded-For: not capped per address.
        self.proxies = proxies if proxies is not None else TrustedProxies()
        self._addresses: dict[Evictable, str] = {}
        self._per_address: dict[str, int] = {}
        # Connections waiting for a request, oldest first: the ones eviction takes.
        self._waiting: dict[Evictable, None] = {}

    def __len__(self) -> int:
        return len(self._addresses)

    def from_address(self, address: str) -> int:
        return self._per_address.get(address, 0)

    def open(self, connection: Evictable, address: str, *,
             per_address: bool = True) -> Admission:
        """Count a new connection (waiting for its first request), or refuse it;
        `per_address=False` (a trusted proxy's): the per-address cap does not apply."""
        admitted = Admission.ADMITTED
        if per_address and self._per_address.get(address, 0) >= self.max_per_address:
            if not self.nodes(address):
                self.counters.refused_per_address += 1
                return Admission.REFUSED_PER_ADDRESS
            admitted = Admission.ADMITTED_AS_NODE
        if len(self._addresses) >= self.max_connections:
            victim = next(iter(self._waiting), None)
            if victim is None:
                self.counters.refused_full += 1
                return Admission.REFUSED_FULL
            self.close(victim)  # its slot is free now, whenever its socket goes
            self.counters.evicted += 1
            victim.evict()
        self._addresses[connection] = address
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self._waiting[connection] = None
        return admitted

    def waiting(self, connection: Evictable) -> None:
        """The connection now waits for a request: it may be evicted, newest last."""
        if connection in self._addresses:
            self._waiting.pop(connection, None)
            self._waiting[connection] = None

    def busy(self, connection: Evictable) -> None:
        """The connection is in a request: it is not evicted."""
        self._waiting.pop(connection, None)

    def close(self, connection: Evictable) -> None:
        """Forget a connection (safe to repeat)."""
        address = self._addresses.pop(connection, None)
        self._waiting.pop(connection, None)
        if address is None:
            return
        left = self._per_address[address] - 1
        if left:
            self._per_address[address] = left
        else:
            del self._per_address[address]


def _nobody(address: str) -> bool:
    return False


class _Phase(enum.Enum):
    NEW = "new"
    WAITING = "waiting for a request"
    BODY = "receiving a request body"
    BUSY = "busy"


def count_send_timeout(table: ConnectionTable, address: str, limits: HttpLimits,
                       log_limiter: LogLimiter) -> None:
    """Count and log (rate-limited) a connection whose client read nothing of a response
    for --http-send-timeout: what every HTTP protocol of Relay does before closing it."""
    table.counters.send_timeouts += 1
    log_limiter.info(
        "http-send-timeout", "http: closed a connection from %s: it read nothing of a "
        "response for %g s (--http-send-timeout)", peer_text(address), limits.send_timeout)


def check_node_head(head: bytes, table: ConnectionTable) -> bool:
    """For a connection admitted `ADMITTED_AS_NODE`: whether its first request head (up to
    and including its end, or all of it received so far) lets it stay; counted either way.
    The caller refuses it (`refuse_connection`, per address) when not."""
    if carries_hop(head):
        table.counters.node_exemptions += 1
        return True
    table.counters.refused_per_address += 1
    return False


def refuse_connection(transport: asyncio.Transport, admission: Admission,
                      table: ConnectionTable, address: str, log_limiter: LogLimiter) -> None:
    """Answer a connection the table refused (`admission`) with a 503 and close it, with a
    rate-limited line saying which cap: what every HTTP protocol of Relay does."""
    if admission is Admission.REFUSED_PER_ADDRESS:
        log_limiter.warning(
            "http-refused-per-address", "http: refused a connection from %s: it has "
            "%d open (--http-max-connections-per-ip %d)", peer_text(address),
            table.from_address(address), table.max_per_address)
    else:
        log_limiter.warning(
            "http-refused-full", "http: refused a connection from %s: all %d "
            "connections are busy (--http-max-connections)", peer_text(address),
            table.max_connections)
    transport.write(_REFUSED_RESPONSE)
    transport.close()


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with the bounds of `HttpLimits` (see the module's comment).

    Use `limited_protocol` to get a subclass bound to one listener's table and limits."""

    table: ClassVar[ConnectionTable]
    limits: ClassVar[HttpLimits]
    log_limiter: ClassVar[LogLimiter]  # Relay's lines about this listener's limits
    uvicorn_log: ClassVar[logging.LoggerAdapter[logging.Logger]]
    #: HTTPS (relay.https): the slot the connection held in its TLS handshake, given up for
    #: its own in `connection_made`.
    handshake_slot: Evictable | None = None
    #: Set by the lean protocol (relay.hls.http1) that hands over a connection whose
    #: request it has seen carry the hop header: not checked again.
    node_checked: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn writes a line per malformed request ("Invalid HTTP request received."),
        # which a peer can repeat at will: once per message per interval here.
        self.logger = cast(logging.Logger, self.uvicorn_log)
        self._admitted = False
        self._address = ""
        self._phase = _Phase.NEW
        self._deadline: asyncio.TimerHandle | None = None
        self._stall: asyncio.TimerHandle | None = None
        # ADMITTED_AS_NODE: what arrived of the first request head, until it shows the hop
        # header (then it goes to h11) or not (refused).
        self._node_head: bytearray | None = None
        self._node_refused = False

    # -- the transport's calls -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer else ""
        self._address = address_group(str(host))
        if self.handshake_slot is not None:
            self.table.close(self.handshake_slot)
        admission = self.table.open(self, self._address,
                                    per_address=not self.table.proxies.trusts(str(host)))
        if admission is Admission.ADMITTED_AS_NODE and not self.node_checked:
            self._node_head = bytearray()
        elif admission not in (Admission.ADMITTED, Admission.ADMITTED_AS_NODE):
            self._refuse(transport, admission)
            return
        self._admitted = True
        super().connection_made(transport)  # type: ignore[arg-type]
        self._sync()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel(self._deadline)
        self._cancel(self._stall)
        self._deadline = self._stall = None
        if not self._admitted:
            return
        self.table.close(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._admitted or self._node_refused:
            return  # refused: the 503 is on its way and the transport closing
        if self._node_head is not None:
            self._node_head += data
            end = self._node_head.find(b"\r\n\r\n")
            if end < 0 and len(self._node_head) <= NODE_HEAD_LIMIT:
                return  # the header timeout runs meanwhile
            # A head too long to be whole is checked as it is: a node's is short.
            head = bytes(self._node_head[:end + 2] if end >= 0 else self._node_head)
            data, self._node_head = bytes(self._node_head), None
            if not check_node_head(head, self.table):
                self._node_refused = True  # its slot is given back when the socket goes
                self._refuse(cast(asyncio.BaseTransport, self.transport),
                             Admission.REFUSED_PER_ADDRESS)
                return
        super().data_received(data)
        self._sync()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._sync()

    def pause_writing(self) -> None:
        if not self._admitted:
            return
        super().pause_writing()
        if self._stall is None:
            self._stall = self.loop.call_later(self.limits.send_timeout, self._stalled)

    def resume_writing(self) -> None:
        if not self._admitted:
            return
        super().resume_writing()
        self._cancel(self._stall)
        self._stall = None

    # -- the table's call ------------------------------------------------------------------

    def evict(self) -> None:
        self.log_limiter.info("http-evicted", "http: closed a connection from %s that was "
                          "waiting for a request, to make room for a new one "
                          "(--http-max-connections %d)", peer_text(self._address),
                          self.table.max_connections)
        self._close()

    # -- the bounds ------------------------------------------------------------------------

    def _sync(self) -> None:
        """Follow h11's state of the peer's side: arm or cancel the phase's deadline."""
        if self.transport is None or self.transport.is_closing():
            self._cancel(self._deadline)
            self._deadline = None
            return
        their = self.conn.their_state
        phase = (_Phase.WAITING if their is h11.IDLE
                 else _Phase.BODY if their is h11.SEND_BODY else _Phase.BUSY)
        if phase is self._phase:
            return  # a deadline keeps running however many bytes trickle in
        self._phase = phase
        self._cancel(self._deadline)
        self._deadline = None
        if phase is _Phase.WAITING:
            self.table.waiting(self)
            self._deadline = self.loop.call_later(self.limits.header_timeout, self._late,
                                                  phase)
        else:
            self.table.busy(self)
            if phase is _Phase.BODY:
                self._deadline = self.loop.call_later(self.limits.body_timeout, self._late,
                                                      phase)

    def _late(self, phase: _Phase) -> None:
        self._deadline = None
        if phase is _Phase.WAITING:
            self.table.counters.header_timeouts += 1
            self.log_limiter.info(
                "http-header-timeout", "http: closed a connection from %s: no complete "
                "request line and headers within %g s (--http-header-timeout)",
                peer_text(self._address), self.limits.header_timeout)
        else:
            self.table.counters.body_timeouts += 1
            self.log_limiter.info(
                "http-body-timeout", "http: closed a connection from %s: the request body "
                "was not complete within %g s (--http-body-timeout)",
                peer_text(self._address), self.limits.body_timeout)
        self._close()

    def _stalled(self) -> None:
        self._stall = None
        count_send_timeout(self.table, self._address, self.limits, self.log_limiter)
        self._close()

    def _close(self) -> None:
        # abort, not close: close would wait to flush a buffer the peer may never read.
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def _refuse(self, transport: asyncio.BaseTransport, admission: Admission) -> None:
        # A stream transport (uvloop's TCPTransport does not subclass asyncio's classes).
        refuse_connection(cast(asyncio.Transport, transport), admission, self.table,
                          self._address, self.log_limiter)

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


class _LimitedUvicornLog(logging.LoggerAdapter[logging.Logger]):
    """uvicorn's connection logger, each fixed message at most once per interval (with a
    count of those held back). Records with an exception pass as they are."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})
        self._limiter = LogLimiter(logger)

    @property
    def level(self) -> int:  # uvicorn reads it to decide on its trace lines
        return self.logger.level

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if kwargs or not self.isEnabledFor(level):
            self.logger.log(level, msg, *args, **kwargs)
        else:
            # uvicorn's messages are templates it chose: a fixed, small set of causes.
            self._limiter.log(level, f"uvicorn: {msg}", str(msg), *args)


def limited_protocol(limits: HttpLimits, counters: HttpCounters | None = None,
                     table: ConnectionTable | None = None) -> type[LimitedH11Protocol]:
    """A protocol class for one listener: its own table of connections (or `table`, shared
    with another listener: HTTP and HTTPS count together), its limits and its rate-limited
    log lines."""
    if table is None:
        table = ConnectionTable(limits.max_connections, limits.max_connections_per_address,
                                counters)
    return type("LimitedH11Protocol", (LimitedH11Protocol,), {
        "table": table, "limits": limits, "log_limiter": LogLimiter(log),
        "uvicorn_log": _LimitedUvicornLog(logging.getLogger("uvicorn.error"))})
