"""The ingest-warning detector, fed frame by frame with a made-up clock (no time passes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from relay.media.units import TrackKind
from relay.streams.ingest_warnings import (
    CLEAR_AFTER,
    MAX_WARNINGS_PER_SESSION,
    IngestWarning,
    IngestWarnings,
    WarningCounts,
    WarningKind,
    WarningLimits,
)


class Feed:
    """An encoder: 30 fps video (keyframe every `gop` frames) and AAC at 48 kHz (1024
    samples a frame), interleaved by timestamp, arriving in real time (now = dts)."""

    def __init__(self, detector: IngestWarnings, *, gop: int = 60, audio: bool = True,
                 video: bool = True) -> None:
        self.detector = detector
        self.gop = gop
        self.audio = audio
        self.video = video
        self.video_n = 0
        self.audio_n = 0
        self.video_offset = 0  # ms added to video dts (a jump)
        self.audio_offset = 0
        self.raised: list[IngestWarning] = []
        if video:
            detector.on_track(TrackKind.VIDEO)
        if audio:
            detector.on_track(TrackKind.AUDIO)

    def _frames(self, until_ms: int) -> Iterator[tuple[bool, int, bool]]:
        while True:
            video_dts = self.video_n * 1000 // 30 if self.video else None
            audio_dts = self.audio_n * 1024 * 1000 // 48000 if self.audio else None
            if video_dts is not None and (audio_dts is None or video_dts <= audio_dts):
                if video_dts >= until_ms:
                    return
                yield True, video_dts, self.video_n % self.gop == 0
                self.video_n += 1
            elif audio_dts is not None:
                if audio_dts >= until_ms:
                    return
                yield False, audio_dts, False
                self.audio_n += 1
            else:
                return

    def run(self, seconds: float) -> list[IngestWarning]:
        """Feed up to `seconds` of media time from the start; the warnings raised."""
        new: list[IngestWarning] = []
        for video, dts, keyframe in self._frames(round(seconds * 1000)):
            stamp = dts + (self.video_offset if video else self.audio_offset)
            new += self.detector.on_frame(dts / 1000, video, keyframe, stamp)
        self.raised += new
        return new


def kinds(warnings: list[IngestWarning]) -> list[WarningKind]:
    return [w.kind for w in warnings]


def test_a_healthy_stream_raises_nothing() -> None:
    detector = IngestWarnings(segment_target=2.0)
    feed = Feed(detector, gop=60)  # a 2 s GOP: exactly the segment target
    assert feed.run(120) == []
    assert detector.raised == detector.suppressed == 0


def test_a_healthy_stream_with_a_short_gop_and_6s_segments_raises_nothing() -> None:
    feed = Feed(IngestWarnings(segment_target=6.0), gop=30)
    assert feed.run(60) == []


def test_a_keyframe_interval_longer_than_the_segment_warns_once_while_it_lasts() -> None:
    counts = WarningCounts()
    detector = IngestWarnings(segment_target=2.0, counts=counts)
    feed = Feed(detector, gop=300)  # 10 s at 30 fps
    first = feed.run(2.25)
    assert kinds(first) == [WarningKind.KEYFRAME_INTERVAL]  # before the next keyframe
    message = first[0].message
    assert "2 s segments" in message
    assert "-g 60 at 30 fps" in message and "Keyframe Interval 2" in message
    assert feed.run(60) == []  # the same condition: no repeat
    assert counts.raised[WarningKind.KEYFRAME_INTERVAL] == 1
    assert detector.active(WarningKind.KEYFRAME_INTERVAL)


def test_the_keyframe_warning_clears_after_healthy_gops_and_recurs() -> None:
    detector = IngestWarnings(segment_target=2.0)
    feed = Feed(detector, gop=300)
    assert kinds(feed.run(10)) == [WarningKind.KEYFRAME_INTERVAL]
    feed.gop = 60  # the streamer fixed the encoder (frame 300 is a keyframe either way)
    assert feed.run(10 + CLEAR_AFTER - 2) == []
    assert detector.active(WarningKind.KEYFRAME_INTERVAL)  # not healthy long enough yet
    assert feed.run(10 + CLEAR_AFTER + 4) == []
    assert not detector.active(WarningKind.KEYFRAME_INTERVAL)
    feed.gop = 600  # and broke it again (frame 720, at 24 s, is a keyframe of both)
    assert kinds(feed.run(60)) == [WarningKind.KEYFRAME_INTERVAL]


def test_keyframes_are_checked_only_against_a_known_segment_target() -> None:
    feed = Feed(IngestWarnings(segment_target=None), gop=300)
    assert feed.run(30) == []


def test_the_keyframe_limit_allows_millisecond_rounding() -> None:
    # 2002 ms GOPs (59.94 fps rounded to ms) are within the 10% slack of a 2 s target.
    detector = IngestWarnings(segment_target=2.0)
    for n in range(1200):
        dts = n * 1001 // 60
        assert detector.on_frame(dts / 1000, True, n % 120 == 0, dts) == ()
        assert detector.on_frame(dts / 1000, False, False, dts) == ()


def test_missing_audio_warns_after_the_threshold_and_says_how_to_enable_it() -> None:
    detector = IngestWarnings(segment_target=2.0)
    feed = Feed(detector, audio=False)
    assert feed.run(4.9) == []
    raised = feed.run(5.1)
    assert kinds(raised) == [WarningKind.MISSING_AUDIO]
    assert "no audio track" in raised[0].message and "-c:a aac" in raised[0].message
    assert feed.run(60) == []


def test_audio_that_stops_warns_and_clears_when_it_is_back() -> None:
    detector = IngestWarnings(segment_target=2.0)
    feed = Feed(detector)
    assert feed.run(10) == []
    feed.audio = False
    raised = feed.run(20)
    assert kinds(raised) == [WarningKind.MISSING_AUDIO]
    assert "stopped" in raised[0].message
    feed.audio = True
    feed.audio_n = 20 * 48000 // 1024 + 1  # audio resumes in step with video
    assert feed.run(20 + CLEAR_AFTER + 1) == []
    assert not detector.active(WarningKind.MISSING_AUDIO)
    feed.audio = False
    assert kinds(feed.run(60)) == [WarningKind.MISSING_AUDIO]


def test_a_stall_of_both_tracks_is_no_missing_track() -> None:
    # Relay's event loop (or the network) stalls 6 s: then the queued frames arrive at once,
    # the first of them long after the other track's last frame by the clock, but not in
    # media time.
    detector = IngestWarnings(segment_target=2.0)
    raised: list[IngestWarning] = []
    for n in range(600):  # 20 s at 30 fps, audio beside each video frame
        dts = n * 1000 // 30
        now = dts / 1000 if dts < 5000 else max(dts / 1000, 11.0)  # nothing from 5 s to 11 s
        raised += detector.on_frame(now, True, n % 60 == 0, dts)
        raised += detector.on_frame(now, False, False, dts)
    assert raised == []


def test_a_jump_of_one_track_is_no_missing_track() -> None:
    # Video jumps 10 s ahead (timestamp_jump) while audio goes on: the audio is not missing.
    detector = IngestWarnings(segment_target=2.0)
    raised: list[IngestWarning] = []
    for n in range(300):
        dts = n * 1000 // 30
        raised += detector.on_frame(dts / 1000, True, n % 60 == 0,
                                    dts + (10_000 if n >= 150 else 0))
        raised += detector.on_frame(dts / 1000, False, False, dts)
    assert WarningKind.MISSING_AUDIO not in kinds(raised)
    assert kinds(raised)[0] is WarningKind.TIMESTAMP_JUMP


def test_missing_video_warns_unless_the_stream_is_audio_only() -> None:
    feed = Feed(IngestWarnings(segment_target=2.0), video=False)
    raised = feed.run(10)
    assert kinds(raised) == [WarningKind.MISSING_VIDEO]
    assert "audio_only" in raised[0].message
    audio_only = Feed(IngestWarnings(segment_target=2.0, expect_video=False), video=False)
    assert audio_only.run(60) == []


def test_a_timestamp_jump_forward_warns_and_names_the_track() -> None:
    detector = IngestWarnings(segment_target=2.0)
    feed = Feed(detector)
    feed.run(5)
    feed.audio_offset = feed.video_offset = 3000  # both tracks skip 3 s
    raised = feed.run(6)
    assert kinds(raised) == [WarningKind.TIMESTAMP_JUMP]  # once, though both tracks jumped
    assert "forward by 3.0 s" in raised[0].message
    assert feed.run(40) == []


def test_a_timestamp_step_back_warns_but_jitter_does_not() -> None:
    detector = IngestWarnings(segment_target=2.0)
    assert detector.on_frame(0.0, False, False, 1000) == ()
    assert detector.on_frame(0.02, False, False, 995) == ()  # 5 ms back: jitter
    raised = detector.on_frame(0.04, False, False, 500)
    assert kinds(list(raised)) == [WarningKind.TIMESTAMP_JUMP]
    assert "audio timestamps jumped backward by 0.5 s" in raised[0].message


def test_audio_video_drift_warns_once() -> None:
    detector = IngestWarnings(segment_target=2.0)
    feed = Feed(detector)
    feed.run(5)
    feed.audio_offset = 1500  # audio 1.5 s ahead of video, both still flowing
    raised = feed.run(30)
    # The step itself is within the jump bound only if under 2 s: 1.5 s is not a jump.
    assert kinds(raised) == [WarningKind.AV_DRIFT]
    assert "1.5 s ahead of video" in raised[0].message


def test_reconnect_restarts_timestamps_without_a_warning() -> None:
    detector = IngestWarnings(segment_target=2.0)
    feed = Feed(detector)
    feed.run(20)
    detector.new_connection()
    feed.video_n = feed.audio_n = 0  # the new connection starts at 0 again
    feed.video_offset = feed.audio_offset = 0
    assert feed.run(20) == []


def test_the_session_cap_bounds_the_warnings_and_counts_the_rest() -> None:
    counts = WarningCounts()
    limits = WarningLimits(max_per_session=3, clear_after=1.0)
    detector = IngestWarnings(segment_target=2.0, expect_video=False, limits=limits,
                              counts=counts)
    raised: list[IngestWarning] = []
    now, dts = 0.0, 0
    for _ in range(10):
        # A jump back, then a healthy stretch long enough to clear: each jump is new.
        raised += detector.on_frame(now, False, False, dts)
        for _ in range(100):
            now += 0.021
            dts += 21
            raised += detector.on_frame(now, False, False, dts)
        dts -= 1000
    jumps = [w for w in raised if w.kind is WarningKind.TIMESTAMP_JUMP]
    assert len(jumps) == 3 == detector.raised
    assert detector.suppressed == 6  # 9 jumps in all
    assert counts.raised[WarningKind.TIMESTAMP_JUMP] == 3 and counts.suppressed == 6


def test_the_default_cap_holds_against_a_flapping_encoder() -> None:
    # Every other frame jumps 5 s (forward, then back), and the frame after it is a
    # healthy step that clears the condition at once (clear_after 0): 500 jumps.
    detector = IngestWarnings(segment_target=2.0, expect_video=False,
                              limits=WarningLimits(clear_after=0.0))
    total = 0
    for n in range(1000):
        total += len(detector.on_frame(n * 0.02, False, False, n * 21 + (n // 2 % 2) * 5000))
    assert total == MAX_WARNINGS_PER_SESSION == detector.raised
    assert detector.suppressed == 500 - MAX_WARNINGS_PER_SESSION - 1


def test_the_event_shape() -> None:
    warning = IngestWarning(WarningKind.MISSING_AUDIO, "m")
    assert warning.to_event() == {"type": "missing_audio", "message": "m"}


@pytest.mark.parametrize("field", ["missing_track_after", "max_forward_jump", "max_av_drift"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        WarningLimits(**{field: 0.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_per_session"):
        WarningLimits(max_per_session=-1)
