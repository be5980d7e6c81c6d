"""The one sink of a session for all its simulcast targets: each frame made ready to send once.

Every target of a stream sends a frame as the same RTMP message: the same FLV tag body
(`relay.simulcast.flv`) cut into chunks on the same chunk stream at the same chunk size. Only
the first chunk's header differs per connection (its timestamp, and how much of it the
connection's header compression leaves out); everything after it, the chunk payloads and
the one-byte continuation headers, is the same bytes (`relay._native.rtmp_chunk.chunk_tail`).
So the hub hands a frame to the fan-out once, the fan-out makes that tail once (a
`MuxedFrame`: the frame plus its message's type, chunk stream, length and tail) and hands
the same object to every target's bounded queue; a pusher then writes a run of them with
one native call (`ChunkMuxer.append_frames`: its own headers, the shared tails uncopied).

The queues are the hub's `MediaSink`s in all but name: they keep their bounds and GOP
dropping (a `MuxedFrame` is a `MediaFrame`; its `data` is the frame's, not a copy). A frame
with no FLV form (an out-of-range composition offset, video before its configuration) goes
to the queues as it is, and the pusher skips and counts it as before.

Memory: a tail is a copy of its frame's data with a byte per 4 KiB chunk, held while some
target's queue holds the frame: at most about `TARGET_QUEUE_MAX_BYTES` per session more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from relay._native.rtmp_chunk import chunk_tail
from relay.media.units import Codec, MediaFrame, TrackConfig, TrackKind, VideoConfig
from relay.rtmp.client import DEFAULT_CHUNK_SIZE, ClientSession
from relay.rtmp.messages import MessageType
from relay.simulcast import flv
from relay.streams.hub import MediaSink

_VIDEO = int(MessageType.VIDEO)
_AUDIO = int(MessageType.AUDIO)
_VIDEO_CSID = ClientSession.media_csid(_VIDEO)
_AUDIO_CSID = ClientSession.media_csid(_AUDIO)

#: The chunk size the tails are cut at: the one Relay's pushers send with (a pusher on
#: another size sends the frame the slow way).
FANOUT_CHUNK_SIZE = DEFAULT_CHUNK_SIZE


@dataclass(frozen=True, slots=True, eq=False)
class MuxedFrame(MediaFrame):
    """A frame with its RTMP message ready for every target (see the module's docstring)."""

    #: RTMP message type (8 audio, 9 video) and the chunk stream the client sends it on.
    type_id: int
    csid: int
    #: The message's length: its FLV tag body's.
    length: int
    #: The body cut into chunks at FANOUT_CHUNK_SIZE without the first chunk's header.
    tail: bytes = field(repr=False)


class SimulcastFanOut:
    """A session's `MediaSink` for its simulcast targets' queues."""

    def __init__(self, queues: Sequence[MediaSink]) -> None:
        self.queues = list(queues)
        self._video_codec: Codec | None = None

    def on_track(self, config: TrackConfig) -> None:
        if isinstance(config, VideoConfig):
            self._video_codec = config.codec
        for queue in self.queues:
            queue.on_track(config)

    def on_frame(self, frame: MediaFrame) -> None:
        ready = muxed(frame, self._video_codec)
        for queue in self.queues:
            queue.on_frame(ready)

    def on_discontinuity(self) -> None:
        for queue in self.queues:
            queue.on_discontinuity()

    def on_end(self) -> None:
        for queue in self.queues:
            queue.on_end()


def muxed(frame: MediaFrame, video_codec: Codec | None) -> MediaFrame:
    """`frame` as a `MuxedFrame`, or as it is when it has no FLV form (see the module)."""
    if frame.kind is TrackKind.AUDIO:
        header = flv.AUDIO_FRAME_HEADER
        type_id, csid = _AUDIO, _AUDIO_CSID
    else:
        if video_codec is None:
            return frame
        try:
            header = flv.video_frame_header(frame, video_codec)
        except ValueError:
            return frame
        type_id, csid = _VIDEO, _VIDEO_CSID
    try:
        tail = chunk_tail(csid, FANOUT_CHUNK_SIZE, header, frame.data)
    except ValueError:  # over RTMP's 24-bit message length: the pusher says why
        return frame
    return MuxedFrame(frame.kind, frame.dts, frame.pts, frame.keyframe, frame.data,
                      type_id, csid, len(header) + len(frame.data), tail)
