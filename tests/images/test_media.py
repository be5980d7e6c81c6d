"""Timelines: a recording's playlist parsed as Relay writes it, lookups by time, bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.images.media import (
    MediaGone,
    OutsideMedia,
    RecordingIndex,
    RecordingReader,
    SegmentEntry,
    Timeline,
    parse_recording_playlist,
    recording_version,
)

EVENT = """#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-PLAYLIST-TYPE:EVENT
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI="init-0.mp4"
#EXT-X-PROGRAM-DATE-TIME:2026-12-07T06:00:00.000Z
#EXTINF:2.000,
7.m4s
#EXTINF:1.500,
8.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI="init-1.mp4"
#EXTINF:2.250,
9.m4s
#EXTINF:2.0"""  # a torn tail: an append caught half-way


def test_a_recording_playlist_becomes_a_timeline() -> None:
    timeline = parse_recording_playlist(EVENT)
    assert timeline.entries == (SegmentEntry(0.0, 2.0, "init-0.mp4", "7.m4s"),
                                SegmentEntry(2.0, 1.5, "init-0.mp4", "8.m4s"),
                                SegmentEntry(3.5, 2.25, "init-1.mp4", "9.m4s"))
    assert (timeline.start, timeline.end) == (0.0, 5.75)
    assert not timeline.live


def test_lookup_by_time_and_bounds() -> None:
    timeline = parse_recording_playlist(EVENT)
    assert timeline.at(0.0).media == "7.m4s"
    assert timeline.at(1.999).media == "7.m4s"
    assert timeline.at(2.0).media == "8.m4s"
    assert timeline.at(5.75).media == "9.m4s"  # the end belongs to the last segment
    timeline.check("time", 5.75)
    with pytest.raises(OutsideMedia, match=r"^time: 5\.8 is outside the media, 0\.000\.\.5\.750"):
        timeline.check("time", 5.8)
    live = Timeline((SegmentEntry(30.0, 2.0, "i", "m"),), live=True)
    with pytest.raises(OutsideMedia, match="outside the live window"):
        live.check("start", 29.0)
    with pytest.raises(MediaGone):
        Timeline((), live=True).check("time", 0)


def test_names_the_playlist_could_not_list_are_not_read(tmp_path: Path) -> None:
    (tmp_path / "7.m4s").write_bytes(b"segment")
    (tmp_path / "secret").write_bytes(b"no")
    reader = RecordingReader(tmp_path)
    assert reader.read("7.m4s") == b"segment"
    for name in ("secret", "../7.m4s", "07.m4s", "8.m4s"):
        with pytest.raises(MediaGone):
            reader.read(name)


def test_the_index_is_read_once_per_version(tmp_path: Path) -> None:
    playlist = tmp_path / "rendition.m3u8"
    assert recording_version(tmp_path) is None
    playlist.write_text(EVENT)
    index = RecordingIndex(entries=2)
    version = recording_version(tmp_path)
    assert version is not None
    first = index.timeline(tmp_path, version)
    playlist.write_text("#EXTM3U\n")  # changed behind the same version: not read again
    assert index.timeline(tmp_path, version) is first
    assert recording_version(tmp_path) != version
    with pytest.raises(MediaGone):  # the new version lists nothing
        index.timeline(tmp_path, recording_version(tmp_path))
    with pytest.raises(MediaGone):
        index.timeline(tmp_path / "gone", version)
