"""The SRT listener's loop side, driven with the listener's own events (no libsrt, no socket):
a real `IngestRegistry` on a real SQLite store, real `SrtAdmission` counts, ffmpeg's TS
(tests/vectors/mpegts/) through the real demuxer and assembler, and a `close_handle` that
records which libsrt handles the server asked to close. The same path over real SRT sockets
is tests/integration/test_srt_ingest.py and test_srt_hostile.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from relay.media.ts_units import COUNTERS
from relay.media.units import AudioConfig, Codec, MediaFrame, TrackConfig, TrackKind, VideoConfig
from relay.srt.admission import SrtAdmission, SrtAdmissionLimits
from relay.srt.listener import (
    ConnectionAccepted,
    ConnectionClosed,
    DataReceived,
    SrtEvent,
    SrtStats,
    StatsReported,
)
from relay.srt.server import SrtConnection, SrtIngestCounters, SrtIngestLimits, SrtServer
from relay.store import NewLiveStream, Store
from relay.streams.hub import LiveSession
from relay.streams.lifecycle import State
from relay.streams.registry import IngestRegistry
from relay.streams.throttle import AuthThrottle

pytestmark = pytest.mark.anyio

VECTORS = Path(__file__).parent.parent / "vectors" / "mpegts"
H264_AAC = (VECTORS / "h264_aac.ts").read_bytes()
HEVC_AAC = (VECTORS / "hevc_aac.ts").read_bytes()
#: What one SRT live-mode datagram carries from ffmpeg and srt-live-transmit: 7 TS packets.
DATAGRAM = 7 * 188
#: Video frames h264_aac.ts publishes without an end of input (see the first test).
VIDEO_FRAMES = 58

LIMITS = SrtIngestLimits(media_timeout=60.0, idle_timeout=60.0)


def datagrams(ts: bytes) -> Iterator[bytes]:
    for offset in range(0, len(ts), DATAGRAM):
        yield ts[offset:offset + DATAGRAM]


@dataclass
class Recorder:
    """A MediaSink that keeps what its session published."""

    tracks: list[TrackConfig] = field(default_factory=list)
    frames: list[MediaFrame] = field(default_factory=list)
    fail_on_track: bool = False

    def on_track(self, config: TrackConfig) -> None:
        if self.fail_on_track:
            raise RuntimeError("a consumer's bug")
        self.tracks.append(config)

    def on_frame(self, frame: MediaFrame) -> None:
        self.frames.append(frame)

    def on_discontinuity(self) -> None:
        pass

    def on_end(self) -> None:
        pass


class Harness:
    def __init__(self, store: Store, limits: SrtIngestLimits,
                 admission_limits: SrtAdmissionLimits) -> None:
        self.store = store
        self.sinks: dict[str, Recorder] = {}  # stream id -> its session's sink
        self.sessions: dict[str, LiveSession] = {}  # stream id -> its last session
        self.failing: set[str] = set()  # stream ids whose sink raises on a track
        self.registry = IngestRegistry(store, throttle=AuthThrottle(free_failures=100),
                                       on_session_started=self._attach)
        loop = asyncio.get_running_loop()
        self.admission = SrtAdmission(self.registry, admission_limits, defer=loop.call_soon)
        self.counters = SrtIngestCounters()
        self.server = SrtServer(self.registry, self.admission, limits=limits,
                                counters=self.counters)
        self.closed: list[int] = []  # handles close_handle was called with, in order
        self.server.close_handle = self.closed.append
        self._next_handle = 1000

    def _attach(self, session: LiveSession) -> None:
        sink = Recorder(fail_on_track=session.stream_id in self.failing)
        self.sinks[session.stream_id] = sink
        self.sessions[session.stream_id] = session
        session.attach_sink(sink)

    async def stream(self, reconnect_window: float = 60.0) -> tuple[str, str]:
        """A new live stream: (id, stream key)."""
        created = await self.store.create_live_stream(NewLiveStream(
            latency_mode="standard", reconnect_window=reconnect_window,
            max_continuous_duration=43200, audio_only=False,
            use_slate_for_standard_latency=False, test=False,
            new_asset_settings={"playback_policies": ["public"]},
            playback_policies=("public",)), [])
        return created.id, created.stream_key

    def accept(self, streamid: str, peer: str = "192.0.2.1:5000") -> int:
        handle = self._next_handle
        self._next_handle += 1
        self.server.take([ConnectionAccepted(handle, peer, streamid)])
        return handle

    def send(self, handle: int, ts: bytes) -> None:
        """`ts` as the listener delivers it: a batch of read-only views, one per datagram."""
        self.server.take([DataReceived(handle, memoryview(chunk).toreadonly())
                          for chunk in datagrams(ts)])

    def connection(self, handle: int) -> SrtConnection:
        return self.server.connections[handle]

    async def admitted(self, handle: int) -> LiveSession:
        connection = self.connection(handle)
        await until(lambda: connection.live is not None)
        assert connection.live is not None
        return connection.live

    async def close(self) -> None:
        # A test may end right after an accept: its admission is still reading the store,
        # and must be done before the store fixture closes the store under it.
        admitting = [task for connection in self.server.connections.values()
                     if (task := connection._admission) is not None]
        self.server.close_all("the test is over")
        await asyncio.gather(*admitting, return_exceptions=True)
        await self.registry.close()


async def until(predicate: Callable[[], bool], what: str = "the condition") -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what} was not reached in 10 s")


@pytest.fixture
async def harness(store: Store, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    limits, admission_limits = getattr(request, "param", (LIMITS, SrtAdmissionLimits()))
    running = Harness(store, limits, admission_limits)
    try:
        yield running
    finally:
        await running.close()


def limits(**changes: float) -> tuple[SrtIngestLimits, SrtAdmissionLimits]:
    return replace(LIMITS, **changes), SrtAdmissionLimits()  # type: ignore[arg-type]


def kinds(frames: list[MediaFrame]) -> dict[TrackKind, int]:
    counted = {TrackKind.VIDEO: 0, TrackKind.AUDIO: 0}
    for frame in frames:
        counted[frame.kind] += 1
    return counted


# -- the good path --------------------------------------------------------------------

async def test_an_admitted_caller_publishes_its_ts_as_tracks_and_frames(
        harness: Harness) -> None:
    stream_id, key = await harness.stream()
    handle = harness.accept(key)
    session = await harness.admitted(handle)
    harness.send(handle, H264_AAC)

    connection = harness.connection(handle)
    assert session.publisher is connection and session.protocol == "srt"
    sink = harness.sinks[stream_id]
    video, audio = sink.tracks
    assert isinstance(video, VideoConfig) and video.codec is Codec.H264
    assert (video.width, video.height) == (320, 180)
    assert isinstance(audio, AudioConfig) and audio.codec is Codec.AAC
    assert audio.sample_rate == 48000
    counted = kinds(sink.frames)
    # 60 video PES of one frame each, less two: the demuxer holds the last PES (its length is
    # 0, so it ends where the next begins) and the assembler the access unit before it (it
    # ends where the next starts). Audio PES have a length: all 95 AAC frames (ffprobe
    # -count_packets counts 60 video and 95 audio packets in the file).
    assert counted == {TrackKind.VIDEO: VIDEO_FRAMES, TrackKind.AUDIO: 95}, counted
    assert next(f for f in sink.frames if f.kind is TrackKind.VIDEO).keyframe
    assert session.state in (State.RECORDING, State.ACTIVE)
    assert harness.closed == [] and harness.counters.bytes_received == len(H264_AAC)
    assert harness.counters.connections_open == harness.admission.open_connections == 1


async def test_the_streamids_access_control_form_is_admitted(harness: Harness) -> None:
    _, key = await harness.stream()
    handle = harness.accept(f"#!::r={key},m=publish")
    await harness.admitted(handle)
    assert harness.closed == []


async def test_data_sent_before_admission_is_kept_and_published_in_order(
        harness: Harness) -> None:
    early_id, early_key = await harness.stream()
    late_id, late_key = await harness.stream()
    early = harness.accept(early_key)
    harness.send(early, H264_AAC)  # in the same turn as the accept: admission not answered
    assert harness.connection(early).live is None
    await harness.admitted(early)
    late = harness.accept(late_key)
    await harness.admitted(late)
    harness.send(late, H264_AAC)
    # The same units, in the same order, as a caller that waited for its admission.
    assert harness.sinks[early_id].tracks == harness.sinks[late_id].tracks
    assert harness.sinks[early_id].frames == harness.sinks[late_id].frames
    assert harness.sinks[early_id].frames


@pytest.mark.parametrize("harness", [limits(max_pending_bytes=10 * DATAGRAM)], indirect=True)
async def test_data_before_admission_is_bounded(harness: Harness,
                                                caplog: pytest.LogCaptureFixture) -> None:
    stream_id, key = await harness.stream()
    handle = harness.accept(key)
    harness.send(handle, H264_AAC[:10 * DATAGRAM])  # exactly the limit: kept
    assert harness.closed == [] and harness.counters.pending_overflows == 0
    harness.send(handle, H264_AAC[10 * DATAGRAM:11 * DATAGRAM])
    assert harness.closed == [handle]
    assert harness.counters.pending_overflows == 1
    assert "limit 13160" in caplog.text and "before its admission" in caplog.text
    assert handle not in harness.server.connections
    assert harness.admission.open_connections == 0
    # The admission that was in flight still ends: the session it started is let go (and,
    # without media, ends: there is nothing to resume).
    await until(lambda: stream_id in harness.sessions, "the admission")
    session = harness.sessions[stream_id]
    await until(lambda: session.state is State.ENDED, "the session's end")
    assert session.publisher is None and harness.sinks[stream_id].frames == []


# -- refusals and failures close one caller ---------------------------------------------

async def test_two_callers_with_one_key_the_registry_refuses_the_second(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    stream_id, key = await harness.stream()
    # The listen callback let both by (neither was live when it looked): one batch.
    first, second = 1, 2
    harness.server.take([ConnectionAccepted(first, "192.0.2.1:5000", key),
                         ConnectionAccepted(second, "192.0.2.2:5000", key)])
    await until(lambda: len(harness.closed) == 1, "a refusal")
    refused = harness.closed[0]
    winner = first if refused == second else second
    session = harness.registry.sessions[stream_id]
    assert session.publisher is harness.connection(winner)
    assert refused not in harness.server.connections
    assert harness.counters.publishes_refused == 1
    assert "live stream already has a publisher" in caplog.text
    assert harness.admission.open_connections == 1
    harness.send(winner, H264_AAC)  # the admitted one goes on
    assert kinds(harness.sinks[stream_id].frames)[TrackKind.VIDEO] == VIDEO_FRAMES
    assert harness.closed == [refused]


async def test_an_unknown_key_the_callback_let_by_is_refused(harness: Harness) -> None:
    handle = harness.accept("no-such-key")
    await until(lambda: harness.closed == [handle], "the refusal")
    assert harness.counters.publishes_refused == 1
    assert harness.server.connections == {}


async def test_a_streamid_that_does_not_parse_is_closed(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    handle = harness.accept("#!::m=request")
    await until(lambda: harness.closed == [handle], "the close")
    assert harness.server.connections == {}
    assert harness.admission.open_connections == 0


async def test_a_codec_change_closes_that_caller_and_the_other_goes_on(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    bad_id, bad_key = await harness.stream()
    good_id, good_key = await harness.stream()
    bad = harness.accept(bad_key, "192.0.2.1:5000")
    good = harness.accept(good_key, "192.0.2.2:5000")
    bad_session = await harness.admitted(bad)
    await harness.admitted(good)
    harness.send(bad, H264_AAC)
    harness.send(good, H264_AAC[:len(H264_AAC) // 2])
    # The same PIDs, now with HEVC in the PMT: a live session cannot switch codecs.
    harness.send(bad, HEVC_AAC)
    assert harness.closed == [bad]
    assert harness.counters.ingest_errors == 1
    assert "changed codec mid-stream" in caplog.text
    assert bad_session.publisher is None and bad_session.state is State.DISCONNECTED
    frames_before = len(harness.sinks[bad_id].frames)
    harness.send(bad, H264_AAC)  # the listener may still deliver a late batch: ignored
    assert len(harness.sinks[bad_id].frames) == frames_before
    harness.send(good, H264_AAC[len(H264_AAC) // 2:])
    assert kinds(harness.sinks[good_id].frames)[TrackKind.VIDEO] == VIDEO_FRAMES
    assert harness.closed == [bad] and good in harness.server.connections


async def test_an_exception_handling_one_event_closes_only_that_caller(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    bad_id, bad_key = await harness.stream()
    good_id, good_key = await harness.stream()
    harness.failing.add(bad_id)
    bad = harness.accept(bad_key, "192.0.2.1:5000")
    good = harness.accept(good_key, "192.0.2.2:5000")
    await harness.admitted(bad)
    await harness.admitted(good)
    # One batch for both: the bad caller's failure must not cost the good one its data.
    harness.server.take([DataReceived(bad, memoryview(H264_AAC)),
                         DataReceived(good, memoryview(H264_AAC))])
    assert harness.closed == [bad]
    assert "could not handle DataReceived" in caplog.text
    assert kinds(harness.sinks[good_id].frames)[TrackKind.VIDEO] == VIDEO_FRAMES
    assert bad not in harness.server.connections and good in harness.server.connections
    assert harness.admission.open_connections == 1


async def test_an_exception_publishing_data_sent_before_admission_closes_that_caller(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    bad_id, bad_key = await harness.stream()
    harness.failing.add(bad_id)
    bad = harness.accept(bad_key)
    harness.send(bad, H264_AAC)  # pending: published by the admission task
    await until(lambda: harness.closed == [bad], "the close")
    assert bad not in harness.server.connections
    assert harness.admission.open_connections == 0
    assert "RuntimeError" in caplog.text


# -- timers -------------------------------------------------------------------------------

@pytest.mark.parametrize("harness", [limits(media_timeout=0.05)], indirect=True)
async def test_a_caller_without_a_track_by_the_media_deadline_is_closed(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    _, key = await harness.stream()
    handle = harness.accept(key)
    session = await harness.admitted(handle)
    harness.send(handle, b"\x47" + bytes(187))  # a TS packet, but no PAT, PMT or media
    await until(lambda: harness.closed == [handle], "the media deadline")
    assert harness.counters.media_timeouts == 1 and harness.counters.idle_timeouts == 0
    assert "no audio or video track within" in caplog.text
    assert session.publisher is None


# The media timeout is long enough not to win on a loaded machine (the caller's tracks may
# take a while to be read; this test is about what happens once they were) and short
# enough for the idle checks, which start at the media deadline, to close within `until`.
@pytest.mark.parametrize("harness", [limits(media_timeout=2.0, idle_timeout=0.5)],
                         indirect=True)
async def test_a_caller_that_stops_sending_is_closed_after_the_idle_timeout(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    _, key = await harness.stream()
    handle = harness.accept(key)
    session = await harness.admitted(handle)
    harness.send(handle, H264_AAC)
    await until(lambda: harness.closed == [handle], "the idle timeout")
    assert harness.counters.idle_timeouts == 1 and harness.counters.media_timeouts == 0
    assert "no data for" in caplog.text and "--srt-idle-timeout" in caplog.text
    assert session.publisher is None


# -- the caller leaves, the server stops ----------------------------------------------------

async def test_connection_closed_detaches_the_publisher_into_the_reconnect_window(
        harness: Harness) -> None:
    stream_id, key = await harness.stream()
    handle = harness.accept(key)
    session = await harness.admitted(handle)
    harness.send(handle, H264_AAC)
    sink = harness.sinks[stream_id]
    assert kinds(sink.frames)[TrackKind.VIDEO] == VIDEO_FRAMES
    harness.server.take([ConnectionClosed(handle, "the peer closed the connection")])
    assert session.publisher is None and session.state is State.DISCONNECTED
    assert harness.closed == []  # libsrt closed it already
    # The end of the input completes what the demuxer and the assembler held: every frame
    # of the file is published (and recorded), the last ones before the session let go.
    assert kinds(sink.frames) == {TrackKind.VIDEO: 60, TrackKind.AUDIO: 95}, kinds(sink.frames)
    assert harness.server.connections == {}
    assert harness.counters.connections_open == harness.admission.open_connections == 0
    # A new caller on the same key resumes the same session.
    again = harness.accept(key)
    assert await harness.admitted(again) is session
    assert session.publisher is harness.connection(again)


async def test_a_caller_that_leaves_during_its_admission_is_let_go(harness: Harness) -> None:
    stream_id, key = await harness.stream()
    handle = harness.accept(key)
    harness.server.take([ConnectionClosed(handle, "the peer closed the connection")])
    assert harness.server.connections == {} and harness.closed == []
    await until(lambda: stream_id in harness.sessions, "the admission")
    session = harness.sessions[stream_id]
    await until(lambda: session.state is State.ENDED, "the session's end")
    assert session.publisher is None


async def test_close_all_closes_every_caller(harness: Harness) -> None:
    sessions = []
    handles = []
    for number in range(3):
        _, key = await harness.stream()
        handle = harness.accept(key, f"192.0.2.{number}:5000")
        sessions.append(await harness.admitted(handle))
        harness.send(handle, H264_AAC)
        handles.append(handle)
    harness.server.close_all("the server is shutting down")
    assert sorted(harness.closed) == handles
    assert harness.server.connections == {}
    assert all(session.publisher is None for session in sessions)
    assert harness.counters.connections_open == harness.admission.open_connections == 0
    harness.server.close_all("again")  # nothing left to close
    assert sorted(harness.closed) == handles


# -- counts -------------------------------------------------------------------------------

async def test_the_demuxers_counts_are_kept_when_a_connection_ends(harness: Harness) -> None:
    _, key = await harness.stream()
    handle = harness.accept(key)
    await harness.admitted(handle)
    # The file twice: its continuity counters restart, which the demuxer counts as losses.
    harness.send(handle, H264_AAC + H264_AAC)
    demux = harness.connection(handle).demux
    assert demux.packets == 2 * len(H264_AAC) // 188 and demux.cc_errors > 0
    packets, cc_errors, resyncs, dropped = (demux.packets, demux.cc_errors, demux.resyncs,
                                            demux.pes_dropped)
    media = harness.connection(handle).media
    assembled = {name: getattr(media, name) for name in COUNTERS}
    assert assembled["video_frames"] > 0 and assembled["audio_frames"] > 0
    assert harness.counters.ts_packets == 0  # an open connection's are added at scrape time
    assert not any(harness.counters.media.values())
    harness.server.take([ConnectionClosed(handle, "the peer closed the connection")])
    counters = harness.counters
    assert (counters.ts_packets, counters.ts_cc_errors, counters.ts_resyncs,
            counters.pes_dropped) == (packets, cc_errors, resyncs, dropped)
    # The media assembler's counters too (the closing flush may publish the last frames).
    assert all(counters.media[name] >= count for name, count in assembled.items())
    assert counters.media == {name: getattr(media, name) for name in COUNTERS}
    assert counters.bytes_received == 2 * len(H264_AAC)
    assert (counters.connections_total, counters.connections_open) == (1, 0)


async def test_stats_are_kept_per_connection(harness: Harness) -> None:
    _, key = await harness.stream()
    handle = harness.accept(key)
    stats = SrtStats(rtt_ms=1.5, receive_rate_mbps=2.0, latency_ms=120, packets_received=10,
                     packets_lost=1, packets_retransmitted=1, packets_dropped=0,
                     packets_undecrypted=0, bytes_received=13160, receive_buffer_ms=118,
                     receive_buffer_bytes=2632, backlog_dropped_bytes=0)
    harness.server.take([StatsReported(handle, stats), StatsReported(99, stats)])
    assert harness.connection(handle).stats == stats


@pytest.mark.parametrize("harness", [(LIMITS, SrtAdmissionLimits(max_connections=1))],
                         indirect=True)
async def test_a_connection_over_the_caps_is_closed_at_once(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    _, key = await harness.stream()
    _, other_key = await harness.stream()
    first = harness.accept(key)
    # Decided by the callback before the first was counted; counted now, over the cap.
    events: list[SrtEvent] = [ConnectionAccepted(2, "192.0.2.9:5000", other_key),
                              DataReceived(2, memoryview(H264_AAC))]
    harness.server.take(events)
    assert harness.closed == [2]
    assert 2 not in harness.server.connections and first in harness.server.connections
    assert harness.admission.counters.opened_over_capacity == 1
    assert (harness.counters.connections_total, harness.counters.connections_open) == (2, 1)
    assert harness.counters.bytes_received == 0
    assert "--srt-max-connections" in caplog.text
    await harness.admitted(first)


async def test_events_of_unknown_handles_are_ignored(harness: Harness) -> None:
    harness.server.take([DataReceived(7, memoryview(H264_AAC)),
                         ConnectionClosed(7, "gone"),
                         StatsReported(7, SrtStats(0.0, 0.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))])
    assert harness.closed == [] and harness.counters.bytes_received == 0


@pytest.fixture(autouse=True)
def _log_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="relay")


async def test_a_failure_accepting_a_caller_closes_it_and_leaves_no_count(
        harness: Harness, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    _, key = await harness.stream()

    def broken(*args: object, **kwargs: object) -> None:
        raise MemoryError("no room for a demuxer")

    monkeypatch.setattr("relay.srt.server.TsDemuxer", broken)
    handle = harness.accept(key)
    assert harness.closed == [handle] and harness.server.connections == {}
    assert harness.admission.open_connections == 0
    assert "could not handle ConnectionAccepted" in caplog.text
    monkeypatch.undo()
    assert harness.connection(harness.accept(key)).live is None  # the next one is taken
