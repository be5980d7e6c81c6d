"""push(): URL parsing, error classes, flow control and timestamps against in-process peers
(the sans-IO ServerSession over asyncio, a socket that never reads, a closed port)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from relay.media.units import MediaFrame, TrackKind
from relay.rtmp.messages import MessageType
from relay.rtmp.session import (
    Event,
    Metadata,
    PublishRequested,
)
from relay.simulcast.pusher import (
    DISCONTINUITY_GAP_MS,
    PushLimits,
    PushStats,
    TargetAddress,
    TargetError,
    parse_target_url,
    push,
)
from relay.streams.queue import MediaQueue
from tests.simulcast.helpers.pusher import AUDIO, LIMITS, VIDEO, FakeTarget, gop, media_of

# -- parse_target_url --------------------------------------------------------------------

@pytest.mark.parametrize(("url", "key", "expected"), [
    ("rtmp://a.rtmp.youtube.com/live2", "abcd-1234",
     TargetAddress("rtmp", "a.rtmp.youtube.com", 1935, "live2", "abcd-1234")),
    ("rtmps://live.twitch.tv/app/", "live_1",
     TargetAddress("rtmps", "live.twitch.tv", 443, "app", "live_1")),
    ("RTMP://host:1936/app/inst", "sekrit", TargetAddress("rtmp", "host", 1936, "app/inst",
                                                          "sekrit")),
    ("rtmp://host/app/the-key", "", TargetAddress("rtmp", "host", 1935, "app", "the-key")),
    ("rtmp://[::1]:5222/app?token=x", "sekrit", TargetAddress("rtmp", "::1", 5222,
                                                              "app?token=x", "sekrit")),
])
def test_parse_target_url(url: str, key: str, expected: TargetAddress) -> None:
    address = parse_target_url(url, key)
    assert address == expected and address.stream_name == expected.stream_name
    if "/" + key not in url:  # the key stays out of log text
        assert key not in str(address) and key not in repr(address)


def test_tc_url() -> None:
    assert parse_target_url("rtmp://[::1]/app", "k").tc_url == "rtmp://[::1]:1935/app"
    assert parse_target_url("rtmps://h/live2", "k").tc_url == "rtmps://h:443/live2"


@pytest.mark.parametrize(("url", "key", "reason"), [
    ("http://host/app", "k", "must start with rtmp:// or rtmps://"),
    ("srt://host:6001", "k", "must start with rtmp://"),
    ("rtmp:///app", "k", "has no host"),
    ("rtmp://host", "k", "names no application"),
    ("rtmp://host/", "k", "names no application"),
    ("rtmp://host/app", "", "names no application"),
    ("rtmp://user:pw@host/app", "k", "credentials"),
    ("rtmp://host:99999/app", "k", "not a valid URL"),
    ("rtmp://host/app#x", "k", "fragment"),
])
def test_bad_target_urls_say_why(url: str, key: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_target_url(url, key)


# -- in-process peers --------------------------------------------------------------------


def published() -> tuple[list[int], PushLimits]:
    calls: list[int] = []
    return calls, PushLimits(connect_timeout=5, publish_timeout=5, write_stall_timeout=5)


async def run_push(target: TargetAddress, queue: MediaQueue, limits: PushLimits,
                   stats: PushStats | None = None) -> list[int]:
    calls: list[int] = []
    await push(target, queue, ssl_context=None, on_published=lambda: calls.append(1),
               limits=limits, stats=stats)
    return calls


# -- behaviour ---------------------------------------------------------------------------

def test_a_push_sends_metadata_headers_then_frames_and_unpublishes() -> None:
    async def main() -> list[Event]:
        queue = MediaQueue()
        queue.on_track(VIDEO)
        queue.on_track(AUDIO)
        for frame in gop(1000):
            queue.on_frame(frame)
            queue.on_frame(MediaFrame(TrackKind.AUDIO, frame.dts, frame.dts, True, b"aac"))
        queue.on_end()
        async with FakeTarget() as target:
            assert await run_push(target.url(), queue, LIMITS) == [1]
            await asyncio.sleep(0.2)  # let the server read the unpublish
        (events,) = target.connections
        return events

    events = asyncio.run(main())
    assert isinstance(events[1], PublishRequested) and events[1].stream_key == "key"
    metadata = next(e for e in events if isinstance(e, Metadata))
    assert metadata.values["width"] == 320 and metadata.values["audiosamplerate"] == 44100
    media = media_of(events)
    assert [(m.type_id, m.payload[:2]) for m in media[:2]] == [
        (MessageType.VIDEO, b"\x17\x00"), (MessageType.AUDIO, b"\xaf\x00")]
    assert media[0].payload[5:] == VIDEO.record and media[1].payload[2:] == AUDIO.record
    video = [m for m in media[2:] if m.type_id == MessageType.VIDEO]
    assert [m.timestamp for m in video] == [i * 33 for i in range(10)]
    assert video[0].payload[:2] == b"\x17\x01" and video[1].payload[:5] == b"\x27\x01\x00\x00\x42"
    assert events[-1].__class__.__name__ in ("PublishEnded", "Closing")


def test_timestamps_start_at_zero_per_connection_and_survive_a_discontinuity() -> None:
    async def main() -> tuple[list[Event], list[Event], TargetError]:
        queue = MediaQueue()
        queue.on_track(VIDEO)
        for frame in gop(50_000):
            queue.on_frame(frame)
        queue.on_discontinuity()  # the source reconnected: its clock went back
        for frame in gop(200, count=5):
            queue.on_frame(frame)
        async with FakeTarget(close_after=13) as target:
            with pytest.raises(TargetError) as failure:
                await run_push(target.url(), queue, LIMITS)
            # More media (a keyframe on) and the end, for the next connection.
            for frame in gop(10_000, count=5):
                queue.on_frame(frame)
            queue.on_end()
            target.close_after = None
            await run_push(target.url(), queue, LIMITS)
            await asyncio.sleep(0.2)
        first, second = target.connections
        return first, second, failure.value

    first, second, failure = asyncio.run(main())
    assert failure.severity == "normal"  # closed or reset, as the timing falls
    stamps = [m.timestamp for m in media_of(first)[1:] if m.payload[1] == 1]
    after = 9 * 33 + DISCONTINUITY_GAP_MS
    assert stamps[:12] == [i * 33 for i in range(10)] + [after, after + 33]
    assert stamps == sorted(stamps)
    # The second connection starts with its headers and a keyframe at 0.
    media = media_of(second)
    assert media[0].payload[:2] == b"\x17\x00" and media[0].timestamp == 0
    assert media[1].payload[:2] == b"\x17\x01" and media[1].timestamp == 0
    assert sorted(m.timestamp for m in media[1:]) == [m.timestamp for m in media[1:]]


def test_a_refused_publish_is_fatal() -> None:
    async def main() -> TargetError:
        queue = MediaQueue()
        async with FakeTarget(refuse="unknown stream key") as target:
            with pytest.raises(TargetError) as failure:
                await run_push(target.url(), queue, LIMITS)
        return failure.value

    error = asyncio.run(main())
    assert error.severity == "fatal"
    assert "NetStream.Publish.BadName: unknown stream key" in error.reason
    assert "key" not in error.reason.replace("unknown stream key", "")  # no stream key


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_connection_refused_is_normal() -> None:
    target = parse_target_url(f"rtmp://127.0.0.1:{free_port()}/app", "k")
    with pytest.raises(TargetError) as failure:
        asyncio.run(run_push(target, MediaQueue(), LIMITS))
    assert failure.value.severity == "normal"


def test_an_unknown_host_is_normal() -> None:
    target = parse_target_url("rtmp://no-such-host.invalid/app", "k")
    with pytest.raises(TargetError) as failure:
        asyncio.run(run_push(target, MediaQueue(), LIMITS))
    assert failure.value.severity == "normal"


def test_a_server_that_never_answers_times_out_normally() -> None:
    async def main() -> TargetError:
        done = asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                await reader.read()  # answers nothing (no S0/S1) until the client goes
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            done.set()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        target = parse_target_url(f"rtmp://127.0.0.1:{port}/app", "k")
        with pytest.raises(TargetError) as failure:
            await run_push(target, MediaQueue(), PushLimits(publish_timeout=0.5))
        await done.wait()
        server.close()
        await server.wait_closed()
        return failure.value

    error = asyncio.run(main())
    assert error.severity == "normal" and "publish_timeout" in error.reason


def test_a_target_that_stops_reading_times_out_within_the_write_buffer() -> None:
    """Published, then the target reads nothing: push gives up after write_stall_timeout,
    holding at most the high-water mark (plus the message being written), while the queue
    drops GOPs."""
    limits = PushLimits(write_stall_timeout=1.0, write_buffer_bytes=64 * 1024)
    frame_size = 60_000
    stats = PushStats()

    async def main() -> tuple[TargetError, MediaQueue]:
        queue = MediaQueue()
        queue.on_track(VIDEO)
        payload = bytes(frame_size)
        async with FakeTarget(stall=True) as target:
            pusher = asyncio.create_task(
                push(target.url(), queue, ssl_context=None, on_published=lambda: None,
                     limits=limits, stats=stats))
            n = 0
            while not pusher.done():
                queue.on_frame(MediaFrame(TrackKind.VIDEO, n * 33, n * 33, n % 30 == 0,
                                          payload))
                n += 1
                await asyncio.sleep(0.001)
            with pytest.raises(TargetError) as failure:
                await pusher
        return failure.value, queue

    error, queue = asyncio.run(main())
    assert error.severity == "normal" and "write_stall_timeout" in error.reason
    assert stats.bytes_written > limits.write_buffer_bytes, stats  # our buffer filled too
    assert stats.peak_write_buffer <= limits.write_buffer_bytes + frame_size + 1024
    assert queue.dropped_gops > 0
