"""The RTMP chunk demuxer (native/rtmp_chunk.pyx `ChunkDemuxer`), fed in fuzzer-chosen splits.

Input: `common.split_input` layout. Flag bit 0 selects small limits (so the max_message_size
and max_buffered refusals are reached with short inputs) instead of the production defaults;
bit 1 hands the pieces in through get_buffer()/buffer_updated() (the asyncio path) instead
of feed(). The same stream is also fed whole to a second demuxer.

Allowed: `ChunkError`. Findings: any other exception; a message over max_message_size;
`buffered` over max_buffered; a chunk size outside 128..65536; a demuxer that does not keep
failing after a protocol error (input refused for max_buffered changes nothing, by design);
memory left after release(); and a split that changes the messages or the error (except a
max_buffered refusal, which depends on how much arrives at once).
"""

from __future__ import annotations

from dataclasses import dataclass

from fuzz.common import Finding, copy_in, pieces, split_input
from relay._native.rtmp_chunk import (
    DEFAULT_MAX_BUFFERED,
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    ChunkDemuxer,
    ChunkError,
)

SMALL_MAX_MESSAGE_SIZE = 4096
SMALL_MAX_BUFFERED = 8192

Message = tuple[int, int, int, int, bytes]


@dataclass
class Outcome:
    messages: list[Message]
    error: str | None


def _demux(stream_pieces: list[bytes], max_message: int, max_buffered: int,
           via_buffer: bool) -> Outcome:
    demuxer = ChunkDemuxer(max_message_size=max_message, max_buffered=max_buffered)
    messages: list[Message] = []
    error: str | None = None
    try:
        for piece in stream_pieces:
            try:
                if via_buffer:
                    copy_in(demuxer.get_buffer, demuxer.buffer_updated, piece)
                else:
                    demuxer.feed(piece)
            except ChunkError as exc:
                # Input over max_buffered is refused and changes nothing (the server closes
                # the connection); the demuxer itself has not failed.
                error = str(exc)
                break
            while (message := demuxer.next_message()) is not None:
                if len(message.payload) > max_message:
                    raise Finding(f"message of {len(message.payload)} bytes passed "
                                  f"max_message_size={max_message}")
                messages.append((message.csid, message.type_id, message.timestamp,
                                 message.stream_id, message.payload))
            if demuxer.buffered > max_buffered:
                raise Finding(f"buffered {demuxer.buffered} > max_buffered {max_buffered}")
            if not MIN_CHUNK_SIZE <= demuxer.chunk_size <= MAX_CHUNK_SIZE:
                raise Finding(f"chunk size {demuxer.chunk_size} accepted")
    except ChunkError as exc:
        # A protocol error: the demuxer stays failed.
        error = str(exc)
        try:
            demuxer.next_message()
        except ChunkError:
            pass
        else:
            raise Finding("a failed demuxer returned from next_message()") from None
    demuxer.release()
    if demuxer.allocated != 0 or demuxer.buffered != 0:
        raise Finding(f"release() left {demuxer.allocated} bytes allocated, "
                      f"{demuxer.buffered} buffered")
    return Outcome(messages, error)


def check(data: bytes) -> None:
    flags, lengths, stream = split_input(data)
    small = bool(flags & 1)
    max_message = SMALL_MAX_MESSAGE_SIZE if small else DEFAULT_MAX_MESSAGE_SIZE
    max_buffered = SMALL_MAX_BUFFERED if small else DEFAULT_MAX_BUFFERED
    split = _demux(list(pieces(stream, lengths)), max_message, max_buffered, bool(flags & 2))
    whole = _demux([stream] if stream else [], max_message, max_buffered, False)
    if "max_buffered" in (split.error or "") + (whole.error or ""):
        shorter, longer = sorted((split.messages, whole.messages), key=len)
        if longer[: len(shorter)] != shorter:
            raise Finding("the split changed the messages before a max_buffered refusal")
        return
    if split.messages != whole.messages:
        raise Finding(f"the split changed the messages: {len(split.messages)} in pieces, "
                      f"{len(whole.messages)} whole")
    if split.error != whole.error:
        raise Finding(f"the split changed the error: {split.error!r} vs {whole.error!r}")
