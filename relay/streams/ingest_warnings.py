"""Ingest problems the streamer can fix, found frame by frame: `video.live_stream.warning`.

Theory of operation: `IngestWarnings` is fed every frame the session accepts (its track, dts
in ms, whether it is a keyframe) together with the caller's monotonic `now`; it reads no
clock and does no I/O. Each frame updates a few numbers and checks five conditions:

- `keyframe_interval`: no video keyframe for longer than the stream's HLS segment target
  (plus `keyframe_slack`). The segmenter only cuts at keyframes (relay.hls.segmenter), so a
  longer GOP makes every segment as long as the GOP: latency grows and players stall.
  Measured in media time (dts), so it is the encoder's setting whatever the network did;
  raised while the wait is still running, so an encoder that never sends a second keyframe
  is caught too.
- `missing_audio` / `missing_video`: one track flows and the other has sent nothing for
  `missing_track_after` seconds, by the caller's clock and by the flowing track's timestamps
  both (never configured, or stopped).
- `timestamp_jump`: a track's dts steps back more than `max_backward_step`, or forward more
  than `max_forward_jump` beyond the time that passed between the two frames (a track that
  pauses and resumes in real time is `missing_*`, not a jump).
- `av_drift`: while both tracks flow (each has a frame in the last `max_av_drift` seconds),
  the last audio dts and the last video dts stay further apart than `max_av_drift` for
  `av_drift_hold` seconds (so a jump of both tracks, one frame after the other, is no drift).

Each kind is raised once, then stays quiet until its condition has been absent for
`clear_after` seconds (so a condition that flickers does not repeat), and at most
`max_per_session` warnings are raised per session whatever the kinds: the outbox a bad
encoder can fill is bounded. The messages say what to change in the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from relay.media.units import TrackKind

#: Seconds one track may be silent while the other flows before it counts as missing.
#: Encoders start both tracks within a second (ffmpeg and OBS send both configurations
#: before the first frame), an AAC frame lasts 21-23 ms and a video frame at 1 fps 1 s, so 5 s
#: of nothing is no scheduling hiccup; and it is short enough that the warning arrives about
#: when the stream becomes active (the first segment is 2-6 s).
MISSING_TRACK_AFTER: Final = 5.0
#: A GOP may exceed the segment target by this fraction before it warns: millisecond
#: timestamps make a 2 s GOP at 29.97 fps 2002 ms, and that is no problem.
KEYFRAME_SLACK: Final = 0.1
#: A forward dts step in one track beyond this is a jump. The segmenter's max gap (5 s,
#: relay.hls.segmenter.DEFAULT_MAX_GAP) flushes the segment and starts a discontinuity at
#: that size; 2 s is already far beyond a frame's duration (1 s at 1 fps) and shows as a
#: frozen picture or silence.
MAX_FORWARD_JUMP: Final = 2.0
#: A backward dts step in one track beyond this is a jump. DTS never goes back in a valid
#: stream; the packager clamps a step back to one tick, which a few ms of encoder jitter
#: makes invisible, but 100 ms is a visible stutter.
MAX_BACKWARD_STEP: Final = 0.1
#: Audio and video dts further apart than this (both tracks flowing) is drift. Encoders
#: interleave the tracks within a few frames; a second apart is out of lip sync.
MAX_AV_DRIFT: Final = 1.0
#: Seconds the drift must last before it warns: when an encoder's timestamps jump, one track
#: jumps a frame before the other, and the drift of that moment is no drift.
AV_DRIFT_HOLD: Final = 3.0
#: A raised kind is raised again only after its condition was absent this long.
CLEAR_AFTER: Final = 10.0
#: Warnings raised per session at most (all kinds together); the rest are counted only.
MAX_WARNINGS_PER_SESSION: Final = 10
#: The keyframe interval the messages recommend (at most the segment target): the 2 s that
#: OBS, Twitch and Mux recommend, and one LL-HLS segment of Relay's low and reduced modes.
RECOMMENDED_KEYFRAME_INTERVAL: Final = 2.0

_COMMON_FRAME_RATES: Final = (23.976, 24.0, 25.0, 29.97, 30.0, 48.0, 50.0, 59.94, 60.0)


class WarningKind(StrEnum):
    """The `warning.type` of a `video.live_stream.warning` event."""

    KEYFRAME_INTERVAL = "keyframe_interval"
    MISSING_AUDIO = "missing_audio"
    MISSING_VIDEO = "missing_video"
    TIMESTAMP_JUMP = "timestamp_jump"
    AV_DRIFT = "av_drift"


# Plain names for the media path (an enum member looked up on its class costs more).
_KEYFRAME_INTERVAL: Final = WarningKind.KEYFRAME_INTERVAL
_MISSING_AUDIO: Final = WarningKind.MISSING_AUDIO
_MISSING_VIDEO: Final = WarningKind.MISSING_VIDEO
_TIMESTAMP_JUMP: Final = WarningKind.TIMESTAMP_JUMP
_AV_DRIFT: Final = WarningKind.AV_DRIFT


@dataclass(frozen=True, slots=True)
class IngestWarning:
    kind: WarningKind
    message: str

    def to_event(self) -> dict[str, str]:
        """The event's `data.warning` object."""
        return {"type": self.kind.value, "message": self.message}


@dataclass(frozen=True, slots=True)
class WarningLimits:
    """The bounds above, in seconds (see the module constants for why each is what it is)."""

    missing_track_after: float = MISSING_TRACK_AFTER
    keyframe_slack: float = KEYFRAME_SLACK
    max_forward_jump: float = MAX_FORWARD_JUMP
    max_backward_step: float = MAX_BACKWARD_STEP
    max_av_drift: float = MAX_AV_DRIFT
    av_drift_hold: float = AV_DRIFT_HOLD
    clear_after: float = CLEAR_AFTER
    max_per_session: int = MAX_WARNINGS_PER_SESSION

    def __post_init__(self) -> None:
        if self.max_per_session < 0:
            raise ValueError(f"max_per_session must be at least 0, got {self.max_per_session}")
        for name in ("missing_track_after", "max_forward_jump", "max_av_drift"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above 0 s, got {getattr(self, name)}")


class WarningCounts:
    """Process-wide plain counters for /metrics: warnings raised by kind, and those the
    per-session cap held back."""

    __slots__ = ("raised", "suppressed")

    def __init__(self) -> None:
        self.raised: dict[WarningKind, int] = dict.fromkeys(WarningKind, 0)
        self.suppressed = 0


_VIDEO, _AUDIO = 0, 1
_TRACK_NAMES = ("video", "audio")
_NONE: Final[tuple[IngestWarning, ...]] = ()


class IngestWarnings:
    """One live session's warning detector (it spans the session's reconnects).

    `segment_target` (seconds, the packager's) enables the keyframe check; without it (no
    packager) the other checks still run. `expect_video` is False for audio-only streams.
    """

    __slots__ = (
        "_active",
        "_backward_ms",
        "_configured",
        "_drift_ms",
        "_drift_since",
        "_forward_ms",
        "_gop_frames",
        "_gop_start",
        "_healthy_since",
        "_last_dts",
        "_last_seen",
        "_missing_ms",
        "_raised_now",
        "_start",
        "_start_dts",
        "counts",
        "expect_video",
        "limits",
        "raised",
        "segment_target",
        "suppressed",
    )

    def __init__(self, *, segment_target: float | None = None, expect_video: bool = True,
                 limits: WarningLimits | None = None,
                 counts: WarningCounts | None = None) -> None:
        self.segment_target = segment_target
        self.expect_video = expect_video
        self.limits = limits if limits is not None else WarningLimits()
        # The limits in the units of the media path (ms), looked up once.
        self._forward_ms = self.limits.max_forward_jump * 1000
        self._backward_ms = self.limits.max_backward_step * 1000
        self._drift_ms = self.limits.max_av_drift * 1000
        self._missing_ms = self.limits.missing_track_after * 1000
        self.counts = counts if counts is not None else WarningCounts()
        #: Warnings raised in this session, and those the cap held back.
        self.raised = 0
        self.suppressed = 0
        self._active: dict[WarningKind, bool] = dict.fromkeys(WarningKind, False)
        self._healthy_since: dict[WarningKind, float | None] = dict.fromkeys(WarningKind)
        self._raised_now = 0  # kinds active now: while 0, nothing needs clearing
        self._configured = [False, False]  # per track: its configuration arrived
        self._last_dts: list[int | None] = [None, None]  # per track, ms
        self._last_seen: list[float | None] = [None, None]  # per track, the caller's clock
        self._start: float | None = None  # the connection's first frame, the caller's clock
        self._start_dts = 0  # and its dts
        self._gop_start: int | None = None  # dts of the last keyframe (or first video frame)
        self._gop_frames = 0  # video frames since _gop_start
        self._drift_since: float | None = None  # since when the tracks are too far apart

    def new_connection(self) -> None:
        """The encoder reconnected: its timestamps start over. Raised kinds stay raised
        (their condition has not been seen to clear)."""
        self._configured = [False, False]
        self._last_dts = [None, None]
        self._last_seen = [None, None]
        self._start = None
        self._gop_start = None
        self._gop_frames = 0
        self._drift_since = None

    def on_track(self, kind: TrackKind) -> None:
        """A track's decoder configuration arrived (for the messages)."""
        self._configured[_VIDEO if kind is TrackKind.VIDEO else _AUDIO] = True

    def on_frame(self, now: float, video: bool, keyframe: bool,
                 dts: int) -> tuple[IngestWarning, ...]:
        """A frame arrived at `now` (the caller's monotonic seconds); dts in ms. Returns the
        warnings it raised, usually none."""
        found: list[IngestWarning] | None = None
        limits = self.limits
        track = _VIDEO if video else _AUDIO
        other = 1 - track
        if self._start is None:
            self._start, self._start_dts = now, dts
        last, last_seen = self._last_dts[track], self._last_seen[track]
        self._last_dts[track] = dts
        self._last_seen[track] = now
        if last is not None and last_seen is not None:
            step = dts - last
            # Forward: further than time went by (a track that paused and resumed, or a
            # network stall, moves both alike); backward: at all, beyond jitter.
            ahead = step - (now - last_seen) * 1000
            if ahead > self._forward_ms or -step > self._backward_ms:
                if video:
                    # A GOP measured across the jump would be the jump's size.
                    self._gop_start, self._gop_frames = dts, 0
                if self._bad(_TIMESTAMP_JUMP):
                    found = [IngestWarning(_TIMESTAMP_JUMP,
                                           _jump_message(_TRACK_NAMES[track], step))]
            else:
                if self._raised_now:
                    self._good(_TIMESTAMP_JUMP, now)

        if video:
            warning = self._check_keyframes(keyframe, dts, now)
            if warning is not None:
                found = [warning] if found is None else [*found, warning]

        # This track is here; the other one may be missing.
        here, absent = (_MISSING_VIDEO, _MISSING_AUDIO) if video else (_MISSING_AUDIO,
                                                                        _MISSING_VIDEO)
        if self._raised_now:
            self._good(here, now)
        seen = self._last_seen[other]
        if other == _AUDIO or self.expect_video:
            silent = now - (seen if seen is not None else self._start)
            # Missing both by the clock and by this track's timestamps: after a stall (of
            # the network, or of Relay's event loop) the first frame of the burst finds the
            # other track's last frame long ago by the clock but not in media time; after
            # a timestamp jump it is the other way round.
            other_dts = self._last_dts[other]
            advanced = dts - (other_dts if other_dts is not None else self._start_dts)
            if silent >= limits.missing_track_after and advanced >= self._missing_ms:
                if self._bad(absent):
                    warning = IngestWarning(absent, _missing_message(
                        absent, silent, configured=self._configured[other], ever=seen is not None))
                    found = [warning] if found is None else [*found, warning]
            elif seen is not None and silent < limits.max_av_drift:
                # Both tracks flow: a gap between their timestamps is drift, not a stall.
                warning = self._check_drift(now)
                if warning is not None:
                    found = [warning] if found is None else [*found, warning]
        return _NONE if found is None else tuple(found)

    def _check_drift(self, now: float) -> IngestWarning | None:
        audio, video = self._last_dts[_AUDIO], self._last_dts[_VIDEO]
        assert audio is not None and video is not None  # both tracks have been seen
        drift = audio - video
        if abs(drift) <= self._drift_ms:
            self._drift_since = None
            if self._raised_now:
                self._good(_AV_DRIFT, now)
            return None
        if self._drift_since is None:
            self._drift_since = now
        if (now - self._drift_since >= self.limits.av_drift_hold
                and self._bad(_AV_DRIFT)):
            return IngestWarning(_AV_DRIFT, _drift_message(drift))
        return None

    def _check_keyframes(self, keyframe: bool, dts: int, now: float) -> IngestWarning | None:
        start, target = self._gop_start, self.segment_target
        if start is None:
            self._gop_start, self._gop_frames = dts, 0
            return None
        if not keyframe:
            self._gop_frames += 1
        warning = None
        if target is not None:
            elapsed = dts - start
            if elapsed > self._keyframe_limit_ms(target):
                # Usually raised while the long GOP runs, before its next keyframe; at the
                # keyframe only if no video frame came in between.
                if self._bad(_KEYFRAME_INTERVAL):
                    fps = self._gop_frames * 1000 / elapsed
                    warning = IngestWarning(_KEYFRAME_INTERVAL,
                                            _keyframe_message(elapsed / 1000, target, fps))
            elif keyframe and self._raised_now:
                self._good(_KEYFRAME_INTERVAL, now)
        if keyframe:
            self._gop_start, self._gop_frames = dts, 0
        return warning

    def _keyframe_limit_ms(self, target: float) -> float:
        return target * (1 + self.limits.keyframe_slack) * 1000

    def _bad(self, kind: WarningKind) -> bool:
        """`kind`'s condition holds now: True if a warning is to be raised."""
        self._healthy_since[kind] = None
        if self._active[kind]:
            return False
        self._active[kind] = True
        self._raised_now += 1
        if self.raised >= self.limits.max_per_session:
            self.suppressed += 1
            self.counts.suppressed += 1
            return False
        self.raised += 1
        self.counts.raised[kind] += 1
        return True

    def _good(self, kind: WarningKind, now: float) -> None:
        """`kind`'s condition does not hold now; once that lasts `clear_after`, it clears."""
        if not self._active[kind]:
            return
        since = self._healthy_since[kind]
        if since is None:
            self._healthy_since[kind] = since = now
        if now - since >= self.limits.clear_after:
            self._active[kind] = False
            self._healthy_since[kind] = None
            self._raised_now -= 1

    def active(self, kind: WarningKind) -> bool:
        """Whether `kind` was raised (or held back by the cap) and has not cleared."""
        return self._active[kind]


# -- messages: what happened, and what to change in the encoder ------------------------

def _frame_rate(fps: float) -> float:
    """The common frame rate `fps` (measured from ms timestamps) is, or fps to 0.1."""
    best = min(_COMMON_FRAME_RATES, key=lambda rate: abs(rate - fps))
    return best if abs(best - fps) <= best * 0.02 else round(fps, 1)


def _keyframe_message(seconds: float, target: float, fps: float) -> str:
    interval = min(RECOMMENDED_KEYFRAME_INTERVAL, target)
    if fps > 0:
        rate = _frame_rate(fps)
        gop = f"-g {round(interval * rate)} at {rate:g} fps"
    else:
        gop = f"-g {interval:g} times the frame rate"
    return (f"No keyframe for {seconds:.1f} s, longer than this stream's {target:g} s "
            f"segments, so segments run long and playback lags or stalls. Set the encoder's "
            f"keyframe interval to {interval:g} s (ffmpeg: {gop}, and -sc_threshold 0; "
            f"OBS: Settings > Output > Keyframe Interval {interval:g}).")


def _missing_message(kind: WarningKind, silent: float, *, configured: bool,
                     ever: bool) -> str:
    what = "audio" if kind is WarningKind.MISSING_AUDIO else "video"
    flowing = "video" if what == "audio" else "audio"
    if ever:
        happened = f"The {what} track stopped {silent:.0f} s ago while {flowing} continues."
    elif configured:
        article = "an" if what == "audio" else "a"
        happened = (f"The encoder announced {article} {what} track but sent no {what} for "
                    f"{silent:.0f} s while {flowing} arrives.")
    else:
        happened = f"The encoder sends no {what} track ({silent:.0f} s of {flowing} only)."
    if ever:
        where = "Settings > Audio" if what == "audio" else "the scene's video source"
        fix = (f"Check the encoder's {what} source: a device that was unplugged or failed "
               f"stops the track in some encoders (OBS: {where}; ffmpeg: the input's {what} "
               f"stream ended, loop or replace the input).")
    elif kind is WarningKind.MISSING_AUDIO:
        fix = ("Enable AAC audio in the encoder (ffmpeg: remove -an and add -c:a aac -b:a "
               "128k -ar 48000; OBS: Settings > Audio, choose a Desktop or Mic/Aux device); "
               "players expect an audio track, silence is fine.")
    else:
        fix = ("Enable H.264 video in the encoder (ffmpeg: remove -vn and add -c:v libx264 "
               "-g 60 for 2 s at 30 fps; OBS: add a video source to the scene), or create "
               "the live stream with \"audio_only\": true if it carries no picture.")
    return f"{happened} {fix}"


def _jump_message(track: str, step_ms: int) -> str:
    direction = "forward" if step_ms > 0 else "backward"
    return (f"The {track} timestamps jumped {direction} by {abs(step_ms) / 1000:.1f} s "
            f"between two frames, which players show as a freeze or a skip. Let the encoder "
            f"timestamp frames from one steady clock (ffmpeg: remove -copyts, add -fflags "
            f"+genpts, or -use_wallclock_as_timestamps 1 for a capture input; OBS: check "
            f"Stats for skipped or lagged frames and lower the output resolution or bitrate).")


def _drift_message(drift_ms: int) -> str:
    side = "ahead of" if drift_ms > 0 else "behind"
    return (f"Audio timestamps are {abs(drift_ms) / 1000:.1f} s {side} video, so lip sync "
            f"is off. Make the encoder stamp audio and video from the same clock (ffmpeg: "
            f"add -af aresample=async=1 and drop any -itsoffset; OBS: Advanced Audio "
            f"Properties, set Sync Offset to 0 ms).")
