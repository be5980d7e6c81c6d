"""SimulcastFanOut and the batch path of a pusher: each frame made ready once (MuxedFrame),
a run of them sent with one native call (ChunkMuxer.append_frames) as the same bytes as the
message-by-message muxer, the target queues of a session woken together (BatchClock), and a
pusher fed by its queue's pump."""

from __future__ import annotations

import asyncio

import pytest

from relay._native.rtmp_chunk import ChunkDemuxer, ChunkMuxer
from relay.media.flv import parse_video_tag
from relay.media.units import Codec, MediaFrame, TrackKind, VideoConfig
from relay.rtmp.client import AUDIO_CSID, DEFAULT_CHUNK_SIZE, VIDEO_CSID
from relay.rtmp.session import Event
from relay.simulcast import flv
from relay.simulcast.fanout import FANOUT_CHUNK_SIZE, MuxedFrame, SimulcastFanOut, muxed
from relay.simulcast.pusher import DISCONTINUITY_GAP_MS, PushStats, push
from relay.streams.queue import BatchClock, MediaQueue
from tests.simulcast.helpers.pusher import AUDIO, LIMITS, VIDEO, FakeTarget, gop, media_of

ALL_TYPES = 1 << 8 | 1 << 9


def frames_of_a_stream() -> list[MediaFrame]:
    """Video with composition offsets (sizes over and under the chunk size) and audio, with
    an audio frame a little older than the video before it."""
    out: list[MediaFrame] = []
    for index in range(12):
        dts = 1000 + index * 33
        size = 9000 if index % 4 == 0 else 700 + index
        out.append(MediaFrame(TrackKind.VIDEO, dts, dts + 66 * (index % 3), index % 6 == 0,
                              bytes([index]) * size))
        out.append(MediaFrame(TrackKind.AUDIO, dts - 5, dts - 5, True, bytes([index]) * 300))
    return out


def ready_of(frame: MediaFrame, codec: Codec | None) -> MuxedFrame:
    ready = muxed(frame, codec)
    assert isinstance(ready, MuxedFrame)
    return ready


def demux(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """The messages of chunks cut at DEFAULT_CHUNK_SIZE."""
    announce = ChunkMuxer()
    announce.write_set_chunk_size(DEFAULT_CHUNK_SIZE)
    demuxer = ChunkDemuxer()
    demuxer.feed(announce.take() + data)
    assert demuxer.next_message() is not None  # the Set Chunk Size
    messages = []
    while (message := demuxer.next_message()) is not None:
        messages.append((message.csid, message.type_id, message.timestamp, message.payload))
    return messages


def test_a_run_of_muxed_frames_is_the_bytes_the_muxer_makes_one_by_one() -> None:
    """append_frames == write_message of each frame's whole tag body: the same headers
    (their compression across audio and video), the same chunking, timestamps
    max(dts + offset, 0), and the tails handed over uncopied."""
    frames = [ready_of(frame, Codec.H264) for frame in frames_of_a_stream()]
    offset = -1000 + 3  # the first audio frame (1000 - 5 + offset) is clamped to 0
    slow = ChunkMuxer(DEFAULT_CHUNK_SIZE)
    for frame in frames:
        body = flv.frame_tag(frame, Codec.H264)
        slow.write_message(VIDEO_CSID if frame.kind is TrackKind.VIDEO else AUDIO_CSID,
                           9 if frame.kind is TrackKind.VIDEO else 8, 1,
                           max(frame.dts + offset, 0), body)
    expected = slow.take()
    fast = ChunkMuxer(DEFAULT_CHUNK_SIZE)
    pieces: list[bytes] = []
    stop, last_out, sent = fast.append_frames(1, frames, 0, offset, 0, ALL_TYPES, MuxedFrame,
                                              pieces)
    pieces.append(fast.take())
    assert stop == len(frames)
    assert last_out == max(frame.dts for frame in frames) + offset
    assert sent == sum(frame.length for frame in frames)
    assert b"".join(pieces) == expected
    # The big tails are the fan-out's own objects, not copies.
    big = {id(frame.tail) for frame in frames if len(frame.tail) >= 2048}
    assert big and big <= {id(piece) for piece in pieces}
    messages = demux(expected)
    assert [m[2] for m in messages] == [max(f.dts + offset, 0) for f in frames]
    assert messages[0][3] == flv.frame_tag(frames[0], Codec.H264)


def test_a_run_stops_where_the_slow_path_must_take_over() -> None:
    video = ready_of(MediaFrame(TrackKind.VIDEO, 0, 0, True, b"v" * 100), Codec.H264)
    audio = ready_of(MediaFrame(TrackKind.AUDIO, 10, 10, True, b"a" * 10), None)
    plain = MediaFrame(TrackKind.VIDEO, 20, 20, False, b"p")
    late = ready_of(MediaFrame(TrackKind.VIDEO, 0xFFFFFF, 0xFFFFFF, False, b"x"),
                    Codec.H264)
    muxer = ChunkMuxer(DEFAULT_CHUNK_SIZE)
    pieces: list[bytes] = []
    # A frame that is not a MuxedFrame.
    assert muxer.append_frames(1, [video, plain, audio], 0, 0, 0, ALL_TYPES, MuxedFrame,
                               pieces)[0] == 1
    # A type outside the mask (its track has no configuration on this connection).
    assert muxer.append_frames(1, [video, audio], 0, 0, 0, 1 << 9, MuxedFrame, pieces)[0] == 1
    # A timestamp that needs the extended field (each chunk repeats it): not a shared tail.
    assert muxer.append_frames(1, [video, late], 0, 0, 0, ALL_TYPES, MuxedFrame,
                               pieces)[0] == 1
    assert muxer.append_frames(1, [video, audio], 1, 0, 7, ALL_TYPES, MuxedFrame,
                               pieces) == (2, 10, audio.length)
    with pytest.raises(ValueError, match="start"):
        muxer.append_frames(1, [video], -1, 0, 0, ALL_TYPES, MuxedFrame, pieces)


def test_the_fan_out_makes_each_frame_once_for_every_queue() -> None:
    queues = [MediaQueue(), MediaQueue()]
    fan_out = SimulcastFanOut(queues)
    fan_out.on_track(VIDEO)
    fan_out.on_track(AUDIO)
    source = MediaFrame(TrackKind.VIDEO, 0, 66, True, b"\x00" * 5000)
    fan_out.on_frame(source)
    for queue in queues:
        assert [queue.get_nowait(), queue.get_nowait()] == [VIDEO, AUDIO]
    first, second = (queue.get_frames(1 << 20) for queue in queues)
    assert first == second and first[0] is second[0]
    ready = first[0]
    assert isinstance(ready, MuxedFrame) and ready.data is source.data
    assert (ready.kind, ready.dts, ready.pts, ready.keyframe) == (TrackKind.VIDEO, 0, 66, True)
    body = flv.video_frame_tag(source, Codec.H264)
    muxer = ChunkMuxer(FANOUT_CHUNK_SIZE)
    muxer.write_message(VIDEO_CSID, 9, 1, 0, body)
    assert (ready.type_id, ready.csid, ready.length) == (9, VIDEO_CSID, len(body))
    assert muxer.take()[12:] == ready.tail
    # No FLV form (AV1 carries no composition offset): the frame as it is, for the pusher
    # to skip and count.
    av1 = VideoConfig(Codec.AV1, b"\x81", 320, 240, "av01", 30.0)
    fan_out.on_track(av1)
    odd = MediaFrame(TrackKind.VIDEO, 33, 99, False, b"x")
    fan_out.on_frame(odd)
    for queue in queues:
        assert queue.get_nowait() == av1
        assert queue.get_frames(1 << 20) == [odd]
    fan_out.on_discontinuity()
    fan_out.on_end()
    assert all(len(queue) == 2 for queue in queues)  # the marker and the end


def test_queues_on_one_clock_wake_together_on_media_after_the_delay() -> None:
    """No timer of its own per queue: the first item after the delay wakes every queue of
    the batch (in a callback after the hub's call); a timer only when no media follows."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        clock = BatchClock(0.05)
        queues = [MediaQueue(batch_delay=1.0, batch_bytes=1 << 20, clock=clock)
                  for _ in range(2)]
        assert all(queue.batch_delay == 0.05 for queue in queues)
        pumped: list[int] = []
        queues[0].set_pump(lambda: pumped.append(len(queues[0].get_frames(1 << 20))))
        getter = asyncio.create_task(queues[1].get())
        await asyncio.sleep(0)
        for queue in queues:
            queue.on_frame(gop(0, 1)[0])
        await asyncio.sleep(0.01)
        assert pumped == [] and not getter.done()
        await asyncio.sleep(0.05)
        assert pumped == [] and not getter.done()  # due, but no media has come since
        for queue in queues:
            queue.on_frame(gop(100, 2)[1])
            assert pumped == []  # never inside the hub's call
        await asyncio.sleep(0)
        assert pumped == [2]
        await asyncio.sleep(0)  # the getter's task runs after its future's callback
        assert getter.done()
        assert queues[1].get_nowait() is not None
        # No media after the first: the fallback timer, FALLBACK_FACTOR x the delay.
        getter = asyncio.create_task(queues[1].get())
        await asyncio.sleep(0)
        began = loop.time()
        for queue in queues:
            queue.on_frame(gop(200, 1)[0])
        await getter
        assert loop.time() - began >= 0.05 * BatchClock.FALLBACK_FACTOR - 0.01
        assert pumped == [2, 1]
        # Bytes and the end wake at once (the pump in the next callback).
        queues[0].on_end()
        assert pumped == [2, 1]
        await asyncio.sleep(0)
        assert pumped == [2, 1, 0]
        queues[0].set_pump(None)
        with pytest.raises(ValueError, match="delay is 0"):
            BatchClock(0)

    asyncio.run(main())


def test_targets_behind_a_fan_out_get_every_frame_with_their_own_timestamps() -> None:
    """Two pushes fed by a fan-out on one clock, the second joining later, with a
    discontinuity: each starts at 0 on a keyframe, the frames arrive intact, and time goes
    on DISCONTINUITY_GAP_MS after the last frame across the source's jump back."""
    first_gops = gop(1000, 30, size=9000) + gop(2000, 30, size=9000)
    after = gop(500, 30, size=5000)  # the source's clock went back

    async def main() -> tuple[list[list[Event]], list[PushStats]]:
        clock = BatchClock(0.02)
        queues = [MediaQueue(batch_delay=0.02, batch_bytes=256 * 1024, clock=clock)
                  for _ in range(2)]
        fan_out = SimulcastFanOut(queues)
        stats = [PushStats(), PushStats()]
        async with FakeTarget() as first, FakeTarget() as second:
            fan_out.on_track(VIDEO)
            fan_out.on_track(AUDIO)
            pushes = [asyncio.create_task(push(target.url(), queue, ssl_context=None,
                                               on_published=lambda: None, limits=LIMITS,
                                               stats=count))
                      for target, queue, count in zip((first, second), queues, stats,
                                                      strict=True)]
            for index, item in enumerate(first_gops):
                fan_out.on_frame(item)
                fan_out.on_frame(MediaFrame(TrackKind.AUDIO, item.dts, item.dts, True,
                                            b"\xaa" * 300))
                await asyncio.sleep(0.002 if index < 45 else 0)
            fan_out.on_discontinuity()
            for item in after:
                fan_out.on_frame(item)
                await asyncio.sleep(0.002)
            fan_out.on_end()
            await asyncio.gather(*pushes)
            await asyncio.sleep(0.2)
        return [first.connections[0], second.connections[0]], stats

    connections, stats = asyncio.run(main())
    frames = first_gops + after
    for events, count in zip(connections, stats, strict=True):
        media = media_of(events)
        video = [m for m in media if m.type_id == 9][1:]  # after the sequence header
        assert video and video[0].timestamp == 0
        start = len(frames) - len(video)
        assert start in (0, 30)
        previous = -1
        for index, message in enumerate(video, start):
            parsed = parse_video_tag(message.payload, message.timestamp)
            assert isinstance(parsed, MediaFrame) and parsed.data == frames[index].data
            assert parsed.pts - parsed.dts == frames[index].pts - frames[index].dts
            assert message.timestamp > previous
            previous = message.timestamp
        jump = len(first_gops) - start  # the first frame after the discontinuity
        last_before = max(m.timestamp for m in media[:media.index(video[jump])])
        assert video[jump].timestamp == last_before + DISCONTINUITY_GAP_MS
        audio = [m for m in media if m.type_id == 8][1:]
        assert audio and all(m.payload == flv.AUDIO_FRAME_HEADER + b"\xaa" * 300
                             for m in audio)
        assert count.frames_sent == len(video) + len(audio) and count.frames_skipped == 0
