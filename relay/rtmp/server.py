"""The RTMP(S) listener: a thin asyncio adapter around `relay.rtmp.session.ServerSession`.

Each connection feeds the socket's bytes straight into the session's buffers
(`asyncio.BufferedProtocol`), acts on the session's events, and writes what the session wants
sent. Admission (a store lookup) is the only thing it waits for; while it waits, reading
pauses, so a publisher cannot pile up data ahead of its answer. One connection's failure is
logged with its reason and closes that connection only.

Connections are counted from accept (`ConnectionSlots`, shared by the RTMP and RTMPS
listeners). asyncio's TLS server meets its protocol only after the handshake, and
`loop.start_tls` cannot take a plain connection over in time (uvloop starts reading when
`connection_made` returns, so the ClientHello would reach the RTMP session): the RTMPS
listener accepts sockets itself, gives each its slot and deadline, and only then hands it to
`loop.connect_accepted_socket` for the TLS handshake. Connections that never finish their
handshake are counted and capped like any other.

Behind a TCP load balancer (`--trusted-proxy`), a connection from a trusted peer must start
with a PROXY protocol header (`relay.proxy_protocol`; before TLS on RTMPS, as nginx's
`proxy_protocol on` sends it) within the handshake deadline; the client address it states is
what the slots, the stream-key throttle and the log lines use from then on. Such a connection
takes a slot from accept without the per-address cap (the balancer's own address would
otherwise be one client), and is counted under the stated address once the header is read.
A connection from any other peer that starts with a PROXY header is refused: only a trusted
proxy may say who the client is.

Lines about what peers do (refusals, timeouts, protocol errors) go through one `LogLimiter`
per listener: one line per cause per interval, with a count of those held back.

A peer that does not read what Relay writes (replies to its pings and commands) is not
allowed to make that output grow: when the transport's buffer passes `write_buffer_high`
(`pause_writing`), the connection stops reading and parsing until it drains, and closes
when it has not drained within `write_stall_timeout`. What connections that have not
published hold is charged to one `BufferBudget` for the whole process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

from relay._native.rtmp_chunk import ChunkError
from relay.limits import MAX_FRAME_SIZE
from relay.logs import LogLimiter, peer_text
from relay.proxy_protocol import (
    MAX_V2_HEADER_BYTES,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderReader,
    looks_like_proxy_header,
    parse_proxy_header,
)
from relay.rtmp.buffer_budget import DEFAULT_PRE_PUBLISH_BUFFER_BUDGET, BufferBudget
from relay.rtmp.session import (
    DEFAULT_MAX_BUFFERED_BEFORE_PUBLISH,
    DEFAULT_MAX_COMMAND_SIZE,
    DEFAULT_MAX_MESSAGES_BEFORE_PUBLISH,
    Closing,
    Connected,
    MediaBatch,
    Metadata,
    PublishEnded,
    PublishRequested,
    RemoteProtocolError,
    ServerSession,
)
from relay.rtmp.slots import ConnectionSlots, SlotAdmission, SlotDecision
from relay.streams.hub import LiveSession
from relay.streams.registry import IngestRegistry, PublishRefused, Refusal
from relay.trusted_proxies import TrustedProxies

log = logging.getLogger("relay.rtmp")

#: After a failed accept (out of file descriptors), wait this long before the next one.
ACCEPT_RETRY_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class RtmpLimits:
    """Bounds on what one peer may cost (STYLE.md habit 5); all configurable."""

    max_connections: int = 1000
    max_connections_per_ip: int = 20  # per address group: an IPv4 address or an IPv6 /64
    handshake_timeout: float = 10.0  # from accept until a publish is accepted
    idle_timeout: float = 30.0  # no bytes from the encoder for this long -> close
    max_message_size: int = MAX_FRAME_SIZE
    max_buffered: int = 16 * 1024 * 1024
    log_interval: float = 10.0  # at most one line per cause per interval (LogLimiter)
    # Commands, data and control messages; before a publish, every message (session.py).
    max_command_size: int = DEFAULT_MAX_COMMAND_SIZE
    max_buffered_before_publish: int = DEFAULT_MAX_BUFFERED_BEFORE_PUBLISH
    # Messages of any kind a connection may send before its publish is admitted.
    max_messages_before_publish: int = DEFAULT_MAX_MESSAGES_BEFORE_PUBLISH
    # All connections that have not published, together (--rtmp-pre-publish-buffer-budget).
    pre_publish_buffer_budget: int = DEFAULT_PRE_PUBLISH_BUFFER_BUDGET
    # Unsent output above which the transport calls pause_writing and reading stops.
    write_buffer_high: int = 64 * 1024
    # A connection whose output stays above write_buffer_high this long is closed.
    write_stall_timeout: float = 10.0


@dataclass(slots=True)
class RtmpCounters:
    """Plain counters, read by the metrics collector at scrape time."""

    connections_open: int = 0
    connections_total: int = 0
    connections_refused: int = 0  # over max_connections, and no slot could be evicted
    connections_refused_per_ip: int = 0  # over max_connections_per_ip
    connections_evicted: int = 0  # not yet publishing, closed to make room for a newcomer
    tls_handshake_failures: int = 0  # RTMPS connections whose TLS handshake failed or expired
    log_lines_suppressed: int = 0  # lines held back by the per-cause log limiter
    protocol_errors: int = 0
    handshake_timeouts: int = 0
    idle_timeouts: int = 0
    bytes_received: int = 0
    media_messages: int = 0
    media_errors: int = 0
    write_pauses: int = 0  # pause_writing calls: a peer not reading our output
    write_stall_closes: int = 0  # closed after write_stall_timeout without draining
    budget_closes: int = 0  # closed: the pre-publish buffer budget was spent
    turns_yielded: int = 0  # reads holding more than one turn's messages, split over turns
    proxy_headers_refused: int = 0  # a PROXY header from a peer not in --trusted-proxy
    proxy_header_errors: int = 0  # a trusted peer's connection without a valid PROXY header
    proxy_headers: int = 0  # PROXY headers read from trusted peers


class RtmpServer:
    """Accepts encoders on one listening socket (plain RTMP or, with `ssl`, RTMPS)."""

    def __init__(
        self,
        registry: IngestRegistry,
        *,
        limits: RtmpLimits,
        counters: RtmpCounters,
        scheme: Literal["rtmp", "rtmps"] = "rtmp",
        ssl_context: ssl.SSLContext | None = None,
        slots: ConnectionSlots[RtmpConnection] | None = None,
        budget: BufferBudget | None = None,
        trusted: TrustedProxies | None = None,
    ) -> None:
        self.registry = registry
        #: Peers whose connections start with a PROXY header stating the client (required).
        self.trusted = trusted if trusted is not None else TrustedProxies()
        self.limits = limits
        self.counters = counters
        # Shared by every listener of the process (the app passes one in).
        self.budget = budget or BufferBudget(limits.pre_publish_buffer_budget)
        self.scheme = scheme
        self.ssl_context = ssl_context
        #: Shared by every listener of the process (app.py passes one), so the caps are
        #: per process, not per port.
        self.slots: ConnectionSlots[RtmpConnection] = (
            slots if slots is not None
            else ConnectionSlots(limits.max_connections, limits.max_connections_per_ip))
        self.connections: set[RtmpConnection] = set()
        self.log_limiter = LogLimiter(log, interval=limits.log_interval)
        self._server: asyncio.Server | None = None
        self._listening: socket.socket | None = None  # RTMPS: accepted by _accept_tls
        self._acceptor: asyncio.Task[None] | None = None

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        if self.ssl_context is None:
            self._server = await loop.create_server(lambda: RtmpConnection(self), sock=sock)
            return
        sock.setblocking(False)
        self._listening = sock
        self._acceptor = loop.create_task(self._accept_tls(sock, self.ssl_context),
                                          name=f"relay-{self.scheme}-accept")

    async def _accept_tls(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, peer = await loop.sock_accept(sock)
            except OSError as exc:
                # Out of file descriptors (EMFILE), or the peer reset before the accept:
                # not this listener's end. Pause a little so EMFILE does not spin.
                self.note(logging.ERROR, "rtmp-accept-failed", "%s: accept failed: %s",
                          self.scheme, exc)
                await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                continue
            try:
                RtmpConnection(self).accepted(client, peer, context)
            except Exception:  # a bug of ours: lose this connection, keep the listener
                log.exception("%s: could not take an accepted connection", self.scheme)
                client.close()

    def note(self, level: int, cause: str, msg: str, *args: object) -> None:
        """Log a line about what a peer did, at most once per `cause` per log interval."""
        if not self.log_limiter.log(level, cause, msg, *args):
            self.counters.log_lines_suppressed += 1

    @property
    def serving(self) -> bool:
        if self._acceptor is not None:
            return not self._acceptor.done()
        return self._server is not None and self._server.is_serving()

    async def close(self) -> None:
        """Stop accepting and close every connection, telling publishers why."""
        if self._server is not None:
            self._server.close()
        if self._acceptor is not None:
            self._acceptor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._acceptor
        if self._listening is not None:
            self._listening.close()
        for connection in list(self.connections):
            connection.close("the server is shutting down")
        if self._server is not None:
            await self._server.wait_closed()


class RtmpConnection(asyncio.BufferedProtocol):
    """One encoder's connection; also the `Publisher` its live session sees."""

    protocol: Literal["rtmp"] = "rtmp"

    def __init__(self, server: RtmpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.counters = server.counters
        self.session = ServerSession(
            epoch_ms=0, max_message_size=self.limits.max_message_size,
            max_buffered=self.limits.max_buffered, max_command_size=self.limits.max_command_size,
            max_buffered_before_publish=self.limits.max_buffered_before_publish,
            max_messages_before_publish=self.limits.max_messages_before_publish,
            parse_media=True)
        self.peer = "?"
        self.address = "?"
        self.proxy: str | None = None  # the trusted balancer's "address:port", behind one
        # A trusted peer's connection, until its PROXY header is read (plain RTMP reads it
        # into `_preamble_buffer`; RTMPS peeks it off the socket before TLS).
        self._proxy_reader: ProxyHeaderReader | None = None
        self._preamble_buffer: bytearray | None = None
        # Another peer's connection, until its first byte is seen (not a PROXY header).
        self._first_read: memoryview | None = None
        self._first_seen = False
        # Once publishing: what get_buffer returns, with no preamble left to check.
        self._get_input: Callable[[int], memoryview] | None = None
        self.live: LiveSession | None = None
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._last_input = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._admission: asyncio.Task[None] | None = None
        self._tls: asyncio.Task[None] | None = None  # the RTMPS handshake, while it runs
        self._socket: socket.socket | None = None  # RTMPS: accepted, not yet given to TLS
        self._watched_fd: int | None = None  # RTMPS: waiting for its first bytes (add_reader)
        self._counted = False  # holds a slot (taken at accept)
        self._waiting = False  # paused until the publish is answered
        self._write_paused = False  # the peer is not reading: neither do we
        self._turn_pending = False  # a backlog waits for its next turn (_next_turn)
        self._stall_timer: asyncio.TimerHandle | None = None
        self._charged = 0  # bytes charged to the server's budget (before publishing)
        self._closed = False
        self._close_reason = "connection closed by the encoder"
        self._media_warned = False
        self.metadata: dict[str, object] = {}

    # -- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=self.limits.write_buffer_high)
        if self._counted:  # RTMPS: its slot and deadline date from the accept, before TLS
            return
        self._take_slot(transport.get_extra_info("peername"))
        if self._closed:
            transport.abort()

    def accepted(self, client: socket.socket, peer: object, context: ssl.SSLContext) -> None:
        """An RTMPS socket just accepted: take its slot, then start its TLS handshake."""
        self._take_slot(peer)
        if self._closed:
            client.close()
            return
        self._socket = client
        self._tls = self._loop.create_task(self._start_tls(context))

    def _take_slot(self, peer: object) -> None:
        if isinstance(peer, tuple):
            self.address = str(peer[0])
            self.peer = f"{peer[0]}:{peer[1]}"
        server, counters = self.server, self.counters
        counters.connections_total += 1
        trusted = server.trusted.trusts(self.address)
        if trusted:
            self._proxy_reader = ProxyHeaderReader()
        # A balancer's connections are many clients: its own address is not capped; each
        # is counted under the address its PROXY header states (_proxied).
        slot = server.slots.admit(self, self.address, per_address=not trusted)
        if slot.decision is not SlotDecision.ADMITTED:
            self._refuse(slot)
            return
        self._counted = True
        if slot.evicted is not None:
            slot.evicted._evict(self.peer)
        server.connections.add(self)
        counters.connections_open += 1
        self._timer = self._loop.call_later(self.limits.handshake_timeout,
                                            self._handshake_deadline)

    def _refuse(self, slot: SlotAdmission[RtmpConnection]) -> None:
        if slot.decision is SlotDecision.REFUSED_PER_ADDRESS:
            self.counters.connections_refused_per_ip += 1
            self.server.note(logging.WARNING, "rtmp-refused-per-ip",
                             "rtmp %s: refused: %s holds %d connections already "
                             "(--rtmp-max-connections-per-ip)", self.peer, slot.group, slot.held)
        else:
            self.counters.connections_refused += 1
            self.server.note(logging.WARNING, "rtmp-refused-full",
                             "rtmp %s: refused: all %d connections are taken by publishers or "
                             "by addresses holding no more than this one "
                             "(--rtmp-max-connections)", self.peer, self.server.slots.total)
        self._closed = True

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        assert self._socket is not None
        if not await self._read_preamble(self._socket):
            return
        self._first_seen = True  # checked before TLS: the session sees TLS's plaintext
        client, self._socket = self._socket, None  # the transport owns it from here on
        assert client is not None
        try:
            await self._loop.connect_accepted_socket(
                lambda: self, client, ssl=context,
                ssl_handshake_timeout=self.limits.handshake_timeout)
        except Exception as exc:  # a failed or expired handshake: ssl, OS or timeout error
            self._tls = None
            if not self._closed:
                self.counters.tls_handshake_failures += 1
                self._close_reason = f"TLS handshake failed: {peer_text(str(exc))}"
                self.server.note(logging.INFO, "rtmp-tls-failed", "rtmp %s: closing: %s",
                                 self.peer, self._close_reason)
                self._abort()
            return
        self._tls = None  # connection_made has run: the RTMP session takes over

    async def _read_preamble(self, sock: socket.socket) -> bool:
        """RTMPS, before TLS: a trusted peer's PROXY header, taken off the socket and no
        byte more (the TLS handshake reads the socket next); another peer's first byte,
        peeked to refuse a PROXY header. False: the connection is closed."""
        consumed = bytearray()
        while True:
            await self._readable(sock)
            try:
                peeked = sock.recv(MAX_V2_HEADER_BYTES, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                self._close_reason = f"connection lost: {exc}"
                self._abort()
                return False
            if not peeked:
                self._close_reason = "connection closed by the encoder"
                self._abort()
                return False
            if self._proxy_reader is None:
                if looks_like_proxy_header(peeked[0]):
                    self._refuse_proxy_header()
                    return False
                return True
            try:
                header = parse_proxy_header(consumed + peeked)
            except ProxyHeaderError as exc:
                self._proxy_header_failed(str(exc))
                return False
            # Every peeked byte is the header's when it is not complete yet; else exactly
            # its remaining bytes are taken (they are there: they were just peeked).
            take = len(peeked) if header is None else header.length - len(consumed)
            consumed += sock.recv(take)
            if header is not None:
                self._proxy_reader = None
                return self._proxied(header)

    async def _readable(self, sock: socket.socket) -> None:
        ready: asyncio.Future[None] = self._loop.create_future()
        fd = self._watched_fd = sock.fileno()
        self._loop.add_reader(fd, lambda: None if ready.done() else ready.set_result(None))
        try:
            await ready
        finally:
            self._unwatch()

    def _unwatch(self) -> None:
        # Before the socket closes (_finish): its descriptor may be reused at once.
        if self._watched_fd is not None:
            self._loop.remove_reader(self._watched_fd)
            self._watched_fd = None

    def _proxied(self, header: ProxyHeader) -> bool:
        """A trusted peer's PROXY header is read: count the connection under the client
        address it states. False: that address holds its share, the connection is closed."""
        self.counters.proxy_headers += 1
        if header.source is None:  # LOCAL or UNKNOWN: the balancer's own connection
            return True
        self.proxy = self.peer
        self.address = header.source[0]
        self.peer = f"{header.source[0]}:{header.source[1]}"
        log.debug("%s %s: through the trusted proxy %s", self.server.scheme, self.peer,
                  self.proxy)
        slots = self.server.slots
        slots.release(self)
        slot = slots.admit(self, self.address)
        if slot.decision is not SlotDecision.ADMITTED:
            self._refuse(slot)
            self._abort()
            return False
        if slot.evicted is not None:
            slot.evicted._evict(self.peer)
        return True

    def _refuse_proxy_header(self) -> None:
        self.counters.proxy_headers_refused += 1
        self._close_reason = ("refused: a PROXY header from a peer that is not a trusted "
                              "proxy (--trusted-proxy)")
        self.server.note(logging.WARNING, "rtmp-proxy-header-untrusted",
                         "%s %s: %s", self.server.scheme, self.peer, self._close_reason)
        self._abort()

    def _proxy_header_failed(self, reason: str) -> None:
        self.counters.proxy_header_errors += 1
        self._close_reason = (f"a trusted proxy's connection without a valid PROXY header "
                              f"(--trusted-proxy): {peer_text(reason)}")
        self.server.note(logging.WARNING, "rtmp-proxy-header-invalid",
                         "%s %s: closing: %s", self.server.scheme, self.peer,
                         self._close_reason)
        self._abort()

    def _preamble_updated(self, nbytes: int) -> None:
        """Plain RTMP: bytes read while the PROXY header or the first byte is awaited."""
        reader = self._proxy_reader
        if reader is None:  # another peer's first read, straight into the session
            first, self._first_read = self._first_read, None
            self._first_seen = True
            proxy_like = bool(nbytes) and first is not None and looks_like_proxy_header(
                first[0])
            first = None  # no view of the session's buffer is kept past this read
            if proxy_like:
                self._refuse_proxy_header()
                return
            self._take_input(nbytes)
            return
        assert self._preamble_buffer is not None
        try:
            header = reader.feed(memoryview(self._preamble_buffer)[:nbytes])
        except ProxyHeaderError as exc:
            self._proxy_header_failed(str(exc))
            return
        if header is None:
            return
        self._proxy_reader = self._preamble_buffer = None
        self._first_seen = True
        if not self._proxied(header):
            return
        try:
            if reader.rest:  # the client's first bytes, in the balancer's same segment
                self.session.receive_data(reader.rest)
        except (ChunkError, RemoteProtocolError) as exc:
            self._protocol_error(str(exc))
            return
        self._take_input(0)

    def get_buffer(self, sizehint: int) -> memoryview:
        get_input = self._get_input
        if get_input is not None:  # publishing: straight into the session's demuxer
            try:
                return get_input(sizehint)
            except ChunkError as exc:
                return self._over_cap(exc, sizehint)
        if self._proxy_reader is not None:
            if self._preamble_buffer is None:
                self._preamble_buffer = bytearray(MAX_V2_HEADER_BYTES)
            return memoryview(self._preamble_buffer)
        if not self._first_seen:
            try:
                self._first_read = self.session.get_buffer(sizehint)
            except ChunkError as exc:
                return self._over_cap(exc, sizehint)
            return self._first_read
        try:
            return self.session.get_buffer(sizehint)
        except ChunkError as exc:
            return self._over_cap(exc, sizehint)

    def _over_cap(self, exc: ChunkError, sizehint: int) -> memoryview:
        # The buffered-bytes cap; asyncio would log a traceback, so fail the connection
        # with its reason instead and hand asyncio a scratch buffer for this last read.
        self._protocol_error(str(exc))
        return memoryview(bytearray(max(sizehint, 1024)))

    def buffer_updated(self, nbytes: int) -> None:
        if self._closed:
            return
        self._last_input = self._loop.time()
        self.counters.bytes_received += nbytes
        if not self._first_seen:
            self._preamble_updated(nbytes)
            return
        self._take_input(nbytes)

    def _take_input(self, nbytes: int) -> None:
        """The session's buffer received `nbytes` (0: what was given by receive_data)."""
        session = self.session
        session.new_turn()
        try:
            ready = session.buffer_updated(nbytes) if nbytes else True
        except (ChunkError, RemoteProtocolError) as exc:
            self._protocol_error(str(exc))
            return
        if ready:  # False: a read that ended inside a chunk, nothing to act on
            self._process()
        if self.live is None and not self._closed:
            self._charge_budget()

    def eof_received(self) -> bool:
        return False  # close our side too

    def pause_writing(self) -> None:
        # The transport holds write_buffer_high bytes the peer has not read: stop reading
        # (and so answering) until it drains, for at most write_stall_timeout.
        self._write_paused = True
        self.counters.write_pauses += 1
        if self._transport is not None:
            self._transport.pause_reading()
        if self._stall_timer is None and not self._closed:
            self._stall_timer = self._loop.call_later(self.limits.write_stall_timeout,
                                                      self._write_stalled)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._closed or self._waiting or self._transport is None:
            return
        self._transport.resume_reading()
        self._process()  # what was read before the pause may still hold messages

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self._close_reason == "connection closed by the encoder":
            self._close_reason = f"connection lost: {exc}"
        self._finish()

    # -- events -----------------------------------------------------------------------

    def _process(self) -> None:
        session = self.session
        if self._write_paused:
            return  # resume_writing() comes back here
        while not self._closed and not self._waiting:
            try:
                event = session.next_event()
            except RemoteProtocolError as exc:
                self._protocol_error(str(exc))
                return
            if event is None:
                if session.turn_spent:
                    self._flush()
                    self._yield_turn()
                    return
                if not session.output_full:
                    break
                # Replies fill MAX_PENDING_OUTPUT: write them, and go on parsing unless
                # that write made the transport call pause_writing.
                self._flush()
                if self._write_paused:
                    return
                continue
            if isinstance(event, MediaBatch):
                # The session parsed the read's media (natively, for the common frames):
                # count it and hand it on (inline: once per read that completes a message).
                self.counters.media_messages += event.messages
                if event.errors:
                    self._media_errors(event)
                live = self.live
                if live is not None and event.units:
                    live.publish_units(event.units)
            elif isinstance(event, PublishRequested):
                self._waiting = True
                assert self._transport is not None
                self._transport.pause_reading()
                self._admission = self._loop.create_task(self._admit(event))
            elif isinstance(event, Metadata):
                self.metadata = event.values
            elif isinstance(event, Connected):
                log.debug("rtmp %s: connect from %s (%s)", self.peer,
                          peer_text(event.flash_ver), peer_text(event.tc_url))
            elif isinstance(event, PublishEnded):
                self._close_reason = "the encoder stopped publishing"
                self._flush()
                self._shutdown()
            elif isinstance(event, Closing):
                self._close_reason = event.reason
                self.server.note(logging.INFO, "rtmp-closing", "rtmp %s: closing: %s",
                                 self.peer, peer_text(event.reason))
                self._flush()
                self._shutdown()
        self._flush()

    def _yield_turn(self) -> None:
        # What was read holds more than one turn's messages (a flood of pings, say): let
        # every other connection have its turn first. Reading pauses meanwhile, so nothing
        # more piles up behind the backlog.
        if self._turn_pending or self._transport is None:
            return
        self._turn_pending = True
        self.counters.turns_yielded += 1
        self._transport.pause_reading()
        self._loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn_pending = False
        if self._closed or self._transport is None:
            return
        self.session.new_turn()
        if not (self._waiting or self._write_paused):
            self._transport.resume_reading()
        self._process()
        if self.live is None and not self._closed:
            self._charge_budget()

    async def _admit(self, request: PublishRequested) -> None:
        try:
            self.live = await self.server.registry.admit(request.stream_key, self,
                                                         self.address)
        except PublishRefused as refused:
            refusal = refused.refusal
            self.server.note(logging.WARNING, f"rtmp-publish-refused-{refusal.name}",
                             "rtmp %s: publish refused: %s", self.peer, refusal.value)
            if refusal is Refusal.THROTTLED:
                # Its address has enough slowed refusals waiting: no answer, just close.
                self._close_reason = f"publish refused: {refusal.value}"
                self._abort()
                return
            code = ("NetStream.Publish.BadName"
                    if refusal is not Refusal.SHUTTING_DOWN
                    else "NetStream.Publish.Denied")
            self.session.refuse_publish(refusal.value, code)
        except Exception as exc:
            log.debug("rtmp %s: admission failed", self.peer, exc_info=True)
            self.server.note(logging.ERROR, "rtmp-admission-failed",
                             "rtmp %s: admission failed: %s: %s (traceback at log level debug)",
                             self.peer, type(exc).__name__, peer_text(str(exc)))
            self.session.refuse_publish(f"server error: {type(exc).__name__}",
                                        "NetStream.Publish.Failed")
        else:
            if self._closed:  # the encoder left while we looked its key up
                self.live.detach(self, self._close_reason)
                return
            self.server.slots.settle(self)  # publishing: its slot can no longer be evicted
            self.session.accept_publish()
            self._get_input = self.session.input_buffer_getter()
            self._switch_to_idle_timer()
            self.server.budget.release(self._charged)  # publishing: bounded per connection
            self._charged = 0
        if self._closed:
            return
        self._waiting = False
        if self._write_paused:
            return  # resume_writing() resumes reading
        assert self._transport is not None
        self._transport.resume_reading()
        self._process()

    def _media_errors(self, batch: MediaBatch) -> None:
        self.counters.media_errors += batch.errors
        if not self._media_warned:
            self._media_warned = True
            log.warning("rtmp %s: dropping malformed media (further ones counted): %s",
                        self.peer, batch.first_error)

    def _charge_budget(self) -> None:
        """Charge what this connection holds before publishing to the process's budget."""
        assert self._transport is not None
        holding = self.session.buffered + self._transport.get_write_buffer_size()
        if holding == self._charged:
            return
        budget = self.server.budget
        if budget.charge(self._charged, holding):
            self._charged = holding
            return
        self.counters.budget_closes += 1
        self._close_reason = (
            f"connections that have not published hold {budget.used} bytes, and this one's "
            f"{holding} would pass --rtmp-pre-publish-buffer-budget={budget.limit}")
        self.server.note(logging.WARNING, "rtmp-pre-publish-budget", "rtmp %s: closing: %s",
                         self.peer, self._close_reason)
        self._abort()

    # -- timers -----------------------------------------------------------------------

    def _handshake_deadline(self) -> None:
        self._timer = None
        if self._closed or self.live is not None:
            return
        if self._proxy_reader is not None:  # the PROXY header has the same deadline
            self.counters.proxy_header_errors += 1
            state = "PROXY header"
        elif self._tls is not None:  # the TLS handshake has the same deadline
            self.counters.tls_handshake_failures += 1
            state = "TLS handshake"
        else:
            self.counters.handshake_timeouts += 1
            state = str(self.session.state)
        self._close_reason = (f"no publish within {self.limits.handshake_timeout:g}s "
                              f"of connecting (state {state})")
        self.server.note(logging.WARNING, "rtmp-handshake-timeout", "rtmp %s: closing: %s",
                         self.peer, self._close_reason)
        self._abort()

    def _write_stalled(self) -> None:
        self._stall_timer = None
        if self._closed or not self._write_paused or self._transport is None:
            return
        self.counters.write_stall_closes += 1
        self._close_reason = (
            f"the peer left {self._transport.get_write_buffer_size()} bytes of our output "
            f"unread for {self.limits.write_stall_timeout:g}s (write_stall_timeout)")
        self.server.note(logging.WARNING, "rtmp-write-stall", "rtmp %s: closing: %s",
                         self.peer, self._close_reason)
        self._abort()

    def _switch_to_idle_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self.limits.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        self._timer = None
        if self._closed:
            return
        idle = self._loop.time() - self._last_input
        if idle >= self.limits.idle_timeout:
            self.counters.idle_timeouts += 1
            self._close_reason = f"no data for {idle:.0f}s (--rtmp-idle-timeout)"
            self.server.note(logging.WARNING, "rtmp-idle-timeout", "rtmp %s: closing: %s",
                             self.peer, self._close_reason)
            self._abort()
            return
        self._timer = self._loop.call_later(self.limits.idle_timeout - idle, self._idle_check)

    # -- closing ----------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """End this publisher's connection (the `Publisher` interface)."""
        if self._closed:
            return
        self._close_reason = reason
        if self._tls is not None:  # still in its TLS handshake: nothing to say in RTMP
            self._abort()
            return
        log.info("rtmp %s: closing: %s", self.peer, reason)
        self.session.end_publish(reason)
        self._flush()
        self._shutdown()

    def _protocol_error(self, reason: str) -> None:
        self.counters.protocol_errors += 1
        self._close_reason = f"protocol error: {peer_text(reason)}"
        self.server.note(logging.WARNING, "rtmp-protocol-error", "rtmp %s: closing: %s",
                         self.peer, self._close_reason)
        self._abort()

    def _evict(self, newcomer: str) -> None:
        """Give this not-yet-publishing connection's slot (already released) to `newcomer`."""
        self.counters.connections_evicted += 1
        self._close_reason = (f"evicted for {newcomer}: every connection slot was taken "
                              f"(--rtmp-max-connections) and this address held the most")
        self.server.note(logging.WARNING, "rtmp-evicted", "rtmp %s: closing: %s", self.peer,
                         self._close_reason)
        self._abort()

    def _flush(self) -> None:
        data = self.session.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _shutdown(self) -> None:
        """Close after the pending output is written, within write_stall_timeout."""
        transport = self._transport
        if transport is not None:
            transport.close()
            if transport.get_write_buffer_size():
                # A peer that does not read would keep the socket open forever.
                self._loop.call_later(self.limits.write_stall_timeout, transport.abort)
        self._finish()

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._finish()

    def _finish(self) -> None:
        if self._closed and self not in self.server.connections:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._tls is not None:  # its TLS handshake: cancelling it closes the socket
            self._tls.cancel()
            self._tls = None
        self._unwatch()
        if self._socket is not None:  # accepted, and its handshake never started
            self._socket.close()
            self._socket = None
        self.server.slots.release(self)
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._charged:
            self.server.budget.release(self._charged)
            self._charged = 0
        if self in self.server.connections:
            self.server.connections.discard(self)
            self.counters.connections_open -= 1
        # An admission still in flight sees _closed when it returns and detaches itself.
        if self.live is not None:
            self.live.detach(self, self._close_reason)
        self.session.release()
