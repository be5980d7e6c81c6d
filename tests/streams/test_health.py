"""IngestHealth's window math and PlaybackClients' bounds, with an injected clock (the
`now` each call is given)."""

from __future__ import annotations

import pytest

from relay.streams.health import RATE_WINDOW, VIEWER_WINDOW, IngestHealth, PlaybackClients


def feed_seconds(health: IngestHealth, start: int, seconds: int, *, fps: int,
                 frame_bytes: int) -> None:
    """`fps` video frames of `frame_bytes` per second, evenly spread, for `seconds`."""
    for second in range(start, start + seconds):
        for index in range(fps):
            dts = second * 1000 + index * 1000 // fps
            health.record(second + index / fps, frame_bytes, True, index == 0, dts)


def test_rates_average_the_whole_seconds_before_the_current_one() -> None:
    health = IngestHealth()
    assert health.bitrate(100.0) == 0 and health.frame_rate(100.0) == 0
    feed_seconds(health, 100, 10, fps=30, frame_bytes=1000)
    # Second 109 is still filling: the window is 104..108.
    assert health.frame_rate(109.5) == 30
    assert health.bitrate(109.5) == 30 * 1000 * 8


def test_the_first_seconds_average_over_what_there_is() -> None:
    health = IngestHealth()
    feed_seconds(health, 50, 2, fps=25, frame_bytes=100)
    assert health.frame_rate(50.9) == 0  # no whole second yet
    assert health.frame_rate(51.2) == 25  # one whole second (50)
    assert health.frame_rate(52.0) == 25  # two (50, 51)
    assert health.bitrate(52.0) == 25 * 100 * 8


def test_a_pause_empties_the_window_and_stale_buckets_are_not_counted() -> None:
    health = IngestHealth()
    feed_seconds(health, 10, 3, fps=30, frame_bytes=500)
    # Silent from 13 on: once the window has moved past 12, nothing is left.
    assert health.frame_rate(12 + RATE_WINDOW) == pytest.approx(30 / RATE_WINDOW)
    assert health.frame_rate(13 + RATE_WINDOW) == 0
    # Back after longer than the ring: the slot that held second 10 again holds a new second.
    feed_seconds(health, 40, 1, fps=10, frame_bytes=500)
    assert health.frame_rate(41.0) == pytest.approx(10 / RATE_WINDOW)
    assert health.bitrate(41.0) == pytest.approx(10 * 500 * 8 / RATE_WINDOW)


def test_audio_counts_in_the_bitrate_not_the_frame_rate() -> None:
    health = IngestHealth()
    for index in range(43):
        health.record(7 + index / 43, 300, False, False, 7000 + index * 23)
    assert health.frame_rate(8.0) == 0
    assert health.bitrate(8.0) == 43 * 300 * 8


def test_keyframe_interval_is_the_media_time_between_the_last_two_keyframes() -> None:
    health = IngestHealth()
    health.record(0.0, 10, True, True, 1000)
    assert health.keyframe_interval is None
    health.record(0.1, 10, True, False, 1033)
    health.record(0.2, 10, True, True, 3000)
    assert health.keyframe_interval == 2.0
    health.record(0.3, 10, True, True, 3500)
    assert health.keyframe_interval == 0.5


def test_drift_is_last_audio_dts_minus_last_video_dts() -> None:
    health = IngestHealth()
    health.record(0.0, 10, True, True, 1000)
    assert health.drift_ms() is None  # no audio yet
    health.record(0.0, 10, False, False, 1150)
    assert health.drift_ms() == 150
    health.record(0.0, 10, True, False, 1400)
    assert health.drift_ms() == -250


def test_viewers_are_distinct_addresses_of_the_last_30_seconds() -> None:
    clients = PlaybackClients()
    for _ in range(3):
        clients.seen("192.0.2.1", 100.0)
    clients.seen("192.0.2.2", 110.0)
    assert clients.count(110.0) == 2
    assert clients.count(100.0 + VIEWER_WINDOW) == 2
    assert clients.count(100.0 + VIEWER_WINDOW + 1) == 1  # .1 stopped asking
    clients.seen("192.0.2.1", 135.0)  # and came back
    assert clients.count(135.0) == 2
    assert clients.count(200.0) == 0


def test_a_request_keeps_its_client_counted() -> None:
    clients = PlaybackClients()
    clients.seen("a", 0.0)
    clients.seen("b", 10.0)
    clients.seen("a", 20.0)  # moves behind b: pruning at 41 must drop b only
    assert clients.count(41.0) == 1


def test_viewers_tracked_are_capped() -> None:
    clients = PlaybackClients(max_tracked=100)
    for index in range(1000):
        clients.seen(f"198.51.100.{index}", 5.0 + index / 1000)
    assert len(clients._last_seen) == 100
    assert clients.count(6.0) == 100
    assert "198.51.100.999" in clients._last_seen  # the newest stay


def test_a_new_connection_restarts_the_timestamps_not_the_rates() -> None:
    health = IngestHealth()
    feed_seconds(health, 0, 3, fps=30, frame_bytes=100)
    health.record(2.9, 10, False, False, 2950)
    assert health.keyframe_interval == 1.0 and health.drift_ms() is not None
    health.new_connection()  # the new encoder connection's timestamps start near 0
    assert health.keyframe_interval is None and health.drift_ms() is None
    health.record(3.0, 100, True, True, 0)
    assert health.keyframe_interval is None  # not 0 - 2000 ms from the old connection
    health.record(3.1, 10, False, False, 20)
    assert health.drift_ms() == 20
    assert health.frame_rate(3.5) == 30
