"""One RTMP(S) publishing connection to a simulcast target, fed from a `MediaQueue`.

Theory of operation: `push()` runs one connection from TCP connect to a clean unpublish and
returns, or raises `TargetError` saying whether trying again can help (`normal`: the network,
the server going away, timeouts) or not (`fatal`: the URL, the key or the publish refused,
the certificate failing verification). Reconnecting, backoff and statuses are the caller's
(`relay.simulcast.manager`). The RTMP work is `relay.rtmp.client.ClientSession` (sans-IO);
this module is the asyncio adapter around it: a reader task feeds the server's bytes to the
session (acknowledgements, pings, a late refusal) while the sender turns queue items into FLV
tag bodies (`relay.simulcast.flv`). Writes honour the transport's flow control: above the
high-water mark the sender waits in `drain()`, at most `write_stall_timeout`; a target that
stops reading costs one transport buffer here, and its queue drops GOPs upstream.

Cost per target: while the connection keeps up, the queue calls the sender synchronously
(`MediaQueue.set_pump`) from its session's batch callback (the manager's queues share a
`BatchClock`: one callback per session and `TARGET_BATCH_DELAY`, in a loop iteration that
ingest woke anyway), with no task wake-up; the sender's task runs only to drain a backlog,
to end, or to fail. The sender takes what is queued and writes it with one `writelines`.
Each frame's tag body is chunked once for all the targets by the session's fan-out
(`relay.simulcast.fanout.MuxedFrame`); a run of such frames goes out with one native call
that adds this connection's first-chunk headers (`ChunkMuxer.append_frames`), so neither the
frame's bytes nor a Python loop per frame is paid per target. A frame from elsewhere (a
plain `MediaFrame`) takes the slow path: its tail from `relay.simulcast.tags`, one
message at a time. What remains per target is mostly the kernel's send of its bytes.

Timestamps: every connection starts at 0 (the first frame after `queue.restart()`, a
keyframe, is 0) and stays monotonic across a source `Discontinuity`: the source's clock may
jump either way there, so the next frame is placed `DISCONTINUITY_GAP_MS` after the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import SplitResult, urlsplit

from relay.logs import peer_text
from relay.media.units import AudioConfig, MediaFrame, TrackKind, VideoConfig
from relay.rtmp.client import ClientSession, Published, Refused
from relay.rtmp.messages import MessageType
from relay.rtmp.session import RemoteProtocolError
from relay.simulcast import flv
from relay.simulcast.fanout import FANOUT_CHUNK_SIZE, MuxedFrame
from relay.simulcast.tags import SHARED_TAGS, SharedTags
from relay.streams.queue import Discontinuity, EndOfStream, MediaQueue

log = logging.getLogger("relay.simulcast")

Severity = Literal["fatal", "normal"]

#: Default ports (the conventional RTMP port; RTMPS services listen on HTTPS's).
RTMP_DEFAULT_PORT = 1935
RTMPS_DEFAULT_PORT = 443
#: After a source discontinuity the next frame is placed this long after the last one sent
#: (about a frame at 30 fps), so the target sees a short gap, never time going backwards.
DISCONTINUITY_GAP_MS = 33
#: Muxed bytes held before a write while the queue still has items (a backlog after a stall
#: is written in pieces of this size, each followed by the flow-control check). As large as
#: a batched wake-up brings (the manager's TARGET_BATCH_BYTES), so that a wake-up is one
#: write; half the transport's default high-water mark (PushLimits.write_buffer_bytes).
WRITE_BATCH_BYTES = 256 * 1024
#: How much of the server's input one read takes.
READ_SIZE = 65536

_VIDEO = int(MessageType.VIDEO)  # (an IntEnum member costs a lookup per frame)
_AUDIO = int(MessageType.AUDIO)
# What _send_queued left: everything sent, the end sent, or a backlog in the transport.
_EMPTY, _END, _BACKLOG = 0, 1, 2
_VIDEO_BIT = 1 << _VIDEO  # ChunkMuxer.append_frames's type_mask
_AUDIO_BIT = 1 << _AUDIO

#: Status codes that refuse the key or the publish (RTMP servers, FMS status codes).
FATAL_CODES = frozenset({"NetStream.Publish.BadName", "NetStream.Publish.Denied",
                         "NetStream.Publish.Failed", "NetConnection.Connect.Rejected",
                         "NetConnection.Connect.Failed", "NetConnection.Connect.InvalidApp"})


class TargetError(Exception):
    """One connection to a target failed; `severity` says whether retrying can help."""

    def __init__(self, severity: Severity, reason: str) -> None:
        super().__init__(reason)
        self.severity: Severity = severity
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TargetAddress:
    """Where to publish: `scheme://host:port/app` with `stream_name` as the publish name."""

    scheme: Literal["rtmp", "rtmps"]
    host: str
    port: int
    app: str
    stream_name: str = field(repr=False)  # the stream key: a secret, kept out of reprs

    @property
    def tc_url(self) -> str:
        """The connect command's tcUrl (the URL without the stream name)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/{self.app}"

    def __str__(self) -> str:
        """For logs: the URL without the key."""
        return self.tc_url


@dataclass(frozen=True, slots=True)
class PushLimits:
    """Time and memory bounds of one connection (seconds, bytes)."""

    #: TCP connect plus, for rtmps://, the TLS handshake.
    connect_timeout: float = 10.0
    #: RTMP handshake through NetStream.Publish.Start (a server that answers nothing).
    publish_timeout: float = 10.0
    #: How long a write may wait for the target to read before the connection is given up:
    #: long enough for a congested path, short enough that a dead one is retried soon.
    write_stall_timeout: float = 10.0
    #: The transport's write high-water mark: the most held in user space for one target
    #: (plus the message being written). 512 KiB is ~0.7 s at 6 Mbit/s; the queue, which
    #: drops whole GOPs, holds the rest.
    write_buffer_bytes: int = 512 * 1024
    #: Unpublish and close at the end of the stream.
    close_timeout: float = 5.0


@dataclass(slots=True)
class PushStats:
    """What one connection did (the caller may pass one in and read it as it goes)."""

    bytes_written: int = 0
    frames_sent: int = 0
    #: Frames that have no FLV form (an out-of-range composition offset, a frame before its
    #: track's configuration): skipped, the stream goes on.
    frames_skipped: int = 0
    #: The largest transport write buffer seen after a write, bytes.
    peak_write_buffer: int = 0


def parse_target_url(url: str, stream_key: str) -> TargetAddress:
    """`rtmp://host[:port]/app[/...]` and a stream key to a `TargetAddress`.

    The whole path is the application (`live2`, or `app/instance` for servers that use
    instances); with an empty `stream_key`, the last path segment is the stream name, as
    ffmpeg reads such URLs. A query stays on the application (servers read tokens there).
    Raises ValueError with the reason for anything else.
    """
    try:
        parts: SplitResult = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"target url {peer_text(url)!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("rtmp", "rtmps"):
        raise ValueError(f"target url {peer_text(url)!r} must start with rtmp:// or rtmps://")
    if not parts.hostname:
        raise ValueError(f"target url {peer_text(url)!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"target url {peer_text(url)!r} has credentials before the host; "
                         "RTMP takes none there (put them in the stream key or the query)")
    if parts.fragment:
        raise ValueError(f"target url {peer_text(url)!r} has a fragment ('#...')")
    path = parts.path.strip("/")
    name = stream_key.strip()
    if not name:
        path, _, name = path.rpartition("/")
    if not path:
        raise ValueError(f"target url {peer_text(url)!r} names no application (rtmp://host/APP)")
    if not name:
        raise ValueError(f"target url {peer_text(url)!r} comes with no stream key")
    app = f"{path}?{parts.query}" if parts.query else path
    default = RTMP_DEFAULT_PORT if scheme == "rtmp" else RTMPS_DEFAULT_PORT
    return TargetAddress("rtmp" if scheme == "rtmp" else "rtmps", parts.hostname,
                         port or default, app, name)


async def push(target: TargetAddress, queue: MediaQueue, *, ssl_context: ssl.SSLContext | None,
               on_published: Callable[[], None], limits: PushLimits = PushLimits(),
               stats: PushStats | None = None, tags: SharedTags = SHARED_TAGS) -> None:
    """Publish `queue` to `target` over one connection until the queue's EndOfStream.

    Calls `queue.restart()` once the publish is accepted, so the connection begins with
    metadata and sequence headers and then a keyframe. `ssl_context` is used for rtmps://
    (None: the system's trust store); certificates are verified and SNI is sent. Returns after
    a clean unpublish; raises `TargetError` otherwise.
    """
    connection = _Connection(target, queue, limits, stats or PushStats(), tags)
    try:
        await connection.run(ssl_context, on_published)
    except TargetError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise TargetError("fatal", f"{target}: TLS certificate verification failed: "
                          f"{exc.verify_message or exc.reason}") from None
    except TimeoutError as exc:
        raise TargetError("normal", f"{target}: {exc or 'timed out'}") from None
    except RemoteProtocolError as exc:
        raise TargetError("normal", f"{target}: the server broke RTMP: {exc}") from None
    except OSError as exc:
        raise TargetError("normal", f"{target}: {exc.strerror or exc}") from None
    finally:
        connection.close()


class _Connection:
    def __init__(self, target: TargetAddress, queue: MediaQueue, limits: PushLimits,
                 stats: PushStats, tags: SharedTags = SHARED_TAGS) -> None:
        self.target = target
        self.tags = tags
        self.queue = queue
        self.limits = limits
        self.stats = stats
        self.session = ClientSession(tc_url=target.tc_url, stream_key=target.stream_name,
                                     app=target.app)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.tracks: dict[TrackKind, VideoConfig | AudioConfig] = {}
        self.sent_headers = False
        self.offset: int | None = None  # output ms = source dts + offset
        self.last_out = 0
        self.after_discontinuity = False
        self._unflushed = 0  # tag bytes muxed since the last write
        self._woken: asyncio.Future[int] | None = None  # while the queue pumps (_pumped)
        # The fan-out's tails are cut at its chunk size: usable when this connection's is.
        self._muxed = self.session.chunk_size == FANOUT_CHUNK_SIZE

    async def run(self, ssl_context: ssl.SSLContext | None,
                  on_published: Callable[[], None]) -> None:
        target, limits = self.target, self.limits
        tls: ssl.SSLContext | None = None
        if target.scheme == "rtmps":
            tls = ssl_context if ssl_context is not None else ssl.create_default_context()
        try:
            async with asyncio.timeout(limits.connect_timeout):
                self.reader, self.writer = await asyncio.open_connection(
                    target.host, target.port, ssl=tls,
                    server_hostname=target.host if tls is not None else None,
                    limit=READ_SIZE)
        except TimeoutError:
            raise TargetError("normal", f"{target}: no connection within "
                              f"{limits.connect_timeout:g}s (connect_timeout)") from None
        self.writer.transport.set_write_buffer_limits(high=limits.write_buffer_bytes)
        self._write(self.session.initial_bytes())
        try:
            async with asyncio.timeout(limits.publish_timeout):
                await self._until_published()
        except TimeoutError:
            raise TargetError("normal", f"{target}: the publish was not accepted within "
                              f"{limits.publish_timeout:g}s (publish_timeout)") from None
        on_published()
        self.queue.restart()
        try:
            async with asyncio.TaskGroup() as group:
                reading = group.create_task(self._read_loop(), name=f"simulcast-read {target}")
                await self._send_loop()
                # The end: stop reading first, so that the server closing after the
                # unpublish is not taken for a failure.
                reading.cancel()
        except BaseExceptionGroup as exc_group:
            raise _first(exc_group) from None
        await self._finish()

    async def _until_published(self) -> None:
        assert self.reader is not None
        while True:
            data = await self.reader.read(READ_SIZE)
            if not data:
                raise TargetError("normal", f"{self.target}: the server closed the connection "
                                  "before accepting the publish")
            self._receive(data)
            while (event := self.session.next_event()) is not None:
                if isinstance(event, Published):
                    return
                self._refused(event)

    async def _read_loop(self) -> None:
        """Feed what the server sends (acks, pings, a late refusal) until it closes."""
        assert self.reader is not None
        while True:
            data = await self.reader.read(READ_SIZE)
            if not data:
                raise TargetError("normal", f"{self.target}: the server closed the connection")
            self._receive(data)
            while (event := self.session.next_event()) is not None:
                if isinstance(event, Refused):
                    self._refused(event)

    def _receive(self, data: bytes) -> None:
        self.session.receive_data(data)
        out = self.session.data_to_send()
        if out:
            self._write(out)

    def _refused(self, event: Refused) -> None:
        fatal = (event.code in FATAL_CODES or event.command == "_error"
                 or event.state != "publishing")
        what = "refused" if event.state != "publishing" else "ended the publish"
        raise TargetError("fatal" if fatal else "normal",
                          f"{self.target}: the server {what}: {event.code}: {event.description}")

    async def _send_loop(self) -> None:
        # What the queue holds at once is muxed and written as one write (one send() on the
        # socket per wake-up, not one per frame): the frames of one ingest read arrive
        # together. A long backlog is written in pieces of about WRITE_BATCH_BYTES. While
        # the connection keeps up, the queue calls `_pump` from its batch's callback and
        # the writing happens there: this task wakes only for the end, a backlog to drain
        # or a failure.
        while True:
            state = self._send_queued()
            if state == _EMPTY:
                state = await self._pumped()
            if state == _END:
                return
            if state == _BACKLOG:
                await self._drain()

    def _send_queued(self) -> int:
        """Send what is queued: _EMPTY when all of it went, _END after the EndOfStream, or
        _BACKLOG when the transport holds more than write_buffer_bytes."""
        queue = self.queue
        over = self.limits.write_buffer_bytes
        while True:
            frames = queue.get_frames(WRITE_BATCH_BYTES - self._unflushed)
            if frames:
                self._send_frames(frames)
            else:
                item = queue.get_nowait()
                if item is None:
                    self._flush()
                    return _BACKLOG if self._buffered() > over else _EMPTY
                if isinstance(item, EndOfStream):
                    self._flush()
                    return _END
                if isinstance(item, Discontinuity):
                    self.after_discontinuity = True
                elif isinstance(item, MediaFrame):
                    self._send_frames([item])
                else:
                    self._send_config(item)
            if self._unflushed >= WRITE_BATCH_BYTES:
                self._flush()
                if self._buffered() > over:
                    return _BACKLOG

    async def _pumped(self) -> int:
        """Let the queue call `_pump` until what it sends is not all (_END, _BACKLOG)."""
        woken: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._woken = woken
        self.queue.set_pump(self._pump)
        try:
            return await woken
        finally:
            self.queue.set_pump(None)
            self._woken = None

    def _pump(self) -> None:
        woken = self._woken
        if woken is None or woken.done():
            return
        try:
            state = self._send_queued()
        except Exception as exc:  # the connection's failure: the task raises it
            woken.set_exception(exc)
            return
        if state != _EMPTY:
            woken.set_result(state)

    def _send_config(self, config: VideoConfig | AudioConfig) -> None:
        kind = TrackKind.VIDEO if isinstance(config, VideoConfig) else TrackKind.AUDIO
        if self.tracks.get(kind) == config and self.sent_headers:
            return
        self.tracks[kind] = config
        if self.sent_headers:  # a change mid-stream: its new sequence header now
            self._send_header(config)

    def _send_headers(self) -> None:
        video = self.tracks.get(TrackKind.VIDEO)
        audio = self.tracks.get(TrackKind.AUDIO)
        assert video is None or isinstance(video, VideoConfig)
        assert audio is None or isinstance(audio, AudioConfig)
        self.session.send_metadata(flv.metadata(video, audio))
        for config in (video, audio):
            if config is not None:
                self._send_header(config)
        self.sent_headers = True

    def _send_header(self, config: VideoConfig | AudioConfig) -> None:
        try:
            if isinstance(config, VideoConfig):
                body = flv.video_config_tag(config)
                type_id = MessageType.VIDEO
            else:
                body = flv.audio_config_tag(config)
                type_id = MessageType.AUDIO
        except ValueError as exc:
            raise TargetError("fatal", f"{self.target}: {exc}") from None
        self.session.send_media(type_id, self.last_out, body)
        self._flush()

    def _send_frames(self, frames: list[MediaFrame]) -> None:
        # Runs of frames the fan-out made ready (MuxedFrame) go out with one native call
        # each; any other frame, and one the native path stops at, the slow way.
        session, tracks = self.session, self.tracks
        index, count = 0, len(frames)
        while index < count:
            frame = frames[index]
            if self._muxed and type(frame) is MuxedFrame and frame.kind in tracks:
                if not self.sent_headers:
                    self._send_headers()
                self._timestamp(frame.dts)  # the connection's offset, set or moved here
                assert self.offset is not None
                mask = (_VIDEO_BIT if TrackKind.VIDEO in tracks else 0) | \
                    (_AUDIO_BIT if TrackKind.AUDIO in tracks else 0)
                stop, self.last_out, sent = session.send_muxed(
                    frames, index, self.offset, self.last_out, mask, MuxedFrame)
                if stop > index:
                    self.stats.frames_sent += stop - index
                    self._unflushed += sent
                    index = stop
                    continue
            self._send_frame(frame)
            index += 1

    def _send_frame(self, frame: MediaFrame) -> None:
        kind = frame.kind
        config = self.tracks.get(kind)
        if config is None:
            self.stats.frames_skipped += 1
            return
        if not self.sent_headers:
            self._send_headers()
        session = self.session
        if kind is TrackKind.VIDEO:
            type_id, video_codec = _VIDEO, config.codec
        else:
            type_id, video_codec = _AUDIO, None
        try:
            # The chunked tag body is the same for every target: made once (see tags).
            length, tail = self.tags.tail(frame, video_codec, session.media_csid(type_id),
                                          session.chunk_size)
        except ValueError as exc:
            self.stats.frames_skipped += 1
            log.debug("%s: frame skipped: %s", self.target, exc)
            return
        timestamp = self._timestamp(frame.dts)
        if not session.send_chunked(type_id, timestamp, length, tail):
            session.send_media(type_id, timestamp, flv.frame_tag(frame, video_codec))
        self.stats.frames_sent += 1
        self._unflushed += length

    def _timestamp(self, dts: int) -> int:
        if self.offset is None:
            self.offset = -dts  # the first frame of a connection is at 0
        elif self.after_discontinuity:
            self.offset = self.last_out + DISCONTINUITY_GAP_MS - dts
        self.after_discontinuity = False
        # Audio queued just after the first keyframe may be a few ms older than it.
        out = max(dts + self.offset, 0)
        self.last_out = max(self.last_out, out)
        return out

    async def _finish(self) -> None:
        self.session.unpublish()
        self._flush()
        writer = self.writer
        assert writer is not None
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(self.limits.close_timeout):
                await writer.drain()
                writer.close()
                await writer.wait_closed()

    def _flush(self) -> None:
        self._unflushed = 0
        out = self.session.chunks_to_send()
        if out:
            self._write(*out)

    def _write(self, *pieces: bytes) -> None:
        """One write (one send() when the socket takes it) of `pieces`, uncopied."""
        writer = self.writer
        assert writer is not None
        if writer.transport.is_closing():
            raise TargetError("normal", f"{self.target}: the connection was closed")
        if len(pieces) == 1:
            writer.write(pieces[0])
            self.stats.bytes_written += len(pieces[0])
        else:
            writer.writelines(pieces)
            self.stats.bytes_written += sum(map(len, pieces))
        buffered = self._buffered()
        if buffered > self.stats.peak_write_buffer:
            self.stats.peak_write_buffer = buffered

    def _buffered(self) -> int:
        assert self.writer is not None
        return self.writer.transport.get_write_buffer_size()

    async def _drain(self) -> None:
        assert self.writer is not None
        try:
            async with asyncio.timeout(self.limits.write_stall_timeout):
                await self.writer.drain()
        except TimeoutError:
            raise TargetError(
                "normal", f"{self.target}: the server read nothing for "
                f"{self.limits.write_stall_timeout:g}s with {self._buffered()} bytes waiting "
                "(write_stall_timeout)") from None

    def close(self) -> None:
        if self.writer is not None and not self.writer.transport.is_closing():
            self.writer.transport.abort()


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that ended a task group (reader or sender), unwrapped."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
