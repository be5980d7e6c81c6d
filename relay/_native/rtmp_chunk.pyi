"""Typed stubs for relay._native.rtmp_chunk (built from native/rtmp_chunk.pyx)."""

from typing import Any, Final, final

from typing_extensions import Buffer

__all__ = [
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_CHUNK_STREAMS",
    "MIN_CHUNK_SIZE",
    "ChunkDemuxer",
    "ChunkError",
    "ChunkMuxer",
    "MessageTooLong",
    "RtmpMessage",
    "chunk_tail",
]

DEFAULT_MAX_MESSAGE_SIZE: Final[int]
DEFAULT_MAX_BUFFERED: Final[int]
MIN_CHUNK_SIZE: Final[int]
MAX_CHUNK_SIZE: Final[int]
MAX_CHUNK_STREAMS: Final[int]

class ChunkError(ValueError):
    """The peer broke the chunk stream protocol; str(exc) is a one-line close reason naming the
    offending value."""

class MessageTooLong(ChunkError):
    """A message header declared a length over max_message_size or max_command_size."""

@final
class RtmpMessage:
    """One RTMP message (RTMP 5.1) as reassembled from its chunks."""

    def __init__(
        self, csid: int, type_id: int, timestamp: int, stream_id: int, payload: bytes
    ) -> None: ...
    @property
    def csid(self) -> int: ...
    @property
    def type_id(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def stream_id(self) -> int: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def head_len(self) -> int:
        """With split_media: the leading FLV tag header bytes not in payload (0: none)."""
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

@final
class ChunkDemuxer:
    """Reassembles RTMP messages from a peer's chunk stream (RTMP 5.3), bounded in memory."""

    #: Keep the FLV tag header of a coded frame (flv_head.pxd) out of its message's payload,
    #: when it is buffered as the message starts (relay._native.rtmp_ingest sets it).
    split_media: bool

    def __init__(
        self, *, max_message_size: int = ..., max_buffered: int = ...,
        max_command_size: int | None = None
    ) -> None: ...
    @property
    def max_message_size(self) -> int: ...
    @property
    def max_command_size(self) -> int: ...
    @property
    def max_buffered(self) -> int: ...
    def set_limits(
        self, *, max_message_size: int, max_command_size: int, max_buffered: int
    ) -> None: ...
    @property
    def chunk_size(self) -> int: ...
    @property
    def bytes_received(self) -> int: ...
    @property
    def buffered(self) -> int: ...
    @property
    def allocated(self) -> int: ...
    def get_buffer(self, sizehint: int) -> memoryview: ...
    def buffer_updated(self, nbytes: int) -> None: ...
    def feed(self, data: Buffer) -> None: ...
    def next_message(self) -> RtmpMessage | None: ...
    def release(self) -> None: ...

@final
class ChunkMuxer:
    """Cuts messages into chunks (RTMP 5.3) with the most compact header for each."""

    def __init__(self, chunk_size: int = 128) -> None: ...
    @property
    def chunk_size(self) -> int: ...
    @chunk_size.setter
    def chunk_size(self, value: int) -> None: ...
    @property
    def pending(self) -> int: ...
    def write_message(
        self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: Buffer
    ) -> None: ...
    def write_set_chunk_size(self, size: int) -> None: ...
    def take(self) -> bytes: ...
    def take_with_header(
        self, csid: int, type_id: int, stream_id: int, timestamp: int, length: int
    ) -> bytes | None: ...
    def append_frames(
        self, stream_id: int, frames: list[Any], start: int, offset: int, last_out: int,
        type_mask: int, frame_type: type, pieces: list[bytes]
    ) -> tuple[int, int, int]:
        """Send a run of frames whose chunk tails are made (relay.simulcast.fanout.MuxedFrame)
        from `start`; (where it stopped, the largest timestamp sent, message bytes sent)."""

def chunk_tail(csid: int, chunk_size: int, header: Buffer, data: Buffer) -> bytes: ...
