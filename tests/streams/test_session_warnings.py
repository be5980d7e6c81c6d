"""Ingest warnings of a live session against a real store: the outbox events, their order
among the lifecycle's, the counters /metrics reads. The session's clock is set by the test."""

from __future__ import annotations

import asyncio
import logging

import pytest

from relay.media.units import MediaFrame, TrackKind
from relay.store import Store
from relay.store.records import Event
from relay.streams.hub import LiveSession
from relay.streams.ingest_warnings import MAX_WARNINGS_PER_SESSION, WarningKind
from relay.streams.registry import IngestRegistry
from tests.streams.helpers.sessions import AUDIO, VIDEO, FakePublisher, new_stream
from tests.unit.helpers.metrics_live_streams import collector_of, scrape

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def push(session: LiveSession, clock: Clock, seconds: float, *, gop: int,
         audio: bool = True) -> None:
    """30 fps video with a keyframe every `gop` frames (and AAC), in real time."""
    start = clock.now
    for n in range(round(seconds * 30)):
        dts = n * 1000 // 30
        clock.now = start + dts / 1000
        session.publish_frame(MediaFrame(TrackKind.VIDEO, dts, dts, n % gop == 0, b"\x00" * 99))
        if audio:
            session.publish_frame(MediaFrame(TrackKind.AUDIO, dts, dts, False, b"\x00" * 9))


async def events_of(store: Store, stream_id: str, count: int) -> list[Event]:
    """The stream's events once there are `count` (the session writes them in the
    background; `settle` may return while the last write is under way)."""
    for _ in range(500):
        found = [e for e in await store.list_events() if e.object_id == stream_id]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)
    return found


async def live_session(store: Store, registry: IngestRegistry, clock: Clock,
                       *, audio: bool = True) -> LiveSession:
    stream = await new_stream(store, latency_mode="reduced")
    session = await registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1")
    session._clock = clock
    session.warnings.segment_target = 2.0  # what the app sets from the packager
    session.publish_track(VIDEO)
    if audio:
        session.publish_track(AUDIO)
    return session


async def test_a_long_gop_and_no_audio_become_warning_events(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="relay.streams")
    registry, clock = IngestRegistry(store), Clock()
    session = await live_session(store, registry, clock, audio=False)
    push(session, clock, 12, gop=300, audio=False)
    events = await events_of(store, session.stream_id, 6)
    types = [e.type for e in events]
    assert types == ["video.live_stream.created", "video.live_stream.connected",
                     "video.live_stream.recording", "video.live_stream.active",
                     "video.live_stream.warning", "video.live_stream.warning"]
    warnings = [e for e in events if e.type == "video.live_stream.warning"]
    assert [e.data["warning"]["type"] for e in warnings] == ["keyframe_interval",
                                                             "missing_audio"]
    for event in warnings:
        assert event.object_type == "live_stream"
        assert event.data["id"] == session.stream_id
        assert event.data["status"] == "active"  # the live stream as the other events carry it
        assert isinstance(event.data["created_at"], int)
        assert set(event.data["warning"]) == {"type", "message"}
    assert "Keyframe Interval 2" in warnings[0].data["warning"]["message"]
    logged = [r.getMessage() for r in caplog.records if "ingest warning" in r.getMessage()]
    assert len(logged) == 2  # each warning once
    assert logged[0].startswith(f"stream {session.stream_id}: ingest warning keyframe_interval")
    counts = registry.counters.warnings
    assert counts.raised[WarningKind.KEYFRAME_INTERVAL] == 1
    assert counts.raised[WarningKind.MISSING_AUDIO] == 1
    samples, docs = scrape(collector_of(registry, clock.now))
    assert samples[("relay_live_stream_warnings_total",
                    (("warning_type", "keyframe_interval"),))] == 1
    assert samples[("relay_live_stream_warnings_total",
                    (("warning_type", "timestamp_jump"),))] == 0
    assert samples[("relay_live_stream_warnings_suppressed_total", ())] == 0
    assert docs["relay_live_stream_warnings"]
    session.end("test over")
    await session.wait_finished()


async def test_a_healthy_session_writes_no_warning(store: Store) -> None:
    registry, clock = IngestRegistry(store), Clock()
    session = await live_session(store, registry, clock)
    push(session, clock, 30, gop=60)
    # Every queued write is done once the session has finished (they are written in order).
    session.end("test over")
    await session.wait_finished()
    types = [e.type for e in await store.list_events() if e.object_id == session.stream_id]
    assert "video.live_stream.idle" in types
    assert "video.live_stream.warning" not in types
    assert sum(registry.counters.warnings.raised.values()) == 0


async def test_a_session_writes_at_most_the_capped_number_of_warnings(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="relay.streams")
    registry, clock = IngestRegistry(store), Clock()
    session = await live_session(store, registry, clock)
    cycles = MAX_WARNINGS_PER_SESSION + 5
    for _ in range(cycles):
        # Each push starts its timestamps at 0 again: a 12 s jump back, after 12 s (longer
        # than CLEAR_AFTER) of healthy frames, so each jump is a new warning.
        push(session, clock, 12, gop=60)
    session.end("test over")
    await session.wait_finished()
    warnings = [e for e in await store.list_events() if e.type == "video.live_stream.warning"]
    assert len(warnings) == MAX_WARNINGS_PER_SESSION
    assert {e.data["warning"]["type"] for e in warnings} == {"timestamp_jump"}
    counts = registry.counters.warnings
    assert counts.raised[WarningKind.TIMESTAMP_JUMP] == MAX_WARNINGS_PER_SESSION
    assert counts.suppressed == cycles - 1 - MAX_WARNINGS_PER_SESSION
    capped = [r for r in caplog.records if "the most per session" in r.getMessage()]
    assert len(capped) == 1
