"""The viewer simulator's playlist and fragment reading, on what Relay's own playlist and fMP4
writers produce (the simulator runs end to end in the suite's smoke run)."""

from __future__ import annotations

import pytest

from benchmarks.viewers import ViewerError, first_decode_time, listed_parts
from relay.hls import fmp4
from relay.hls.playlist import LivePlaylist, PlaylistKind, PlaylistRenderer

T0 = 1_700_000_000.0


def playlist_with_parts() -> LivePlaylist:
    playlist = LivePlaylist(kind=PlaylistKind.LIVE, target_duration=2, part_target=0.3,
                            first_msn=40)
    for msn in range(3):
        playlist.start_segment(init=0, program_date_time=T0 + 2 * msn)
        for index in range(7):
            playlist.add_part(0.3 if index < 6 else 0.2, independent=index == 0)
        playlist.complete_segment(2.0)
    playlist.start_segment(init=0, program_date_time=T0 + 6)
    playlist.add_part(0.3, independent=True)
    playlist.add_part(0.3, independent=False)
    return playlist


def test_listed_parts_numbers_parts_by_segment() -> None:
    playlist = playlist_with_parts()
    parts, part_target = listed_parts(PlaylistRenderer(playlist).render())
    assert part_target == 0.3
    assert [(p.msn, p.index) for p in parts][-3:] == [(42, 6), (43, 0), (43, 1)]
    assert parts[-1].uri.endswith(".m4s") and parts[-1].duration == 0.3
    assert {p.msn for p in parts} <= {40, 41, 42, 43}


def test_listed_parts_after_a_skip() -> None:
    playlist = LivePlaylist(kind=PlaylistKind.LIVE, target_duration=2, part_target=0.3)
    for msn in range(12):
        playlist.start_segment(init=0, program_date_time=T0 + 2 * msn)
        for index in range(7):
            playlist.add_part(0.3 if index < 6 else 0.2, independent=index == 0)
        playlist.complete_segment(2.0)
    text = PlaylistRenderer(playlist).render(skip=True)
    assert "#EXT-X-SKIP" in text
    full, _ = listed_parts(PlaylistRenderer(playlist).render())
    delta, _ = listed_parts(text)
    assert [(p.msn, p.index, p.uri) for p in delta] == [(p.msn, p.index, p.uri) for p in full]


@pytest.mark.parametrize("decode_time", [0, 90_000 * 7 + 3000, 2**33 + 5])
def test_first_decode_time_reads_the_first_tfdt(decode_time: int) -> None:
    fragment = fmp4.media_fragment(3, [
        fmp4.TrackRun(track_id=1, base_media_decode_time=decode_time, samples=(
            fmp4.Sample(duration=3000, keyframe=True, composition_offset=0, data=b"\0" * 9),)),
        fmp4.TrackRun(track_id=2, base_media_decode_time=12, samples=(
            fmp4.Sample(duration=1024, keyframe=True, composition_offset=0, data=b"\1" * 5),)),
    ])
    assert first_decode_time(fragment) == decode_time / 90_000


def test_first_decode_time_needs_a_fragment() -> None:
    with pytest.raises(ViewerError):
        first_decode_time(b"not a fragment")
