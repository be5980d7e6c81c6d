"""Typed stubs for relay._native.rtmp_ingest (built from native/rtmp_ingest.pyx)."""

from typing import final

from relay._native.rtmp_chunk import ChunkDemuxer, RtmpMessage
from relay.media.units import MediaFrame

__all__ = ["MediaIngest"]

#: A tag the fast path left to relay.media.flv: (type_id, dts, payload).
RawTag = tuple[int, int, bytes]

@final
class MediaIngest:
    """One publishing connection's timestamp timeline and FLV tag fast path."""

    def unwrap(self, raw: int) -> int: ...
    def drain(
        self, demuxer: ChunkDemuxer, limit: int
    ) -> tuple[list[MediaFrame | RawTag], RtmpMessage | None, int, bool]: ...
