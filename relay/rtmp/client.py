"""The publishing side of an RTMP connection, sans-IO: Relay's own pushers (simulcast) and
the benchmark's load generator speak through it.

Theory of operation: `initial_bytes()` starts the handshake; every byte from the server goes
to `receive_data()`; the session answers by itself (connect -> createStream -> publish, as
encoders do, RTMP 7.2) and reports what the caller must know through `next_event()`. Once
`Published` arrives, `send_media()` writes FLV tag bodies as audio/video messages. Output
accumulates until `data_to_send()`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from relay._native.rtmp_chunk import ChunkDemuxer, ChunkError, ChunkMuxer, RtmpMessage
from relay.logs import peer_text
from relay.rtmp import amf0
from relay.rtmp.handshake import ClientHandshake, HandshakeError
from relay.rtmp.messages import (
    COMMAND_CSID,
    CONTROL_CSID,
    MessageType,
    UserControlEvent,
    parse_u32_payload,
    parse_user_control,
    u32_payload,
    user_control_payload,
)
from relay.rtmp.session import RemoteProtocolError

# Where the client writes: commands on 3 (NetConnection), stream commands and data on 4,
# audio on 6 and video on 7, so that a big video frame never delays a small audio one's
# header state.
STREAM_CSID = 4
AUDIO_CSID = 6
VIDEO_CSID = 7
_VIDEO = int(MessageType.VIDEO)  # (an IntEnum member costs a lookup per message)
#: The chunk size the client sends with (announced with Set Chunk Size after the handshake):
#: ffmpeg's and OBS's, which every RTMP server takes.
DEFAULT_CHUNK_SIZE = 4096

_CONNECT_TXN = 1.0
_RELEASE_STREAM_TXN = 2.0
_FC_PUBLISH_TXN = 3.0
_CREATE_STREAM_TXN = 4.0
_PUBLISH_TXN = 5.0
# releaseStream and FCPublish are Adobe FMS conventions that encoders send before
# createStream; servers that do not know them may answer `_error`, which ffmpeg and OBS ignore.
_OPTIONAL_TXNS = (_RELEASE_STREAM_TXN, _FC_PUBLISH_TXN)


class ClientState(StrEnum):
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    CREATING_STREAM = "creating_stream"
    PUBLISHING_REQUESTED = "publish_requested"
    PUBLISHING = "publishing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Published:
    """The server answered NetStream.Publish.Start: media may flow."""


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused the connect or the publish, or ended it; the connection is over.

    `command` says how: "_error" (an answer to connect / createStream / publish) or
    "onStatus" (a NetStream status of level "error"); `state` is where the client was.
    """

    code: str
    description: str
    command: str = "onStatus"
    state: str = ""


ClientEvent = Published | Refused


class ClientSession:
    def __init__(
        self,
        *,
        tc_url: str,
        stream_key: str,
        app: str = "app",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        epoch_ms: int = 0,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.state = ClientState.HANDSHAKE
        self.tc_url = tc_url
        self.stream_key = stream_key
        self.app = app
        self.stream_id = 0
        self._chunk_size = chunk_size
        self._handshake: ClientHandshake | None = ClientHandshake(
            epoch_ms=epoch_ms, random_bytes=random_bytes)
        self._demuxer = ChunkDemuxer()
        self._muxer = ChunkMuxer()
        self._raw = bytearray()
        # Output taken from the muxer and shared chunk tails, in order (before the muxer's).
        self._pieces: list[bytes] = []
        self._events: list[ClientEvent] = []
        self._peer_window = 0
        self._acked = 0

    def initial_bytes(self) -> bytes:
        assert self._handshake is not None
        return self._handshake.initial_bytes()

    def receive_data(self, data: bytes) -> None:
        if self._handshake is not None:
            try:
                self._raw += self._handshake.receive_data(data)
            except HandshakeError as exc:
                raise RemoteProtocolError(f"handshake: {exc}") from None
            if not self._handshake.complete:
                return
            data = self._handshake.take_leftover()
            self._handshake = None
            self._start()
        try:
            self._demuxer.feed(data)
            while (message := self._demuxer.next_message()) is not None:
                self._dispatch(message)
        except ChunkError as exc:
            raise RemoteProtocolError(str(exc)) from None

    def _start(self) -> None:
        self.state = ClientState.CONNECTING
        self._muxer.write_set_chunk_size(self._chunk_size)
        self._command(COMMAND_CSID, 0, "connect", _CONNECT_TXN, {
            "app": self.app, "type": "nonprivate", "flashVer": "FMLE/3.0 (compatible; Relay)",
            "tcUrl": self.tc_url})

    def _dispatch(self, message: RtmpMessage) -> None:
        window = self._peer_window
        if window and self._demuxer.bytes_received - self._acked >= window:
            self._acked = self._demuxer.bytes_received
            self._muxer.write_message(CONTROL_CSID, MessageType.ACKNOWLEDGEMENT, 0, 0,
                                      u32_payload(self._acked))
        type_id = message.type_id
        if type_id == MessageType.WINDOW_ACK_SIZE:
            try:
                self._peer_window = parse_u32_payload(message.payload, "window ack size")
            except ValueError as exc:
                raise RemoteProtocolError(str(exc)) from None
        elif type_id == MessageType.USER_CONTROL:
            try:
                event, value = parse_user_control(message.payload)
            except ValueError as exc:
                raise RemoteProtocolError(str(exc)) from None
            if event == UserControlEvent.PING_REQUEST:
                self._muxer.write_message(
                    CONTROL_CSID, MessageType.USER_CONTROL, 0, 0,
                    user_control_payload(UserControlEvent.PING_RESPONSE, value))
        elif type_id in (MessageType.COMMAND_AMF0, MessageType.COMMAND_AMF3):
            try:
                name, txn, args = amf0.decode_command(
                    message.payload, amf3=type_id == MessageType.COMMAND_AMF3)
            except amf0.AmfError as exc:
                raise RemoteProtocolError(f"malformed command: {exc}") from None
            self._on_command(name, txn, args)

    def _on_command(self, name: str, txn: float, args: list[amf0.AmfValue]) -> None:
        if name == "_result" and txn == _CONNECT_TXN and self.state is ClientState.CONNECTING:
            self.state = ClientState.CREATING_STREAM
            self._command(COMMAND_CSID, 0, "releaseStream", _RELEASE_STREAM_TXN, None,
                          self.stream_key)
            self._command(COMMAND_CSID, 0, "FCPublish", _FC_PUBLISH_TXN, None, self.stream_key)
            self._command(COMMAND_CSID, 0, "createStream", _CREATE_STREAM_TXN, None)
        elif (name == "_result" and txn == _CREATE_STREAM_TXN
              and self.state is ClientState.CREATING_STREAM):
            stream_id = args[1] if len(args) > 1 else None
            if not isinstance(stream_id, float):
                raise RemoteProtocolError("createStream answered without a stream id")
            self.stream_id = int(stream_id)
            self.state = ClientState.PUBLISHING_REQUESTED
            self._command(STREAM_CSID, self.stream_id, "publish", _PUBLISH_TXN, None,
                          self.stream_key, "live")
        elif name == "_error" and txn in _OPTIONAL_TXNS:
            return
        elif name in ("_error", "onStatus"):
            info = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
            code, level = info.get("code"), info.get("level")
            description = info.get("description")
            if code == "NetStream.Publish.Start":
                self.state = ClientState.PUBLISHING
                self._events.append(Published())
            elif level == "error" or name == "_error":
                state, self.state = self.state, ClientState.CLOSED
                # The server's values, cut and escaped: they end up in log lines.
                self._events.append(Refused(peer_text(code), peer_text(description), name,
                                            state.value))

    def next_event(self) -> ClientEvent | None:
        return self._events.pop(0) if self._events else None

    # -- publishing ------------------------------------------------------------------

    def send_metadata(self, values: dict[str, amf0.AmfValue]) -> None:
        self._require_publishing()
        self._muxer.write_message(STREAM_CSID, MessageType.DATA_AMF0, self.stream_id, 0,
                                  amf0.encode("@setDataFrame", "onMetaData", values))

    def send_media(self, type_id: int, timestamp: int, payload: bytes) -> None:
        """Write one FLV tag body as an audio (8) or video (9) message."""
        self._require_publishing()
        csid = VIDEO_CSID if type_id == MessageType.VIDEO else AUDIO_CSID
        self._muxer.write_message(csid, type_id, self.stream_id, timestamp & 0xFFFFFFFF,
                                  payload)

    @property
    def chunk_size(self) -> int:
        """The chunk size this side sends with (what `send_chunked`'s tails are cut at)."""
        return self._chunk_size

    @staticmethod
    def media_csid(type_id: int) -> int:
        """The chunk stream an audio (8) or video (9) message goes on."""
        return VIDEO_CSID if type_id == _VIDEO else AUDIO_CSID

    def send_chunked(self, type_id: int, timestamp: int, length: int, tail: bytes) -> bool:
        """Send an audio (8) or video (9) message of `length` bytes already cut into chunks:
        `tail` is `chunk_tail(media_csid(type_id), chunk_size, ...)` of its FLV tag body,
        shared by every connection that sends it; only the first chunk's header is this
        connection's. False (nothing sent) when the timestamp needs the extended field, which
        every chunk repeats (RTMP 5.3.1.3): `send_media` that message whole instead."""
        if self.state is not ClientState.PUBLISHING:
            self._require_publishing()
        head = self._muxer.take_with_header(VIDEO_CSID if type_id == _VIDEO else AUDIO_CSID,
                                            type_id, self.stream_id, timestamp & 0xFFFFFFFF,
                                            length)
        if head is None:
            return False
        self._pieces.append(head)
        self._pieces.append(tail)
        return True

    def send_muxed(self, frames: list[Any], start: int, offset: int, last_out: int,
                   type_mask: int, frame_type: type) -> tuple[int, int, int]:
        """Send a run of `frames[start:]` whose chunk tails are made at this chunk size
        (`relay.simulcast.fanout.MuxedFrame`, passed as `frame_type`), each at timestamp
        max(dts + offset, 0): `ChunkMuxer.append_frames`, which says where it stops and
        what it returns. The tails are not copied."""
        if self.state is not ClientState.PUBLISHING:
            self._require_publishing()
        return self._muxer.append_frames(self.stream_id, frames, start, offset, last_out,
                                         type_mask, frame_type, self._pieces)

    def unpublish(self) -> None:
        if self.state is ClientState.PUBLISHING:
            self._command(STREAM_CSID, 0, "FCUnpublish", 6.0, None, self.stream_key)
            self._command(STREAM_CSID, 0, "deleteStream", 7.0, None, float(self.stream_id))
        self.state = ClientState.CLOSED

    def _require_publishing(self) -> None:
        if self.state is not ClientState.PUBLISHING:
            raise RuntimeError(f"cannot send media in state {self.state}")

    # -- output ----------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        return b"".join(self.chunks_to_send())

    def chunks_to_send(self) -> list[bytes]:
        """What `data_to_send` returns, as the pieces it is made of (for one `writelines`,
        without joining them: a shared tail is not copied per connection)."""
        out = [bytes(self._raw)] if self._raw else []
        self._raw.clear()
        if self._pieces:
            out += self._pieces
            self._pieces = []
        if self._muxer.pending:
            out.append(self._muxer.take())
        return out

    def _command(self, csid: int, stream_id: int, name: str, txn: float,
                 *args: amf0.AmfValue) -> None:
        self._muxer.write_message(csid, MessageType.COMMAND_AMF0, stream_id, 0,
                                  amf0.encode_command(name, txn, *args))
