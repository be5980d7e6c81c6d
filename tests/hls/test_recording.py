"""Recordings on disk: the append-only EVENT playlist, finalizing as VOD, and what a crash
leaves behind (a torn append, a segment file missing, stray temporary files)."""

from __future__ import annotations

from pathlib import Path

from relay.hls.model import SegmentInfo
from relay.hls.playlist import VariantInfo
from relay.hls.recording import (
    RECORDING_PLAYLIST,
    RecordingWriter,
    finalize,
    listed_part,
    read_variant,
)
from tests.hls.playlist_checker import check_media_playlist

T0 = 1_700_000_000.0


def record(directory: Path, durations: list[float], *, discontinuity_at: int = -1,
           first_msn: int = 100) -> RecordingWriter:
    writer = RecordingWriter(directory)
    writer.write_init(0, b"init-bytes")
    start = T0
    for index, duration in enumerate(durations):
        segment = SegmentInfo(msn=first_msn + index, init=0, program_date_time=start,
                              discontinuity=index == discontinuity_at, duration=duration)
        writer.write_segment(segment, f"segment {index}".encode(), target_duration=2)
        start += duration
    return writer


def test_the_live_recording_is_a_valid_event_playlist(tmp_path: Path) -> None:
    record(tmp_path, [2.0, 2.0, 1.5], discontinuity_at=2)
    text = (tmp_path / RECORDING_PLAYLIST).read_text()
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in text and "#EXT-X-ENDLIST" not in text
    assert "#EXT-X-MEDIA-SEQUENCE:100" in text and text.count("#EXT-X-MAP") == 1
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    check_media_playlist(text)
    assert (tmp_path / "101.m4s").read_bytes() == b"segment 1"


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
