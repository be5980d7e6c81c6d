"""Cutting a live stream into CMAF parts and segments (LL-HLS.md, rfc8216bis 4.4.4.9, 6.2).

Theory of operation
-------------------
`PartSegmenter` is sans-IO: track configurations and frames go in, events come out, returned
as a list by every call (in the order the packager must apply them). It reads no clock: the
caller passes `now` (wall-clock epoch seconds) with each frame, and that is only used for
EXT-X-PROGRAM-DATE-TIME. It has three states:

    WAITING --keyframe--> SEGMENT_OPEN --keyframe past the segment target--> SEGMENT_OPEN
       ^                      |
       +--discontinuity, gap, changed config (flush)
    WAITING / SEGMENT_OPEN --end (flush)--> ENDED

- WAITING: no segment is open. With a video track, video frames are dropped until a keyframe
  (counted), and audio waits in a small pre-roll buffer; when the keyframe comes, the audio at
  or after it joins the new segment. Without a video track, audio waits in the pre-roll until
  it spans `video_wait` seconds (an encoder may announce its video a moment after its audio),
  then an audio-only segment starts with it.
- SEGMENT_OPEN: a frame's duration is known when the next frame of its track arrives, so one
  frame per track is held back. When a video frame arrives, the held one is committed and
  the cut rules run on the video timeline (on the audio timeline for audio-only streams):
  * segment: a keyframe at or after the segment target (less `KEYFRAME_TOLERANCE`) ends the
    segment (its last part is cut there) and starts the next one; for audio-only streams,
    the first frame at or after the segment target does. Segments follow the encoder's GOP
    and are never cut elsewhere: a segment longer than TARGETDURATION is counted
    (`overruns`), not split.
  * part: when the committed part plus one more frame (as short as the shortest of the last
    three) would pass the part target, the part is cut now: the frame that crosses the
    boundary has just arrived, so a part appears one frame after its last frame, well
    within one PART-TARGET. When a frame turns out longer than predicted, the part is cut
    before it (one frame later). Audio samples go to the part whose time span they start
    in, as far as they have arrived (one audio frame is held back like the video's).
- A discontinuity (the encoder reconnected), a timestamp jump of more than `max_gap`, or a
  changed decoder configuration flushes: the held frames are committed with an estimated
  duration, the open segment completes, and the next segment waits for a keyframe, starts a
  new timeline epoch and carries `discontinuity=True`. Video joining an audio-only stream
  does the same. Audio joining a video stream joins the open segment if nothing of it has
  been sent yet, and otherwise the next segment (with a new init and a discontinuity); its
  frames until then are dropped and counted. Tracks are never removed (as in the hub): a
  reconnect with the same configurations keeps the init.

Timelines: each track's decode times are in its own timescale (90 kHz video, the sample rate
for audio), start at 0 with the stream's first segment and continue without a jump across
epochs, so `tfdt` only grows. Video durations are the millisecond dts deltas times 90; AAC
durations are the frame's sample count (1024, 2048 for HE-AAC), so audio does not drift with
millisecond rounding, and are re-synced to the dts when they disagree by more than half a
frame (a gap or an overlap in the encoder's audio). A duration that would be 0 or negative
(timestamps going backward) is clamped to one tick and counted.

Events (all frozen): `InitChanged` (a new init segment is needed: its number and track list,
video first), `SegmentStarted` (a `SegmentInfo` that the receiver owns from then on; it is
sent just before the segment's first part, so that a track that appears within the first
part still joins the segment's init), `PartCut` (a `PartInfo` plus the `fmp4.TrackRun`s for
`fmp4.media_fragment`), `SegmentCompleted` (msn, duration, the stream's TARGETDURATION).

Latency modes: in LOW mode parts are LL-HLS parts (`PartCut.listed` is True) of at most
`part_target` seconds. In REDUCED and STANDARD modes the same machinery cuts internal
fragments of at most `FRAGMENT_TARGET` seconds (`listed` False): the packager appends them to
the segment's bytes but lists no parts, and no part rule applies to them. So memory stays
bounded in every mode by one open part per track plus one held frame per track.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import Final

from relay.hls.fmp4 import Sample, TrackRun, timescale_of
from relay.hls.model import PartInfo, SegmentInfo
from relay.media.units import AudioConfig, MediaFrame, TrackConfig, TrackKind, VideoConfig
from relay.store.records import LatencyMode

log = logging.getLogger("relay.hls")

#: PART-TARGET in LOW mode. 0.3 s holds the 85% rule for every common frame rate with room
#: for millisecond jitter: 23.976/24 fps cut 7 frames (0.292 s), 25 fps 7 (0.28), 29.97 fps
#: 8 (0.267), 30 fps 9 (0.3), 50 fps 15, 59.94 fps 17 (0.284), 60 fps 18, 15 fps 4 (0.267);
#: AAC at 48 kHz 14 frames (0.299), at 44.1 kHz 12 (0.279). 0.25 s would fail at 23.976 fps
#: (5 frames are 0.209 s, 83%) and 0.33 s at 15 fps.
DEFAULT_PART_TARGET: Final = 0.3
MIN_PART_TARGET: Final = 0.1
MAX_PART_TARGET: Final = 1.0

#: Segment targets. LOW: 2 s, one GOP at the 2 s keyframe interval that OBS, Twitch and Mux
#: recommend; LL-HLS latency comes from the parts, and a short TARGETDURATION keeps playlists
#: small (parts are listed for 3 x TARGETDURATION) and hold-back short for players that
#: ignore parts. REDUCED: 2 s, the same GOP-sized segments without parts. STANDARD: 6 s
#: (Apple's HLS authoring recommendation).
SEGMENT_TARGETS: Final[dict[LatencyMode, float]] = {"low": 2.0, "reduced": 2.0,
                                                     "standard": 6.0}
MIN_SEGMENT_TARGET: Final = 1.0
MAX_SEGMENT_TARGET: Final = 30.0

#: Internal fragment length in REDUCED and STANDARD modes (parts the playlist does not list).
FRAGMENT_TARGET: Final = 1.0

#: A keyframe this fraction of the segment target early still ends the segment, so that a
#: GOP a millisecond short of the target (ms rounding, 59.94 fps) does not double a segment.
KEYFRAME_TOLERANCE: Final = 0.05

#: TARGETDURATION leaves room for later segments this much longer than the first one.
TARGET_HEADROOM: Final = 0.1

#: LL-HLS.md: a part lasts at least 85% of PART-TARGET unless independent or a segment's last.
MIN_PART_FRACTION: Final = 0.85

#: The next frame's duration is predicted as the shortest of the last this many: millisecond
#: timestamps alternate (33, 34, 33 ms at 30 fps), and predicting 34 would cut a 9-frame part
#: at 8 frames. A frame longer than predicted only delays its part's cut by one frame.
PREDICTION_FRAMES: Final = 3

#: A dts jump (either way, within one track) larger than this is taken as a break in the
#: stream: the segment is flushed and the next one starts a new epoch with a discontinuity.
DEFAULT_MAX_GAP: Final = 5.0

#: Seconds of audio to hold while no video track is configured before starting audio-only.
DEFAULT_VIDEO_WAIT: Final = 1.0

#: Frames the pre-roll may hold (bounded: the encoder controls what it sends).
MAX_PREROLL_FRAMES: Final = 512

#: Audio samples that may wait for a video part to carry them (a stalled video track).
MAX_PENDING_AUDIO: Final = 1024

#: PROGRAM-DATE-TIME follows the media clock from an anchor; when a segment's first frame
#: arrives further than this from where the media clock puts it, the anchor moves.
PDT_TOLERANCE: Final = 0.5

#: ISO 14496-3: an AAC frame holds 1024 samples; with SBR (HE-AAC v1, v2), 2048 at the output
#: rate that `AudioConfig.sample_rate` gives.
AAC_FRAME_SAMPLES: Final = 1024
_SBR_CODECS: Final = frozenset({"mp4a.40.5", "mp4a.40.29"})

#: Duration assumed for a video frame of unknown rate that ends a flushed segment.
_DEFAULT_VIDEO_FRAME_TICKS: Final = 3000  # 30 fps at 90 kHz

_TRACK_ORDER: Final = (TrackKind.VIDEO, TrackKind.AUDIO)
# Members read per frame, looked up once (an enum member's attribute access costs a lookup).
_AUDIO: Final = TrackKind.AUDIO


class SegmenterUsageError(RuntimeError):
    """The packager called the segmenter in a state where that call makes no sense (a bug)."""


# -- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InitChanged:
    """A new init segment is needed before the next `SegmentStarted` that names `init`.

    `tracks` are in track-id order (track id = index + 1): video first, then audio; pass them
    to `fmp4.init_segment`.
    """

    init: int
    tracks: tuple[TrackConfig, ...]


@dataclass(frozen=True, slots=True)
class SegmentStarted:
    """A segment begins; the receiver owns `segment` (the segmenter never touches it again)."""

    segment: SegmentInfo  # msn, init, program_date_time, discontinuity; no parts yet


@dataclass(frozen=True, slots=True)
class PartCut:
    """A part (LOW mode) or internal fragment (other modes) of the open segment is complete.

    `fmp4.media_fragment(sequence_number, runs)` makes its bytes; the segment's bytes are its
    parts' bytes in order. `listed` says whether the part belongs in the playlist.
    """

    part: PartInfo
    sequence_number: int  # mfhd sequence number, from 1, one per fragment in the stream
    runs: tuple[TrackRun, ...]  # one per track with samples in it, in track-id order
    listed: bool
    #: The arrival time (the `now` given with it) of the part's latest-arriving frame: the
    #: packager measures from it how long a part takes to reach the playlist.
    last_arrival: float = 0.0


@dataclass(frozen=True, slots=True)
class SegmentCompleted:
    """The open segment is complete: its last part has been cut."""

    msn: int
    duration: float  # seconds: the sum of its parts' durations
    target_duration: int  # the stream's TARGETDURATION (fixed by its first segment)
    overrun: bool  # rounded, the duration exceeds target_duration (a GOP too long)


SegmenterEvent = InitChanged | SegmentStarted | PartCut | SegmentCompleted


@dataclass(slots=True)
class SegmenterCounters:
    """What the encoder got wrong, counted; the packager adds them to `HlsCounters` when its
    session ends, and /metrics exports them."""

    dropped_no_track: int = 0  # a frame of a kind with no configuration
    dropped_waiting: int = 0  # video before a keyframe; audio before its segment's start
    dropped_overflow: int = 0  # audio beyond MAX_PENDING_AUDIO while video stalled
    backward_timestamps: int = 0  # durations clamped to one tick
    gaps: int = 0  # dts jumps beyond max_gap (each flushed the segment)
    overruns: int = 0  # segments whose rounded duration exceeds TARGETDURATION
    part_overruns: int = 0  # listed parts longer than PART-TARGET (one frame longer than it)
    short_parts: int = 0  # listed parts under 85% of PART-TARGET, not independent nor last
    pdt_resyncs: int = 0  # PROGRAM-DATE-TIME anchor moved within an epoch


# -- state --------------------------------------------------------------------------------


class _State(StrEnum):
    WAITING = "waiting"  # no open segment
    SEGMENT_OPEN = "segment_open"
    ENDED = "ended"


class _Input(StrEnum):
    TRACK = "track"
    FRAME = "frame"
    DISCONTINUITY = "discontinuity"
    END = "end"


#: Which inputs each state takes (the transitions themselves depend on the frames: see the
#: theory of operation). Anything else is a `SegmenterUsageError`.
_ENDED: Final = _State.ENDED
_ACCEPTS: Final = {
    _State.WAITING: frozenset(_Input),
    _State.SEGMENT_OPEN: frozenset(_Input),
    _State.ENDED: frozenset({_Input.END}),
}


@dataclass(slots=True, eq=False)
class _Track:
    """One track's timeline within an epoch."""

    kind: TrackKind
    timescale: int
    base: int  # decode time of the epoch's origin
    nominal: int  # a frame's usual duration: the AAC frame size; the video frame rate's
    end: int  # decode time after the last committed sample (or of the held frame)
    held: MediaFrame | None = None
    held_arrival: float = 0.0  # the held frame's arrival time
    last_duration: int = 0
    #: The shortest of the last PREDICTION_FRAMES durations: the next frame's, predicted.
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=PREDICTION_FRAMES))
    #: (decode time, sample, arrival time) of the committed samples not yet in a part.
    pending: deque[tuple[int, Sample, float]] = field(default_factory=deque)


@dataclass(slots=True, eq=False)
class _Segment:
    msn: int
    configs: dict[TrackKind, TrackConfig]
    driver: TrackKind  # the track whose timeline cuts parts and segments
    start: int  # decode time of its first frame, driver ticks
    wall: float  # arrival time of its first frame
    part_start: int  # driver ticks
    cut_at: int  # a keyframe this far after `start` ends the segment
    part_limit: int  # longest part, driver ticks
    part_index: int = 0
    announced: bool = False
    previous_short: bool = False  # the last part cut is short (counted if another follows)


class PartSegmenter:
    """Turns one live stream's track configurations and frames into parts and segments.

    `part_target` (LOW mode's PART-TARGET, seconds) and `segment_target` (seconds; by default
    `SEGMENT_TARGETS[mode]`) drive the cuts. `max_gap` and `video_wait` are described with
    `DEFAULT_MAX_GAP` and `DEFAULT_VIDEO_WAIT`; `first_msn` numbers the first segment.
    Every input method returns the events it caused, in order.
    """

    def __init__(
        self,
        mode: LatencyMode,
        *,
        part_target: float = DEFAULT_PART_TARGET,
        segment_target: float | None = None,
        max_gap: float = DEFAULT_MAX_GAP,
        video_wait: float = DEFAULT_VIDEO_WAIT,
        first_msn: int = 0,
    ) -> None:
        if mode not in SEGMENT_TARGETS:
            raise ValueError(f"mode must be one of {', '.join(SEGMENT_TARGETS)}, got {mode!r}")
        target = SEGMENT_TARGETS[mode] if segment_target is None else segment_target
        if not MIN_PART_TARGET <= part_target <= MAX_PART_TARGET:
            raise ValueError(f"part_target must be within {MIN_PART_TARGET}..{MAX_PART_TARGET}"
                             f" s, got {part_target}")
        if not MIN_SEGMENT_TARGET <= target <= MAX_SEGMENT_TARGET:
            raise ValueError(f"segment_target must be within {MIN_SEGMENT_TARGET}.."
                             f"{MAX_SEGMENT_TARGET} s, got {target}")
        if part_target > target / 2:
            raise ValueError(f"part_target {part_target} s must be at most half the segment "
                             f"target {target} s")
        if not max_gap >= 1.0:
            raise ValueError(f"max_gap must be at least 1 s, got {max_gap}")
        if not 0 <= video_wait <= 10:
            raise ValueError(f"video_wait must be within 0..10 s, got {video_wait}")
        if first_msn < 0:
            raise ValueError(f"first_msn must not be negative, got {first_msn}")
        self.mode = mode
        self.segment_target = target
        #: PART-TARGET for the playlist; None unless LOW mode (no parts listed).
        self.part_target: float | None = part_target if mode == "low" else None
        #: The longest part or internal fragment cut, seconds.
        self.fragment_target = part_target if mode == "low" else FRAGMENT_TARGET
        #: TARGETDURATION, fixed when the first segment completes (see `_fix_target_duration`).
        self.target_duration: int | None = None
        self.counters = SegmenterCounters()
        self._max_gap_ms = round(max_gap * 1000)
        self._video_wait_ms = round(video_wait * 1000)
        self._state = _State.WAITING
        self._configs: dict[TrackKind, TrackConfig] = {}
        self._tracks: dict[TrackKind, _Track] = {}
        self._segment: _Segment | None = None
        self._preroll: deque[tuple[MediaFrame, float]] = deque()
        self._next_msn = first_msn
        self._sequence = 0
        self._init = -1
        self._init_tracks: tuple[TrackConfig, ...] | None = None
        self._discontinuity = False
        # The epoch: its origin (dts, ms) maps to `_resume_at` seconds on the output timeline.
        self._origin_ms: int | None = None
        self._resume_at = Fraction(0)
        self._anchor: tuple[float, float] | None = None  # (wall clock, media seconds)

    # -- inputs ----------------------------------------------------------------------------

    def on_track(self, config: TrackConfig) -> list[SegmenterEvent]:
        """A track's decoder configuration (new, repeated or changed)."""
        self._accept(_Input.TRACK)
        kind = TrackKind.VIDEO if isinstance(config, VideoConfig) else TrackKind.AUDIO
        events: list[SegmenterEvent] = []
        if self._configs.get(kind) == config:
            return events
        self._configs[kind] = config
        segment = self._segment
        if segment is None:
            return events
        if kind in segment.configs or kind is TrackKind.VIDEO:
            # A changed decoder configuration cannot share the open segment's init; video
            # joining an audio-only stream must start a segment with its first keyframe.
            self._break(events)
        elif not segment.announced:
            # Audio announced just after the video's first keyframe: it joins this segment.
            segment.configs[kind] = config
            self._ensure_track(kind)
        # Otherwise the new audio track joins at the next segment (with a new init).
        return events

    def on_frame(self, frame: MediaFrame, now: float) -> list[SegmenterEvent]:
        """One frame; `now` is its arrival time (wall clock, epoch seconds)."""
        events: list[SegmenterEvent] = []
        segment = self._segment
        if segment is not None and frame.kind in segment.configs:
            # A track of the open segment (so configured, and not ENDED): nearly every frame.
            self._add(segment, frame, now, events)
        elif self._state is _ENDED:
            self._accept(_Input.FRAME)
        elif frame.kind not in self._configs:
            self.counters.dropped_no_track += 1
        else:
            self._frame(frame, now, events)
        return events

    def on_discontinuity(self) -> list[SegmenterEvent]:
        """The encoder reconnected: flush; the next segment starts with a discontinuity."""
        self._accept(_Input.DISCONTINUITY)
        events: list[SegmenterEvent] = []
        self._break(events)
        self.counters.dropped_waiting += len(self._preroll)
        self._preroll.clear()
        return events

    def on_end(self, now: float) -> list[SegmenterEvent]:
        """The stream is over: the open part and segment close with the frames held.

        `now` is taken for symmetry with `on_frame`; flushing needs no clock (the frames
        carry their arrival times). A second call does nothing.
        """
        self._accept(_Input.END)
        events: list[SegmenterEvent] = []
        if self._state is _State.ENDED:
            return events
        if self._segment is None and self._preroll and TrackKind.VIDEO not in self._configs:
            self._start_audio_only(events)
        self._break(events)
        self.counters.dropped_waiting += len(self._preroll)
        self._preroll.clear()
        self._state = _State.ENDED
        return events

    # -- state -----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """"waiting", "segment_open" or "ended"."""
        return self._state.value

    def _accept(self, given: _Input) -> None:
        if given not in _ACCEPTS[self._state]:
            raise SegmenterUsageError(f"{given} after the stream ended; create a new segmenter")

    # -- frames ----------------------------------------------------------------------------

    def _frame(self, frame: MediaFrame, now: float, events: list[SegmenterEvent]) -> None:
        segment = self._segment
        if segment is None:
            self._wait(frame, now, events)
        elif frame.kind not in segment.configs:
            self.counters.dropped_waiting += 1  # its track joins at the next segment
        else:
            self._add(segment, frame, now, events)

    def _wait(self, frame: MediaFrame, now: float, events: list[SegmenterEvent]) -> None:
        if TrackKind.VIDEO in self._configs:
            if frame.kind is TrackKind.AUDIO:
                self._buffer(frame, now)
                return
            # Audio before this video frame cannot follow any later keyframe.
            while self._preroll and self._preroll[0][0].dts < frame.dts:
                self._preroll.popleft()
                self.counters.dropped_waiting += 1
            if not frame.keyframe:
                self.counters.dropped_waiting += 1
                return
            self._open_epoch(frame, now)
            self._replay_preroll(events)
            return
        self._buffer(frame, now)
        if frame.dts - self._preroll[0][0].dts >= self._video_wait_ms:
            self._start_audio_only(events)

    def _buffer(self, frame: MediaFrame, now: float) -> None:
        self._preroll.append((frame, now))
        if len(self._preroll) > MAX_PREROLL_FRAMES:
            self._preroll.popleft()
            self.counters.dropped_waiting += 1

    def _start_audio_only(self, events: list[SegmenterEvent]) -> None:
        first, arrived = self._preroll.popleft()
        self._open_epoch(first, arrived)
        self._replay_preroll(events)

    def _replay_preroll(self, events: list[SegmenterEvent]) -> None:
        frames = list(self._preroll)
        self._preroll.clear()
        for frame, arrived in frames:
            self._frame(frame, arrived, events)

    def _open_epoch(self, first: MediaFrame, now: float) -> None:
        """Start a timeline epoch and its first segment with `first` (a keyframe, or audio)."""
        self._origin_ms = first.dts
        self._anchor = None
        segment = self._new_segment(first.kind, self._resume_ticks(first.kind), now)
        track = self._tracks[segment.driver]
        track.held = first
        track.held_arrival = now
        track.end = segment.start
        self._segment = segment
        self._state = _State.SEGMENT_OPEN

    def _add(self, segment: _Segment, frame: MediaFrame, now: float,
             events: list[SegmenterEvent]) -> None:
        track = self._tracks[frame.kind]
        assert self._origin_ms is not None
        held = track.held
        if held is None:
            # The track's first frame in this epoch.
            if frame.dts < self._origin_ms:
                self.counters.dropped_waiting += 1  # older than the epoch's first keyframe
                return
            track.held = frame
            track.held_arrival = now
            track.end = self._ticks(track, frame.dts)
            return
        if abs(frame.dts - held.dts) > self._max_gap_ms:
            self.counters.gaps += 1
            log.info("segmenter: %s timestamps jump %d ms (from %d to %d); starting a new "
                     "segment after a discontinuity", frame.kind, frame.dts - held.dts,
                     held.dts, frame.dts)
            self._break(events)
            self._frame(frame, now, events)
            return
        end = self._commit(track, self._measured(track, self._ticks(track, frame.dts)))
        track.held = frame
        track.held_arrival = now
        if frame.kind is not segment.driver:
            pending = track.pending
            while len(pending) > MAX_PENDING_AUDIO:
                pending.popleft()
                self.counters.dropped_overflow += 1
            return
        self._cut_parts(segment, track, end, events)
        if (frame.keyframe or segment.driver is TrackKind.AUDIO) \
                and end - segment.start >= segment.cut_at:
            self._cut(segment, end, events)  # the segment's last part (unless just cut)
            self._complete(segment, events)
            self._segment = self._new_segment(segment.driver, end, now)

    def _measured(self, track: _Track, target: int) -> int:
        """The held frame's duration, given the next frame's decode time `target`."""
        measured = target - track.end
        if track.kind is _AUDIO and abs(measured - track.nominal) <= track.nominal // 2:
            return track.nominal  # exact sample count; the ms dts only rounds it
        return measured

    def _commit(self, track: _Track, duration: int) -> int:
        """Commit the held frame with `duration`; return the decode time after it."""
        held = track.held
        assert held is not None
        if duration < 1:
            duration = 1
            self.counters.backward_timestamps += 1
        offset = ((held.pts - held.dts) * track.timescale + 500) // 1000
        sample = Sample(duration, held.keyframe or track.kind is _AUDIO, offset, held.data)
        track.pending.append((track.end, sample, track.held_arrival))
        track.held = None
        track.last_duration = duration
        track.recent.append(duration)
        track.end += duration
        return track.end

    # -- cutting ---------------------------------------------------------------------------

    def _cut_parts(self, segment: _Segment, driver: _Track, end: int,
                   events: list[SegmenterEvent], *, final: bool = False) -> None:
        """Cut what the part rules say is due at driver time `end`; with `final`, also the
        segment's last part, with everything still pending."""
        length = end - segment.part_start
        if length > segment.part_limit and len(driver.pending) >= 2:
            # The frame just committed was longer than predicted: cut before it.
            split = driver.pending[-1][0]
            self._cut(segment, split, events)
            length = end - split
        if final:
            self._cut(segment, end, events, flush=True)
        elif length > segment.part_limit:
            self._cut(segment, end, events)  # one frame longer than a part: an overrun
        elif length + min(driver.recent) > segment.part_limit:
            self._cut(segment, end, events)  # the next frame would not fit

    def _cut(self, segment: _Segment, end: int, events: list[SegmenterEvent], *,
             flush: bool = False) -> None:
        """Cut the open part at driver time `end` (everything pending when flushing)."""
        if end <= segment.part_start:
            return
        if not segment.announced:
            self._announce(segment, events)
        driver = self._tracks[segment.driver]
        runs: list[TrackRun] = []
        last_arrival = 0.0
        for track_id, kind in enumerate(_kinds(segment.configs), start=1):
            track = self._tracks.get(kind)
            if track is None:
                continue
            limit = end if track is driver else _convert(end, driver, track)
            taken: list[Sample] = []
            base = track.pending[0][0] if track.pending else 0
            while track.pending and (flush or track.pending[0][0] < limit):
                _, sample, arrival = track.pending.popleft()
                taken.append(sample)
                last_arrival = max(last_arrival, arrival)
            if taken:
                runs.append(TrackRun(track_id=track_id, base_media_decode_time=base,
                                     samples=tuple(taken)))
        first = runs[0].samples[0] if runs and segment.driver is TrackKind.VIDEO else None
        independent = segment.driver is TrackKind.AUDIO or (first is not None and first.keyframe)
        duration = (end - segment.part_start) / driver.timescale
        part = PartInfo(msn=segment.msn, index=segment.part_index, duration=duration,
                        independent=independent)
        listed = self.part_target is not None
        if listed:
            assert self.part_target is not None
            if segment.previous_short:
                self.counters.short_parts += 1  # it was not the segment's last part after all
            segment.previous_short = (
                not independent and duration < MIN_PART_FRACTION * self.part_target)
            if end - segment.part_start > segment.part_limit:
                self.counters.part_overruns += 1
        self._sequence += 1
        segment.part_start = end
        segment.part_index += 1
        events.append(PartCut(part=part, sequence_number=self._sequence, runs=tuple(runs),
                              listed=listed, last_arrival=last_arrival))

    def _announce(self, segment: _Segment, events: list[SegmenterEvent]) -> None:
        tracks = tuple(segment.configs[kind] for kind in _kinds(segment.configs))
        changed = tracks != self._init_tracks
        discontinuity = self._discontinuity or (changed and self._init_tracks is not None)
        if changed:
            self._init += 1
            self._init_tracks = tracks
            events.append(InitChanged(init=self._init, tracks=tracks))
        self._discontinuity = False
        segment.announced = True
        info = SegmentInfo(msn=segment.msn, init=self._init,
                           program_date_time=self._program_date_time(segment),
                           discontinuity=discontinuity)
        events.append(SegmentStarted(segment=info))

    def _program_date_time(self, segment: _Segment) -> float:
        """The wall-clock time of the segment's first frame on the epoch's media clock.

        Consecutive segments then differ by exactly their EXTINF; the anchor moves (and the
        move is counted) only when arrival times drift further than PDT_TOLERANCE from it.
        """
        media = segment.start / self._tracks[segment.driver].timescale
        if self._anchor is not None:
            wall, anchored = self._anchor
            estimate = wall + (media - anchored)
            if abs(estimate - segment.wall) <= PDT_TOLERANCE:
                return estimate
            self.counters.pdt_resyncs += 1
        self._anchor = (segment.wall, media)
        return segment.wall

    def _complete(self, segment: _Segment, events: list[SegmenterEvent]) -> None:
        driver = self._tracks[segment.driver]
        duration = (segment.part_start - segment.start) / driver.timescale
        target = self.target_duration
        if target is None:
            target = self.target_duration = self._fix_target_duration(duration)
        overrun = _rounded(duration) > target
        if overrun:
            self.counters.overruns += 1
            (log.warning if self.counters.overruns == 1 else log.debug)(
                "segmenter: segment %d lasts %.3f s, more than TARGETDURATION %d s: the "
                "encoder's keyframes came further apart than in the first segment; set its "
                "keyframe interval to %g s or less", segment.msn, duration, target,
                self.segment_target)
        self._next_msn += 1
        events.append(SegmentCompleted(msn=segment.msn, duration=duration,
                                       target_duration=target, overrun=overrun))

    def _fix_target_duration(self, first: float) -> int:
        """TARGETDURATION, fixed by the first segment: the longer of the segment target and
        the first segment, plus TARGET_HEADROOM, rounded as EXTINF is (rfc8216bis 4.4.3.1:
        the rounded EXTINF must not exceed it). Later segments of the same GOP structure fit;
        a longer GOP later is an overrun."""
        return max(1, math.ceil(max(self.segment_target, first) + TARGET_HEADROOM - 0.5))

    def _break(self, events: list[SegmenterEvent]) -> None:
        """Flush the open segment; the next one starts a new epoch after a discontinuity."""
        segment = self._segment
        if segment is not None:
            for track in self._tracks.values():
                if track.held is not None:
                    self._commit(track, track.last_duration or track.nominal)
            driver = self._tracks[segment.driver]
            self._cut_parts(segment, driver, driver.end, events, final=True)
            self._complete(segment, events)
            self._segment = None
            self._state = _State.WAITING
            self._discontinuity = True
        if self._tracks:
            self._resume_at = max(Fraction(track.end, track.timescale)
                                  for track in self._tracks.values())
        self._tracks.clear()
        self._origin_ms = None
        self._anchor = None

    # -- timelines -------------------------------------------------------------------------

    def _new_segment(self, driver: TrackKind, start: int, now: float) -> _Segment:
        configs = {kind: self._configs[kind] for kind in _kinds(self._configs)}
        assert driver is (TrackKind.VIDEO if TrackKind.VIDEO in configs else TrackKind.AUDIO)
        for kind in configs:
            self._ensure_track(kind)
        timescale = self._tracks[driver].timescale
        # Audio can be cut after any frame: no encoder GOP to be lenient with.
        tolerance = KEYFRAME_TOLERANCE if driver is TrackKind.VIDEO else 0.0
        cut_at = math.ceil(self.segment_target * (1 - tolerance) * timescale)
        return _Segment(msn=self._next_msn, configs=configs, driver=driver, start=start,
                        wall=now, part_start=start, cut_at=cut_at,
                        part_limit=_ticks_at_most(self.fragment_target, timescale))

    def _ensure_track(self, kind: TrackKind) -> None:
        if kind in self._tracks:
            return
        config = self._configs[kind]
        timescale = timescale_of(config)
        if isinstance(config, AudioConfig):
            nominal = AAC_FRAME_SAMPLES * (2 if config.codecs in _SBR_CODECS else 1)
        elif config.frame_rate:
            nominal = max(1, round(timescale / config.frame_rate))
        else:
            nominal = _DEFAULT_VIDEO_FRAME_TICKS
        base = self._resume_ticks(kind)
        self._tracks[kind] = _Track(kind=kind, timescale=timescale, base=base, nominal=nominal,
                                    end=base)

    def _resume_ticks(self, kind: TrackKind) -> int:
        return math.ceil(self._resume_at * timescale_of(self._configs[kind]))

    def _ticks(self, track: _Track, dts: int) -> int:
        assert self._origin_ms is not None
        return track.base + ((dts - self._origin_ms) * track.timescale + 500) // 1000


def _kinds(configs: dict[TrackKind, TrackConfig]) -> list[TrackKind]:
    return [kind for kind in _TRACK_ORDER if kind in configs]


def _convert(ticks: int, source: _Track, target: _Track) -> int:
    """A decode time on `source`'s timeline as the least tick of `target`'s not before it."""
    return target.base - (-(ticks - source.base) * target.timescale // source.timescale)


def _ticks_at_most(seconds: float, timescale: int) -> int:
    """The most ticks whose duration in seconds (as a float) is not above `seconds`."""
    ticks = math.floor(seconds * timescale)
    while (ticks + 1) / timescale <= seconds:
        ticks += 1
    while ticks / timescale > seconds:
        ticks -= 1
    return ticks


def _rounded(seconds: float) -> int:
    """EXTINF rounded to the nearest integer, half up, as playlists write it (3 decimals)."""
    return math.floor(round(seconds, 3) + 0.5)
