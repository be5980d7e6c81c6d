"""MediaQueue: order, bounds, GOP dropping, restart, and the invariants under random input."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.media.units import AudioConfig, Codec, MediaFrame, TrackKind, VideoConfig
from relay.streams.queue import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FRAMES,
    Discontinuity,
    EndOfStream,
    MediaQueue,
    QueueDrops,
    QueueItem,
)
from tests.streams.helpers.queue import AUDIO_CONFIG, VIDEO_CONFIG, audio, video

VIDEO_CONFIG_2 = VideoConfig(Codec.H264, b"avcC-2", 640, 360, "avc1.64001f", 30.0)


def drain(queue: MediaQueue) -> list[QueueItem]:
    items = []
    while (item := queue.get_nowait()) is not None:
        items.append(item)
        if isinstance(item, EndOfStream):
            break
    return items


def test_defaults_are_named() -> None:
    queue = MediaQueue()
    assert (queue.max_bytes, queue.max_frames) == (DEFAULT_MAX_BYTES, DEFAULT_MAX_FRAMES)
    assert DEFAULT_MAX_BYTES == 8 * 1024 * 1024 and DEFAULT_MAX_FRAMES == 2000
    with pytest.raises(ValueError, match="max_frames is 3"):
        MediaQueue(max_frames=3)


def test_order_is_kept_and_frames_are_not_copied() -> None:
    queue = MediaQueue()
    sent: list[QueueItem] = [VIDEO_CONFIG, AUDIO_CONFIG, video(0, True), audio(0),
                             video(33), Discontinuity(), video(1000, True), EndOfStream()]
    queue.on_track(VIDEO_CONFIG)
    queue.on_track(AUDIO_CONFIG)
    for item in sent[2:5]:
        assert isinstance(item, MediaFrame)
        queue.on_frame(item)
    queue.on_discontinuity()
    frame = sent[6]
    assert isinstance(frame, MediaFrame)
    queue.on_frame(frame)
    queue.on_end()
    got = drain(queue)
    assert got == sent
    assert got[2] is sent[2] and got[6] is sent[6]  # the same objects: no copy
    assert got[2].data is sent[2].data  # type: ignore[union-attr]
    # After the end, the end again; the sink ignores anything late.
    queue.on_frame(video(2000, True))
    assert queue.get_nowait() == EndOfStream() and len(queue) == 0


def test_get_waits_with_one_waiter() -> None:
    async def main() -> None:
        queue = MediaQueue()
        getter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already being awaited"):
            await queue.get()
        queue.on_track(VIDEO_CONFIG)
        assert await getter == VIDEO_CONFIG
        getter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        queue.on_end()
        assert await getter == EndOfStream()
        assert await queue.get() == EndOfStream()

    asyncio.run(main())


def test_a_cancelled_get_leaves_no_waiter() -> None:
    async def main() -> None:
        queue = MediaQueue()
        getter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        getter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await getter
        queue.on_frame(audio(0))
        assert await queue.get() == audio(0)

    asyncio.run(main())


def test_full_queue_drops_the_head_gop_and_resumes_on_a_keyframe() -> None:
    queue = MediaQueue(max_bytes=1000, max_frames=100)
    queue.on_track(VIDEO_CONFIG)
    gop1 = [video(0, True), video(33), video(66)]
    gop2 = [video(100, True), video(133), video(166)]
    for frame in gop1 + gop2:
        queue.on_frame(frame)
    assert queue.queued_bytes == 600
    more = [video(200, True, size=300), video(233, size=200)]
    for frame in more:
        queue.on_frame(frame)
    # 600 + 300 fits; + 200 does not: GOP 1 goes (300 bytes), the config stays.
    assert (queue.dropped_frames, queue.dropped_bytes, queue.dropped_gops) == (3, 300, 1)
    assert queue.queued_bytes <= 1000
    assert drain(queue) == [VIDEO_CONFIG, *gop2, *more]


def test_no_later_keyframe_drops_everything_then_waits_for_one() -> None:
    queue = MediaQueue(max_bytes=500, max_frames=100)
    queue.on_track(VIDEO_CONFIG)
    queue.on_track(AUDIO_CONFIG)
    frames = [video(0, True), audio(10), video(33), video(66), video(99)]
    for frame in frames:
        queue.on_frame(frame)
    queue.on_frame(video(132))  # 510 bytes: over, and no keyframe after the head
    assert queue.queued_frames == 0 and queue.dropped_frames == 6
    assert queue.dropped_gops == 1
    # Until a video keyframe, frames of both tracks are refused.
    queue.on_frame(audio(140))
    queue.on_frame(video(165))
    assert queue.queued_frames == 0 and queue.dropped_frames == 8
    key = video(200, True)
    queue.on_frame(key)
    queue.on_frame(audio(210))
    assert drain(queue) == [VIDEO_CONFIG, AUDIO_CONFIG, key, audio(210)]
    assert queue.dropped_bytes == 100 * 5 + 10 + 10 + 100


def test_audio_only_drops_one_frame_at_a_time() -> None:
    queue = MediaQueue(max_bytes=50, max_frames=100)
    queue.on_track(AUDIO_CONFIG)
    for dts in range(0, 100, 10):
        queue.on_frame(audio(dts))
    assert queue.dropped_frames == 5 and queue.dropped_gops == 5
    assert drain(queue) == [AUDIO_CONFIG, *(audio(dts) for dts in range(50, 100, 10))]


def test_frame_bound_drops_gops_too() -> None:
    queue = MediaQueue(max_frames=16)
    queue.on_track(VIDEO_CONFIG)
    for dts in range(40):
        queue.on_frame(video(dts, key=dts % 5 == 0, size=1))
        assert len(queue) <= 16
    items = drain(queue)
    assert items[0] == VIDEO_CONFIG
    first = items[1]
    assert isinstance(first, MediaFrame) and first.keyframe
    assert [f.dts for f in items[1:] if isinstance(f, MediaFrame)] == list(
        range(first.dts, 40))


def test_a_frame_over_the_whole_bound_is_dropped_with_its_gop() -> None:
    queue = MediaQueue(max_bytes=100, max_frames=100)
    queue.on_track(VIDEO_CONFIG)
    queue.on_frame(video(0, True, size=50))
    queue.on_frame(video(33, True, size=101))
    queue.on_frame(video(66, size=10))
    assert queue.queued_frames == 0 and queue.dropped_frames == 3
    queue.on_frame(video(99, True, size=10))
    assert drain(queue) == [VIDEO_CONFIG, video(99, True, size=10)]


def test_configs_and_discontinuities_in_a_dropped_range_survive_coalesced() -> None:
    queue = MediaQueue(max_bytes=300, max_frames=100)
    queue.on_track(VIDEO_CONFIG)
    queue.on_frame(video(0, True))
    queue.on_discontinuity()
    queue.on_track(VIDEO_CONFIG_2)
    queue.on_frame(video(33))
    queue.on_track(AUDIO_CONFIG)
    queue.on_discontinuity()
    queue.on_frame(video(66, True))
    queue.on_frame(video(99, True))  # over: the first GOP (2 frames) goes
    assert drain(queue) == [Discontinuity(), VIDEO_CONFIG_2, AUDIO_CONFIG, video(66, True),
                            video(99, True)]


def test_a_start_mid_gop_skips_to_a_keyframe_without_counting_drops() -> None:
    drops = QueueDrops()
    queue = MediaQueue(drops=drops)  # attached while the stream is live, mid-GOP
    queue.on_track(VIDEO_CONFIG)
    queue.on_track(AUDIO_CONFIG)
    for frame in (video(33), audio(40), video(66)):
        queue.on_frame(frame)
    key = video(100, True)
    queue.on_frame(key)
    assert drain(queue) == [VIDEO_CONFIG, AUDIO_CONFIG, key]
    assert (queue.skipped_frames, queue.dropped_frames, queue.dropped_bytes) == (3, 0, 0)
    assert (drops.frames, drops.gops) == (0, 0)
    # After the start, a frame refused while awaiting a keyframe is a drop again.
    queue.on_frame(video(2000, True, size=DEFAULT_MAX_BYTES + 1))
    queue.on_frame(video(2033))
    assert (queue.skipped_frames, queue.dropped_frames, drops.frames) == (3, 2, 2)


def test_restart_yields_current_configs_then_a_keyframe() -> None:
    queue = MediaQueue()
    queue.on_track(VIDEO_CONFIG)
    queue.on_track(AUDIO_CONFIG)
    queue.on_frame(video(0, True))
    assert drain(queue)[:3] == [VIDEO_CONFIG, AUDIO_CONFIG, video(0, True)]
    # Mid-GOP: the consumer reconnects.
    queue.on_frame(video(33))
    queue.on_frame(audio(40))
    queue.on_discontinuity()
    queue.on_track(VIDEO_CONFIG_2)
    queue.on_frame(video(66))
    queue.on_frame(video(100, True))
    queue.on_frame(audio(110))
    queue.restart()
    assert queue.dropped_frames == 3
    assert drain(queue) == [VIDEO_CONFIG_2, AUDIO_CONFIG, video(100, True), audio(110)]
    # Nothing queued at a restart: the configs, then the next keyframe on.
    queue.on_frame(video(133))
    queue.restart()
    queue.on_frame(audio(140))
    queue.on_frame(video(166))
    queue.on_frame(video(200, True))
    assert drain(queue) == [VIDEO_CONFIG_2, AUDIO_CONFIG, video(200, True)]


def test_restart_before_any_config_and_after_the_end() -> None:
    queue = MediaQueue()
    queue.restart()
    assert drain(queue) == []
    queue.on_track(AUDIO_CONFIG)
    queue.on_frame(audio(0))
    queue.on_end()
    queue.restart()
    assert drain(queue) == [AUDIO_CONFIG, audio(0), EndOfStream()]


# -- invariants under random input ------------------------------------------------------

Op = tuple[str, int, bool, int]  # (kind, dts step, keyframe, size)


@st.composite
def operations(draw: st.DrawFn) -> list[Op]:
    return draw(st.lists(st.tuples(
        st.sampled_from(["video", "video", "video", "audio", "audio", "vconfig", "aconfig",
                         "disc", "get", "restart"]),
        st.integers(0, 50), st.booleans(), st.integers(1, 400)), max_size=300))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations(), st.integers(200, 3000), st.integers(16, 40), st.booleans())
def test_invariants_hold_for_any_sequence(ops: list[Op], max_bytes: int, max_frames: int,
                                          audio_only: bool) -> None:
    """Bounds always hold; every frame is delivered or counted as dropped or, before the
    consumer's first frame, as skipped; the consumer's
    frames come in order and, after a drop or a restart, resume on a keyframe with the
    configurations it needs."""
    queue = MediaQueue(max_bytes=max_bytes, max_frames=max_frames)
    dts = 0
    pushed_frames = pushed_bytes = 0
    delivered: list[QueueItem] = []
    need_resume = True  # the consumer's next frame must be a resumption point
    configs_seen: set[TrackKind] = set()
    has_video = False
    announced: set[TrackKind] = set()  # the hub passes frames only after their config
    resumable: dict[int, bool] = {}
    pushed: list[MediaFrame] = []  # keeps the ids above unique

    def take(item: QueueItem) -> None:
        nonlocal need_resume
        delivered.append(item)
        if isinstance(item, MediaFrame):
            assert item.kind in configs_seen, "a frame before its track's configuration"
            if need_resume:
                # (whether a frame is a resumption point is judged when it arrives: an
                # audio frame of a stream that has no video yet is one)
                assert resumable[id(item)], f"resumed on {item}"
                need_resume = False
        elif isinstance(item, VideoConfig | AudioConfig):
            configs_seen.add(TrackKind.VIDEO if isinstance(item, VideoConfig)
                             else TrackKind.AUDIO)

    for kind, step, key, size in ops:
        dropped_before = queue.dropped_frames
        if kind in ("video", "audio"):
            if (TrackKind.VIDEO if kind == "video" else TrackKind.AUDIO) not in announced:
                continue
            dts += step
            frame = (video(dts, key, size) if kind == "video" else audio(dts, size))
            pushed_frames += 1
            pushed_bytes += size
            pushed.append(frame)
            resumable[id(frame)] = frame.keyframe and (kind == "video" or not has_video)
            queue.on_frame(frame)
        elif kind == "vconfig" and not audio_only:
            has_video = True
            announced.add(TrackKind.VIDEO)
            queue.on_track(VIDEO_CONFIG if key else VIDEO_CONFIG_2)
        elif kind == "aconfig":
            announced.add(TrackKind.AUDIO)
            queue.on_track(AUDIO_CONFIG)
        elif kind == "disc":
            queue.on_discontinuity()
        elif kind == "get":
            for _ in range(step % 5):
                item = queue.get_nowait()
                if item is None:
                    break
                take(item)
        elif kind == "restart":
            queue.restart()
            need_resume = True
            configs_seen.clear()
        if queue.dropped_frames != dropped_before:
            need_resume = True
        assert queue.queued_bytes <= max_bytes
        assert len(queue) <= max_frames
        assert queue.queued_bytes == sum(
            len(i.data) for i in queue._items if isinstance(i, MediaFrame))
    queue.on_end()
    while not isinstance(item := queue.get_nowait(), EndOfStream):
        assert item is not None
        take(item)
    frames = [i for i in delivered if isinstance(i, MediaFrame)]
    assert len(frames) + queue.dropped_frames + queue.skipped_frames == pushed_frames
    skipped = pushed[:queue.skipped_frames]  # the frames before the first one queued
    assert sum(len(f.data) for f in frames) + queue.dropped_bytes + sum(
        len(f.data) for f in skipped) == pushed_bytes
    assert [f.dts for f in frames] == sorted(f.dts for f in frames)


def test_a_consumer_that_never_reads_stays_within_the_bound() -> None:
    """An hour of 6 Mbit/s video and audio into a queue nobody reads."""
    queue = MediaQueue()
    queue.on_track(VIDEO_CONFIG)
    queue.on_track(AUDIO_CONFIG)
    payload = bytes(25_000)  # one 6 Mbit/s frame at 30 fps; shared: no memory per frame
    for n in range(30 * 3600 // 10):  # 6 minutes of frames is enough to be periodic
        queue.on_frame(MediaFrame(TrackKind.VIDEO, n * 33, n * 33, n % 60 == 0, payload))
        queue.on_frame(MediaFrame(TrackKind.AUDIO, n * 33, n * 33, True, payload[:300]))
        assert queue.queued_bytes <= DEFAULT_MAX_BYTES
        assert len(queue) <= DEFAULT_MAX_FRAMES
    assert queue.dropped_gops > 0 and queue.dropped_frames > 0


def test_a_batching_queue_wakes_its_consumer_on_time_or_size() -> None:
    """With batch_delay and batch_bytes, a waiting get() returns once the bytes are queued
    or the delay after the first item has passed; the end wakes it at once."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        queue = MediaQueue(batch_delay=0.05, batch_bytes=1000)
        queue.on_track(VIDEO_CONFIG)
        assert await queue.get() == VIDEO_CONFIG  # queued before the wait: no delay
        # Time: one small frame waits for the delay.
        getter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        began = loop.time()
        queue.on_frame(video(0, True))
        queue.on_frame(video(33))
        await asyncio.sleep(0.01)
        assert not getter.done()
        assert await getter == video(0, True)
        assert loop.time() - began >= 0.04
        assert queue.get_nowait() == video(33)
        # Size: reaching batch_bytes wakes it at once (and the timer is dropped).
        getter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        queue.on_frame(video(66, size=600))
        await asyncio.sleep(0)
        assert not getter.done()
        queue.on_frame(video(99, size=600))
        await asyncio.sleep(0)
        assert getter.done() and getter.result() == video(66, size=600)
        assert queue._timer is None
        queue.get_nowait()
        # The end: at once.
        getter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        queue.on_frame(video(133))
        queue.on_end()
        await asyncio.sleep(0)
        assert getter.done() and getter.result() == video(133)
        with pytest.raises(ValueError, match="batch_delay is -1"):
            MediaQueue(batch_delay=-1)

    asyncio.run(main())


def test_get_frames_takes_the_run_of_frames_at_the_head() -> None:
    """Up to the first other item, while less than max_bytes are taken (so at least one
    frame), with the queue's counts kept."""
    queue = MediaQueue()
    queue.on_track(VIDEO_CONFIG)
    frames = [video(0, True, size=400), video(33, size=400), video(66, size=400)]
    for frame in frames[:2]:
        queue.on_frame(frame)
    queue.on_discontinuity()
    queue.on_frame(frames[2])
    assert queue.get_frames(10_000) == []  # the configuration comes first
    assert queue.get_nowait() == VIDEO_CONFIG
    assert queue.get_frames(1) == frames[:1]  # at least one
    assert (queue.queued_frames, queue.queued_bytes) == (2, 800)
    assert queue.get_frames(10_000) == frames[1:2]  # not past the discontinuity
    assert isinstance(queue.get_nowait(), Discontinuity)
    assert queue.get_frames(10_000) == frames[2:]
    assert (queue.queued_frames, queue.queued_bytes, len(queue)) == (0, 0, 0)
