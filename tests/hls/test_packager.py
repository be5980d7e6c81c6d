"""The live packager in process: segmenter events to playlist, bytes, recording and wake-ups.

Media is synthetic (the segmenter tests' generators) so that every duration is known; the
bytes it produces are parsed back by the fMP4 tests, and the end-to-end tests play them with
ffmpeg and hls.js.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path

import pytest

from relay.app import attach_packager
from relay.hls.disk import read_stored
from relay.hls.model import ResourceName, StoredMedia
from relay.hls.packager import HlsCounters, LivePackager, RecordingQueue
from relay.hls.playlist import LivePlaylist
from relay.hls.recording import RECORDING_PLAYLIST, VARIANT_FILE, RecordingWriter, read_variant
from relay.hls.segmenter import PartSegmenter
from relay.hls.spool import Spools
from relay.media.units import Codec, MediaFrame, VideoConfig
from relay.store import Store
from relay.store.asset_files import AssetFiles
from relay.streams.queue import DrainQueue
from relay.streams.registry import IngestRegistry
from tests.hls.helpers.packager import Feeder, av
from tests.hls.helpers.segmenter import (
    audio_config,
    video_config,
    video_frames,
)
from tests.streams.helpers.sessions import FakePublisher, new_stream

pytestmark = pytest.mark.anyio


def test_the_playlist_appears_with_the_first_complete_segment() -> None:
    feeder = Feeder().tracks()
    feeder.frames(av(1.9))
    packager = feeder.packager
    assert packager.playlist is None and packager.variant() is None
    assert packager.resource(ResourceName(init=0)) is None
    feeder.frames(av(1.0, start=1900))
    playlist = packager.playlist
    assert playlist is not None and playlist.target_duration == 2
    assert playlist.last_complete_msn == 0 and feeder.playable == 1
    # The first segment's parts were replayed from the buffer into the playlist.
    first = playlist.segment(0)
    assert first is not None and len(first.parts) == 7 and first.parts[0].independent


def test_parts_concatenate_to_their_segment_and_the_init_comes_first() -> None:
    feeder = Feeder().tracks().frames(av(4.5))
    packager = feeder.packager
    playlist = packager.playlist
    assert playlist is not None
    init = packager.resource(ResourceName(init=0))
    assert isinstance(init, bytes) and init[4:8] == b"ftyp"
    for msn in (0, 1):
        segment = playlist.segment(msn)
        assert segment is not None and segment.complete
        parts = [packager.resource(ResourceName(msn=msn, part=p.index)) for p in segment.parts]
        assert all(isinstance(part, bytes) and part[4:8] == b"moof" for part in parts)
        assert b"".join(p for p in parts if isinstance(p, bytes)) == packager.resource(
            ResourceName(msn=msn))
    assert packager.resource(ResourceName(msn=7)) is None


def test_variant_is_measured_from_the_segments() -> None:
    packager = Feeder().tracks().frames(av(6.5)).packager
    variant = packager.variant()
    assert variant is not None
    assert variant.codecs == ("avc1.64001f", "mp4a.40.2")
    assert variant.resolution == (1280, 720) and variant.frame_rate == 30.0
    assert variant.average_bandwidth is not None
    assert 0 < variant.average_bandwidth <= variant.bandwidth


def test_reduced_and_standard_list_no_parts_but_serve_segments() -> None:
    for mode, target in (("reduced", 2), ("standard", 6)):
        packager = Feeder(mode=mode).tracks().frames(av(13.5)).packager
        playlist = packager.playlist
        assert playlist is not None and playlist.target_duration == target
        assert playlist.part_target is None
        assert all(not segment.parts for segment in playlist.segments)
        assert packager.resource(ResourceName(msn=0)) is not None


def held(playlist: LivePlaylist) -> dict[int, tuple[bytes, ...]]:
    """The segments the playlist holds bytes of, and those bytes."""
    return {msn: playlist.fragments(msn) for msn in range(playlist.next_msn)
            if playlist.fragments(msn)}


def test_memory_follows_the_live_window() -> None:
    packager = Feeder().tracks().frames(av(120)).packager
    playlist = packager.playlist
    assert playlist is not None
    assert len(playlist.segments) <= 16
    # Parts of the segments within 6 x TARGETDURATION of the edge (listed, then retained),
    # and of the open one; segments of the window and those that just left it, whole.
    assert len(held(playlist)) <= 2 * 16
    parts = [(msn, index) for msn in range(playlist.next_msn) for index in range(8)
             if packager.resource(ResourceName(msn=msn, part=index)) is not None]
    assert 0 < len(parts) <= (6 + 2) * 7
    assert packager.resource(ResourceName(msn=0)) is None


def test_the_window_holds_each_byte_once() -> None:
    feeder = Feeder().tracks()
    assert feeder.packager.window_bytes() == 0
    feeder.frames(av(1.0))  # the first segment is not complete: its events wait
    waiting = feeder.packager.window_bytes()
    assert waiting > 0 and feeder.packager.playlist is None
    packager = feeder.frames(av(120)).packager
    playlist = packager.playlist
    assert playlist is not None
    init = packager.resource(ResourceName(init=0))
    assert isinstance(init, bytes)
    segments = held(playlist)
    buffers = {id(data): len(data) for fragments in segments.values() for data in fragments}
    assert packager.window_bytes() == len(init) + sum(buffers.values())
    # The open segment's fragments are its parts, as the playlist serves them.
    open_msn = playlist.segments[-1].msn
    assert packager.open_fragments() == segments[open_msn] == tuple(
        packager.resource(ResourceName(msn=open_msn, part=index))
        for index in range(len(playlist.segments[-1].parts)))
    # A complete segment with parts is held as its parts; asked for whole, it is joined
    # once and kept (one more copy, until its parts expire).
    msn = playlist.last_complete_msn
    assert msn is not None and len(segments[msn]) > 1
    before = packager.window_bytes()
    whole = packager.resource(ResourceName(msn=msn))
    assert whole == b"".join(segments[msn]) and packager.resource(ResourceName(msn=msn)) is whole
    assert packager.window_bytes() == before + len(whole)


def test_the_encoders_faults_are_added_to_the_counters_at_the_end() -> None:
    video = video_frames(6.0)
    repeated = dataclasses.replace(video[31], dts=video[30].dts, pts=video[30].pts)
    frames = [*video[:31], repeated, *video[32:],  # one duration of 0 ms: clamped
              *video_frames(3.0, start=video[-1].dts + 10_000)]  # a 10 s jump: a gap
    counters = HlsCounters()
    feeder = Feeder(counters=counters).tracks(audio=False).frames(frames)
    feeder.packager.on_end()
    seen = feeder.packager.segmenter.counters
    assert (seen.backward_timestamps, seen.gaps) == (1, 1)
    assert (counters.timestamps_clamped, counters.timestamp_gaps) == (1, 1)
    assert (counters.part_overruns, counters.short_parts, counters.pdt_resyncs) == (
        seen.part_overruns, seen.short_parts, seen.pdt_resyncs)
    feeder.packager.on_end()  # a second end adds nothing
    assert (counters.timestamps_clamped, counters.timestamp_gaps) == (1, 1)


def test_the_end_completes_the_open_segment_and_lists_endlist() -> None:
    feeder = Feeder().tracks().frames(av(3.0))
    feeder.packager.on_end()
    playlist = feeder.packager.playlist
    assert playlist is not None and playlist.ended and playlist.next_part is None
    assert [s.complete for s in playlist.segments] == [True, True]
    feeder.packager.on_end()  # a second end changes nothing


def test_a_discontinuity_is_listed_on_the_next_segment() -> None:
    feeder = Feeder().tracks().frames(av(4.5))
    feeder.packager.on_discontinuity()
    feeder.frames(av(4.5, start=60_000))
    playlist = feeder.packager.playlist
    assert playlist is not None
    flags = [s.discontinuity for s in playlist.segments]
    assert flags.count(True) == 1 and flags[0] is False


def test_an_encoder_without_keyframes_ends_the_session_within_bounds() -> None:
    feeder = Feeder(max_segment_bytes=4096).tracks(audio=False)
    frames = [MediaFrame(f.kind, f.dts, f.pts, f.dts == 0, bytes(200))
              for f in video_frames(30)]
    feeder.frames(frames)
    assert len(feeder.fatal) == 1 and "without a keyframe" in feeder.fatal[0]
    assert feeder.packager.playlist is None


AV1 = VideoConfig(codec=Codec.AV1, record=b"\x81", width=0, height=0, codecs="av01.0.04M.08",
                  frame_rate=None)


def test_an_unpackageable_codec_ends_the_session_with_its_reason() -> None:
    feeder = Feeder()
    feeder.packager.on_track(AV1)
    feeder.frames(video_frames(5))
    assert len(feeder.fatal) == 1
    assert feeder.fatal[0].startswith("cannot package the stream: cannot package av1 video")
    counters = feeder.packager.counters
    assert (counters.failures, counters.packaging_errors) == (1, 0)
    assert feeder.packager.playlist is None


def test_an_unexpected_error_of_the_segmenter_ends_the_session_and_is_counted(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    feeder = Feeder().tracks().frames(av(4.5))
    packager = feeder.packager
    assert packager.playlist is not None and feeder.playable == 2

    def broken(*_: object) -> list[object]:
        raise ValueError("tfdt must be 0..2**64-1, got -3")  # a range check that trips

    monkeypatch.setattr(packager.segmenter, "on_frame", broken)
    feeder.frames(av(1.0, start=4500))  # contained: nothing reaches the session's caller
    assert len(feeder.fatal) == 1 and "internal error ValueError" in feeder.fatal[0]
    counters = packager.counters
    assert (counters.failures, counters.packaging_errors) == (1, 1)
    [record] = [r for r in caplog.records if "packaging failed" in r.getMessage()]
    assert record.exc_info is not None  # the traceback, for the bug report
    packager.on_end()  # the session's end still closes the live playlist
    assert packager.playlist.ended


def test_only_the_init_segments_error_means_the_encoders_tracks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> bytes:
        raise ValueError("sample count must be 0..2**32-1")

    monkeypatch.setattr("relay.hls.packager.fmp4.media_fragment", broken)
    feeder = Feeder().tracks().frames(av(1.0))
    assert len(feeder.fatal) == 1 and "internal error ValueError" in feeder.fatal[0]
    assert feeder.packager.counters.packaging_errors == 1


async def test_wait_change_wakes_on_the_next_change_only() -> None:
    feeder = Feeder().tracks().frames(av(2.5))
    waiter = asyncio.ensure_future(feeder.packager.wait_change())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    feeder.frames(av(0.4, start=2500))
    await asyncio.wait_for(waiter, 1)
    # A cancelled waiter does not cancel the shared future the others wait on.
    first = asyncio.ensure_future(feeder.packager.wait_change())
    second = asyncio.ensure_future(feeder.packager.wait_change())
    await asyncio.sleep(0.01)
    first.cancel()
    feeder.frames(av(0.4, start=2900))
    await asyncio.wait_for(second, 1)


async def test_recording_is_written_once_the_asset_is_known(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    writer: asyncio.Future[RecordingWriter] = loop.create_future()
    feeder = Feeder(recording=RecordingQueue(writer)).tracks().frames(av(7.0))
    writer.set_result(RecordingWriter(tmp_path / "asset"))  # after the first segments
    feeder.frames(av(3.0, start=7000))
    feeder.packager.on_end()
    summary = await feeder.packager.finished()
    assert summary is not None and summary.segments == 5
    assert summary.duration == pytest.approx(10.0, abs=0.05)
    directory = tmp_path / "asset"
    text = (directory / RECORDING_PLAYLIST).read_text()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.endswith("#EXT-X-ENDLIST\n")
    assert sorted(p.name for p in directory.glob("*.m4s")) == [f"{m}.m4s" for m in range(5)]
    assert (directory / "init-0.mp4").is_file() and (directory / VARIANT_FILE).is_file()
    variant = read_variant(directory)
    assert variant is not None and variant.resolution == (1280, 720)


async def test_a_recording_whose_asset_never_came_drops_its_writes(tmp_path: Path) -> None:
    writer: asyncio.Future[RecordingWriter] = asyncio.get_running_loop().create_future()
    feeder = Feeder(recording=RecordingQueue(writer)).tracks().frames(av(5.0))
    feeder.packager.on_end()
    assert await feeder.packager.finished() is None
    assert not any(await asyncio.to_thread(lambda: list(tmp_path.iterdir())))


async def test_deleting_the_asset_mid_stream_stops_its_recording(tmp_path: Path) -> None:
    writer: asyncio.Future[RecordingWriter] = asyncio.get_running_loop().create_future()
    writer.set_result(RecordingWriter(tmp_path / "asset"))
    feeder = Feeder(recording=RecordingQueue(writer)).tracks().frames(av(4.5))
    for _ in range(100):  # let the worker write the first segments
        if await asyncio.to_thread((tmp_path / "asset" / "1.m4s").is_file):
            break
        await asyncio.sleep(0.02)
    await asyncio.to_thread(shutil.rmtree, tmp_path / "asset")  # DELETE /assets/{id}
    feeder.frames(av(4.0, start=4500))
    feeder.packager.on_end()
    assert await feeder.packager.finished() is None
    assert not await asyncio.to_thread((tmp_path / "asset").exists)


async def test_the_finished_recording_describes_its_tracks(tmp_path: Path) -> None:
    writer: asyncio.Future[RecordingWriter] = asyncio.get_running_loop().create_future()
    writer.set_result(RecordingWriter(tmp_path / "asset"))
    feeder = Feeder(recording=RecordingQueue(writer)).tracks().frames(av(6.0))
    feeder.packager.on_end()
    media = await feeder.packager.finished_media()
    assert media is not None and media.duration == pytest.approx(6.0, abs=0.05)
    video, audio = media.tracks
    assert video == {"type": "video", "max_width": 1280, "max_height": 720,
                     "max_frame_rate": 30.0, "duration": pytest.approx(6.0, abs=0.05)}
    assert audio["type"] == "audio" and audio["max_channels"] == 2


async def test_the_asset_tracks_remember_inits_that_left_the_window(tmp_path: Path) -> None:
    writer: asyncio.Future[RecordingWriter] = asyncio.get_running_loop().create_future()
    writer.set_result(RecordingWriter(tmp_path / "asset"))
    feeder = Feeder(recording=RecordingQueue(writer)).tracks().frames(av(4.0))
    smaller = dataclasses.replace(video_config(), width=640, height=360, record=b"\x01other")
    feeder.packager.on_track(smaller)
    feeder.frames(av(90.0, start=4000))
    assert feeder.packager.resource(ResourceName(init=0)) is None  # init 0 left the window
    feeder.packager.on_end()
    media = await feeder.packager.finished_media()
    assert media is not None
    assert (media.tracks[0]["max_width"], media.tracks[0]["max_height"]) == (1280, 720)


# -- a failure ends the session, through the hub and the store ----------------------------

@pytest.mark.parametrize("failure", ["codec", "bug"])
async def test_a_stream_that_fails_before_its_first_segment_ends(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    if failure == "bug":
        def broken(*_: object) -> list[object]:
            raise ValueError("duration must be positive, got -1")

        monkeypatch.setattr(PartSegmenter, "on_frame", broken)
    counters = HlsCounters()
    registry = IngestRegistry(store, on_session_started=lambda session: attach_packager(
        session, AssetFiles(tmp_path), part_target=0.3, counters=counters))
    stream = await new_stream(store, latency_mode="low")
    publisher = FakePublisher()
    session = await registry.admit(stream.stream_key, publisher, "127.0.0.1")
    session.publish_track(AV1 if failure == "codec" else video_config())
    for frame in video_frames(3.0):
        session.publish_frame(frame)
    await asyncio.wait_for(session.wait_finished(), 30)

    [reason] = publisher.closed  # the encoder is told why
    assert ("cannot package av1" in reason if failure == "codec"
            else "internal error ValueError" in reason)
    ended = await store.get_live_stream(stream.id)
    assert ended is not None and ended.status == "idle" and ended.active_asset_id is None
    types = [e.type for e in await store.list_events()]
    assert "video.live_stream.active" not in types  # never claimed to be playable
    assert types[-1] in ("video.live_stream.idle", "video.asset.ready")
    assert "video.live_stream.idle" in types
    assert counters.failures == 1
    assert counters.packaging_errors == (1 if failure == "bug" else 0)
    assert registry.sessions == {}


async def test_a_session_that_ends_as_it_starts_recording_keeps_its_recording(
        store: Store, tmp_path: Path) -> None:
    """The end finishes the recording at once, beside the store writes queued before it;
    but not before the store has created the asset the recording goes to."""
    registry = IngestRegistry(store, on_session_started=lambda session: attach_packager(
        session, AssetFiles(tmp_path), part_target=0.3, counters=HlsCounters()))
    stream = await new_stream(store, latency_mode="low")
    session = await registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1")
    session.publish_track(video_config())
    session.publish_track(audio_config())
    for frame in av(4.5):
        session.publish_frame(frame)
    session.end("the application completed the live stream")  # asset not created yet
    await asyncio.wait_for(session.wait_finished(), 30)
    assert session.asset_id is not None
    asset = await store.get_asset(session.asset_id)
    assert asset is not None and asset.status == "ready"
    assert asset.duration == pytest.approx(4.5, abs=0.05)  # as packaged, not 0
    text = (tmp_path / session.asset_id / RECORDING_PLAYLIST).read_text()
    assert text.endswith("#EXT-X-ENDLIST\n") and text.count(".m4s") == 3


def test_part_publish_delay_is_measured_from_the_parts_last_frame() -> None:
    # The fake clock is the frames' arrival: a part is cut when the frame after its last
    # one arrives, so each delay is one frame interval or less (30 fps video, AAC at 48 kHz
    # holding one 21 ms frame back), never 0.
    feeder = Feeder().tracks()
    packager, counters = feeder.packager, feeder.packager.counters
    frames = iter(av(4.5))
    while packager.playlist is None:
        feeder.frames([next(frames)])
    # The first segment's parts waited for it (start-up): not counted.
    assert counters.part_publish_delay.count == 0
    parts_before = counters.parts
    feeder.frames(frames)
    delays = counters.part_publish_delay
    assert delays.count == counters.parts - parts_before > 0
    buckets = dict(delays.cumulative())
    assert buckets[0.005] == 0 and buckets[0.05] == delays.count
    assert 0.015 * delays.count < delays.sum < 0.035 * delays.count


async def test_the_packager_consumes_behind_a_queue_drained_once_per_loop_iteration(
        store: Store, tmp_path: Path) -> None:
    """The hub never calls the packager: frames reach it in the next loop iteration, all in
    one pass, and the end at once, after them."""
    packagers: list[LivePackager] = []
    counters = HlsCounters()
    registry = IngestRegistry(store, on_session_started=lambda session: packagers.append(
        attach_packager(session, AssetFiles(tmp_path), part_target=0.3, counters=counters)))
    stream = await new_stream(store, latency_mode="low")
    session = await registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1")
    [packager] = packagers
    [queue] = session.sinks
    assert isinstance(queue, DrainQueue) and queue.consumer is packager
    session.publish_track(video_config())
    session.publish_track(audio_config())
    frames = av(2.5)  # keyframes every second
    for frame in frames:
        session.publish_frame(frame)
    assert counters.parts == 0 and queue.queued_frames == len(frames)
    await asyncio.sleep(0)
    assert queue.queued_frames == 0 and counters.segments >= 1  # all in one pass
    segments = counters.segments
    for frame in av(1.0, start=2500):  # a keyframe at 3 s
        session.publish_frame(frame)
    session.end("the application completed the live stream")
    assert packager.ended and len(queue) == 0
    assert counters.segments > segments  # the end closed the open one, frames and all
    assert queue.dropped_frames == 0 and counters.queue_drops.frames == 0
    await asyncio.wait_for(session.wait_finished(), 30)


async def written(directory: Path, names: list[str]) -> None:
    for _ in range(200):
        if await asyncio.to_thread(lambda: all((directory / n).is_file() for n in names)):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{names} not written in {directory}")


async def test_recorded_segments_leave_memory_and_are_served_from_their_files(
        tmp_path: Path) -> None:
    writer: asyncio.Future[RecordingWriter] = asyncio.get_running_loop().create_future()
    writer.set_result(RecordingWriter(tmp_path / "asset"))
    feeder = Feeder(recording=RecordingQueue(writer)).tracks().frames(av(30.0))
    packager = feeder.packager
    playlist = packager.playlist
    assert playlist is not None
    await written(tmp_path / "asset", [f"{msn}.m4s" for msn in range(14)])
    await asyncio.sleep(0.05)  # the last write's callback
    # In memory: the init, the segment that ended 1 x TD before the edge, the open one.
    assert sorted(held(playlist)) == [13, 14]
    init = packager.resource(ResourceName(init=0))
    assert isinstance(init, bytes)
    assert packager.window_bytes() == len(init) + sum(
        len(data) for fragments in held(playlist).values() for data in fragments)
    for msn in (10, 13):  # older segments and parts still downloadable, from the files
        segment = playlist.segment(msn)
        assert segment is not None
        whole = packager.resource(ResourceName(msn=msn))
        assert isinstance(whole, StoredMedia)
        data = read_stored(whole)
        assert data == (tmp_path / "asset" / f"{msn}.m4s").read_bytes()
        parts = [packager.resource(ResourceName(msn=msn, part=p.index)) for p in segment.parts]
        assert b"".join(part if isinstance(part, bytes) else read_stored(part) or b""
                        for part in parts if part is not None) == data
    assert isinstance(packager.resource(ResourceName(msn=10, part=0)), StoredMedia)
    assert isinstance(packager.resource(ResourceName(msn=13, part=0)), bytes)
    packager.on_end()
    assert await packager.finished() is not None


async def test_a_session_whose_recording_ended_spools_its_window(tmp_path: Path) -> None:
    writer: asyncio.Future[RecordingWriter] = asyncio.get_running_loop().create_future()
    recording = RecordingQueue(writer, max_backlog=1)  # refuses the first segment
    spools = Spools(tmp_path / "spool")
    spool = spools.session("stream")
    feeder = Feeder(recording=recording, spool=spool).tracks()
    for second in range(0, 40, 2):  # a segment at a time, as a live encoder sends them
        feeder.frames(av(2.0, start=second * 1000))
        if second:  # the keyframe at `second` completed the segment before it
            await written(spool.directory, [f"{second // 2 - 1}.m4s"])
    packager = feeder.packager
    playlist = packager.playlist
    assert playlist is not None and recording.ended is not None
    for _ in range(200):
        if sorted(held(playlist)) == [18, 19]:
            break
        await asyncio.sleep(0.02)
    assert sorted(held(playlist)) == [18, 19]
    whole = packager.resource(ResourceName(msn=17))
    assert isinstance(whole, StoredMedia) and Path(whole.path).parent == spool.directory
    assert read_stored(whole) is not None
    # Files of segments the playlist no longer holds are deleted by the next write (so one
    # may lag behind).
    names = await asyncio.to_thread(lambda: [p.name for p in spool.directory.iterdir()])
    msns = sorted(int(name.split(".")[0]) for name in names)
    assert msns[0] >= playlist.oldest_msn - 1 and msns[-1] == 18 and playlist.oldest_msn > 1
    assert spools.writes >= 19 and spools.failures == 0
    packager.on_end()
    await packager.finished()
    assert not await asyncio.to_thread(spool.directory.exists)
    assert read_stored(whole) is None  # the routes answer 404 after the end
    await asyncio.to_thread(spools.close)
    assert not await asyncio.to_thread(spools.directory.exists)
