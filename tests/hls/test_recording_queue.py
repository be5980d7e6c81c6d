"""A live session's recording when the disk misbehaves: a full disk ends the recording with
its reason while live playback goes on and what was recorded is finalized; a hung write
holds one disk worker, not every recording; a recording that falls behind its bound is
dropped (logged, counted) instead of holding memory; closing a recording whose write hung
returns after DISK_STALL_SECONDS."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from relay.hls.disk import DiskPool
from relay.hls.model import ResourceName, SegmentInfo
from relay.hls.packager import MAX_RECORDING_JOBS, HlsCounters, RecordingQueue
from relay.hls.recording import RECORDING_PLAYLIST, RecordingWriter
from tests.hls.full_disk import DiskBudget
from tests.hls.helpers.packager import Feeder, av
from tests.hls.playlist_checker import check_media_playlist, parse_media_playlist

pytestmark = pytest.mark.anyio


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll (off the loop, for file checks) until `predicate()` is true; 30 s at most."""
    for _ in range(1500):
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in 30 s")


def listed(directory: Path) -> list[str]:
    try:
        text = (directory / RECORDING_PLAYLIST).read_text()
    except FileNotFoundError:
        return []
    return [s.uri for s in parse_media_playlist(text).segments]


def recording(directory: Path, disk: DiskPool, counters: HlsCounters,
              **options: object) -> tuple[Feeder, RecordingQueue]:
    writer: asyncio.Future[RecordingWriter] = asyncio.get_running_loop().create_future()
    writer.set_result(RecordingWriter(directory))
    queue = RecordingQueue(writer, disk=disk, label=f"stream {directory.name}",
                           counters=counters, **options)  # type: ignore[arg-type]
    return Feeder(recording=queue, counters=counters), queue


async def test_a_full_disk_ends_the_recording_and_live_playback_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "asset"
    counters = HlsCounters()
    disk = DiskPool(2)
    feeder, queue = recording(directory, disk, counters)
    packager = feeder.packager
    with DiskBudget(9_000).installed(monkeypatch) as budget:
        feeder.tracks().frames(av(20.0))
        await wait_until(lambda: queue.ended is not None)
        assert budget.failures == 1
        recorded = await asyncio.to_thread(listed, directory)
        assert recorded  # some segments made it before the disk filled
        assert queue.ended.startswith("the disk is full (ENOSPC")
        assert counters.recordings_failed == 1
        [line] = [r.getMessage() for r in caplog.records if "recording stops" in r.getMessage()]
        assert "the disk is full" in line and "live playback goes on" in line

        # Live playback goes on: new segments are packaged and served from memory, and
        # the recording takes no more (counted).
        before = packager.playlist.last_complete_msn  # type: ignore[union-attr]
        feeder.frames(av(10.0, start=20_000))
        after = packager.playlist.last_complete_msn  # type: ignore[union-attr]
        assert after is not None and before is not None and after >= before + 4
        assert packager.resource(ResourceName(msn=after)) is not None
        assert counters.recording_dropped >= 4 and feeder.fatal == []

        packager.on_end()
        summary = await packager.finished()  # finalized on the still-full disk
    assert summary is not None and summary.segments == len(recorded)
    text = (directory / RECORDING_PLAYLIST).read_text()
    playlist = check_media_playlist(text, require_independent_segments=False)
    assert [s.uri for s in playlist.segments] == recorded and playlist.endlist
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text
    for uri in recorded:
        assert (directory / uri).stat().st_size > 0
    assert not list(directory.glob("*.tmp"))
    assert disk.backlog == 0
    disk.shutdown()


class HungWriter(RecordingWriter):
    """A recording whose segment writes block until `release` is set: a stalled disk."""

    def __init__(self, directory: Path, release: threading.Event) -> None:
        super().__init__(directory)
        self.release = release
        self.entered = threading.Event()

    def write_segment(self, segment: SegmentInfo, data: bytes, target_duration: int) -> None:
        self.entered.set()
        self.release.wait()
        super().write_segment(segment, data, target_duration)


async def test_a_hung_write_does_not_stop_another_streams_recording(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    counters = HlsCounters()
    disk = DiskPool(2)
    release = threading.Event()
    now = [1000.0]
    loop = asyncio.get_running_loop()

    hung_writer: asyncio.Future[RecordingWriter] = loop.create_future()
    hung = HungWriter(tmp_path / "hung", release)
    hung_writer.set_result(hung)
    hung_queue = RecordingQueue(hung_writer, disk=disk, label="stream hung",
                                counters=counters, max_backlog=4 * 4096,
                                clock=lambda: now[0])
    stuck = Feeder(recording=hung_queue, counters=counters)
    healthy, healthy_queue = recording(tmp_path / "healthy", disk, counters)
    try:
        stuck.tracks().frames(av(4.5))
        await asyncio.to_thread(hung.entered.wait, 30)
        healthy.tracks().frames(av(20.5))
        # The other recording writes every segment while the first write of this one hangs.
        await wait_until(lambda: len(listed(tmp_path / "healthy")) == 10)
        assert not hung.release.is_set() and listed(tmp_path / "hung") == []

        # The hung recording queues up to its bound, then ends (logged, counted) instead
        # of holding more memory.
        stuck.frames(av(60.0, start=4500))
        assert hung_queue.ended is not None and "behind" in hung_queue.ended
        assert counters.recordings_behind == 1 and hung_queue.backlog <= 4 * 4096
        assert any("the recording stops" in r.getMessage() and "stream hung" in r.getMessage()
                   for r in caplog.records)

        healthy.packager.on_end()
        summary = await asyncio.wait_for(healthy.packager.finished(), 30)
        assert summary is not None and summary.segments == 11
        assert healthy_queue.ended is None

        # Closing the hung recording waits for its write only up to DISK_STALL_SECONDS.
        stuck.packager.on_end()
        now[0] += 6.0
        assert await asyncio.wait_for(stuck.packager.finished(), 30) is None
        assert counters.recordings_stalled == 1
        assert any("has not returned" in r.getMessage() for r in caplog.records)
    finally:
        release.set()
    # When the write returns, what the recording wrote is finalized.
    worker = hung_queue._worker
    assert worker is not None
    late = await asyncio.wait_for(worker, 30)
    assert late is not None and late.segments == 1
    text = (tmp_path / "hung" / RECORDING_PLAYLIST).read_text()
    assert check_media_playlist(text).endlist
    assert disk.backlog == 0
    disk.shutdown()


async def test_queued_jobs_and_the_pools_bytes_are_bounded(
        caplog: pytest.LogCaptureFixture) -> None:
    """Jobs wait while the asset is not created yet (or the disk is slow): a recording ends
    at MAX_RECORDING_JOBS queued jobs, and one that would take the pool's budget for all
    recordings past its limit ends too; each releases what it held."""
    counters = HlsCounters()
    disk = DiskPool(1, max_backlog=10_000)
    loop = asyncio.get_running_loop()

    def pending(label: str) -> RecordingQueue:
        writer: asyncio.Future[RecordingWriter] = loop.create_future()  # never created
        return RecordingQueue(writer, disk=disk, label=label, counters=counters)

    many = pending("stream many")
    for _ in range(MAX_RECORDING_JOBS):
        assert many.submit(lambda writer: None)
    assert not many.submit(lambda writer: None)
    assert many.ended is not None and f"limit {MAX_RECORDING_JOBS}" in many.ended

    first, second = pending("stream first"), pending("stream second")
    assert first.submit(lambda writer: None, 6_000)
    assert not second.submit(lambda writer: None, 6_000)
    assert second.ended is not None and "all recordings together" in second.ended
    assert first.ended is None and disk.backlog == 6_000
    assert counters.recordings_behind == 2
    assert sum("the recording stops" in r.getMessage() for r in caplog.records) == 2
    for queue in (many, first, second):
        assert await queue.close() is None  # the asset never came: nothing to finalize
    assert disk.backlog == 0
