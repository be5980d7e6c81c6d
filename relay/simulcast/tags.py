"""Each frame's FLV tag body cut into RTMP chunks once, for every target that sends it.

The pushers of a session get their frames with the tails already made, by the session's
fan-out (`relay.simulcast.fanout`); this cache serves the frames that come another way (a
`push()` fed by a plain `MediaQueue`, a connection on another chunk size).

A frame goes to every simulcast target of its stream as the same message: the same FLV tag
body (`relay.simulcast.flv`) on the same chunk stream at the same chunk size. Only the first
chunk's header differs per connection (its timestamp, and how much of it the connection's
header compression leaves out); everything after it, the chunk payloads and the one-byte
continuation headers, is the same bytes (`relay._native.rtmp_chunk.chunk_tail`). So the
first target to send a frame makes that tail, the others find it here, and each connection
writes its own few header bytes and the shared tail, uncopied, in one `writelines`.

The cache holds the frames it has tails for (so that a frame's `id` stays its own) and is
bounded by the bytes of its tails: the targets of one stream send a frame within a wake-up
or two of each other, so a short window of recent frames is all that is shared. A target
that lags further makes its own tail again; nothing depends on a hit but the cost.
"""

from __future__ import annotations

from typing import Final

from relay._native.rtmp_chunk import chunk_tail
from relay.media.units import Codec, MediaFrame, TrackKind
from relay.simulcast import flv

#: Bytes of tails held (plus the frames they are of, which the queues hold anyway). 8 MiB is
#: ~11 s of one 6 Mbit/s stream, ~1 s of ten of them: far more than the spread between the
#: targets of a stream that keep up (a wake-up, 100 ms).
DEFAULT_MAX_BYTES: Final = 8 * 1024 * 1024


class SharedTags:
    """Chunk tails of recent frames, by frame, chunk stream and chunk size."""

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes is {max_bytes}; it must be at least 1")
        self.max_bytes = max_bytes
        # id(frame) -> (frame, csid, chunk size, body length, tail); oldest first.
        self._tails: dict[int, tuple[MediaFrame, int, int, int, bytes]] = {}
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def tail(self, frame: MediaFrame, video_codec: Codec | None, csid: int,
             chunk_size: int) -> tuple[int, bytes]:
        """(the tag body's length, its chunk tail) for `frame` on `csid` at `chunk_size`.
        Raises ValueError when the frame has no FLV form (see `flv.video_frame_header`)."""
        key = id(frame)
        entry = self._tails.get(key)
        if (entry is not None and entry[0] is frame and entry[1] == csid
                and entry[2] == chunk_size):
            self.hits += 1
            return entry[3], entry[4]
        self.misses += 1
        if frame.kind is TrackKind.AUDIO:
            header = flv.AUDIO_FRAME_HEADER
        elif video_codec is None:
            raise ValueError("a video frame without a video track configuration")
        else:
            header = flv.video_frame_header(frame, video_codec)
        length = len(header) + len(frame.data)
        tail = chunk_tail(csid, chunk_size, header, frame.data)
        if entry is not None:
            self._forget(key)
        self._tails[key] = (frame, csid, chunk_size, length, tail)
        self._bytes += len(tail)
        while self._bytes > self.max_bytes and self._tails:
            self._forget(next(iter(self._tails)))
        return length, tail

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._tails)

    def _forget(self, key: int) -> None:
        self._bytes -= len(self._tails.pop(key)[4])


#: The process's cache, shared by every pusher: frames are distinct objects, so the targets
#: of different streams never collide, and one bound covers them all.
SHARED_TAGS = SharedTags()
