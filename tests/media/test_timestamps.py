"""TimestampUnwrapper: RTMP's 32-bit millisecond timestamps onto one 64-bit timeline."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.media.timestamps import PtsUnwrapper, TimestampUnwrapper

WRAP = 2**32
HOUR = 3_600_000


def unwrap_all(values: list[int]) -> list[int]:
    unwrapper = TimestampUnwrapper()
    return [unwrapper.unwrap(value) for value in values]


def test_first_timestamp_is_returned_as_is() -> None:
    assert unwrap_all([123_456_789]) == [123_456_789]
    assert unwrap_all([WRAP - 1]) == [WRAP - 1]


def test_values_around_2_to_the_24_pass_straight_through() -> None:
    # 0xFFFFFF is the RTMP chunk header's extended-timestamp marker; by the time a timestamp
    # reaches the unwrapper it is a plain 32-bit value and nothing happens at 2**24.
    values = [0xFFFFFD, 0xFFFFFE, 0xFFFFFF, 0x1000000, 0x1000001, 0x1000021]
    assert unwrap_all(values) == values


def test_small_backward_steps_stay_backward() -> None:
    # Audio and video interleave slightly out of order; an encoder may restart its clock.
    assert unwrap_all([1000, 990, 1010, 1005, 500, 520]) == [1000, 990, 1010, 1005, 500, 520]


def test_session_starting_just_below_the_wrap() -> None:
    start = WRAP - 1000
    values = [start + step * 40 for step in range(60)]  # 2.4 s at 25 fps, across 2**32
    got = unwrap_all([value % WRAP for value in values])
    assert got == values
    assert got[-1] > WRAP


def test_twelve_hour_session_across_the_wrap() -> None:
    # 30 fps video and 48 kHz AAC (21.33 ms frames), interleaved, for 12 h 30 min, with the
    # 32-bit clock starting 6 h before it wraps.
    start = WRAP - 6 * HOUR
    duration = 12 * HOUR + 30 * 60_000
    unwrapper = TimestampUnwrapper()
    video = 0
    audio_frames = 0
    wraps_seen = 0
    last = -1
    while video <= duration:
        audio = audio_frames * 1024 * 1000 // 48000
        if audio <= video:
            ts = start + audio
            audio_frames += 1
        else:
            ts = start + video
            video += 1000 // 30 + (1 if video % 100 == 0 else 0)
        got = unwrapper.unwrap(ts % WRAP)
        assert got == ts
        if got >= WRAP > last:
            wraps_seen += 1
        last = max(last, got)
    assert wraps_seen == 1
    assert last > WRAP + 6 * HOUR  # ran on for over 6 h past the wrap


def test_backward_step_across_the_wrap() -> None:
    # Just after the wrap, a frame stamped just before it (a late audio frame).
    values = [WRAP - 20, 5, WRAP - 10, 15, 30]
    assert unwrap_all(values) == [WRAP - 20, WRAP + 5, WRAP - 10, WRAP + 15, WRAP + 30]


def test_several_wraps() -> None:
    unwrapper = TimestampUnwrapper()
    value = 0
    for _ in range(3 * 8 + 1):
        value += 2**29  # an eighth of the 32-bit range each time: a jump, not a wrap
        assert unwrapper.unwrap(value % WRAP) == value
    assert value > 3 * WRAP


def test_a_step_of_exactly_half_the_range_is_taken_forward() -> None:
    assert unwrap_all([0, 2**31]) == [0, 2**31]
    assert unwrap_all([2**31, 0]) == [2**31, 0]


def test_large_backward_step_is_a_wrap_forward() -> None:
    # "A step back by more than 2**31 means a wrap forward."
    assert unwrap_all([3_000_000_000, 100]) == [3_000_000_000, WRAP + 100]


@pytest.mark.parametrize("value", [-1, WRAP, 2**40])
def test_values_outside_32_bits_are_misuse(value: int) -> None:
    with pytest.raises(ValueError, match=f"RTMP timestamp {value} is not a 32-bit"):
        TimestampUnwrapper().unwrap(value)


@given(st.integers(0, 2**50), st.lists(st.integers(-(2**31) + 1, 2**31 - 1), max_size=50))
def test_any_walk_with_steps_under_half_the_range_is_recovered(start: int,
                                                               steps: list[int]) -> None:
    values = [start]
    for step in steps:
        values.append(values[-1] + step)
    unwrapper = TimestampUnwrapper()
    got = [unwrapper.unwrap(value % WRAP) for value in values]
    assert [g - got[0] for g in got] == [v - values[0] for v in values]
    assert got[0] == start % WRAP


def test_pts_unwrapper_crosses_the_33_bit_wrap() -> None:
    unwrapper = PtsUnwrapper()
    wrap = 1 << 33
    values = [wrap - 6000, wrap - 3000, 0, 3000, wrap - 1500, 6000]  # a B-frame steps back
    assert [unwrapper.unwrap(v) for v in values] == [
        wrap - 6000, wrap - 3000, wrap, wrap + 3000, wrap - 1500, wrap + 6000]
    with pytest.raises(ValueError, match="33-bit"):
        unwrapper.unwrap(wrap)
