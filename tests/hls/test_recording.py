"""Recordings on disk: the append-only EVENT playlist, finalizing as VOD, what a crash
leaves behind (a torn append, a segment file missing, stray temporary files), and a disk
that fills up (simulated, and a real tmpfs when the tests run as root)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from relay.hls.model import SegmentInfo
from relay.hls.multivariant import VariantInfo
from relay.hls.recording import (
    RECORDING_PLAYLIST,
    RecordingWriter,
    finalize,
    listed_part,
    read_variant,
)
from tests.hls.full_disk import DiskBudget, fill, small_tmpfs
from tests.hls.helpers.recording import T0, record
from tests.hls.playlist_checker import check_media_playlist, parse_media_playlist


def test_the_live_recording_is_a_valid_event_playlist(tmp_path: Path) -> None:
    record(tmp_path, [2.0, 2.0, 1.5], discontinuity_at=2)
    text = (tmp_path / RECORDING_PLAYLIST).read_text()
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in text and "#EXT-X-ENDLIST" not in text
    assert "#EXT-X-MEDIA-SEQUENCE:100" in text and text.count("#EXT-X-MAP") == 1
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    check_media_playlist(text)
    assert (tmp_path / "101.m4s").read_bytes() == b"segment 1"


def test_a_segment_given_as_its_parts_is_written_whole(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path)
    writer.write_init(0, b"init")
    segment = SegmentInfo(msn=7, init=0, program_date_time=T0, duration=2.0)
    writer.write_segment(segment, (b"part 0;", b"", b"part 2"), target_duration=2)
    assert (tmp_path / "7.m4s").read_bytes() == b"part 0;part 2"
    assert not list(tmp_path.glob("*.tmp"))
    assert "7.m4s" in (tmp_path / RECORDING_PLAYLIST).read_text()


def test_a_second_writer_appends_to_the_same_recording(tmp_path: Path) -> None:
    record(tmp_path, [2.0, 2.0])
    record(tmp_path, [2.0], first_msn=102, discontinuity_at=0)
    text = (tmp_path / RECORDING_PLAYLIST).read_text()
    assert text.count("#EXTM3U") == 1 and text.count(".m4s") == 3


def test_finalize_makes_a_vod_playlist_and_is_repeatable(tmp_path: Path) -> None:
    record(tmp_path, [2.0, 2.0, 1.25])
    summary = finalize(tmp_path)
    assert summary is not None and summary.segments == 3 and summary.duration == 5.25
    assert summary.started_at == T0
    text = (tmp_path / RECORDING_PLAYLIST).read_text()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.endswith("#EXT-X-ENDLIST\n")
    check_media_playlist(text)
    assert finalize(tmp_path) == summary
    assert (tmp_path / RECORDING_PLAYLIST).read_text() == text


def test_finalize_after_a_crash_drops_a_torn_tail_and_missing_files(tmp_path: Path) -> None:
    record(tmp_path, [2.0, 2.0, 2.0, 2.0])
    (tmp_path / "102.m4s").unlink()  # listed, but its file is gone
    with (tmp_path / RECORDING_PLAYLIST).open("a") as playlist:
        playlist.write("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:28.000Z\n#EXTINF:2.0")
    (tmp_path / "104.m4s.tmp").write_bytes(b"half a segment")
    summary = finalize(tmp_path)
    assert summary is not None and summary.segments == 3 and summary.duration == 6.0
    text = (tmp_path / RECORDING_PLAYLIST).read_text()
    assert "102.m4s" not in text and "#EXTINF:2.0\n" not in text
    assert "#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME" in text  # the gap is marked
    check_media_playlist(text)
    assert not list(tmp_path.glob("*.tmp"))


def test_finalize_without_segments_leaves_the_directory_alone(tmp_path: Path) -> None:
    assert finalize(tmp_path / "missing") is None
    (tmp_path / RECORDING_PLAYLIST).write_text("#EXTM3U\n#EXT-X-TARGETDURATION:2\n")
    assert finalize(tmp_path) is None
    assert (tmp_path / RECORDING_PLAYLIST).read_text() == "#EXTM3U\n#EXT-X-TARGETDURATION:2\n"


def test_listed_part_cuts_a_half_written_entry() -> None:
    text = "#EXTM3U\n#EXTINF:2.000,\n0.m4s\n#EXTINF:2.0"
    assert listed_part(text) == "#EXTM3U\n#EXTINF:2.000,\n0.m4s\n"
    assert listed_part("#EXTM3U\n") == ""


def test_variant_round_trip_and_unreadable_files(tmp_path: Path) -> None:
    variant = VariantInfo(bandwidth=900_000, codecs=("avc1.42c00d", "mp4a.40.2"),
                          average_bandwidth=800_000, resolution=(320, 240), frame_rate=30.0)
    RecordingWriter(tmp_path).write_variant(variant)
    assert read_variant(tmp_path) == variant
    (tmp_path / "rendition.json").write_text("{not json")
    assert read_variant(tmp_path) is None
    assert read_variant(tmp_path / "missing") is None


def test_finalize_restates_the_variant_from_every_segment(tmp_path: Path) -> None:
    writer = record(tmp_path, [2.0, 1.0])  # 9-byte segments: 36 and 72 bit/s
    writer.write_variant(VariantInfo(bandwidth=1, codecs=("mp4a.40.2",), average_bandwidth=1))
    summary = finalize(tmp_path)
    assert summary is not None and (summary.peak_bps, summary.average_bps) == (72, 48)
    variant = read_variant(tmp_path)
    assert variant is not None
    assert (variant.bandwidth, variant.average_bandwidth) == (72, 48)


# -- a disk that fills up ----------------------------------------------------------------

SEGMENT_BYTES = 40_000


def segment_info(index: int, first_msn: int = 100) -> SegmentInfo:
    return SegmentInfo(msn=first_msn + index, init=0, program_date_time=T0 + 2 * index,
                       discontinuity=False, duration=2.0)


def record_until_full(directory: Path, limit: int = 1000) -> tuple[RecordingWriter, int]:
    """Record 40 KB segments until a write fails; the writer and how many were recorded."""
    writer = RecordingWriter(directory)
    writer.write_init(0, b"init-bytes")
    for index in range(limit):
        try:
            writer.write_segment(segment_info(index), bytes([index % 256]) * SEGMENT_BYTES, 2)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            return writer, index
    raise AssertionError(f"the disk never filled in {limit} segments")


def assert_whole_recording(directory: Path, segments: int, *, finished: bool) -> None:
    """The playlist has no torn line and lists exactly the first `segments` segments, each
    complete on disk; finished: a valid VOD playlist with ENDLIST."""
    text = (directory / RECORDING_PLAYLIST).read_text()
    assert text.endswith("\n") and (finished or text.endswith(".m4s\n")), text[-200:]
    playlist = (check_media_playlist(text) if finished else parse_media_playlist(text))
    assert [s.uri for s in playlist.segments] == [f"{100 + i}.m4s" for i in range(segments)]
    for index, segment in enumerate(playlist.segments):
        assert (directory / segment.uri).read_bytes() == bytes([index % 256]) * SEGMENT_BYTES
    if finished:
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.endswith("#EXT-X-ENDLIST\n")
    assert not list(directory.glob("*.tmp"))


@pytest.mark.parametrize("budget", [
    # Inside the init, inside a segment file, inside the playlist's first append (the
    # header), inside a later append, and at every byte around one append.
    5, 20_000, 40_020, 40_200, *range(120_700, 121_000, 7)])
def test_a_failed_write_leaves_no_torn_line_and_no_half_segment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    with DiskBudget(budget).installed(monkeypatch) as disk:
        try:
            writer, recorded = record_until_full(tmp_path)
        except OSError:  # the init itself did not fit
            assert disk.failures == 1 and not (tmp_path / RECORDING_PLAYLIST).exists()
            return
    assert disk.failures == 1
    if recorded == 0:
        playlist = tmp_path / RECORDING_PLAYLIST
        assert not playlist.exists() or not playlist.read_bytes()  # cut back to nothing
        assert writer.finish() is None
        assert not list(tmp_path.glob("*.m4s"))
        return
    assert_whole_recording(tmp_path, recorded, finished=False)
    assert not (tmp_path / f"{100 + recorded}.m4s").exists()  # unlisted: its space freed
    summary = writer.finish()
    assert summary is not None and summary.segments == recorded
    assert_whole_recording(tmp_path, recorded, finished=True)


def test_a_real_full_disk_stops_the_recording_and_it_is_finalized(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", 1024 * 1024) as disk:
        writer, recorded = record_until_full(disk / "asset")
        assert recorded > 5
        assert_whole_recording(disk / "asset", recorded, finished=False)
        summary = writer.finish()
        assert summary is not None and summary.segments == recorded
        assert summary.duration == 2.0 * recorded
        assert_whole_recording(disk / "asset", recorded, finished=True)


def test_finalize_on_a_disk_with_no_byte_left_rewrites_the_playlist_in_place(
        tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", 1024 * 1024) as disk:
        writer, recorded = record_until_full(disk / "asset")
        writer.write_variant(VariantInfo(bandwidth=1, codecs=("avc1.42c00d",)))
        fill(disk)  # other writers took the space the failed segment gave back
        with pytest.raises(OSError) as full:
            (disk / "asset" / "probe").write_bytes(b"x" * 8192)
        assert full.value.errno == errno.ENOSPC
        (disk / "asset" / "probe").unlink(missing_ok=True)
        summary = writer.finish()
        assert summary is not None and summary.segments == recorded
        assert_whole_recording(disk / "asset", recorded, finished=True)
        variant = read_variant(disk / "asset")
        assert variant is not None and variant.bandwidth == 1  # no room to restate it


def test_in_place_finalize_drops_the_optional_tag_when_the_file_has_no_slack(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = record(tmp_path, [2.0, 2.0, 2.0])
    path = tmp_path / RECORDING_PLAYLIST
    before = path.stat().st_size

    def no_room(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    # A file whose blocks are exactly full: the finished playlist may not grow it.
    monkeypatch.setattr("relay.hls.recording._write_atomically", no_room)
    monkeypatch.setattr("relay.hls.recording.os.fstat",
                        lambda fd: SimpleNamespace(st_size=before, st_blocks=0))
    summary = writer.finish()
    monkeypatch.undo()
    assert summary is not None and summary.segments == 3
    text = path.read_text()
    assert len(text) <= before and "#EXT-X-INDEPENDENT-SEGMENTS" not in text
    check_media_playlist(text, require_independent_segments=False)
    assert text.endswith("#EXT-X-ENDLIST\n") and "#EXT-X-PLAYLIST-TYPE:VOD" in text


def test_finishing_a_recording_makes_it_durable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = record(tmp_path, [2.0] * 40)
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    summary = writer.finish(VariantInfo(bandwidth=1, codecs=("avc1.42c00d",)))
    monkeypatch.undo()
    assert summary is not None and summary.segments == 40
    names = [Path(path).name for path in synced]
    # The segments written last (before the playlist that lists them), the new playlist
    # and variant (before they replace the old ones), and the directory (the renames).
    assert names[:32] == [f"{100 + i}.m4s" for i in range(8, 40)]
    assert names[32:] == ["rendition.m3u8.tmp", "rendition.json.tmp", tmp_path.name]
    assert read_variant(tmp_path) is not None
