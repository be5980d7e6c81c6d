"""Media playlists: golden texts, the live window, delta updates, recordings, the playlist's
refusals, and the playlist checker, for media and multivariant playlists (it must catch every
rule it claims). The multivariant renderer's own tests are in test_multivariant.py."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.hls.disk import read_stored
from relay.hls.model import ResourceName, SegmentInfo, StoredMedia
from relay.hls.multivariant import VariantInfo, render_multivariant
from relay.hls.playlist import (
    MEMORY_TARGET_DURATIONS,
    Availability,
    LivePlaylist,
    PlaylistError,
    PlaylistKind,
    PlaylistRenderer,
    format_program_date_time,
    render_media_playlist,
)
from tests.hls.playlist_checker import (
    check_media_playlist,
    check_multivariant,
)

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
QUARTERS = (0.5, 0.5, 0.5, 0.5)


class Feed:
    """Plays the segmenter: starts, fills and completes segments with a media clock. Part
    `msn.index` holds the bytes b"msn.index;", a segment without parts b"msn;"."""

    def __init__(self, playlist: LivePlaylist) -> None:
        self.playlist = playlist
        self.clock = T0

    def segment(self, parts: Sequence[float] = (), *, duration: float | None = None,
                init: int = 0, discontinuity: bool = False,
                complete: bool = True) -> SegmentInfo:
        segment = self.playlist.start_segment(init=init, program_date_time=self.clock,
                                              discontinuity=discontinuity)
        for index, part in enumerate(parts):
            self.playlist.add_part(part, independent=index == 0,
                                   data=f"{segment.msn}.{index};".encode())
        if not parts and self.playlist.part_target is None:
            self.playlist.add_fragment(f"{segment.msn};".encode())
        if complete:
            length = duration if duration is not None else sum(parts)
            self.playlist.complete_segment(length)
            self.clock += length
        return segment


def low_latency(*, window_segments: int = 15) -> LivePlaylist:
    return LivePlaylist(target_duration=2, part_target=0.5, window_segments=window_segments)


# -- golden texts ---------------------------------------------------------------------------

LOW_LATENCY_GOLDEN = """\
#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500,CAN-SKIP-UNTIL=12.000,\
HOLD-BACK=6.000
#EXT-X-PART-INF:PART-TARGET=0.500
#EXT-X-MAP:URI="init-0.mp4"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXT-X-PART:DURATION=0.500,URI="0.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI="0.1.m4s"
#EXT-X-PART:DURATION=0.500,URI="0.2.m4s"
#EXT-X-PART:DURATION=0.500,URI="0.3.m4s"
#EXTINF:2.000,
0.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z
#EXT-X-PART:DURATION=0.500,URI="1.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI="1.1.m4s"
#EXT-X-PART:DURATION=0.500,URI="1.2.m4s"
#EXT-X-PART:DURATION=0.400,URI="1.3.m4s"
#EXTINF:1.900,
1.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:23.900Z
#EXT-X-PART:DURATION=0.500,URI="2.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI="2.1.m4s"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="2.2.m4s"
"""


def low_latency_sample() -> LivePlaylist:
    playlist = low_latency()
    feed = Feed(playlist)
    feed.segment(QUARTERS)
    feed.segment((0.5, 0.5, 0.5, 0.4))
    feed.segment((0.5, 0.5), complete=False)
    return playlist


def test_low_latency_playlist_golden() -> None:
    text = render_media_playlist(low_latency_sample())
    assert text == LOW_LATENCY_GOLDEN
    check_media_playlist(text)


def test_hint_after_a_completed_segment_names_the_next_segments_first_part() -> None:
    playlist = low_latency()
    Feed(playlist).segment(QUARTERS)
    text = render_media_playlist(playlist)
    assert text.endswith('0.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI="1.0.m4s"\n')
    assert playlist.next_part == (1, 0)
    check_media_playlist(text)


def test_no_hint_before_the_first_segment_and_none_without_parts() -> None:
    assert low_latency().next_part is None
    reduced = LivePlaylist(target_duration=2)
    Feed(reduced).segment(duration=2.0)
    assert reduced.next_part is None
    assert "PRELOAD-HINT" not in render_media_playlist(reduced)


REDUCED_GOLDEN = """\
#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.000,HOLD-BACK=6.000
#EXT-X-MAP:URI="init-0.mp4"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXTINF:2.000,
0.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z
#EXTINF:1.750,
1.m4s
"""


def reduced_sample() -> LivePlaylist:
    playlist = LivePlaylist(target_duration=2)
    feed = Feed(playlist)
    feed.segment(duration=2.0)
    feed.segment(duration=1.75)
    feed.segment(complete=False)  # open: not listed until complete
    return playlist


def test_segments_only_playlist_golden() -> None:
    text = render_media_playlist(reduced_sample())
    assert text == REDUCED_GOLDEN
    check_media_playlist(text)


def test_discontinuity_and_init_change_tags_come_before_the_first_part() -> None:
    playlist = low_latency()
    feed = Feed(playlist)
    feed.segment(QUARTERS)
    feed.segment(QUARTERS, init=1, discontinuity=True)
    feed.segment(QUARTERS, init=1)
    feed.segment(QUARTERS, init=2)
    text = render_media_playlist(playlist)
    assert ('0.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI="init-1.mp4"\n'
            '#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z\n'
            '#EXT-X-PART:DURATION=0.500,URI="1.0.m4s",INDEPENDENT=YES\n') in text
    assert text.count("#EXT-X-MAP") == 3  # one per init change, none repeated for segment 2
    assert '2.m4s\n#EXT-X-MAP:URI="init-2.mp4"\n#EXT-X-PROGRAM-DATE-TIME' in text
    assert "#EXT-X-DISCONTINUITY-SEQUENCE" not in text
    check_media_playlist(text)


def test_program_date_time_is_iso_8601_with_milliseconds_and_z() -> None:
    assert format_program_date_time(T0) == "2023-11-14T22:13:20.000Z"
    assert format_program_date_time(T0 + 0.2506) == "2023-11-14T22:13:20.251Z"
    assert format_program_date_time(T0 + 0.9996) == "2023-11-14T22:13:21.000Z"


# -- the live window ------------------------------------------------------------------------

def test_window_keeps_the_newest_segments_and_advances_media_sequence() -> None:
    playlist = LivePlaylist(target_duration=2, window_segments=4)
    feed = Feed(playlist)
    previous = None
    for _ in range(7):
        feed.segment(duration=2.0)
        text = render_media_playlist(playlist)
        check_media_playlist(text, previous=previous)
        previous = text
    assert [segment.msn for segment in playlist.segments] == [3, 4, 5, 6]
    assert playlist.media_sequence == 3
    assert "#EXT-X-MEDIA-SEQUENCE:3\n" in render_media_playlist(playlist)


def test_window_never_gets_shorter_than_three_target_durations() -> None:
    # rfc8216bis 6.2.2: a window of one segment still holds 3 x TARGETDURATION of media.
    playlist = LivePlaylist(target_duration=2, window_segments=1)
    feed = Feed(playlist)
    for _ in range(10):
        feed.segment(duration=1.0)
    assert [segment.msn for segment in playlist.segments] == [4, 5, 6, 7, 8, 9]
    assert playlist.duration == pytest.approx(6.0)


def test_discontinuity_sequence_counts_the_discontinuities_that_left_the_window() -> None:
    playlist = LivePlaylist(target_duration=2, window_segments=3)
    feed = Feed(playlist)
    previous = None
    for index in range(8):
        feed.segment(duration=2.0, discontinuity=index in (1, 2), init=index // 2)
        text = render_media_playlist(playlist)
        check_media_playlist(text, previous=previous)
        previous = text
    assert playlist.discontinuity_sequence == 2
    text = render_media_playlist(playlist)
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:2\n" in text
    assert "#EXT-X-DISCONTINUITY\n" not in text


def test_parts_leave_the_playlist_after_3_target_durations_and_expire_3_later() -> None:
    playlist = low_latency(window_segments=20)
    feed = Feed(playlist)
    for _ in range(10):  # segments 0..9, each 2 s; segment i ends 2 x (9 - i) s before the edge
        feed.segment(QUARTERS)
    listed = [segment.msn for segment in playlist.segments if playlist.lists_parts(segment)]
    assert listed == [6, 7, 8, 9]  # at most 6 s (3 x TD) old
    text = render_media_playlist(playlist)
    assert '"5.0.m4s"' not in text and '"6.0.m4s"' in text
    check_media_playlist(text)
    # Still downloadable for 3 x TD more: segments 3..5; older ones are gone.
    assert playlist.part_availability(3, 0) is Availability.READY
    assert playlist.part_availability(2, 3) is Availability.MISSING
    # They are no longer served as parts; the segment still is, whole.
    assert playlist.media(ResourceName(msn=3, part=0)) == b"3.0;"
    assert [playlist.media(ResourceName(msn=msn, part=0)) for msn in range(3)] == [None] * 3
    assert playlist.fragments(2) == (b"2.0;", b"2.1;", b"2.2;", b"2.3;")  # as held: not joined
    before = playlist.held_bytes()
    assert playlist.media(ResourceName(msn=2)) == b"2.0;2.1;2.2;2.3;"
    assert playlist.fragments(2) == (b"2.0;2.1;2.2;2.3;",)  # joined, it is held once
    assert playlist.held_bytes() == before


def test_an_open_segment_without_parts_is_not_listed_yet() -> None:
    playlist = low_latency()
    feed = Feed(playlist)
    feed.segment(QUARTERS)
    feed.segment(init=1, complete=False)
    text = render_media_playlist(playlist)
    assert text.endswith('0.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI="1.0.m4s"\n')
    assert "init-1" not in text and text.count("PROGRAM-DATE-TIME") == 1
    check_media_playlist(text)


def test_parts_of_the_open_segment_are_always_listed() -> None:
    playlist = low_latency()
    feed = Feed(playlist)
    open_segment = feed.segment((0.5,), complete=False)
    assert playlist.lists_parts(open_segment)
    assert '"0.0.m4s",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT' in render_media_playlist(playlist)


def test_resource_availability_for_the_http_layer() -> None:
    playlist = low_latency()
    feed = Feed(playlist)
    feed.segment(QUARTERS)
    feed.segment((0.5, 0.5), init=1, complete=False)
    cases = {
        ResourceName(init=0): Availability.READY,
        ResourceName(init=1): Availability.READY,
        ResourceName(init=2): Availability.MISSING,
        ResourceName(msn=0): Availability.READY,
        ResourceName(msn=1): Availability.MISSING,  # open: not a segment yet
        ResourceName(msn=2): Availability.MISSING,
        ResourceName(msn=0, part=3): Availability.READY,
        ResourceName(msn=0, part=4): Availability.MISSING,
        ResourceName(msn=1, part=1): Availability.READY,
        ResourceName(msn=1, part=2): Availability.PENDING,  # the hinted part
        ResourceName(msn=1, part=3): Availability.MISSING,  # not hinted yet
        ResourceName(msn=2, part=0): Availability.MISSING,
    }
    assert {name: playlist.availability(name) for name in cases} == cases
    playlist.add_part(0.5, independent=False)
    assert playlist.availability(ResourceName(msn=1, part=2)) is Availability.READY
    assert playlist.availability(ResourceName(msn=1, part=3)) is Availability.PENDING
    # The segment ends at 3 parts: the hinted 1.3 will never exist, and the hint moves on.
    playlist.complete_segment(1.5)
    assert playlist.availability(ResourceName(msn=1, part=3)) is Availability.MISSING
    assert playlist.availability(ResourceName(msn=2, part=0)) is Availability.PENDING
    assert playlist.availability(ResourceName(msn=1)) is Availability.READY


def test_segments_stay_downloadable_after_leaving_the_window_then_expire() -> None:
    playlist = LivePlaylist(target_duration=2, window_segments=3)
    feed = Feed(playlist)
    for _ in range(4):
        feed.segment(duration=2.0)
    assert playlist.media_sequence == 1
    assert playlist.segment(0) is None
    assert playlist.segment_availability(0) is Availability.READY
    for _ in range(4):
        feed.segment(duration=2.0)
    # A segment that left a 6 s playlist stays for its 2 s plus those 6 s after its start.
    assert playlist.media_sequence == 5
    assert playlist.segment_availability(3) is Availability.MISSING
    assert playlist.segment_availability(4) is Availability.READY
    assert [playlist.media(ResourceName(msn=msn)) for msn in range(3, 5)] == [None, b"4;"]
    assert [playlist.fragments(msn) for msn in range(3, 5)] == [(), (b"4;",)]
    assert playlist.init_availability(0) is Availability.READY


def test_the_bytes_of_parts_segments_and_inits_are_held_once() -> None:
    playlist = low_latency()
    playlist.add_init(0, b"init 0")
    feed = Feed(playlist)
    feed.segment(QUARTERS)
    feed.segment((0.5,), complete=False)
    assert playlist.media(ResourceName(init=0)) == b"init 0"
    assert playlist.media(ResourceName(msn=0, part=3)) == b"0.3;"
    assert playlist.media(ResourceName(msn=1, part=0)) == b"1.0;"
    assert playlist.media(ResourceName(msn=1, part=1)) is None  # the hinted part
    assert playlist.media(ResourceName(msn=1)) is None  # open: not a segment yet
    assert playlist.fragments(1) == (b"1.0;",)
    parts = len(b"init 0") + 5 * len(b"0.0;")
    assert playlist.held_bytes() == parts  # no segment is held joined ...
    whole = playlist.media(ResourceName(msn=0))
    assert whole == b"0.0;0.1;0.2;0.3;"
    assert playlist.media(ResourceName(msn=0)) is whole  # ... until one is asked for
    assert playlist.held_bytes() == parts + len(whole)
    assert playlist.fragments(0) == (whole,)
    playlist.add_part(0.5, independent=False, data=b"1.1;")
    playlist.complete_segment(1.0)
    for _ in range(6):  # segment 0 ends 13 s (over 6 x TD) before the edge: its parts go
        feed.segment(QUARTERS)
    assert playlist.media(ResourceName(msn=0, part=0)) is None
    assert playlist.media(ResourceName(msn=0)) is whole
    assert playlist.held_bytes() == sum(
        len(data) for msn in range(playlist.next_msn) for data in playlist.fragments(msn)
    ) + len(b"init 0")


def test_a_playlist_without_parts_holds_each_segment_whole() -> None:
    playlist = LivePlaylist(target_duration=2)
    playlist.start_segment(init=0, program_date_time=T0)
    playlist.add_fragment(b"a")
    playlist.add_fragment(b"b")
    assert playlist.fragments(0) == (b"a", b"b")  # the open segment, as the images read it
    playlist.complete_segment(2.0)
    assert playlist.fragments(0) == (b"ab",) and playlist.held_bytes() == 2
    assert playlist.media(ResourceName(msn=0)) == b"ab"
    assert playlist.media(ResourceName(msn=0, part=0)) is None
    with pytest.raises(PlaylistError, match="no open segment"):
        playlist.add_fragment(b"c")
    with pytest.raises(PlaylistError, match="give their bytes to add_part"):
        low_latency().add_fragment(b"c")


def test_an_init_is_held_while_a_segment_names_it_and_the_newest_always() -> None:
    playlist = LivePlaylist(target_duration=2, window_segments=1)
    feed = Feed(playlist)
    playlist.add_init(0, b"0")
    playlist.add_init(1, b"1")  # never named: dropped for the newer one
    playlist.add_init(2, b"2")
    assert [playlist.media(ResourceName(init=i)) for i in range(3)] == [None, None, b"2"]
    feed.segment(duration=2.0, init=2)
    playlist.add_init(3, b"3")
    assert playlist.media(ResourceName(init=2)) == b"2"  # segment 0 names it
    for _ in range(4):
        feed.segment(duration=2.0, init=3)
    assert playlist.segment_availability(0) is Availability.MISSING
    assert [playlist.media(ResourceName(init=i)) for i in (2, 3)] == [None, b"3"]


def test_renderer_caches_per_revision() -> None:
    playlist = low_latency()
    feed = Feed(playlist)
    feed.segment(QUARTERS)
    renderer = PlaylistRenderer(playlist)
    first = renderer.render()
    assert renderer.render() is first
    assert renderer.render(skip=True) == first  # nothing to skip yet: the whole playlist
    playlist.start_segment(init=0, program_date_time=T0 + 2)
    assert renderer.render() is not first
    assert renderer.render() == render_media_playlist(playlist)


def test_renderer_caches_the_encoded_forms_per_revision() -> None:
    playlist = low_latency()
    feed = Feed(playlist)
    feed.segment(QUARTERS)
    renderer = PlaylistRenderer(playlist)
    plain = renderer.encoded()
    packed = renderer.encoded(gzipped=True)
    assert plain == render_media_playlist(playlist).encode("ascii")
    assert gzip.decompress(packed) == plain and len(packed) < len(plain)
    assert renderer.encoded() is plain and renderer.encoded(gzipped=True) is packed
    feed.segment(QUARTERS, complete=False)
    changed = renderer.encoded(gzipped=True)
    assert changed is not packed
    assert gzip.decompress(changed) == render_media_playlist(playlist).encode("ascii")


# -- delta updates --------------------------------------------------------------------------

DELTA_GOLDEN = """\
#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:1
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6.000,HOLD-BACK=3.000
#EXT-X-SKIP:SKIPPED-SEGMENTS=4
#EXT-X-MAP:URI="init-1.mp4"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.000Z
#EXTINF:1.000,
4.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:25.000Z
#EXTINF:1.000,
5.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:26.000Z
#EXTINF:1.000,
6.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:27.000Z
#EXTINF:1.000,
7.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:28.000Z
#EXTINF:1.000,
8.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:29.000Z
#EXTINF:1.000,
9.m4s
"""


def skip_sample(*, disconnect_at: int = 2) -> LivePlaylist:
    playlist = LivePlaylist(target_duration=1, window_segments=12)
    feed = Feed(playlist)
    for index in range(10):
        feed.segment(duration=1.0, init=1 if index >= 3 else 0,
                     discontinuity=index == disconnect_at)
    return playlist


def test_delta_update_golden_skips_older_segments_with_their_tags() -> None:
    # 10 s listed, CAN-SKIP-UNTIL 6 s: segments ending at or before 4 s are skipped. The
    # DISCONTINUITY of segment 2 and the MAP change at segment 3 go with them; the MAP in
    # force is repeated for segment 4; the sequence numbers stay those of the full playlist.
    playlist = skip_sample()
    delta = render_media_playlist(playlist, skip=True)
    assert delta == DELTA_GOLDEN
    full = render_media_playlist(playlist)
    assert full.count("#EXT-X-MAP") == 2 and "#EXT-X-DISCONTINUITY\n" in full
    parsed = check_media_playlist(delta, previous=full)
    assert parsed.skipped == 4 and parsed.segments[0].msn == 4


def test_delta_update_keeps_a_discontinuity_on_the_first_kept_segment() -> None:
    delta = render_media_playlist(skip_sample(disconnect_at=4), skip=True)
    assert "SKIPPED-SEGMENTS=4\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP" in delta
    check_media_playlist(delta)


def test_no_delta_form_after_endlist_or_with_nothing_to_skip() -> None:
    playlist = skip_sample()
    playlist.end()
    text = render_media_playlist(playlist, skip=True)
    assert "#EXT-X-SKIP" not in text and "CAN-SKIP-UNTIL" not in text
    assert "#EXT-X-VERSION:6\n" in text and text.endswith("#EXT-X-ENDLIST\n")
    check_media_playlist(text)
    young = LivePlaylist(target_duration=1)
    Feed(young).segment(duration=1.0)
    assert render_media_playlist(young, skip=True) == render_media_playlist(young)


def test_a_low_latency_stream_stays_valid_at_every_step_in_both_forms() -> None:
    playlist = low_latency(window_segments=12)
    feed = Feed(playlist)
    previous_full: str | None = None
    previous_delta: str | None = None
    skipped = 0

    def sample() -> None:
        nonlocal previous_full, previous_delta, skipped
        full = render_media_playlist(playlist)
        delta = render_media_playlist(playlist, skip=True)
        check_media_playlist(full, previous=previous_full)
        parsed = check_media_playlist(delta, previous=previous_delta)
        skipped = max(skipped, parsed.skipped or 0)
        previous_full, previous_delta = full, delta

    for index in range(30):
        feed.segment((), init=index // 10, discontinuity=index == 16, complete=False)
        for position, duration in enumerate((0.5, 0.5, 0.45, 0.3)):
            playlist.add_part(duration, independent=position == 0)
            sample()
        playlist.complete_segment(1.75)
        feed.clock += 1.75
        sample()
    assert skipped > 0
    playlist.end()
    check_media_playlist(render_media_playlist(playlist), previous=previous_full)


_MILLIS = st.integers(min_value=425, max_value=500).map(lambda ms: ms / 1000)
_SEGMENTS = st.lists(
    st.tuples(st.lists(_MILLIS, min_size=0, max_size=3),  # full-size parts
              st.integers(min_value=50, max_value=500).map(lambda ms: ms / 1000),  # the last
              st.booleans(),  # a new init
              st.booleans()),  # a discontinuity
    min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(segments=_SEGMENTS, window=st.integers(min_value=1, max_value=12), end=st.booleans())
def test_random_low_latency_streams_stay_valid(
        segments: list[tuple[list[float], float, bool, bool]], window: int, end: bool) -> None:
    playlist = low_latency(window_segments=window)
    renderer = PlaylistRenderer(playlist)
    previous: dict[bool, str | None] = {False: None, True: None}
    init = 0

    def sample() -> None:
        for skip in (False, True):
            text = renderer.render(skip=skip)
            check_media_playlist(text, previous=previous[skip])
            previous[skip] = text

    clock = T0
    for parts, last, new_init, discontinuity in segments:
        init += new_init
        playlist.start_segment(init=init, program_date_time=clock, discontinuity=discontinuity)
        for index, duration in enumerate([*parts, last]):
            playlist.add_part(duration, independent=index == 0)
            sample()
        length = sum(parts) + last
        playlist.complete_segment(length)
        clock += length
        sample()
    if end:
        playlist.end()
        sample()


# -- recordings -----------------------------------------------------------------------------

def test_recording_is_an_event_playlist_then_vod() -> None:
    playlist = LivePlaylist(kind=PlaylistKind.RECORDING, target_duration=4, window_segments=1)
    feed = Feed(playlist)
    for _ in range(5):
        feed.segment(duration=4.0)
    event = render_media_playlist(playlist)
    assert "#EXT-X-PLAYLIST-TYPE:EVENT\n" in event and "#EXT-X-MEDIA-SEQUENCE:0\n" in event
    assert [segment.msn for segment in playlist.segments] == [0, 1, 2, 3, 4]
    check_media_playlist(event)
    feed.segment(complete=False)
    playlist.end()  # the open segment had no media: dropped
    vod = render_media_playlist(playlist)
    assert vod == (
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-MAP:URI="init-0.mp4"\n'
        + "".join(f"#EXT-X-PROGRAM-DATE-TIME:{format_program_date_time(T0 + 4 * msn)}\n"
                  f"#EXTINF:4.000,\n{msn}.m4s\n" for msn in range(5))
        + "#EXT-X-ENDLIST\n")
    check_media_playlist(vod, previous=event)
    assert playlist.next_msn == 5


def test_recording_has_no_parts() -> None:
    with pytest.raises(ValueError, match="recording playlist has no parts"):
        LivePlaylist(kind=PlaylistKind.RECORDING, target_duration=4, part_target=1.0)


def test_end_completes_an_open_segment_that_has_parts() -> None:
    playlist = low_latency()
    feed = Feed(playlist)
    feed.segment(QUARTERS)
    feed.segment((0.5, 0.25), complete=False)
    playlist.end()
    text = render_media_playlist(playlist)
    assert "#EXTINF:0.750,\n1.m4s\n#EXT-X-ENDLIST\n" in text
    assert "PRELOAD-HINT" not in text and playlist.next_part is None
    check_media_playlist(text)
    playlist.end()  # idempotent
    with pytest.raises(PlaylistError, match="has ended"):
        playlist.start_segment(init=0, program_date_time=T0)


# -- what the playlist refuses --------------------------------------------------------------

def _over_target(playlist: LivePlaylist) -> None:
    Feed(playlist).segment(duration=2.5)


def _long_part(playlist: LivePlaylist) -> None:
    Feed(playlist).segment((0.6,), complete=False)


def _short_middle_part(playlist: LivePlaylist) -> None:
    Feed(playlist).segment((0.5, 0.3, 0.5), complete=False)


def _dependent_first_part(playlist: LivePlaylist) -> None:
    playlist.start_segment(init=0, program_date_time=T0)
    playlist.add_part(0.5, independent=False)


def _two_open_segments(playlist: LivePlaylist) -> None:
    playlist.start_segment(init=0, program_date_time=T0)
    playlist.start_segment(init=0, program_date_time=T0)


def _part_sum_mismatch(playlist: LivePlaylist) -> None:
    Feed(playlist).segment(QUARTERS, duration=1.8)


def _changed_target(playlist: LivePlaylist) -> None:
    playlist.set_target_duration(3)


def _part_without_segment(playlist: LivePlaylist) -> None:
    playlist.add_part(0.5, independent=True)


def _complete_without_parts(playlist: LivePlaylist) -> None:
    Feed(playlist).segment(duration=2.0)


@pytest.mark.parametrize(("misuse", "message"), [
    (_over_target, "rounds above TARGETDURATION 2"),
    (_long_part, "more than PART-TARGET"),
    (_short_middle_part, "less than 85% of PART-TARGET"),
    (_dependent_first_part, "must be independent"),
    (_two_open_segments, "still open"),
    (_part_sum_mismatch, "parts sum to 2.000"),
    (_changed_target, "cannot change to 3"),
    (_part_without_segment, "no open segment"),
    (_complete_without_parts, "has no parts"),
])
def test_the_playlist_refuses_what_the_rules_forbid(
        misuse: Callable[[LivePlaylist], None], message: str) -> None:
    with pytest.raises(PlaylistError, match=message):
        misuse(low_latency())


def test_segments_need_a_target_duration_and_parts_need_a_part_target() -> None:
    playlist = LivePlaylist()
    with pytest.raises(PlaylistError, match="target duration"):
        playlist.start_segment(init=0, program_date_time=T0)
    with pytest.raises(PlaylistError, match="no target duration"):
        render_media_playlist(playlist)
    playlist.set_target_duration(2)
    playlist.set_target_duration(2)  # the same value again is fine
    playlist.start_segment(init=0, program_date_time=T0)
    with pytest.raises(PlaylistError, match="no parts"):
        playlist.add_part(0.5, independent=True)


def test_a_short_part_is_fine_when_independent_or_last() -> None:
    playlist = low_latency()
    playlist.start_segment(init=0, program_date_time=T0)
    playlist.add_part(0.5, independent=True)
    playlist.add_part(0.2, independent=True)  # a keyframe mid-segment
    playlist.add_part(0.1, independent=False)  # the last one
    playlist.complete_segment(0.8)
    check_media_playlist(render_media_playlist(playlist))


@pytest.mark.parametrize("options", [
    {"window_segments": 0}, {"first_msn": -1}, {"part_target": 0.0}, {"target_duration": 0},
    {"target_duration": 1, "part_target": 1.5},
])
def test_bad_configuration_is_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LivePlaylist(**options)  # type: ignore[arg-type]


# -- the checker catches every rule ----------------------------------------------------------

def _delta_baseline() -> str:
    return render_media_playlist(skip_sample(), skip=True)


def _stale_parts_baseline() -> str:
    playlist = low_latency(window_segments=20)
    feed = Feed(playlist)
    for _ in range(6):
        feed.segment(QUARTERS)
    return render_media_playlist(playlist)


def _swap(old: str, new: str, base: Callable[[], str] = lambda: LOW_LATENCY_GOLDEN,
          count: int = 1) -> Callable[[], str]:
    def violate() -> str:
        text = base()
        assert old in text, f"the violation's anchor {old!r} is not in the baseline"
        return text.replace(old, new, count)
    return violate


def _reduced() -> str:
    return REDUCED_GOLDEN


def _skip_after_first_segment() -> str:
    return _delta_baseline().replace("4.m4s\n", "4.m4s\n#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n")


def _part_lines(msn: int) -> str:
    return "".join(f'#EXT-X-PART:DURATION=0.500,URI="{msn}.{index}.m4s"'
                   + (",INDEPENDENT=YES" if index == 0 else "") + "\n" for index in range(4))

_PDT_1 = "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z"
_PART_0 = '#EXT-X-PART:DURATION=0.500,URI="0.0.m4s",INDEPENDENT=YES\n'
_HINT = '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="2.2.m4s"\n'

VIOLATIONS: dict[str, tuple[Callable[[], str], str]] = {
    "no EXTM3U": (_swap("#EXTM3U\n", ""), r"\[header\] the first line must be #EXTM3U"),
    "version below 6 with MAP": (_swap("VERSION:9", "VERSION:5"),
                                 r"\[version\] EXT-X-MAP needs EXT-X-VERSION >= 6"),
    "version below 9 with SKIP": (_swap("VERSION:9", "VERSION:8", _delta_baseline),
                                  r"\[version\] EXT-X-SKIP needs EXT-X-VERSION >= 9"),
    "no MAP": (_swap('#EXT-X-MAP:URI="init-0.mp4"\n', ""),
               r"\[map\] segment 0 \(line \d+\) has no EXT-X-MAP"),
    "no TARGETDURATION": (_swap("#EXT-X-TARGETDURATION:2\n", "", _reduced),
                          r"\[target-duration\] EXT-X-TARGETDURATION is missing"),
    "EXTINF above TARGETDURATION": (_swap("#EXTINF:1.750,", "#EXTINF:2.500,", _reduced),
                                    r"\[target-duration\] segment 1 .*EXTINF 2.5 rounds"),
    "no PROGRAM-DATE-TIME": (_swap(_PDT_1 + "\n", "", _reduced),
                             r"\[program-date-time\] segment 1 .* has no"),
    "PROGRAM-DATE-TIME without zone": (_swap(_PDT_1, _PDT_1[:-1], _reduced),
                                       r"\[program-date-time\] line 11: .* time zone"),
    "PROGRAM-DATE-TIME going back": (_swap(_PDT_1, _PDT_1.replace(":22.", ":19."), _reduced),
                                     r"\[program-date-time\] segment 1 .* starts before"),
    "PART without PART-INF": (_swap("#EXT-X-PART-INF:PART-TARGET=0.500\n", ""),
                              r"\[part-inf\] EXT-X-PART \(line \d+\) without EXT-X-PART-INF"),
    "part longer than PART-TARGET": (
        _swap('DURATION=0.500,URI="2.1.m4s"', 'DURATION=0.600,URI="2.1.m4s"'),
        r"\[part-duration\] part 2.1.m4s .* more than PART-TARGET"),
    "short middle part": (_swap('DURATION=0.500,URI="2.0.m4s",INDEPENDENT=YES',
                                'DURATION=0.400,URI="2.0.m4s"'),
                          r"\[part-duration\] part 2.0.m4s .* less than 85%"),
    "parts not summing to EXTINF": (_swap("#EXTINF:1.900,", "#EXTINF:1.950,"),
                                    r"\[part-duration\] segment 1 .* parts sum to 1.900"),
    "first part not INDEPENDENT": (
        _swap('URI="1.0.m4s",INDEPENDENT=YES', 'URI="1.0.m4s"'),
        r"\[independent\] part 1.0.m4s .* starts segment 1 but is not INDEPENDENT=YES"),
    "no INDEPENDENT-SEGMENTS": (_swap("#EXT-X-INDEPENDENT-SEGMENTS\n", ""),
                                r"\[independent\] the playlist lacks"),
    "PART-HOLD-BACK too small": (_swap("PART-HOLD-BACK=1.500", "PART-HOLD-BACK=1.000"),
                                 r"\[server-control\] PART-HOLD-BACK=1.000 is less than 3 x"),
    "no PART-HOLD-BACK with parts": (_swap("PART-HOLD-BACK=1.500,", ""),
                                     r"\[server-control\] .* needs PART-HOLD-BACK"),
    "no CAN-BLOCK-RELOAD with parts": (_swap("CAN-BLOCK-RELOAD=YES,", ""),
                                       r"\[server-control\] .* needs .*CAN-BLOCK-RELOAD=YES"),
    "HOLD-BACK too small": (_swap("HOLD-BACK=6.000", "HOLD-BACK=4.000", _reduced),
                            r"\[server-control\] HOLD-BACK=4.000 is less than 3 x"),
    "CAN-SKIP-UNTIL too small": (_swap("CAN-SKIP-UNTIL=12.000", "CAN-SKIP-UNTIL=6.000"),
                                 r"\[server-control\] CAN-SKIP-UNTIL=6.000 is less than 6 x"),
    "two PART hints": (_swap(_HINT, _HINT + _HINT.replace("2.2", "2.3")),
                       r"\[hint\] line \d+: a second EXT-X-PRELOAD-HINT of TYPE=PART"),
    "hint with ENDLIST": (_swap(_HINT, _HINT + "#EXT-X-ENDLIST\n"),
                          r"\[hint\] EXT-X-PRELOAD-HINT in a playlist with EXT-X-ENDLIST"),
    "hint naming a listed part": (_swap('URI="2.2.m4s"', 'URI="2.1.m4s"'),
                                  r"\[hint\] .* the hinted part 2.1.m4s is already listed"),
    "DISCONTINUITY after a part": (
        _swap(_PART_0, _PART_0 + "#EXT-X-DISCONTINUITY\n"),
        r"\[part-order\] line 11: #EXT-X-DISCONTINUITY comes after the first EXT-X-PART"),
    "PROGRAM-DATE-TIME after a part": (
        _swap(_PDT_1 + "\n" + _PART_0.replace("0.0", "1.0"),
              _PART_0.replace("0.0", "1.0") + _PDT_1 + "\n"),
        r"\[part-order\] line \d+: #EXT-X-PROGRAM-DATE-TIME comes after"),
    "SKIP without CAN-SKIP-UNTIL": (_swap(",CAN-SKIP-UNTIL=6.000", "", _delta_baseline),
                                    r"\[skip\] EXT-X-SKIP without CAN-SKIP-UNTIL"),
    "SKIP with ENDLIST": (_swap("9.m4s\n", "9.m4s\n#EXT-X-ENDLIST\n", _delta_baseline),
                          r"\[skip\] EXT-X-SKIP in a playlist with EXT-X-ENDLIST"),
    "SKIP past the boundary": (
        _swap('SKIPPED-SEGMENTS=4\n#EXT-X-MAP:URI="init-1.mp4"\n'
              "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.000Z\n#EXTINF:1.000,\n4.m4s\n",
              'SKIPPED-SEGMENTS=5\n#EXT-X-MAP:URI="init-1.mp4"\n', _delta_baseline),
        r"\[skip\] .* lists 5.000 s, less than CAN-SKIP-UNTIL 6.0"),
    "SKIP after a segment": (
        _swap("#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n", "", _skip_after_first_segment),
        r"\[syntax\] line \d+: #EXT-X-SKIP must come before the first media segment"),
    "stale parts listed": (
        _swap('#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n',
              '#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n' + _part_lines(0),
              _stale_parts_baseline),
        r"\[part-window\] segment 0 .* still lists parts but ends 10.000 s before"),
    "recent parts missing": (
        _swap(_part_lines(4), "", _stale_parts_baseline),
        r"\[part-window\] segment 4 .* within 3 x TARGETDURATION, but lists no parts"),
    "dangling segment tags": (_swap("1.m4s\n", "1.m4s\n" + _PDT_1 + "\n", _reduced),
                              r"\[syntax\] line 14: segment tags at the end apply to no"),
    "VOD without ENDLIST": (_swap("#EXT-X-MEDIA-SEQUENCE", "#EXT-X-PLAYLIST-TYPE:VOD\n"
                                 "#EXT-X-MEDIA-SEQUENCE", _reduced),
                           r"\[playlist-type\] a VOD playlist needs EXT-X-ENDLIST"),
    "URI without EXTINF": (_swap("#EXTINF:2.000,\n0.m4s", "0.m4s", _reduced),
                           r"\[extinf\] line \d+: segment URI '0.m4s' has no EXTINF"),
    "multivariant tag": (_swap("#EXT-X-INDEPENDENT-SEGMENTS\n", "#EXT-X-INDEPENDENT-SEGMENTS\n"
                               "#EXT-X-STREAM-INF:BANDWIDTH=1\n", _reduced),
                         r"\[syntax\] line 6: #EXT-X-STREAM-INF belongs in a multivariant"),
    "malformed PART": (_swap('DURATION=0.500,URI="2.1.m4s"', 'URI="2.1.m4s",DURATION=x'),
                       r"\[part\] line \d+: EXT-X-PART needs DURATION and a quoted URI"),
    "decimal EXTINF below version 3": (_swap("VERSION:9", "VERSION:2", _reduced),
                                       r"\[version\] a decimal EXTINF needs EXT-X-VERSION >= 3"),
    "non-integer TARGETDURATION": (_swap("TARGETDURATION:2", "TARGETDURATION:2.0", _reduced),
                                   r"\[syntax\] line 3: #EXT-X-TARGETDURATION needs a decimal"),
    "unknown PLAYLIST-TYPE": (_swap("#EXT-X-MEDIA-SEQUENCE", "#EXT-X-PLAYLIST-TYPE:LIVE\n"
                                    "#EXT-X-MEDIA-SEQUENCE", _reduced),
                              r"PLAYLIST-TYPE must be EVENT or VOD, got 'LIVE'"),
    "MEDIA-SEQUENCE after a segment": (
        _swap("0.m4s\n", "0.m4s\n#EXT-X-MEDIA-SEQUENCE:0\n", _reduced),
        r"line 11: #EXT-X-MEDIA-SEQUENCE must come before the first media segment"),
    "zero EXTINF": (_swap("#EXTINF:1.750,", "#EXTINF:0,", _reduced),
                    r"\[extinf\] line 12: EXTINF needs a positive duration, got '0'"),
    "malformed attribute list": (_swap("CAN-BLOCK-RELOAD=YES,", "CAN-BLOCK-RELOAD=YES,,",
                                       _reduced),
                                 r"\[syntax\] line 6: malformed attribute list"),
    "MAP without URI": (_swap('URI="init-0.mp4"', "BYTERANGE=1"),
                        r"\[map\] line 8: EXT-X-MAP needs a quoted URI"),
    "bad PART-TARGET": (_swap("PART-TARGET=0.500", "PART-TARGET=-1"),
                        r"\[part-inf\] line 7: PART-TARGET must be a positive decimal"),
    "INDEPENDENT=NO": (_swap('URI="2.1.m4s"', 'URI="2.1.m4s",INDEPENDENT=NO'),
                       r"\[part\] line \d+: INDEPENDENT must be YES when present, got 'NO'"),
    "CAN-BLOCK-RELOAD=NO": (_swap("CAN-BLOCK-RELOAD=YES", "CAN-BLOCK-RELOAD=NO", _reduced),
                            r"\[server-control\] CAN-BLOCK-RELOAD must be YES, got 'NO'"),
    "non-decimal HOLD-BACK": (_swap("HOLD-BACK=6.000", "HOLD-BACK=six", _reduced),
                              r"\[server-control\] HOLD-BACK must be a decimal, got 'six'"),
    "hint of an unknown TYPE": (_swap("TYPE=PART", "TYPE=SEGMENT"),
                                r"\[hint\] line 26: a hint needs TYPE=PART or MAP"),
    "PART hint without parts": (_swap("1.m4s\n", "1.m4s\n" + _HINT, _reduced),
                                r"\[hint\] line 14: a PART hint without EXT-X-PART-INF"),
    "malformed SKIPPED-SEGMENTS": (_swap("SKIPPED-SEGMENTS=4", "SKIPPED-SEGMENTS=four",
                                         _delta_baseline),
                                   r"\[skip\] line 7: SKIPPED-SEGMENTS must be a decimal"),
    "duplicate TARGETDURATION": (_swap("#EXT-X-TARGETDURATION:2\n",
                                       "#EXT-X-TARGETDURATION:2\n#EXT-X-TARGETDURATION:2\n"),
                                 r"\[syntax\] line 4: #EXT-X-TARGETDURATION appears more"),
}


def test_the_checker_accepts_its_baselines() -> None:
    for baseline in (LOW_LATENCY_GOLDEN, REDUCED_GOLDEN, _delta_baseline(),
                     _stale_parts_baseline()):
        check_media_playlist(baseline)


@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_the_checker_catches(name: str) -> None:
    violate, message = VIOLATIONS[name]
    with pytest.raises(AssertionError, match=message):
        check_media_playlist(violate())


def _sample(playlist: LivePlaylist) -> str:
    return render_media_playlist(playlist)


def test_the_checker_compares_with_the_previous_sample() -> None:
    playlist = LivePlaylist(target_duration=2, window_segments=3)
    feed = Feed(playlist)
    for index in range(4):
        feed.segment(duration=2.0, discontinuity=index == 1)
    before = _sample(playlist)  # MEDIA-SEQUENCE 1, segment 1 starts with a DISCONTINUITY
    feed.segment(duration=2.0)
    after = _sample(playlist)  # MEDIA-SEQUENCE 2, DISCONTINUITY-SEQUENCE 1
    assert "#EXT-X-DISCONTINUITY\n" in before and "#EXT-X-DISCONTINUITY-SEQUENCE:1" in after
    check_media_playlist(after, previous=before)
    cases = {
        "TARGETDURATION changed": (
            before.replace("TARGETDURATION:2", "TARGETDURATION:3"),
            r"\[target-duration\] TARGETDURATION changed from 3 to 2"),
        "MEDIA-SEQUENCE went back": (
            after, r"\[media-sequence\] MEDIA-SEQUENCE went back from 2 to 1"),
        "DISCONTINUITY-SEQUENCE not counted": (
            before.replace("#EXT-X-DISCONTINUITY\n", ""),
            r"DISCONTINUITY-SEQUENCE is 1, but the segments removed .* make it 0"),
        "segment changed": (
            before.replace("#EXTINF:2.000,\n3.m4s", "#EXTINF:1.000,\n3.m4s"),
            r"\[media-sequence\] segment 3 changed between reloads"),
        "EVENT removed segments": (
            before.replace("#EXT-X-MEDIA-SEQUENCE", "#EXT-X-PLAYLIST-TYPE:EVENT\n"
                           "#EXT-X-MEDIA-SEQUENCE"),
            r"\[playlist-type\] an EVENT playlist removed segments"),
        "changed after ENDLIST": (
            before + "#EXT-X-ENDLIST\n", r"\[endlist\] the playlist changed after"),
    }
    for name, (previous, message) in cases.items():
        current = before if name == "MEDIA-SEQUENCE went back" else after
        with pytest.raises(AssertionError, match=message):
            check_media_playlist(current, previous=previous)
    with pytest.raises(AssertionError, match=r"DISCONTINUITY-SEQUENCE went back from 1 to 0"):
        check_media_playlist(before, previous=after)


def test_the_checker_reports_every_violation_at_once() -> None:
    text = LOW_LATENCY_GOLDEN.replace("VERSION:9", "VERSION:5").replace(
        "#EXT-X-INDEPENDENT-SEGMENTS\n", "")
    with pytest.raises(AssertionError, match=r"^2 playlist rule\(s\) broken") as caught:
        check_media_playlist(text)
    assert "[version]" in str(caught.value) and "[independent]" in str(caught.value)


def test_the_checker_reads_a_real_ffmpeg_fmp4_playlist(tmp_path: Path) -> None:
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg is not None, "ffmpeg is needed for this test"
    subprocess.run(
        [ffmpeg, "-nostdin", "-loglevel", "error", "-f", "lavfi",
         "-i", "testsrc2=size=320x240:rate=30", "-t", "4", "-c:v", "libx264", "-g", "30",
         "-f", "hls", "-hls_segment_type", "fmp4", "-hls_time", "1", "out.m3u8"],
        cwd=tmp_path, check=True, timeout=120)
    text = (tmp_path / "out.m3u8").read_text()
    # ffmpeg writes neither PROGRAM-DATE-TIME nor INDEPENDENT-SEGMENTS unless asked to.
    playlist = check_media_playlist(text, require_program_date_time=False,
                                    require_independent_segments=False)
    assert playlist.target_duration == 1 and playlist.endlist
    assert len(playlist.segments) == 4
    assert all(segment.map_uri == "init.mp4" for segment in playlist.segments)
    assert all((tmp_path / str(segment.uri)).is_file() for segment in playlist.segments)
    with pytest.raises(AssertionError, match=r"\[program-date-time\] segment 0"):
        check_media_playlist(text, require_independent_segments=False)
    broken = re.sub(r"#EXT-X-TARGETDURATION:\d+", "#EXT-X-TARGETDURATION:0", text)
    with pytest.raises(AssertionError, match=r"\[target-duration\] segment 0"):
        check_media_playlist(broken, require_program_date_time=False,
                             require_independent_segments=False)


MULTIVARIANT = render_multivariant([
    VariantInfo(bandwidth=2_500_000, average_bandwidth=2_000_000,
                codecs=("avc1.64001f", "mp4a.40.2"), resolution=(1280, 720), frame_rate=30.0),
    VariantInfo(bandwidth=140_000, codecs=("mp4a.40.2",), path="audio/"),
])
_AUDIO_INF = '#EXT-X-STREAM-INF:BANDWIDTH=140000,CODECS="mp4a.40.2"'

MULTIVARIANT_VIOLATIONS = {
    "no EXTM3U": ("#EXTM3U\n", "", r"\[header\]"),
    "no BANDWIDTH": ("BANDWIDTH=140000,", "", r"line 5: BANDWIDTH must be a positive"),
    "average above peak": ("AVERAGE-BANDWIDTH=2000000", "AVERAGE-BANDWIDTH=3000000",
                           r"AVERAGE-BANDWIDTH '3000000' must be .* no larger than"),
    "unquoted CODECS": ('CODECS="mp4a.40.2"', "CODECS=mp4a.40.2", r"CODECS must be a quoted"),
    "RESOLUTION on audio only": (_AUDIO_INF, _AUDIO_INF + ",RESOLUTION=2x2",
                                 r"RESOLUTION on a variant without video"),
    "malformed RESOLUTION": ("1280x720", "1280*720", r"RESOLUTION must be WIDTHxHEIGHT"),
    "FRAME-RATE with 4 decimals": ("FRAME-RATE=30.000", "FRAME-RATE=29.9700",
                                   r"FRAME-RATE must be .* at most 3 decimals"),
    "STREAM-INF without URI": ("audio/rendition.m3u8\n", "",
                               r"line 5: EXT-X-STREAM-INF without a URI"),
    "media tag": ("#EXT-X-INDEPENDENT-SEGMENTS\n",
                  "#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-TARGETDURATION:2\n",
                  r"#EXT-X-TARGETDURATION belongs in a media playlist"),
    "no INDEPENDENT-SEGMENTS": ("#EXT-X-INDEPENDENT-SEGMENTS\n", "", r"\[independent\]"),
    "FRAME-RATE on audio only": (_AUDIO_INF, _AUDIO_INF + ",FRAME-RATE=30.000",
                                 r"line 5: FRAME-RATE on a variant without video"),
    "STREAM-INF followed by a tag": ("rendition.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=140000",
                                     "#EXT-X-VERSION:6\n#EXT-X-STREAM-INF:BANDWIDTH=140000",
                                     r"line 3: EXT-X-STREAM-INF must be followed by its URI"),
    "URI without STREAM-INF": ("rendition.m3u8\n", "rendition.m3u8\nextra.m3u8\n",
                               r"line 5: URI 'extra.m3u8' without EXT-X-STREAM-INF"),
}


def test_the_multivariant_checker_accepts_ours() -> None:
    variants = check_multivariant(MULTIVARIANT)
    assert [variant.uri for variant in variants] == ["rendition.m3u8", "audio/rendition.m3u8"]


@pytest.mark.parametrize("name", list(MULTIVARIANT_VIOLATIONS))
def test_the_multivariant_checker_catches(name: str) -> None:
    old, new, message = MULTIVARIANT_VIOLATIONS[name]
    assert old in MULTIVARIANT
    with pytest.raises(AssertionError, match=message):
        check_multivariant(MULTIVARIANT.replace(old, new, 1))


def test_the_multivariant_checker_needs_a_variant() -> None:
    with pytest.raises(AssertionError, match=r"no EXT-X-STREAM-INF"):
        check_multivariant("#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n")


def test_a_stored_segment_leaves_memory_once_behind_the_live_edge(tmp_path: Path) -> None:
    playlist = low_latency(window_segments=20)
    feed = Feed(playlist)
    files: dict[int, Path] = {}
    for _ in range(6):  # segments 0..5, 2 s each
        segment = feed.segment(QUARTERS)
        files[segment.msn] = tmp_path / f"{segment.msn}.m4s"
        files[segment.msn].write_bytes(b"".join(playlist.fragments(segment.msn)))
        playlist.store(segment.msn, str(files[segment.msn]))
    feed.segment(QUARTERS[:2], complete=False)
    # MEMORY_TARGET_DURATIONS (1 x TD = 2 s): segment 5 ends 1 s before the edge and stays
    # held; 0..4 are read from their files; the open segment is never stored.
    assert MEMORY_TARGET_DURATIONS == 1
    assert [msn for msn in range(7) if playlist.fragments(msn)] == [5, 6]
    init = playlist.media(ResourceName(init=0))
    assert playlist.held_bytes() == (len(init) if isinstance(init, bytes) else 0) + sum(
        len(data) for msn in (5, 6) for data in playlist.fragments(msn))
    assert playlist.media(ResourceName(msn=5, part=1)) == b"5.1;"
    # Parts still downloadable (0..5 here: within 6 x TD) come from the file by byte range.
    for msn in range(5):
        for index in range(4):
            stored = playlist.media(ResourceName(msn=msn, part=index))
            assert isinstance(stored, StoredMedia) and stored.path == str(files[msn])
            assert read_stored(stored) == f"{msn}.{index};".encode()
    # A stored segment asked for whole is its file (even while still held: no joined copy).
    for msn in (2, 5):
        whole = playlist.media(ResourceName(msn=msn))
        assert whole == StoredMedia(str(files[msn]), 0, files[msn].stat().st_size)
        assert read_stored(whole) == files[msn].read_bytes()
    assert playlist.fragments(5) == (b"5.0;", b"5.1;", b"5.2;", b"5.3;")
    # A file gone (the asset deleted) reads as missing, which the routes answer 404.
    files[1].unlink()
    stored = playlist.media(ResourceName(msn=1, part=2))
    assert isinstance(stored, StoredMedia) and read_stored(stored) is None


def test_a_segment_stored_late_leaves_memory_then_and_one_never_stored_stays() -> None:
    playlist = low_latency(window_segments=20)
    feed = Feed(playlist)
    for _ in range(5):
        feed.segment(QUARTERS)
    # Nothing stored (a recording that ended): every downloadable segment stays held.
    assert [msn for msn in range(5) if playlist.fragments(msn)] == [0, 1, 2, 3, 4]
    assert playlist.media(ResourceName(msn=1)) == b"1.0;1.1;1.2;1.3;"
    assert playlist.stored(1) is None and playlist.stored(4) is None
    playlist.store(2, "/nonexistent/2.m4s")  # the disk caught up: it goes at once
    playlist.store(4, "/nonexistent/4.m4s")  # the newest: it stays until 1 x TD behind
    assert [msn for msn in range(5) if playlist.fragments(msn)] == [0, 1, 3, 4]
    assert playlist.stored(2) == StoredMedia("/nonexistent/2.m4s", 0, 16)
    assert playlist.media(ResourceName(msn=2, part=3)) == StoredMedia(
        "/nonexistent/2.m4s", 12, 4)
    feed.segment(QUARTERS)  # 4 ends 2 s (1 x TD) before the edge: still held
    assert [msn for msn in range(6) if playlist.fragments(msn)] == [0, 1, 3, 4, 5]
    feed.segment(QUARTERS[:1], complete=False)
    assert [msn for msn in range(7) if playlist.fragments(msn)] == [0, 1, 3, 5, 6]
    playlist.store(2, "/elsewhere")  # stored once: the first file stays
    assert playlist.stored(2) == StoredMedia("/nonexistent/2.m4s", 0, 16)
    playlist.store(9, "/nonexistent/9.m4s")  # not a segment: nothing happens
    assert playlist.stored(9) is None


def test_expired_parts_of_a_stored_segment_are_not_served() -> None:
    playlist = low_latency(window_segments=20)
    feed = Feed(playlist)
    for _ in range(10):
        segment = feed.segment(QUARTERS)
        playlist.store(segment.msn, f"/s/{segment.msn}.m4s")
    assert playlist.part_availability(2, 0) is Availability.MISSING
    assert playlist.media(ResourceName(msn=2, part=0)) is None
    assert playlist.media(ResourceName(msn=3, part=0)) == StoredMedia("/s/3.m4s", 0, 4)
    assert playlist.media(ResourceName(msn=2)) == StoredMedia("/s/2.m4s", 0, 16)
    # Segment 8 ends 1 x TD before the edge: held with 9.
    assert playlist.held_bytes() == sum(len(b) for m in (8, 9) for b in playlist.fragments(m))
    assert [msn for msn in range(10) if playlist.fragments(msn)] == [8, 9]


def test_a_stored_segment_without_parts_is_served_whole_from_its_file() -> None:
    playlist = LivePlaylist(target_duration=2, window_segments=20)
    feed = Feed(playlist)
    for _ in range(4):
        segment = feed.segment(duration=2.0)
        playlist.store(segment.msn, f"/s/{segment.msn}.m4s")
    assert [msn for msn in range(4) if playlist.fragments(msn)] == [2, 3]
    assert playlist.media(ResourceName(msn=0)) == StoredMedia("/s/0.m4s", 0, 2)
    assert playlist.media(ResourceName(msn=0, part=0)) is None
