"""The SRT listener's loop side: one `SrtConnection` per accepted caller, fed from libsrt's thread.

libsrt runs its own thread (`relay.srt.listener.SrtListener`): it decides on each caller in
the listen callback (`relay.srt.admission.SrtAdmission`, from the key cache, before the
handshake completes, so a wrong key or passphrase never gets a connection), receives, and
hands the event loop batches of events. Here each accepted caller is admitted on its stream
through the same `IngestRegistry.admit` as an RTMP publisher (authoritative: a race the
callback could not see, such as two callers with one key, is settled there), and its bytes go
through the MPEG-TS demuxer (`relay._native.mpegts`) and the elementary-stream assembler
(`relay.media.ts_units`) into the stream's `LiveSession` as the same media units RTMP
produces. From the session on, nothing knows which protocol fed it.

One caller's trouble ends that caller only: bad TS is counted and survived by the demuxer, a
fatal problem (a PMT that changes codec mid-stream) closes the connection with the reason
logged, and a caller that stops sending media is closed after `idle_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from relay._native.mpegts import PesPacket, TsDemuxer
from relay.limits import MAX_FRAME_SIZE
from relay.logs import LogLimiter, peer_text
from relay.media.ts_units import COUNTERS, TsIngestError, TsMediaAssembler
from relay.media.units import AudioConfig, MediaFrame, TrackConfig, VideoConfig
from relay.srt.admission import SrtAdmission, parse_streamid
from relay.srt.listener import (
    ConnectionAccepted,
    ConnectionClosed,
    DataReceived,
    SrtEvent,
    SrtStats,
    StatsReported,
)
from relay.streams.hub import LiveSession
from relay.streams.registry import IngestRegistry, PublishRefused

log = logging.getLogger("relay.srt")

#: What a caller may send before its admission is answered (a store lookup, milliseconds):
#: about 1.3 s of a 6 Mbit/s stream. Beyond it the caller is closed rather than buffered.
DEFAULT_MAX_PENDING_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SrtIngestLimits:
    """Bounds on what one caller may cost (STYLE.md habit 5); all configurable."""

    latency_ms: int = 120  # receiver latency; the larger of the two sides wins
    max_connections: int = 1000
    max_connections_per_ip: int = 20  # per address group: an IPv4 address or an IPv6 /64
    media_timeout: float = 10.0  # from accept until the first track configuration
    idle_timeout: float = 30.0  # no bytes from the caller for this long -> close
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES
    max_pes_size: int = MAX_FRAME_SIZE  # one PES (one video frame) at most
    log_interval: float = 10.0  # at most one line per cause per interval (LogLimiter)


@dataclass(slots=True)
class SrtIngestCounters:
    """Plain counters, read by the metrics collector at scrape time."""

    connections_open: int = 0
    connections_total: int = 0
    publishes_refused: int = 0  # accepted by the callback, refused by the registry after
    bytes_received: int = 0
    media_timeouts: int = 0
    idle_timeouts: int = 0
    pending_overflows: int = 0  # closed: sent more than max_pending_bytes before admission
    ingest_errors: int = 0  # closed: a fatal TS problem (TsIngestError)
    log_lines_suppressed: int = 0
    # Totals of the demuxers of closed connections; open ones are added at scrape time.
    ts_packets: int = 0
    ts_resyncs: int = 0
    ts_cc_errors: int = 0
    pes_dropped: int = 0
    #: The media assemblers' counters (`relay.media.ts_units.COUNTERS`) of closed connections.
    media: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))


class SrtServer:
    """The connections of one SRT listener, driven by its batches of events."""

    def __init__(self, registry: IngestRegistry, admission: SrtAdmission, *,
                 limits: SrtIngestLimits, counters: SrtIngestCounters) -> None:
        self.registry = registry
        self.admission = admission
        self.limits = limits
        self.counters = counters
        self.connections: dict[int, SrtConnection] = {}
        self.log_limiter = LogLimiter(log, interval=limits.log_interval)
        #: Set by the app once the listener runs: closes a connection on libsrt's side
        #: (`SrtListener.close_connection`); its ConnectionClosed follows.
        self.close_handle: Callable[[int], None] = lambda handle: None

    def note(self, level: int, cause: str, msg: str, *args: object) -> None:
        """Log a line about what a caller did, at most once per `cause` per log interval."""
        if not self.log_limiter.log(level, cause, msg, *args):
            self.counters.log_lines_suppressed += 1

    # -- events from the listener thread (one batch per call, on the loop) ------------

    def take(self, events: list[SrtEvent]) -> None:
        """The listener's sink: one batch of events, in the order they happened."""
        for event in events:
            try:
                if isinstance(event, DataReceived):
                    self.received(event.handle, event.data)
                elif isinstance(event, ConnectionAccepted):
                    self.accepted(event.handle, event.peer, event.streamid)
                elif isinstance(event, ConnectionClosed):
                    self.lost(event.handle, event.reason)
                elif isinstance(event, StatsReported):
                    self.stats(event.handle, event.stats)
            except Exception:  # a bug of ours: lose this caller, keep the others
                log.exception("srt: could not handle %s", type(event).__name__)
                connection = self.connections.get(event.handle)
                if connection is not None:
                    connection.close("server error")
                elif isinstance(event, ConnectionAccepted):
                    # Failed before it was kept: nothing else would ever close it.
                    self.close_handle(event.handle)

    def accepted(self, handle: int, peer: str, streamid: str) -> None:
        address = peer.rsplit(":", 1)[0].strip("[]")
        self.counters.connections_total += 1
        # Built before it is counted: a failure here leaves no count behind.
        connection = SrtConnection(self, handle, peer, address, streamid)
        if not self.admission.connection_opened(address):
            # Decided before the count caught up with an earlier accept: over a cap now.
            self.note(logging.WARNING, "srt-over-capacity",
                      "srt %s: closing: over --srt-max-connections or "
                      "--srt-max-connections-per-ip", peer)
            self.close_handle(handle)
            return
        self.connections[handle] = connection
        self.counters.connections_open += 1
        connection.start()

    def received(self, handle: int, data: bytes | bytearray | memoryview) -> None:
        connection = self.connections.get(handle)
        if connection is not None:
            connection.feed(data)

    def lost(self, handle: int, reason: str) -> None:
        connection = self.connections.get(handle)
        if connection is not None:
            connection.lost(reason)

    def stats(self, handle: int, stats: SrtStats) -> None:
        connection = self.connections.get(handle)
        if connection is not None:
            connection.stats = stats

    def forget(self, connection: SrtConnection) -> None:
        if self.connections.get(connection.handle) is connection:
            del self.connections[connection.handle]
            self.counters.connections_open -= 1
            self.admission.connection_closed(connection.address)
            demux = connection.demux
            self.counters.ts_packets += demux.packets
            self.counters.ts_resyncs += demux.resyncs
            self.counters.ts_cc_errors += demux.cc_errors
            self.counters.pes_dropped += demux.pes_dropped
            totals = self.counters.media
            for name in COUNTERS:
                totals[name] += getattr(connection.media, name)

    def close_all(self, reason: str) -> None:
        """Shutdown: publish what each caller's demuxer still holds (its last frames belong
        in the recording), then close it."""
        for connection in list(self.connections.values()):
            connection.flush()
            connection.close(reason)


class SrtConnection:
    """One SRT caller; also the `Publisher` its live session sees."""

    protocol: Literal["srt"] = "srt"

    def __init__(self, server: SrtServer, handle: int, peer: str, address: str,
                 streamid: str) -> None:
        self.server = server
        self.handle = handle
        self.peer = peer
        self.address = address
        self.streamid = streamid
        self.limits = server.limits
        self.counters = server.counters
        self.live: LiveSession | None = None
        self.stats: SrtStats | None = None
        self.demux = TsDemuxer(max_pes_size=self.limits.max_pes_size)
        self.media = TsMediaAssembler()
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._admission: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_input = self._loop.time()
        self._has_media = False
        self._closed = False
        self._socket_open = True  # until libsrt says it closed, or we asked it to
        self._close_reason = "connection closed by the caller"

    def start(self) -> None:
        self._timer = self._loop.call_later(self.limits.media_timeout, self._media_deadline)
        self._admission = self._loop.create_task(self._admit(),
                                                 name=f"relay-srt-admit-{self.handle}")

    async def _admit(self) -> None:
        try:
            stream_key = parse_streamid(self.streamid)
            self.live = await self.server.registry.admit(stream_key, self, self.address)
        except PublishRefused as refused:
            self.counters.publishes_refused += 1
            self.server.note(logging.WARNING, f"srt-publish-refused-{refused.refusal.name}",
                             "srt %s: publish refused: %s", self.peer, refused.refusal.value)
            self._end(f"publish refused: {refused.refusal.value}")
            return
        except ValueError as exc:  # the streamid did not parse (the callback let it by)
            self._end(f"bad streamid: {peer_text(str(exc))}")
            return
        except Exception as exc:
            log.debug("srt %s: admission failed", self.peer, exc_info=True)
            self.server.note(logging.ERROR, "srt-admission-failed",
                             "srt %s: admission failed: %s: %s (traceback at log level debug)",
                             self.peer, type(exc).__name__, peer_text(str(exc)))
            self._end(f"server error: {type(exc).__name__}")
            return
        finally:
            self._admission = None
        if self._closed:  # the caller left while its key was looked up
            self.live.detach(self, self._close_reason)
            return
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        try:
            for data in pending:
                if self._closed:
                    return
                self._ingest(data)
        except Exception:  # a bug of ours, as in SrtServer.take: lose this caller only
            log.exception("srt %s: could not publish what it sent before its admission",
                          self.peer)
            self.close("server error")

    # -- input -------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            return
        self._last_input = self._loop.time()
        self.counters.bytes_received += len(data)
        if self.live is None:
            self._pending_bytes += len(data)
            if self._pending_bytes > self.limits.max_pending_bytes:
                self.counters.pending_overflows += 1
                self._close_now(f"sent {self._pending_bytes} bytes before its admission was "
                                f"answered (limit {self.limits.max_pending_bytes})")
                return
            self._pending.append(bytes(data))
            return
        self._ingest(data)

    def _ingest(self, data: bytes | bytearray | memoryview | None) -> None:
        """Demux `data` and publish what it completes; None is the end of the input: the
        PES the demuxer holds and the access unit the assembler holds are published too."""
        live = self.live
        assert live is not None
        media = self.media
        try:
            for event in self.demux.feed(data) if data is not None else self.demux.flush():
                if isinstance(event, PesPacket):
                    units = media.on_pes(event.pid, event.stream_type, event.pts, event.dts,
                                         event.random_access, event.discontinuity, event.data)
                else:
                    units = media.on_program(event.streams)
                if self._publish(live, units):
                    return
            if data is None:
                self._publish(live, media.flush())
        except TsIngestError as exc:
            self.counters.ingest_errors += 1
            self._close_now(f"unusable stream: {exc}")

    def _publish(self, live: LiveSession, units: list[TrackConfig | MediaFrame]) -> bool:
        """Hand `units` to the session; True when the session closed this connection."""
        for unit in units:
            if isinstance(unit, MediaFrame):
                live.publish_frame(unit)
            elif isinstance(unit, VideoConfig | AudioConfig):
                self._has_media = True
                live.publish_track(unit)
            if self._closed:  # the session ended it (its limit, an API change)
                return True
        return False

    def flush(self) -> None:
        """Publish the last PES and access unit held back (each ends only when the next
        begins)."""
        if self.live is not None and not self._closed:
            self._ingest(None)

    def lost(self, reason: str) -> None:
        """libsrt closed the connection (the caller left, or its peer-idle timeout)."""
        if self._closed:
            return
        self._close_reason = f"connection closed: {peer_text(reason)}"
        log.info("srt %s: %s", self.peer, self._close_reason)
        self._socket_open = False
        if self.live is not None:
            # The input ended: the last PES (its end is known only when the next begins)
            # and the last access unit are complete now; without this every recording
            # would lose its last frames.
            self._ingest(None)
        self._end(self._close_reason)

    # -- timers ------------------------------------------------------------------------

    def _media_deadline(self) -> None:
        self._timer = None
        if self._closed:
            return
        if not self._has_media:
            self.counters.media_timeouts += 1
            self._close_now(f"no audio or video track within {self.limits.media_timeout:g}s "
                            f"of connecting (the caller must send H.264/HEVC and AAC in "
                            f"MPEG-TS)")
            return
        self._timer = self._loop.call_later(self.limits.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        self._timer = None
        if self._closed:
            return
        idle = self._loop.time() - self._last_input
        if idle >= self.limits.idle_timeout:
            self.counters.idle_timeouts += 1
            self._close_now(f"no data for {idle:.0f}s (--srt-idle-timeout)")
            return
        self._timer = self._loop.call_later(self.limits.idle_timeout - idle, self._idle_check)

    # -- closing -----------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """End this caller's connection (the `Publisher` interface). SRT has no way to say
        why once connected, so the reason is logged only."""
        if self._closed:
            return
        log.info("srt %s: closing: %s", self.peer, reason)
        self._end(reason)

    def _close_now(self, reason: str) -> None:
        self.server.note(logging.WARNING, "srt-closing", "srt %s: closing: %s", self.peer,
                         reason)
        self._end(reason)

    def _end(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
        if self._socket_open:  # else libsrt closed it already
            self._socket_open = False
            self.server.close_handle(self.handle)
        self.server.forget(self)
        # An admission still in flight sees _closed when it returns and detaches itself.
        if self.live is not None and self._admission is None:
            self.live.detach(self, reason)
