"""SharedTags: a frame's chunked tag body made once for every target, bounded; and pushers
to several targets sharing it while each target still gets its own timestamps."""

from __future__ import annotations

import asyncio

import pytest

from relay._native.rtmp_chunk import ChunkMuxer
from relay.media.flv import parse_video_tag
from relay.media.units import Codec, MediaFrame, TrackKind
from relay.rtmp.client import AUDIO_CSID, VIDEO_CSID
from relay.rtmp.session import Event
from relay.simulcast import flv
from relay.simulcast.pusher import push
from relay.simulcast.tags import DEFAULT_MAX_BYTES, SharedTags
from relay.streams.queue import MediaQueue
from tests.simulcast.helpers.pusher import AUDIO, LIMITS, VIDEO, FakeTarget, gop, media_of


def frame(dts: int, size: int = 1000, key: bool = False) -> MediaFrame:
    return MediaFrame(TrackKind.VIDEO, dts, dts + 66, key, bytes([dts % 256]) * size)


def test_a_tail_is_made_once_per_frame_and_route() -> None:
    tags = SharedTags()
    assert tags.max_bytes == DEFAULT_MAX_BYTES == 8 * 1024 * 1024
    one = frame(0)
    length, tail = tags.tail(one, Codec.H264, VIDEO_CSID, 4096)
    body = flv.video_frame_tag(one, Codec.H264)
    assert length == len(body)
    # The same bytes a muxer makes after the message's first header.
    muxer = ChunkMuxer(4096)
    muxer.write_message(VIDEO_CSID, 9, 1, 0, body)
    assert muxer.take()[12:] == tail
    again = tags.tail(one, Codec.H264, VIDEO_CSID, 4096)
    assert again[1] is tail and (tags.hits, tags.misses) == (1, 1)
    # Another chunk size or chunk stream is another tail.
    assert tags.tail(one, Codec.H264, VIDEO_CSID, 128)[1] != tail
    assert tags.misses == 2 and len(tags) == 1
    # An equal frame that is another object is not taken for it.
    twin = frame(0)
    assert tags.tail(twin, Codec.H264, VIDEO_CSID, 128)[1] == tags.tail(
        one, Codec.H264, VIDEO_CSID, 128)[1]
    assert tags.misses == 3


def test_audio_and_frames_without_an_flv_form() -> None:
    tags = SharedTags()
    aac = MediaFrame(TrackKind.AUDIO, 0, 0, True, b"aac")
    assert tags.tail(aac, None, AUDIO_CSID, 4096) == (5, flv.audio_frame_tag(aac))
    with pytest.raises(ValueError, match="without a video track"):
        tags.tail(frame(0), None, VIDEO_CSID, 4096)
    with pytest.raises(ValueError, match="composition offset"):
        tags.tail(frame(0), Codec.AV1, VIDEO_CSID, 4096)


def test_the_cache_is_bounded_by_the_bytes_of_its_tails() -> None:
    tags = SharedTags(max_bytes=10_000)
    frames = [frame(dts, size=3000) for dts in range(10)]
    for item in frames:
        tags.tail(item, Codec.H264, VIDEO_CSID, 4096)
        assert tags.held_bytes <= 10_000
    assert len(tags) == 3  # the newest
    tags.tail(frames[-1], Codec.H264, VIDEO_CSID, 4096)
    assert tags.hits == 1
    tags.tail(frames[0], Codec.H264, VIDEO_CSID, 4096)
    assert tags.hits == 1  # evicted: made again
    with pytest.raises(ValueError, match="max_bytes is 0"):
        SharedTags(max_bytes=0)


def test_targets_share_each_frames_tail_and_keep_their_own_timestamps() -> None:
    """Two pushes of one stream, the second joining later: every frame's tail is made
    once, and each target gets the frames from 0 with its own timestamps, intact."""

    frames = gop(1000, 30, size=9000) + gop(2000, 30, size=9000)

    async def main() -> tuple[list[list[Event]], SharedTags]:
        tags = SharedTags()
        queues = [MediaQueue(), MediaQueue()]
        async with FakeTarget() as first, FakeTarget() as second:
            for queue in queues:
                queue.on_track(VIDEO)
                queue.on_track(AUDIO)
            pushes = [asyncio.create_task(push(target.url(), queue, ssl_context=None,
                                               on_published=lambda: None, limits=LIMITS,
                                               tags=tags))
                      for target, queue in zip((first, second), queues, strict=True)]
            for item in frames:
                for queue in queues:
                    queue.on_frame(item)
                await asyncio.sleep(0)
            for queue in queues:
                queue.on_end()
            await asyncio.gather(*pushes)
            await asyncio.sleep(0.2)
        return [first.connections[0], second.connections[0]], tags

    connections, tags = asyncio.run(main())
    for events in connections:
        video = [m for m in media_of(events) if m.type_id == 9][1:]  # after the header
        assert video and video[0].timestamp == 0
        start = 60 - len(video)  # a target may join at the second keyframe
        assert start in (0, 30)
        for index, message in enumerate(video, start):
            parsed = parse_video_tag(message.payload, message.timestamp)
            assert parsed is not None
            assert parsed.data == bytes([index % 30]) * 9000
            assert message.timestamp == frames[index].dts - frames[start].dts
    assert tags.hits >= 30 and tags.misses <= 60 + 1
