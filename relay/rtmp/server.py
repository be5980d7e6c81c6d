"""The RTMP(S) listener: a thin asyncio adapter around `relay.rtmp.session.ServerSession`.

Each connection feeds the socket's bytes straight into the session's buffers
(`asyncio.BufferedProtocol`), acts on the session's events, and writes what the session wants
sent. Admission (a store lookup) is the only thing it waits for; while it waits, reading
pauses, so a publisher cannot pile up data ahead of its answer. One connection's failure is
logged with its reason and closes that connection only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Literal, cast

from relay._native.rtmp_chunk import ChunkError
from relay.media.flv import (
    AudioTagUnit,
    FlvError,
    VideoTagUnit,
    parse_audio_tag,
    parse_video_tag,
)
from relay.media.timestamps import TimestampUnwrapper
from relay.media.units import AudioConfig, MediaFrame, VideoConfig
from relay.rtmp.messages import MessageType
from relay.rtmp.session import (
    Closing,
    Connected,
    MediaMessage,
    Metadata,
    PublishEnded,
    PublishRequested,
    RemoteProtocolError,
    ServerSession,
)
from relay.streams.hub import LiveSession
from relay.streams.registry import IngestRegistry, PublishRefused, Refusal

log = logging.getLogger("relay.rtmp")


@dataclass(frozen=True, slots=True)
class RtmpLimits:
    """Bounds on what one peer may cost (STYLE.md habit 5); all configurable."""

    max_connections: int = 1000
    handshake_timeout: float = 10.0  # from accept until a publish is accepted
    idle_timeout: float = 30.0  # no bytes from the encoder for this long -> close
    max_message_size: int = 8 * 1024 * 1024
    max_buffered: int = 16 * 1024 * 1024


@dataclass(slots=True)
class RtmpCounters:
    """Plain counters, read by the metrics collector at scrape time."""

    connections_open: int = 0
    connections_total: int = 0
    connections_refused: int = 0  # over max_connections
    protocol_errors: int = 0
    handshake_timeouts: int = 0
    idle_timeouts: int = 0
    bytes_received: int = 0
    media_messages: int = 0
    media_errors: int = 0


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
    ) -> None:
        self.registry = registry
        self.limits = limits
        self.counters = counters
        self.scheme = scheme
        self.ssl_context = ssl_context
        self.connections: set[RtmpConnection] = set()
        self._server: asyncio.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: RtmpConnection(self), sock=sock, ssl=self.ssl_context,
            ssl_handshake_timeout=self.limits.handshake_timeout if self.ssl_context else None)

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def close(self) -> None:
        """Stop accepting and close every connection, telling publishers why."""
        if self._server is not None:
            self._server.close()
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
        self.session = ServerSession(epoch_ms=0, max_message_size=self.limits.max_message_size,
                                     max_buffered=self.limits.max_buffered)
        self.peer = "?"
        self.address = "?"
        self.live: LiveSession | None = None
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._last_input = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._admission: asyncio.Task[None] | None = None
        self._waiting = False  # paused until the publish is answered
        self._closed = False
        self._close_reason = "connection closed by the encoder"
        self._timestamps = TimestampUnwrapper()
        self._media_warned = False
        self.metadata: dict[str, object] = {}

    # -- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.address = str(peer[0])
            self.peer = f"{peer[0]}:{peer[1]}"
        counters = self.counters
        counters.connections_total += 1
        if len(self.server.connections) >= self.limits.max_connections:
            counters.connections_refused += 1
            log.warning("rtmp %s: refused: %d connections open (--rtmp-max-connections)",
                        self.peer, len(self.server.connections))
            self._closed = True
            transport.abort()
            return
        self.server.connections.add(self)
        counters.connections_open += 1
        self._timer = self._loop.call_later(self.limits.handshake_timeout,
                                            self._handshake_deadline)

    def get_buffer(self, sizehint: int) -> memoryview:
        try:
            return self.session.get_buffer(sizehint)
        except ChunkError as exc:
            # The buffered-bytes cap; asyncio would log a traceback, so fail the connection
            # with its reason instead and hand asyncio a scratch buffer for this last read.
            self._protocol_error(str(exc))
            return memoryview(bytearray(max(sizehint, 1024)))

    def buffer_updated(self, nbytes: int) -> None:
        if self._closed:
            return
        self._last_input = self._loop.time()
        self.counters.bytes_received += nbytes
        try:
            self.session.buffer_updated(nbytes)
        except (ChunkError, RemoteProtocolError) as exc:
            self._protocol_error(str(exc))
            return
        self._process()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self._close_reason == "connection closed by the encoder":
            self._close_reason = f"connection lost: {exc}"
        self._finish()

    # -- events -----------------------------------------------------------------------

    def _process(self) -> None:
        session = self.session
        while not self._closed and not self._waiting:
            try:
                event = session.next_event()
            except RemoteProtocolError as exc:
                self._protocol_error(str(exc))
                return
            if event is None:
                break
            if isinstance(event, MediaMessage):
                self._on_media(event)
            elif isinstance(event, PublishRequested):
                self._waiting = True
                assert self._transport is not None
                self._transport.pause_reading()
                self._admission = self._loop.create_task(self._admit(event))
            elif isinstance(event, Metadata):
                self.metadata = event.values
            elif isinstance(event, Connected):
                log.debug("rtmp %s: connect from %s (%s)", self.peer, event.flash_ver,
                          event.tc_url)
            elif isinstance(event, PublishEnded):
                self._close_reason = "the encoder stopped publishing"
                self._flush()
                self._shutdown()
            elif isinstance(event, Closing):
                self._close_reason = event.reason
                log.info("rtmp %s: closing: %s", self.peer, event.reason)
                self._flush()
                self._shutdown()
        self._flush()

    async def _admit(self, request: PublishRequested) -> None:
        try:
            self.live = await self.server.registry.admit(request.stream_key, self,
                                                         self.address)
        except PublishRefused as refused:
            code = ("NetStream.Publish.BadName"
                    if refused.refusal is not Refusal.SHUTTING_DOWN
                    else "NetStream.Publish.Denied")
            log.warning("rtmp %s: publish refused: %s", self.peer, refused.refusal.value)
            self.session.refuse_publish(refused.refusal.value, code)
        except Exception as exc:
            log.exception("rtmp %s: admission failed", self.peer)
            self.session.refuse_publish(f"server error: {type(exc).__name__}",
                                        "NetStream.Publish.Failed")
        else:
            if self._closed:  # the encoder left while we looked its key up
                self.live.detach(self, self._close_reason)
                return
            self.session.accept_publish()
            self._switch_to_idle_timer()
        if self._closed:
            return
        self._waiting = False
        assert self._transport is not None
        self._transport.resume_reading()
        self._process()

    def _on_media(self, event: MediaMessage) -> None:
        live = self.live
        if live is None:
            return
        self.counters.media_messages += 1
        timestamp = self._timestamps.unwrap(event.timestamp)
        unit: VideoTagUnit | AudioTagUnit
        try:
            if event.type_id == MessageType.VIDEO:
                unit = parse_video_tag(event.payload, timestamp)
            else:
                unit = parse_audio_tag(event.payload, timestamp)
        except FlvError as exc:
            self.counters.media_errors += 1
            if not self._media_warned:
                self._media_warned = True
                log.warning("rtmp %s: dropping malformed media (further ones counted): %s",
                            self.peer, exc)
            return
        if isinstance(unit, MediaFrame):
            live.publish_frame(unit)
        elif isinstance(unit, VideoConfig | AudioConfig):
            live.publish_track(unit)
        # Ignored payloads and end-of-sequence markers carry nothing to publish.

    # -- timers -----------------------------------------------------------------------

    def _handshake_deadline(self) -> None:
        self._timer = None
        if self._closed or self.live is not None:
            return
        self.counters.handshake_timeouts += 1
        self._close_reason = (f"no publish within {self.limits.handshake_timeout:g}s "
                              f"of connecting (state {self.session.state})")
        log.warning("rtmp %s: closing: %s", self.peer, self._close_reason)
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
            log.warning("rtmp %s: closing: %s", self.peer, self._close_reason)
            self._abort()
            return
        self._timer = self._loop.call_later(self.limits.idle_timeout - idle, self._idle_check)

    # -- closing ----------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """End this publisher's connection (the `Publisher` interface)."""
        if self._closed:
            return
        self._close_reason = reason
        log.info("rtmp %s: closing: %s", self.peer, reason)
        self.session.end_publish(reason)
        self._flush()
        self._shutdown()

    def _protocol_error(self, reason: str) -> None:
        self.counters.protocol_errors += 1
        self._close_reason = f"protocol error: {reason}"
        log.warning("rtmp %s: closing: protocol error: %s", self.peer, reason)
        self._abort()

    def _flush(self) -> None:
        data = self.session.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _shutdown(self) -> None:
        """Close after the pending output is written."""
        if self._transport is not None:
            self._transport.close()
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
        if self in self.server.connections:
            self.server.connections.discard(self)
            self.counters.connections_open -= 1
        # An admission still in flight sees _closed when it returns and detaches itself.
        if self.live is not None:
            self.live.detach(self, self._close_reason)
        self.session.release()
