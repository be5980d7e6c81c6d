"""Blocking playlist reload and delta requests: every decision, the 400s, and the
part-past-the-end rule as hls.js uses it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.hls.blocking import (
    MAX_DIRECTIVE_DIGITS,
    BadRequest,
    Decision,
    Ready,
    ReloadState,
    Wait,
    advance_part_limit,
    decide,
    hold_timeout,
    is_satisfied,
)
from relay.hls.playlist import LivePlaylist, PlaylistRenderer

T0 = 1_700_000_000.0


def live() -> LivePlaylist:
    """Segments 0..2 complete with 4 parts each; segment 3 open with parts 0 and 1."""
    playlist = LivePlaylist(target_duration=2, part_target=0.5)
    for _ in range(3):
        start_with_parts(playlist, 4)
        playlist.complete_segment(2.0)
    start_with_parts(playlist, 2)
    return playlist


def start_with_parts(playlist: LivePlaylist, count: int) -> None:
    playlist.start_segment(init=0, program_date_time=T0 + 2 * playlist.next_msn)
    add_parts(playlist, count)


def add_parts(playlist: LivePlaylist, count: int) -> None:
    for _ in range(count):
        open_segment = playlist.segments[-1]
        playlist.add_part(0.5, independent=not open_segment.parts)


def test_the_playlist_is_a_reload_state() -> None:
    state: ReloadState = live()  # mypy checks the structural match
    assert state.next_msn == 4


# Advance Part Limit with PART-TARGET 0.5 s: 3 / 0.5 = 6 parts.
DECISIONS: list[tuple[dict[str, str], Decision]] = [
    ({}, Ready()),
    ({"_HLS_report": "../other.m3u8"}, Ready()),
    ({"_HLS_skip": "YES"}, Ready(skip=True)),
    ({"_HLS_skip": "v2"}, Ready(skip=True)),
    ({"_HLS_skip": "NO"}, BadRequest("_HLS_skip must be YES or v2, got 'NO'")),
    ({"_HLS_part": "1"}, BadRequest("_HLS_part=1 needs _HLS_msn")),
    ({"_HLS_msn": "-1"}, BadRequest("_HLS_msn must be a non-negative integer of at most 12 "
                                    "digits, got '-1'")),
    ({"_HLS_msn": "1.5"}, BadRequest("_HLS_msn must be a non-negative integer of at most 12 "
                                     "digits, got '1.5'")),
    ({"_HLS_msn": "+1"}, BadRequest("_HLS_msn must be a non-negative integer of at most 12 "
                                    "digits, got '+1'")),
    ({"_HLS_msn": ""}, BadRequest("_HLS_msn must be a non-negative integer of at most 12 "
                                  "digits, got ''")),
    # Digits of other scripts, which int() takes.
    ({"_HLS_msn": "\u0663"}, BadRequest("_HLS_msn must be a non-negative integer of at most "
                                        "12 digits, got '\u0663'")),
    ({"_HLS_msn": "1234567890123"}, BadRequest(
        "_HLS_msn must be a non-negative integer of at most 12 digits, got '1234567890123'")),
    ({"_HLS_msn": "3", "_HLS_part": "x"}, BadRequest(
        "_HLS_part must be a non-negative integer of at most 12 digits, got 'x'")),
    ({"_HLS_msn": "3", "_HLS_part": "-2"}, BadRequest(
        "_HLS_part must be a non-negative integer of at most 12 digits, got '-2'")),
    ({"_HLS_msn": "6"}, BadRequest("_HLS_msn=6 is more than 2 past the last segment 3")),
    ({"_HLS_msn": "5"}, Wait(5, None)),
    ({"_HLS_msn": "3"}, Wait(3, None)),  # alone, it waits for the whole segment
    ({"_HLS_msn": "2"}, Ready()),
    ({"_HLS_msn": "0", "_HLS_skip": "YES"}, Ready(skip=True)),
    ({"_HLS_msn": "3", "_HLS_part": "1"}, Ready()),
    ({"_HLS_msn": "3", "_HLS_part": "2"}, Wait(3, 2)),
    ({"_HLS_msn": "3", "_HLS_part": "2", "_HLS_skip": "YES"}, Wait(3, 2, skip=True)),
    ({"_HLS_msn": "3", "_HLS_part": "7"}, Wait(3, 7)),  # 6 past the last part: the limit
    ({"_HLS_msn": "3", "_HLS_part": "8"}, BadRequest(
        "_HLS_part=8 of segment 3 is more than 6 parts past the last part")),
    ({"_HLS_msn": "4", "_HLS_part": "0"}, Wait(4, 0)),
    ({"_HLS_msn": "4", "_HLS_part": "5"}, Wait(4, 5)),
    ({"_HLS_msn": "4", "_HLS_part": "6"}, BadRequest(
        "_HLS_part=6 of segment 4 is more than 6 parts past the last part")),
    ({"_HLS_msn": "0", "_HLS_part": "2"}, Ready()),
    ({"_HLS_msn": "2", "_HLS_part": "3"}, Ready()),
    # Past the end of completed segment 2 (4 parts): part 0 of segment 3, which exists.
    ({"_HLS_msn": "2", "_HLS_part": "4"}, Ready()),
    ({"_HLS_msn": "1", "_HLS_part": "999"}, Ready()),
]


@pytest.mark.parametrize(("query", "expected"), DECISIONS,
                         ids=[repr(query) for query, _ in DECISIONS])
def test_decide(query: dict[str, str], expected: Decision) -> None:
    assert decide(query, live()) == expected


def test_overlong_values_are_refused_without_parsing_them() -> None:
    decision = decide({"_HLS_msn": "9" * 5000}, live())
    assert isinstance(decision, BadRequest)
    assert len(decision.reason) < 160 and "\n" not in decision.reason
    assert "(5000 characters)" in decision.reason
    assert decide({"_HLS_msn": "0" * MAX_DIRECTIVE_DIGITS}, live()) == Ready()


@pytest.mark.parametrize("name", ["_HLS_msn", "_HLS_part", "_HLS_skip"])
def test_a_bad_value_is_shown_escaped_and_cut(name: str) -> None:
    """A reason names the peer's value, but never whole and never with a control
    character or line break in it (`relay.logs.peer_text`)."""
    query = {"_HLS_msn": "1", name: "x\r\nSet-Cookie: a=b\x1b[2J" + "y" * 500}
    decision = decide(query, live())
    assert isinstance(decision, BadRequest)
    reason = decision.reason
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in reason), reason
    assert "x\\x0d\\x0aSet-Cookie" in reason and "(522 characters)" in reason
    assert len(reason) < 160


def test_a_part_past_the_end_of_a_completed_segment_waits_for_the_next_ones_first() -> None:
    playlist = live()
    add_parts(playlist, 2)
    playlist.complete_segment(2.0)  # segment 3: parts 0..3
    # hls.js asks for the part after the last one it saw: (3, 4) means (4, 0).
    wait = decide({"_HLS_msn": "3", "_HLS_part": "4"}, playlist)
    assert wait == Wait(4, 0)
    assert isinstance(wait, Wait)
    playlist.start_segment(init=0, program_date_time=T0 + 8)
    assert not is_satisfied(wait, playlist)
    add_parts(playlist, 1)
    assert is_satisfied(wait, playlist)


def test_a_wait_for_a_part_the_open_segment_never_gets_moves_to_the_next_segment() -> None:
    playlist = live()
    wait = decide({"_HLS_msn": "3", "_HLS_part": "3"}, playlist)
    assert wait == Wait(3, 3)
    assert isinstance(wait, Wait)
    add_parts(playlist, 1)  # part 3.2
    assert not is_satisfied(wait, playlist)
    playlist.complete_segment(1.5)  # segment 3 ends with 3 parts: 3.3 will never exist
    assert not is_satisfied(wait, playlist)
    start_with_parts(playlist, 1)  # part 4.0 stands for the asked 3.3
    assert is_satisfied(wait, playlist)


def test_waiting_for_a_segment_ends_when_it_is_complete() -> None:
    playlist = live()
    wait = Wait(3, None)
    add_parts(playlist, 2)
    assert not is_satisfied(wait, playlist)  # all its parts, but no EXTINF yet
    playlist.complete_segment(2.0)
    assert is_satisfied(wait, playlist)


def test_waiting_for_a_part_ends_when_it_is_listed() -> None:
    playlist = live()
    wait = Wait(3, 2)
    assert not is_satisfied(wait, playlist)
    add_parts(playlist, 1)
    assert is_satisfied(wait, playlist)


def test_after_endlist_the_directives_are_ignored() -> None:
    playlist = live()
    wait = Wait(5, 0, skip=True)
    playlist.end()
    assert is_satisfied(wait, playlist)
    for query in ({"_HLS_msn": "99", "_HLS_part": "99", "_HLS_skip": "YES"},
                  {"_HLS_part": "1"}, {"_HLS_msn": "x"}):
        assert decide(query, playlist) == Ready(skip=False)
    text = PlaylistRenderer(playlist).render(skip=False)
    assert text.endswith("#EXT-X-ENDLIST\n")


def test_a_playlist_without_parts_waits_for_segments_only() -> None:
    playlist = LivePlaylist(target_duration=2)
    playlist.start_segment(init=0, program_date_time=T0)
    playlist.complete_segment(2.0)
    assert decide({"_HLS_msn": "0", "_HLS_part": "3"}, playlist) == Ready()
    wait = decide({"_HLS_msn": "1", "_HLS_part": "3"}, playlist)
    assert wait == Wait(1, None)
    assert isinstance(wait, Wait)
    playlist.start_segment(init=0, program_date_time=T0 + 2)
    assert not is_satisfied(wait, playlist)
    playlist.complete_segment(2.0)
    assert is_satisfied(wait, playlist)


def test_before_the_first_segment() -> None:
    playlist = LivePlaylist(target_duration=2, part_target=0.5, first_msn=10)
    assert decide({"_HLS_msn": "11"}, playlist) == Wait(11, None)
    assert decide({"_HLS_msn": "12"}, playlist) == BadRequest(
        "_HLS_msn=12 is more than 2 past the last segment 9")
    assert decide({"_HLS_msn": "10", "_HLS_part": "0"}, playlist) == Wait(10, 0)
    wait = Wait(10, 0)
    playlist.start_segment(init=0, program_date_time=T0)
    assert not is_satisfied(wait, playlist)
    playlist.add_part(0.5, independent=True)
    assert is_satisfied(wait, playlist)


def test_timeout_and_advance_part_limit() -> None:
    assert hold_timeout(2) == 6.0
    assert hold_timeout(6) == 18.0
    assert advance_part_limit(0.5) == 6
    assert advance_part_limit(0.333) == 10
    assert advance_part_limit(1.0) == 3
    assert advance_part_limit(2.0) == 3


@settings(max_examples=200, deadline=None)
@given(parts_in_open=st.integers(min_value=0, max_value=4), msn=st.integers(0, 8),
       part=st.none() | st.integers(0, 12))
def test_decisions_agree_with_is_satisfied(parts_in_open: int, msn: int,
                                           part: int | None) -> None:
    playlist = LivePlaylist(target_duration=2, part_target=0.5)
    for _ in range(3):
        start_with_parts(playlist, 4)
        playlist.complete_segment(2.0)
    playlist.start_segment(init=0, program_date_time=T0 + 6)
    add_parts(playlist, parts_in_open)
    query = {"_HLS_msn": str(msn)} | ({} if part is None else {"_HLS_part": str(part)})
    decision = decide(query, playlist)
    if isinstance(decision, Wait):
        assert not is_satisfied(decision, playlist)
        assert decision.msn <= playlist.next_msn + 1
    elif isinstance(decision, Ready):
        newest = playlist.last_part
        assert newest is not None
        if part is None:
            assert msn <= (playlist.last_complete_msn or 0)
        else:
            assert (msn, part) <= (newest.msn, newest.index) or msn < newest.msn
    else:
        # Refused: more than 2 past the newest listed segment (the open one is listed once
        # it has a part), or a part too far ahead.
        listed = 3 if parts_in_open else 2
        assert msn > listed + 2 or part is not None


def test_the_msn_limit_counts_only_listed_segments() -> None:
    """Without parts the open segment is not listed: last listed + 3 is refused even when
    the open segment (last + 1) already holds media."""
    playlist = LivePlaylist(target_duration=2)
    for index in range(2):
        playlist.start_segment(init=0, program_date_time=T0 + 2 * index)
        playlist.complete_segment(2.0)
    playlist.start_segment(init=0, program_date_time=T0 + 4)  # open, unlisted
    assert isinstance(decide({"_HLS_msn": "4"}, playlist), BadRequest)
    assert isinstance(decide({"_HLS_msn": "3"}, playlist), Wait)
