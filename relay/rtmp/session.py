"""The server side of one RTMP connection, sans-IO.

Theory of operation: bytes from the encoder go in through `get_buffer`/`buffer_updated` (or
`receive_data`); first the handshake (RTMP 5.2) consumes them, then the native chunk demuxer
(5.3) turns them into messages. Protocol-control messages (5.4, 6.2) are answered here;
commands (7.2) move the session through the table `TRANSITIONS` below; what the application
must decide or consume comes out of `next_event()` as a frozen event. Everything the session
wants to send accumulates until `data_to_send()`. The session reads no clock and does no I/O:
the asyncio adapter (`relay.rtmp.server`) owns the socket, the timers and the live stream.

Once a publish is admitted, a session made with `parse_media=True` (the server's) takes each
read's messages in one native call (`relay._native.rtmp_ingest.MediaIngest.drain`): audio and
video timestamps extended to 64 bits and the common coded-frame tags parsed there, the rest
of the tags by `relay.media.flv` here, and hands them out as one `MediaBatch` per read; the
first message of another kind ends the batch and is dispatched as below.

    HANDSHAKE --C2--> AWAIT_CONNECT --connect--> CONNECTED --publish--> PUBLISH_PENDING
                                                                          | accept_publish()
                                                     PUBLISHING <---------+
    any state --error / refusal / unpublish--> CLOSING (the adapter closes the socket)

What a peer may cost before it has authenticated (a publish admitted) is small and bounded:
every message at most `max_command_size` bytes, refused by the chunk demuxer from the first
chunk header before its payload is buffered; no aggregate message; at most
`max_buffered_before_publish` bytes held; every AMF value within the decoder's size budget
(`amf0.MAX_DECODED_SIZE`). Once the publish is admitted, audio, video and aggregate messages
may be as long as `max_message_size`; commands and data stay under `max_command_size`.
Output is bounded too: once `MAX_PENDING_OUTPUT` bytes wait for `data_to_send()`, the session
parses no further message (`output_full`), so a peer that never reads cannot make replies
pile up faster than the adapter writes them. Work is bounded per turn of the event loop:
`next_event()` parses at most `MAX_MESSAGES_PER_TURN` messages between two `new_turn()`
calls (`turn_spent`), so a read full of tiny messages that need no event (pings, acks) cannot
hold the loop while it is worked through; and before its publish is admitted a connection
may send at most `max_messages_before_publish` messages in all. A peer's value reaches an
error or a reply only through `relay.logs.peer_text`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from relay._native.rtmp_chunk import (
    DEFAULT_MAX_BUFFERED,
    DEFAULT_MAX_MESSAGE_SIZE,
    ChunkDemuxer,
    ChunkError,
    ChunkMuxer,
    MessageTooLong,
    RtmpMessage,
)
from relay._native.rtmp_ingest import MediaIngest
from relay.logs import peer_text
from relay.media.flv import FlvError, parse_audio_tag, parse_video_tag
from relay.media.units import AudioConfig, MediaFrame, VideoConfig
from relay.rtmp import amf0
from relay.rtmp.handshake import HANDSHAKE_SIZE, HandshakeError, ServerHandshake
from relay.rtmp.messages import (
    COMMAND_CSID,
    CONTROL_CSID,
    STATUS_CSID,
    MessageType,
    PeerBandwidthLimit,
    UserControlEvent,
    parse_u32_payload,
    parse_user_control,
    set_peer_bandwidth_payload,
    u32_payload,
    user_control_payload,
)

if TYPE_CHECKING:
    from relay._native.rtmp_ingest import RawTag

# The only application name Relay serves: rtmp://HOST:5222/app/STREAM_KEY.
APP_NAME = "app"
# What Relay asks encoders to acknowledge, and the chunk size it writes with. Bigger chunks
# mean fewer headers; 4096 is what encoders commonly use themselves.
WINDOW_ACK_SIZE = 2_500_000
OUT_CHUNK_SIZE = 4096
# The message stream id `createStream` hands out; one publish per connection.
PUBLISH_STREAM_ID = 1
# The longest command, data or control message accepted, and before a publish is admitted
# the longest message of any type. Real commands are a few hundred bytes and onMetaData a
# few kilobytes; decoding AMF costs about 0.2 s per MiB in Python, so this keeps what an
# unauthenticated peer can make Relay decode to milliseconds per message.
DEFAULT_MAX_COMMAND_SIZE = 64 * 1024
# What one connection may hold (unread input plus partial messages) before a publish is
# admitted: a few messages of max_command_size in flight.
DEFAULT_MAX_BUFFERED_BEFORE_PUBLISH = 256 * 1024
# Replies waiting for data_to_send() beyond which no further message is parsed: a ping or an
# unknown command costs a reply, so input that is all requests cannot queue unbounded output.
MAX_PENDING_OUTPUT = 64 * 1024
# Messages parsed per turn of the event loop (between new_turn() calls). An encoder sends
# about 80 a second, a few per read; 256 tiny control messages cost about a millisecond of
# Python, so one connection's backlog never holds the loop longer than that.
MAX_MESSAGES_PER_TURN = 256
# Messages a connection may send before its publish is admitted. An encoder sends about ten
# (set chunk size, connect, releaseStream, FCPublish, createStream, publish, a ping or two);
# more is a peer spending Relay's time without authenticating, and is closed.
DEFAULT_MAX_MESSAGES_BEFORE_PUBLISH = 1024


class State(StrEnum):
    HANDSHAKE = "handshake"
    AWAIT_CONNECT = "await_connect"
    CONNECTED = "connected"
    PUBLISH_PENDING = "publish_pending"
    PUBLISHING = "publishing"
    CLOSING = "closing"


class RemoteProtocolError(Exception):
    """The encoder broke the protocol; str(exc) is the reason its connection is closed."""


class LocalProtocolError(Exception):
    """Relay called the session in a state where that call makes no sense (a bug)."""


# -- events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """`connect` was accepted. `tc_url` and `flash_ver` are as the encoder sent them."""

    tc_url: str
    flash_ver: str


@dataclass(frozen=True, slots=True)
class PublishRequested:
    """The encoder asked to publish; answer with accept_publish() or refuse_publish()."""

    stream_key: str
    query: str  # what followed '?' in the stream name, if anything
    publish_type: str  # "live", "record" or "append"; Relay treats all as live


@dataclass(frozen=True, slots=True)
class MediaMessage:
    """An audio (8) or video (9) message's FLV tag body, with its 32-bit timestamp."""

    type_id: int
    timestamp: int
    payload: bytes


#: What a `MediaBatch` carries: frames and the track configurations between them.
MediaUnit = MediaFrame | VideoConfig | AudioConfig


@dataclass(frozen=True, slots=True)
class MediaBatch:
    """The media of one read, parsed (a session made with `parse_media=True`).

    `units` are in arrival order, on the connection's 64-bit millisecond timeline. `messages`
    counts the audio and video messages they came from (aggregate sub-messages included),
    `errors` those whose tag was malformed (dropped), and `first_error` names the first.
    Tags that carry nothing to publish (end of sequence, command frames, unsupported codecs)
    are counted in `messages` and dropped."""

    units: list[MediaUnit]
    messages: int
    errors: int = 0
    first_error: str = ""


@dataclass(frozen=True, slots=True)
class Metadata:
    """`@setDataFrame onMetaData` (or a bare `onMetaData`): the encoder's stream description."""

    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PublishEnded:
    """The encoder unpublished (FCUnpublish / deleteStream / closeStream)."""

    command: str


@dataclass(frozen=True, slots=True)
class Closing:
    """The session wants the connection closed once `data_to_send()` has been written."""

    reason: str


Event = (Connected | PublishRequested | MediaMessage | MediaBatch | Metadata | PublishEnded
         | Closing)


# -- the command transition table ------------------------------------------------------
# (state, command) -> handler name. A command missing here is answered with `_error` when it
# expects an answer and is otherwise ignored, except before `connect`, where it is an error.

_PUBLISH_TEARDOWN = ("FCUnpublish", "deleteStream", "closeStream")

TRANSITIONS: dict[tuple[State, str], str] = {
    (State.AWAIT_CONNECT, "connect"): "_on_connect",
    **{(s, c): "_on_acknowledged_call"
       for s in (State.CONNECTED, State.PUBLISH_PENDING, State.PUBLISHING)
       for c in ("releaseStream", "FCPublish", "_checkbw", "getStreamLength")},
    (State.CONNECTED, "createStream"): "_on_create_stream",
    (State.CONNECTED, "publish"): "_on_publish",
    (State.CONNECTED, "play"): "_on_play",
    (State.CONNECTED, "play2"): "_on_play",
    **{(State.CONNECTED, c): "_on_ignored" for c in _PUBLISH_TEARDOWN},
    **{(State.PUBLISH_PENDING, c): "_on_unpublish" for c in _PUBLISH_TEARDOWN},
    **{(State.PUBLISHING, c): "_on_unpublish" for c in _PUBLISH_TEARDOWN},
}

_AGGREGATE_TAG_HEADER = struct.Struct(">B3s3sB3s")  # FLV tag header (7.1.6)


class ServerSession:
    """One encoder's RTMP connection, as a state machine over bytes."""

    def __init__(
        self,
        *,
        epoch_ms: int = 0,
        random_bytes: Callable[[int], bytes] = os.urandom,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        max_command_size: int = DEFAULT_MAX_COMMAND_SIZE,
        max_buffered_before_publish: int = DEFAULT_MAX_BUFFERED_BEFORE_PUBLISH,
        max_messages_before_publish: int = DEFAULT_MAX_MESSAGES_BEFORE_PUBLISH,
        parse_media: bool = False,
    ) -> None:
        """With `parse_media`, a publishing session hands out its media as one `MediaBatch`
        per read, parsed into units (the server's path); without, one `MediaMessage` per
        audio or video message (test peers that look at the messages themselves)."""
        self.state = State.HANDSHAKE
        # The native hot path (relay._native.rtmp_ingest) and the batch being filled.
        self._ingest: MediaIngest | None = MediaIngest() if parse_media else None
        self._batch: list[MediaUnit] = []
        self._batch_messages = 0
        self._batch_errors = 0
        self._batch_first_error = ""
        self._pending_error: RemoteProtocolError | None = None  # raised after the batch
        self._dry = False  # the batch path found no complete message in the input
        self._max_early_messages = max_messages_before_publish
        self._handshake: ServerHandshake | None = ServerHandshake(
            epoch_ms=epoch_ms, random_bytes=random_bytes)
        self._handshake_buffer: bytearray | None = bytearray(2 * HANDSHAKE_SIZE + 1)
        # Until a publish is admitted every message is held to the command limit.
        self._max_message_size = max_message_size
        self._max_command_size = min(max_command_size, max_message_size)
        self._max_buffered = max_buffered
        self._demuxer = ChunkDemuxer(
            max_message_size=self._max_command_size, max_command_size=self._max_command_size,
            max_buffered=min(max_buffered_before_publish, max_buffered))
        self._muxer = ChunkMuxer()
        self.output_full = False  # MAX_PENDING_OUTPUT bytes wait: parse nothing more
        self._turn_messages = 0  # messages parsed since new_turn()
        self._early_messages = 0  # messages parsed before the publish was admitted
        self._handshake_out = bytearray()
        self._events: list[Event] = []
        self._next_event = 0
        self._peer_window = 0  # the encoder's Window Acknowledgement Size, when it sent one
        self._acked = 0  # bytes_received when we last acknowledged
        self.stream_key = ""

    # -- input ---------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._handshake_buffer is not None:
            return memoryview(self._handshake_buffer)
        return self._demuxer.get_buffer(sizehint)

    def input_buffer_getter(self) -> Callable[[int], memoryview]:
        """What `get_buffer` does from now on, as one callable: once the handshake is done,
        the chunk demuxer's own (natively, no Python call of the session's per read)."""
        if self._handshake_buffer is not None:
            return self.get_buffer
        return self._demuxer.get_buffer

    def buffer_updated(self, nbytes: int) -> bool:
        """Commit `nbytes` received into the view from the last get_buffer().

        Returns False when `next_event()` would return None and nothing waits to be sent: a
        publishing session whose input holds no complete message yet (ffmpeg writes a
        chunk's header and its body apart, so about half of its reads end inside a chunk).
        The caller may then skip asking for events. True otherwise (not a promise of an
        event). A publishing session's media is taken here, in the same native call that
        would take it in `next_event()`."""
        self._dry = False
        if self._handshake_buffer is not None:
            self._receive_handshake(bytes(self._handshake_buffer[:nbytes]))
            return True
        self._demuxer.buffer_updated(nbytes)
        ingest = self._ingest
        if (ingest is None or self.state is not State.PUBLISHING or self.output_full
                or self._pending_error is not None
                or self._next_event < len(self._events)
                or self._turn_messages >= MAX_MESSAGES_PER_TURN):
            return True
        # What next_event() would do first (_drain_media, with the read that completes no
        # message answered at once); the batch, if any, waits in _events for next_event().
        self._events.clear()
        self._next_event = 0
        try:
            units, stop, taken, self._dry = ingest.drain(
                self._demuxer, MAX_MESSAGES_PER_TURN - self._turn_messages)
        except ChunkError as exc:
            # Raised by next_event(), as without this shortcut: input is only buffered here.
            self._pending_error = RemoteProtocolError(str(exc))
            return True
        return taken > 0 and self._take_media(units, stop, taken)

    def receive_data(self, data: bytes) -> None:
        """Copying alternative to get_buffer/buffer_updated (tests, TLS transports)."""
        self._dry = False
        if self._handshake_buffer is not None:
            self._receive_handshake(data)
        else:
            self._demuxer.feed(data)

    def _receive_handshake(self, data: bytes) -> None:
        assert self._handshake is not None
        try:
            reply = self._handshake.receive_data(data)
        except HandshakeError as exc:
            raise RemoteProtocolError(f"handshake: {exc}") from None
        self._send_handshake(reply)
        if self._handshake.complete:
            leftover = self._handshake.take_leftover()
            self._handshake = None
            self._handshake_buffer = None
            self.state = State.AWAIT_CONNECT
            if leftover:
                self._demuxer.feed(leftover)

    @property
    def bytes_received(self) -> int:
        return int(self._demuxer.bytes_received)

    @property
    def buffered(self) -> int:
        return int(self._demuxer.buffered)

    @property
    def allocated(self) -> int:
        return int(self._demuxer.allocated)

    # -- events --------------------------------------------------------------------

    def next_event(self) -> Event | None:
        """The next thing the application must know; None when more bytes are needed.

        Raises RemoteProtocolError when the encoder broke the protocol."""
        while self._next_event >= len(self._events):
            self._events.clear()
            self._next_event = 0
            if (self.output_full or self._turn_messages >= MAX_MESSAGES_PER_TURN
                    or self.state in (State.HANDSHAKE, State.CLOSING)):
                return None
            if self._ingest is not None and self.state is State.PUBLISHING:
                if self._dry or not self._drain_media(self._ingest):
                    return None
                continue
            try:
                message = self._demuxer.next_message()
            except MessageTooLong as exc:
                if self.state is State.PUBLISHING:
                    raise RemoteProtocolError(str(exc)) from None
                raise RemoteProtocolError(
                    f"{exc}, the limit for every message before a publish is admitted "
                    "(max_command_size)") from None
            except ChunkError as exc:
                raise RemoteProtocolError(str(exc)) from None
            if message is None:
                return None
            self._turn_messages += 1
            if self.state is not State.PUBLISHING:
                self._early_messages += 1
                if self._early_messages > self._max_early_messages:
                    raise RemoteProtocolError(
                        f"more than {self._max_early_messages} messages before a publish "
                        "was admitted (max_messages_before_publish)")
            self._maybe_acknowledge()
            self._dispatch(message)
        event = self._events[self._next_event]
        self._next_event += 1
        return event

    def _drain_media(self, ingest: MediaIngest) -> bool:
        # One native call takes this read's messages: the media ones parsed (or left to
        # relay.media.flv), up to the first other message, which is dispatched as usual.
        # False when no complete message was buffered.
        if self._pending_error is not None:
            raise self._pending_error
        try:
            units, stop, taken, self._dry = ingest.drain(
                self._demuxer, MAX_MESSAGES_PER_TURN - self._turn_messages)
        except ChunkError as exc:
            raise RemoteProtocolError(str(exc)) from None
        return taken > 0 and self._take_media(units, stop, taken)

    def _take_media(self, units: list[MediaFrame | RawTag], stop: RtmpMessage | None,
                    taken: int) -> bool:
        # What MediaIngest.drain took (`taken` > 0 messages) into this read's MediaBatch;
        # `stop`, a message of another kind, dispatched after it. Always True.
        self._turn_messages += taken
        self._maybe_acknowledge()
        batch = self._batch
        for unit in units:
            if isinstance(unit, tuple):
                self._parse_tag(*unit)
            else:
                batch.append(unit)
        self._batch_messages += len(units)
        if stop is not None:
            self._flush_batch()
            try:
                self._dispatch(stop)
            except RemoteProtocolError as exc:
                # Raised once the media before it has been handed out, as one message at a
                # time did.
                self._pending_error = exc
        self._flush_batch()
        return True

    def _parse_tag(self, type_id: int, dts: int, payload: bytes) -> None:
        # The tags the native fast path leaves here: configurations, markers, the unusual.
        try:
            if type_id == MessageType.VIDEO:
                unit: object = parse_video_tag(payload, dts)
            else:
                unit = parse_audio_tag(payload, dts)
        except FlvError as exc:
            self._batch_errors += 1
            if not self._batch_first_error:
                self._batch_first_error = str(exc)
            return
        if isinstance(unit, MediaFrame | VideoConfig | AudioConfig):
            self._batch.append(unit)

    def _flush_batch(self) -> None:
        if self._batch_messages:
            self._events.append(MediaBatch(self._batch, self._batch_messages,
                                           self._batch_errors, self._batch_first_error))
            self._batch = []
            self._batch_messages = 0
            self._batch_errors = 0
            self._batch_first_error = ""

    @property
    def turn_spent(self) -> bool:
        """This turn's MAX_MESSAGES_PER_TURN messages were parsed; more wait for new_turn()."""
        return self._turn_messages >= MAX_MESSAGES_PER_TURN

    def new_turn(self) -> None:
        """A new turn of the event loop: next_event() may parse MAX_MESSAGES_PER_TURN more."""
        self._turn_messages = 0

    def _maybe_acknowledge(self) -> None:
        # RTMP 5.4.3: acknowledge every window's worth of received bytes; the window is the
        # one the encoder announced, or Relay's own when it announced none.
        window = self._peer_window or WINDOW_ACK_SIZE
        received: int = self._demuxer.bytes_received
        if received - self._acked >= window:
            self._acked = received
            self._control(MessageType.ACKNOWLEDGEMENT, u32_payload(received))

    def _dispatch(self, message: RtmpMessage) -> None:
        type_id = message.type_id
        if type_id in (MessageType.AUDIO, MessageType.VIDEO):
            if self.state is State.PUBLISHING:
                self._events.append(MediaMessage(type_id, message.timestamp, message.payload))
            # else: media before the publish is admitted belongs to no stream; dropped
        elif type_id in (MessageType.COMMAND_AMF0, MessageType.COMMAND_AMF3):
            self._on_command(message)
        elif type_id in (MessageType.DATA_AMF0, MessageType.DATA_AMF3):
            self._on_data(message)
        elif type_id == MessageType.AGGREGATE:
            if self.state is not State.PUBLISHING:
                # Aggregates carry media only; before a publish they are a way to make us
                # parse a long message for nothing.
                raise RemoteProtocolError("aggregate message before a publish is admitted")
            self._on_aggregate(message)
        elif type_id == MessageType.USER_CONTROL:
            self._on_user_control(message.payload)
        elif type_id == MessageType.WINDOW_ACK_SIZE:
            window = self._u32(message.payload, "Window Acknowledgement Size")
            if window == 0:
                raise RemoteProtocolError("Window Acknowledgement Size of 0")
            self._peer_window = window
        elif type_id in (MessageType.SET_CHUNK_SIZE, MessageType.ABORT,
                         MessageType.ACKNOWLEDGEMENT, MessageType.SET_PEER_BANDWIDTH,
                         MessageType.SHARED_OBJECT_AMF0, MessageType.SHARED_OBJECT_AMF3):
            # Chunk size and abort are applied by the demuxer; acknowledgements of what we
            # send and bandwidth hints need no action from an ingest server; shared objects
            # are a Flash feature no encoder uses for publishing.
            pass
        else:
            raise RemoteProtocolError(f"unknown message type {type_id}")

    @staticmethod
    def _u32(payload: bytes, what: str) -> int:
        try:
            return parse_u32_payload(payload, what)
        except ValueError as exc:
            raise RemoteProtocolError(str(exc)) from None

    def _on_user_control(self, payload: bytes) -> None:
        try:
            event, value = parse_user_control(payload)
        except ValueError as exc:
            raise RemoteProtocolError(str(exc)) from None
        if event == UserControlEvent.PING_REQUEST:
            self._control(MessageType.USER_CONTROL,
                          user_control_payload(UserControlEvent.PING_RESPONSE, value))

    def _on_data(self, message: RtmpMessage) -> None:
        payload = message.payload
        if message.type_id == MessageType.DATA_AMF3 and payload[:1] == b"\x00":
            payload = payload[1:]
        try:
            values = amf0.decode_all(payload)
        except amf0.AmfError:
            return  # metadata is advisory; a bad one costs nothing
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if (self.state is State.PUBLISHING and len(values) >= 2 and values[0] == "onMetaData"
                and isinstance(values[1], dict)):
            self._events.append(Metadata(dict(values[1])))

    def _on_aggregate(self, message: RtmpMessage) -> None:
        # RTMP 7.1.6: FLV tags back to back, each followed by its 4-byte back pointer; the
        # sub-messages' timestamps are offsets from the first one's, rebased on the
        # aggregate's own timestamp. A malformed aggregate yields none of its messages.
        data, offset, first_ts = message.payload, 0, None
        media: list[tuple[int, int, bytes]] = []
        while offset < len(data):
            end_of_header = offset + _AGGREGATE_TAG_HEADER.size
            if end_of_header > len(data):
                raise RemoteProtocolError("aggregate message: truncated sub-message header")
            type_id, size3, ts3, ts_ext, _ = _AGGREGATE_TAG_HEADER.unpack_from(data, offset)
            size = int.from_bytes(size3, "big")
            ts = int.from_bytes(ts3, "big") | (ts_ext << 24)
            end = end_of_header + size + 4
            if end > len(data):
                raise RemoteProtocolError(
                    f"aggregate message: sub-message of {size} bytes runs past the end")
            if first_ts is None:
                first_ts = ts
            if type_id in (MessageType.AUDIO, MessageType.VIDEO) and \
                    self.state is State.PUBLISHING:
                timestamp = (message.timestamp + ts - first_ts) & 0xFFFFFFFF
                media.append((type_id, timestamp, data[end_of_header:end - 4]))
            offset = end
        for type_id, timestamp, payload in media:
            if self._ingest is not None:
                self._batch_messages += 1
                self._parse_tag(type_id, self._ingest.unwrap(timestamp), payload)
            else:
                self._events.append(MediaMessage(type_id, timestamp, payload))

    # -- commands ------------------------------------------------------------------

    def _on_command(self, message: RtmpMessage) -> None:
        try:
            name, txn, args = amf0.decode_command(
                message.payload, amf3=message.type_id == MessageType.COMMAND_AMF3)
        except amf0.AmfError as exc:
            raise RemoteProtocolError(f"malformed command: {exc}") from None
        handler = TRANSITIONS.get((self.state, name))
        if handler is not None:
            getattr(self, handler)(txn, args)
        elif self.state is State.AWAIT_CONNECT:
            raise RemoteProtocolError(f"expected connect, got '{peer_text(name)}'")
        elif name in ("_result", "_error", "onStatus", "onBWDone"):
            pass  # answers to calls Relay never makes, or courtesy notifications
        elif txn:  # an unknown call with a transaction id gets an error; without one, nothing
            self._command("_error", txn, None, _status(
                "error", "NetConnection.Call.Failed",
                f"{peer_text(name)} is not supported by this server in state {self.state}"))

    def _on_connect(self, txn: float, args: list[amf0.AmfValue]) -> None:
        props = args[0] if args and isinstance(args[0], dict) else {}
        app = props.get("app")
        tc_url = props.get("tcUrl")
        flash_ver = props.get("flashVer")
        if not isinstance(app, str) or app.rstrip("/") != APP_NAME:
            # peer_text: app may be any AMF value; it is named by type, never walked.
            self._command("_error", txn, None, _status(
                "error", "NetConnection.Connect.Rejected",
                f"unknown application '{peer_text(app)}': publish to "
                f"rtmp://HOST/{APP_NAME}/STREAM_KEY"))
            self._close(f"connect to unknown application '{peer_text(app)}'")
            return
        self._control(MessageType.WINDOW_ACK_SIZE, u32_payload(WINDOW_ACK_SIZE))
        self._control(MessageType.SET_PEER_BANDWIDTH,
                      set_peer_bandwidth_payload(WINDOW_ACK_SIZE, PeerBandwidthLimit.DYNAMIC))
        self._muxer.write_set_chunk_size(OUT_CHUNK_SIZE)
        encoding = props.get("objectEncoding", 0.0)
        self._command("_result", txn,
                      {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0, "mode": 1.0},
                      {**_status("status", "NetConnection.Connect.Success",
                                 "Connection succeeded."),
                       "objectEncoding": encoding if isinstance(encoding, float) else 0.0})
        self.state = State.CONNECTED
        self._events.append(Connected(tc_url if isinstance(tc_url, str) else "",
                                      flash_ver if isinstance(flash_ver, str) else ""))

    def _on_acknowledged_call(self, txn: float, _args: list[amf0.AmfValue]) -> None:
        if txn:
            self._command("_result", txn, None, amf0.UNDEFINED)

    def _on_ignored(self, _txn: float, _args: list[amf0.AmfValue]) -> None:
        pass

    def _on_create_stream(self, txn: float, _args: list[amf0.AmfValue]) -> None:
        self._command("_result", txn, None, float(PUBLISH_STREAM_ID))

    def _on_publish(self, txn: float, args: list[amf0.AmfValue]) -> None:
        # publish(null, name, type): RTMP 7.2.2.6
        name = args[1] if len(args) > 1 else None
        publish_type = args[2] if len(args) > 2 and isinstance(args[2], str) else "live"
        if not isinstance(name, str) or not name:
            self.refuse_publish("publish without a stream name: use the stream key")
            return
        key, _, query = name.partition("?")
        self.stream_key = key
        self.state = State.PUBLISH_PENDING
        self._events.append(PublishRequested(key, query, publish_type))

    def _on_play(self, _txn: float, _args: list[amf0.AmfValue]) -> None:
        self._status("error", "NetStream.Play.Failed",
                     "playback over RTMP is not offered: play the HLS URL of the playback id")
        self._close("play refused: playback is HLS")

    def _on_unpublish(self, _txn: float, _args: list[amf0.AmfValue]) -> None:
        if self.state is State.PUBLISHING:
            self._status("status", "NetStream.Unpublish.Success", "Stopped publishing.")
        self.state = State.CLOSING
        self._events.append(PublishEnded("unpublish"))

    # -- the application's answers ----------------------------------------------------

    def accept_publish(self) -> None:
        if self.state is not State.PUBLISH_PENDING:
            raise LocalProtocolError(f"accept_publish in state {self.state}")
        self._control(MessageType.USER_CONTROL,
                      user_control_payload(UserControlEvent.STREAM_BEGIN, PUBLISH_STREAM_ID))
        self._status("status", "NetStream.Publish.Start",
                     f"{peer_text(self.stream_key)} is now published.")
        self.state = State.PUBLISHING
        # Authenticated: media may now be as long as max_message_size.
        self._demuxer.set_limits(max_message_size=self._max_message_size,
                                 max_command_size=self._max_command_size,
                                 max_buffered=self._max_buffered)

    def refuse_publish(self, description: str,
                       code: str = "NetStream.Publish.BadName") -> None:
        """Tell the encoder why it may not publish, then close."""
        self._status("error", code, description)
        self._close(f"publish refused: {description}")

    def end_publish(self, description: str) -> None:
        """End a publish the server no longer wants (disabled, completed, limit reached)."""
        if self.state is State.CLOSING:
            return
        if self.state is State.PUBLISHING:
            self._status("error", "NetStream.Publish.Denied", description)
        self._close(description)

    def _close(self, reason: str) -> None:
        self.state = State.CLOSING
        self._events.append(Closing(reason))

    # -- output --------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        self.output_full = False
        if self._handshake_out:
            out = bytes(self._handshake_out) + self._muxer.take()
            self._handshake_out.clear()
            return out
        return self._muxer.take()

    def _send_handshake(self, data: bytes) -> None:
        self._handshake_out += data

    def _control(self, type_id: MessageType, payload: bytes) -> None:
        self._muxer.write_message(CONTROL_CSID, type_id, 0, 0, payload)
        self._check_output()

    def _command(self, name: str, txn: float, *args: amf0.AmfValue) -> None:
        self._muxer.write_message(COMMAND_CSID, MessageType.COMMAND_AMF0, 0, 0,
                                  amf0.encode_command(name, txn, *args))
        self._check_output()

    def _status(self, level: str, code: str, description: str) -> None:
        self._muxer.write_message(
            STATUS_CSID, MessageType.COMMAND_AMF0, PUBLISH_STREAM_ID, 0,
            amf0.encode_command("onStatus", 0.0, None, _status(level, code, description)))
        self._check_output()

    def _check_output(self) -> None:
        # Only replies write here, so a publisher's media path never pays for this check.
        if self._muxer.pending >= MAX_PENDING_OUTPUT:
            self.output_full = True

    @property
    def pending_output(self) -> int:
        """Bytes waiting for data_to_send()."""
        return len(self._handshake_out) + int(self._muxer.pending)

    def release(self) -> None:
        """Free the buffers (the connection is gone)."""
        self._demuxer.release()


def _status(level: str, code: str, description: str) -> dict[str, amf0.AmfValue]:
    return {"level": level, "code": code, "description": description}
