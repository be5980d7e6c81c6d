"""A rendition's media playlist as state (`LivePlaylist`) and as text (`PlaylistRenderer`).
Rules: LL-HLS.md, rfc8216bis. The multivariant playlist is `relay.hls.multivariant`.

Theory of operation: the segmenter reports what it cuts, in order, and the playlist keeps the
records (`relay.hls.model`) that the renderer turns into text:

    start_segment --add_part*--> complete_segment --> start_segment ... --> end

Nothing here reads a clock or touches a socket. "Time" is media time: the live edge is the
summed duration of everything appended so far, and every age below ("older than 3 x
TARGETDURATION") is measured back from it. A stalled encoder therefore freezes ages instead
of expiring parts that a player may still need.

Two kinds of playlist:
- LIVE: a sliding window of `window_segments` segments (never shorter than 3 x
  TARGETDURATION, rfc8216bis 6.2.2), LL-HLS parts when `part_target` is set, a preload hint
  for the next part, blocking reload and delta updates (`CAN-SKIP-UNTIL`).
- RECORDING: every segment kept, no parts; `#EXT-X-PLAYLIST-TYPE:EVENT` while the stream is
  live and `VOD` with `#EXT-X-ENDLIST` once it has ended.

Parts are listed (and dropped) per whole segment, not one by one: hls.js numbers a segment's
parts by their position in the list, so a list that lost its first parts would make it ask
for the wrong `_HLS_part`. A segment's parts leave the playlist once the segment ends more
than 3 x TARGETDURATION before the live edge and stay downloadable 3 x TARGETDURATION more.

The playlist is the one owner of the live window: with each record it holds the bytes the
packager gives it (`add_init`, `add_part`, `add_fragment`), answers `media` for the HTTP
layer, and lets them go when the record stops being downloadable. Each byte is held once: a
segment with parts is its list of parts, and the recording writes them one after another;
its joined bytes are made only when a client asks for the whole segment, and kept (its parts
then go when they expire). A segment without parts (REDUCED, STANDARD) is joined when it
completes: every client asks for it whole.

Only the live edge stays in memory. Once a complete segment is on disk too (the recording
wrote it, or the session's spool: the packager says so with `store`) and it ended more than
MEMORY_TARGET_DURATIONS before the live edge, its bytes go, and `media` names its file
instead (`StoredMedia`: the whole segment, or one of its parts by its byte range, since the
file is the parts one after another). LL-HLS clients at the live edge ask for the open
segment's parts and the newest complete segment's last ones (PART-HOLD-BACK is 3 parts);
what the window holds beyond that is for clients further behind, and the page cache serves
them as well as the heap would. A segment that never reaches the disk (a recording that
ended early) stays in memory while it is downloadable, as all of them once did.
"""

from __future__ import annotations

import gzip
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

from relay.hls.model import (
    INIT_URI,
    PART_URI,
    SEGMENT_URI,
    PartInfo,
    ResourceName,
    SegmentInfo,
    StoredMedia,
)

# Bounds and factors, each in units of TARGETDURATION (TD) or PART-TARGET (PT).
DEFAULT_WINDOW_SEGMENTS: Final = 15  # segments a LIVE playlist keeps
MIN_WINDOW_TARGET_DURATIONS: Final = 3  # rfc8216bis 6.2.2: never shorter than 3 x TD
PART_LIST_TARGET_DURATIONS: Final = 3  # parts listed while their segment is this close to the edge
PART_RETAIN_TARGET_DURATIONS: Final = 3  # ...and downloadable this much longer
SKIP_TARGET_DURATIONS: Final = 6  # CAN-SKIP-UNTIL (rfc8216bis 4.4.3.8: at least 6 x TD)
HOLD_BACK_TARGET_DURATIONS: Final = 3  # HOLD-BACK (rfc8216bis 4.4.3.8: at least 3 x TD)
PART_HOLD_BACK_PART_TARGETS: Final = 3  # PART-HOLD-BACK (LL-HLS.md: at least 3 x PT)
MIN_PART_FRACTION: Final = 0.85  # a part is >= 85% of PT unless independent or last
#: A complete segment stored on disk keeps its bytes in memory until it ends this far (in
#: TD) before the live edge: the newest complete segment, whose last parts a client at
#: PART-HOLD-BACK still fetches when the next segment starts (module docstring).
MEMORY_TARGET_DURATIONS: Final = 1

#: gzip level for playlists: level 5 is within a few percent of 9's size on playlist text.
GZIP_LEVEL: Final = 5

VERSION_FMP4: Final = 6  # EXT-X-MAP in a media playlist (rfc8216bis 7)
VERSION_SKIP: Final = 9  # EXT-X-SKIP (rfc8216bis 7)

_EPSILON: Final = 1e-9


class PlaylistError(RuntimeError):
    """Relay fed the playlist something the rules forbid (a bug in the caller, not a peer's)."""


class PlaylistKind(StrEnum):
    LIVE = "live"  # sliding window with parts, hints and delta updates
    RECORDING = "recording"  # the asset: EVENT while live, VOD once ended


class Availability(StrEnum):
    """What the HTTP layer does with a request for a media resource."""

    READY = "ready"  # serve it
    PENDING = "pending"  # the hinted part: hold the request until the part is complete
    MISSING = "missing"  # unknown, not hinted yet, or expired: 404


@dataclass(slots=True, eq=False)
class _Media:
    """The bytes of one downloadable segment (see the module's last paragraph)."""

    fragments: list[bytes] = field(default_factory=list)  # in LOW mode, its parts
    joined: bytes | None = None  # the whole segment, once made
    stored: str | None = None  # the file that holds it too, once written (`store`)
    part_ends: tuple[int, ...] = ()  # where each part ends in that file (with parts)
    size: int = 0  # its bytes, once stored

    def release(self) -> None:
        """Let the bytes go when the file holds them."""
        if self.stored is not None:
            self.fragments = []
            self.joined = None


def _decimal(seconds: float) -> str:
    """A duration as playlists write it: three decimals."""
    return f"{seconds:.3f}"


def _rounded(seconds: float) -> int:
    """rfc8216bis 4.4.3.1: EXTINF rounded to the nearest integer (half up, as written)."""
    return math.floor(round(seconds, 3) + 0.5)


def format_program_date_time(epoch_seconds: float) -> str:
    """ISO 8601 in UTC with milliseconds and `Z`, e.g. `2024-05-01T12:00:00.250Z`."""
    millis = round(epoch_seconds * 1000)
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"


class LivePlaylist:
    """The media playlist of one rendition, fed by the segmenter; sans-IO.

    `target_duration` (whole seconds) may be given later with `set_target_duration`, but
    only once and before the first segment. `part_target` (seconds) enables LL-HLS parts;
    None means segments only. Segment numbers start at `first_msn` and are assigned here.

    A `strict` playlist raises PlaylistError for media that breaks a timing rule (a segment
    rounding above TARGETDURATION, a part longer than PART-TARGET or too short). The packager
    makes a lenient one (`strict=False`): such media comes from the encoder (a GOP longer than
    the first one, a frame longer than a part), the segmenter counts it, and dropping it would
    lose what the viewer could still play; the playlist lists it and counts `rule_breaks`.
    Breaks of the call order stay errors either way.
    """

    def __init__(
        self,
        *,
        kind: PlaylistKind = PlaylistKind.LIVE,
        target_duration: int | None = None,
        part_target: float | None = None,
        window_segments: int = DEFAULT_WINDOW_SEGMENTS,
        first_msn: int = 0,
        strict: bool = True,
    ) -> None:
        if window_segments < 1:
            raise ValueError(f"window_segments must be at least 1, got {window_segments}")
        if first_msn < 0:
            raise ValueError(f"first_msn must not be negative, got {first_msn}")
        if kind is PlaylistKind.RECORDING and part_target is not None:
            raise ValueError("a recording playlist has no parts; pass part_target=None")
        if part_target is not None and not part_target >= 0.001:
            raise ValueError(f"part_target must be at least 0.001 s, got {part_target}")
        self._kind = kind
        self._target_duration: int | None = None
        self._part_target = part_target
        self._window_segments = window_segments
        # Every segment still downloadable, in msn order without gaps: first those that left
        # the window (msn < media sequence), then the window. `_starts` holds each one's
        # start on the media timeline, `_media` its bytes.
        self._segments: list[SegmentInfo] = []
        self._starts: list[float] = []
        self._media: list[_Media] = []
        self._media_sequence = first_msn
        self._next_msn = first_msn
        self._discontinuity_sequence = 0
        self._parts_horizon = first_msn  # segments below this msn have their parts expired
        # Segments below this msn are behind the live edge by MEMORY_TARGET_DURATIONS: once
        # stored on disk, their bytes go.
        self._memory_horizon = first_msn
        self._longest_window = 0.0  # duration of the longest playlist served so far
        self._init_uses: dict[int, int] = {}
        self._inits: dict[int, bytes] = {}  # the init segments' bytes
        self._ended = False
        self._revision = 0
        self._strict = strict
        #: Rule breaks the encoder caused and a non-strict playlist let through (see `strict`).
        self.rule_breaks = 0
        if target_duration is not None:
            self.set_target_duration(target_duration)

    # -- what the segmenter calls ----------------------------------------------------------

    def set_target_duration(self, seconds: int) -> None:
        """Fix TARGETDURATION; rfc8216bis 6.2.1: it never changes during a stream."""
        if seconds < 1:
            raise ValueError(f"target_duration must be a whole number >= 1 s, got {seconds}")
        if self._part_target is not None and round(self._part_target, 3) > seconds:
            raise ValueError(
                f"part_target {self._part_target} s is longer than target_duration {seconds} s")
        if self._target_duration is not None and self._target_duration != seconds:
            raise PlaylistError(
                f"TARGETDURATION is {self._target_duration} s and cannot change to {seconds} s")
        self._target_duration = seconds

    def add_init(self, init: int, data: bytes) -> None:
        """The bytes of init segment `init`, which segments started from now on may name.

        Held while a downloadable segment names it; the newest is also held before any does
        (it is the one the next segment will name)."""
        self._inits[init] = data
        self._forget_unused_inits()

    def start_segment(
        self, *, init: int, program_date_time: float, discontinuity: bool = False,
    ) -> SegmentInfo:
        """A new segment begins (with an IDR frame); returns it with its msn."""
        self._require_open_for_changes()
        if self._target_duration is None:
            raise PlaylistError("set the target duration before the first segment")
        last = self._segments[-1] if self._segments else None
        if last is not None and not last.complete:
            raise PlaylistError(f"segment {last.msn} is still open; complete it first")
        start = self._end_of(len(self._segments) - 1) if last is not None else 0.0
        segment = SegmentInfo(msn=self._next_msn, init=init, program_date_time=program_date_time,
                              discontinuity=discontinuity)
        self._segments.append(segment)
        self._starts.append(start)
        self._media.append(_Media())
        self._init_uses[init] = self._init_uses.get(init, 0) + 1
        self._next_msn += 1
        self._changed()
        return segment

    def add_part(self, duration: float, *, independent: bool, data: bytes = b"") -> PartInfo:
        """A part of the open segment is complete (rfc8216bis 4.4.4.9); `data` its bytes."""
        self._require_open_for_changes()
        if self._part_target is None:
            raise PlaylistError("this playlist has no parts (part_target is None)")
        segment = self._open_segment()
        if segment is None:
            raise PlaylistError("no open segment to add a part to; start one first")
        if round(duration, 3) <= 0:
            raise PlaylistError(f"part duration must be positive, got {duration}")
        if round(duration, 3) > round(self._part_target, 3) + _EPSILON:
            self._rule_broken(
                f"part {segment.msn}.{len(segment.parts)} lasts {duration:.3f} s, more than "
                f"PART-TARGET {self._part_target:.3f} s")
        if not segment.parts and not independent:
            raise PlaylistError(
                f"part {segment.msn}.0 must be independent: every segment starts with an IDR")
        if segment.parts:
            self._check_not_short(segment.parts[-1])  # it is no longer the segment's last
        part = PartInfo(msn=segment.msn, index=len(segment.parts), duration=duration,
                        independent=independent)
        segment.parts.append(part)
        self._media[-1].fragments.append(data)
        self._changed()
        return part

    def add_fragment(self, data: bytes) -> None:
        """Bytes of the open segment that the playlist does not list as a part (the internal
        fragments of a playlist without parts)."""
        self._require_open_for_changes()
        if self._part_target is not None:
            raise PlaylistError("this playlist lists parts; give their bytes to add_part")
        if self._open_segment() is None:
            raise PlaylistError("no open segment to add a fragment to; start one first")
        self._media[-1].fragments.append(data)

    def complete_segment(self, duration: float) -> SegmentInfo:
        """The open segment is complete and lasts `duration` seconds."""
        self._require_open_for_changes()
        segment = self._open_segment()
        if segment is None:
            raise PlaylistError("no open segment to complete")
        assert self._target_duration is not None  # set before any segment starts
        if round(duration, 3) <= 0:
            raise PlaylistError(f"segment duration must be positive, got {duration}")
        if _rounded(duration) > self._target_duration:
            self._rule_broken(
                f"segment {segment.msn} lasts {duration:.3f} s, which rounds above "
                f"TARGETDURATION {self._target_duration} s; cut segments at shorter GOPs")
        if self._part_target is not None:
            if not segment.parts:
                raise PlaylistError(f"segment {segment.msn} has no parts; add them first")
            summed = sum(part.duration for part in segment.parts)
            if abs(summed - duration) > 0.001 * len(segment.parts) + _EPSILON:
                raise PlaylistError(
                    f"segment {segment.msn} lasts {duration:.3f} s but its parts sum to "
                    f"{summed:.3f} s")
        segment.duration = duration
        if self._part_target is None:
            media = self._media[-1]
            self._join(media)
            media.fragments = []  # no part of it is served: hold it once, whole
        self._trim_window()
        self._changed()
        return segment

    def end(self) -> None:
        """The stream is over: EXT-X-ENDLIST, no more hints, delivery directives ignored.

        An open segment without parts is dropped; one with parts is completed with their sum.
        """
        if self._ended:
            return
        segment = self._open_segment()
        if segment is not None:
            if segment.parts:
                self.complete_segment(sum(part.duration for part in segment.parts))
            else:
                self._segments.pop()
                self._starts.pop()
                self._media.pop()
                self._release_init(segment.init)
                self._next_msn -= 1
        self._ended = True
        self._changed()

    # -- the bytes ---------------------------------------------------------------------------

    def media(self, name: ResourceName) -> bytes | StoredMedia | None:
        """The bytes of an init, a complete segment or a part while they are held, or where
        they are on disk (`store`; a stored segment asked for whole is always read from its
        file); None otherwise (the HTTP layer asks `availability` first). A segment with
        parts and no file yet is joined here the first time it is asked for, and kept
        joined."""
        if name.init is not None:
            return self._inits.get(name.init)
        assert name.msn is not None
        segment = self._find(name.msn)
        if segment is None:
            return None
        media = self._media[name.msn - self._segments[0].msn]
        if name.part is None:
            if not segment.complete:
                return None
            if media.stored is not None:  # from the file: no joined copy in memory
                return StoredMedia(media.stored, 0, media.size)
            whole = self._join(media)
            if name.msn < self._parts_horizon:
                media.fragments = []  # its parts are served no more
            return whole
        if name.msn < self._parts_horizon or self._part_target is None:
            return None
        if name.part < len(media.fragments):
            return media.fragments[name.part]
        if media.stored is not None and name.part < len(media.part_ends):
            start = media.part_ends[name.part - 1] if name.part else 0
            return StoredMedia(media.stored, start, media.part_ends[name.part] - start)
        return None

    def stored(self, msn: int) -> StoredMedia | None:
        """Where complete segment `msn` is on disk, once `store` said so; None otherwise."""
        if self._find(msn) is None:
            return None
        media = self._media[msn - self._segments[0].msn]
        return StoredMedia(media.stored, 0, media.size) if media.stored is not None else None

    def store(self, msn: int, path: str) -> None:
        """Complete segment `msn` is in the file at `path` too, as the bytes the playlist
        holds (its parts one after another): its bytes go once it is behind the live edge
        (MEMORY_TARGET_DURATIONS), and `media` names the file from then on. A segment no
        longer downloadable, or stored already, is left as it is."""
        segment = self._find(msn)
        if segment is None or not segment.complete:
            return
        media = self._media[msn - self._segments[0].msn]
        buffers = media.fragments or ([media.joined] if media.joined is not None else [])
        if media.stored is not None or not buffers:
            return
        ends = tuple(itertools.accumulate(map(len, buffers)))
        media.stored = path
        media.size = ends[-1]
        if self._part_target is not None and media.fragments:
            media.part_ends = ends
        if msn < self._memory_horizon:
            media.release()

    def fragments(self, msn: int) -> tuple[bytes, ...]:
        """Segment `msn`'s bytes as held, without a copy: its parts (or internal fragments)
        so far while it is open, then those or its joined bytes; () when it is not held."""
        if self._find(msn) is None:
            return ()
        media = self._media[msn - self._segments[0].msn]
        if media.joined is not None:
            return (media.joined,)
        return tuple(media.fragments)

    def held_bytes(self) -> int:
        """Bytes held for the live window: init segments, segments and parts (of the open
        segment too), each buffer once."""
        held = sum(map(len, self._inits.values()))
        for media in self._media:
            buffers = {id(data): len(data) for data in media.fragments}
            if media.joined is not None:  # the one part of a segment, joined, is that part
                buffers[id(media.joined)] = len(media.joined)
            held += sum(buffers.values())
        return held

    # -- what the renderer, the blocking rules and the HTTP layer read ---------------------

    @property
    def kind(self) -> PlaylistKind:
        return self._kind

    @property
    def target_duration(self) -> int | None:
        return self._target_duration

    @property
    def part_target(self) -> float | None:
        return self._part_target

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def revision(self) -> int:
        """Changes whenever the rendered text may change: a cache key and a wake-up signal."""
        return self._revision

    @property
    def media_sequence(self) -> int:
        return self._media_sequence

    @property
    def discontinuity_sequence(self) -> int:
        return self._discontinuity_sequence

    @property
    def oldest_msn(self) -> int:
        """The msn of the oldest segment still downloadable (in the window or just out)."""
        return self._segments[0].msn if self._segments else self._next_msn

    @property
    def next_msn(self) -> int:
        """The msn the next started segment will get."""
        return self._next_msn

    @property
    def segments(self) -> Sequence[SegmentInfo]:
        """The window, oldest first; the last one may be open. Read-only by convention."""
        return self._segments[self._window_index():]

    def segment_start(self, msn: int) -> float | None:
        """Where segment `msn` starts on the media timeline (seconds from the stream's first
        segment), while it is still downloadable; None otherwise."""
        segment = self._find(msn)
        if segment is None:
            return None
        return self._starts[msn - self._segments[0].msn]

    @property
    def last_complete_msn(self) -> int | None:
        for segment in reversed(self._segments):
            if segment.complete:
                return segment.msn
        return None

    @property
    def last_part(self) -> PartInfo | None:
        """The newest part; it is always listed (it is at the live edge)."""
        for segment in reversed(self._segments):
            if segment.parts:
                return segment.parts[-1]
        return None

    @property
    def next_part(self) -> tuple[int, int] | None:
        """(msn, index) of the part the preload hint names, or None when there is none."""
        if self._part_target is None or self._ended or not self._segments:
            return None
        last = self._segments[-1]
        if last.complete:
            return (last.msn + 1, 0)
        return (last.msn, len(last.parts))

    @property
    def duration(self) -> float:
        """Seconds between the first segment of the window and the live edge."""
        index = self._window_index()
        if index >= len(self._segments):
            return 0.0
        return self._edge() - self._starts[index]

    @property
    def can_skip_until(self) -> float | None:
        """CAN-SKIP-UNTIL in seconds, or None when delta updates are not offered."""
        if self._ended or self._target_duration is None:
            return None
        return float(SKIP_TARGET_DURATIONS * self._target_duration)

    def segment(self, msn: int) -> SegmentInfo | None:
        """Segment `msn` when it is in the window."""
        if msn < self._media_sequence:
            return None
        return self._find(msn)

    def lists_parts(self, segment: SegmentInfo) -> bool:
        """Whether the playlist shows this window segment's parts."""
        if not segment.parts or not segment.complete:
            return bool(segment.parts)
        assert self._target_duration is not None
        index = segment.msn - self._segments[0].msn
        age = self._edge() - self._end_of(index)
        return age <= PART_LIST_TARGET_DURATIONS * self._target_duration + _EPSILON

    def skippable_segments(self) -> int:
        """How many window segments a delta update replaces with EXT-X-SKIP.

        rfc8216bis 6.2.5.1: only segments older than the skip boundary, CAN-SKIP-UNTIL before
        the end of the playlist. A segment counts as older only when it ends at or before the
        boundary, so the delta still lists at least CAN-SKIP-UNTIL seconds of media.
        """
        skip_until = self.can_skip_until
        if skip_until is None:
            return 0
        boundary = self._edge() - skip_until
        count = 0
        for index in range(self._window_index(), len(self._segments)):
            segment = self._segments[index]
            if not segment.complete or self._end_of(index) > boundary + _EPSILON:
                break
            count += 1
        return count

    def availability(self, name: ResourceName) -> Availability:
        """Whether the HTTP layer serves, holds or 404s a resource named by `parse_resource`."""
        if name.init is not None:
            return self.init_availability(name.init)
        assert name.msn is not None
        if name.part is None:
            return self.segment_availability(name.msn)
        return self.part_availability(name.msn, name.part)

    def init_availability(self, init: int) -> Availability:
        return Availability.READY if self._init_uses.get(init, 0) > 0 else Availability.MISSING

    def segment_availability(self, msn: int) -> Availability:
        """Complete segments in the window, and those that left it recently (rfc8216bis
        6.2.2: available for their duration plus the longest playlist that listed them)."""
        segment = self._find(msn)
        if segment is not None and segment.complete:
            return Availability.READY
        return Availability.MISSING

    def part_availability(self, msn: int, index: int) -> Availability:
        if (msn, index) == self.next_part:
            return Availability.PENDING
        segment = self._find(msn)
        if segment is not None and msn >= self._parts_horizon and index < len(segment.parts):
            return Availability.READY
        return Availability.MISSING

    # -- internals -------------------------------------------------------------------------

    def _require_open_for_changes(self) -> None:
        if self._ended:
            raise PlaylistError("the playlist has ended; it takes no more media")

    def _open_segment(self) -> SegmentInfo | None:
        if self._segments and not self._segments[-1].complete:
            return self._segments[-1]
        return None

    def _check_not_short(self, part: PartInfo) -> None:
        """LL-HLS.md: parts are >= 85% of PART-TARGET unless independent or a segment's last."""
        assert self._part_target is not None
        if part.independent:
            return
        minimum = MIN_PART_FRACTION * round(self._part_target, 3)
        if round(part.duration, 3) + _EPSILON < minimum:
            self._rule_broken(
                f"part {part.msn}.{part.index} lasts {part.duration:.3f} s, less than 85% of "
                f"PART-TARGET {self._part_target:.3f} s, and is neither independent nor last")

    def _rule_broken(self, message: str) -> None:
        if self._strict:
            raise PlaylistError(message)
        self.rule_breaks += 1

    def _find(self, msn: int) -> SegmentInfo | None:
        if not self._segments:
            return None
        index = msn - self._segments[0].msn
        if 0 <= index < len(self._segments):
            return self._segments[index]
        return None

    def _window_index(self) -> int:
        if not self._segments:
            return 0
        return max(0, self._media_sequence - self._segments[0].msn)

    def _end_of(self, index: int) -> float:
        segment = self._segments[index]
        if segment.duration is not None:
            return self._starts[index] + segment.duration
        return self._starts[index] + sum(part.duration for part in segment.parts)

    def _edge(self) -> float:
        return self._end_of(len(self._segments) - 1) if self._segments else 0.0

    def _trim_window(self) -> None:
        """LIVE: drop the oldest segments beyond `window_segments`, never below 3 x TD."""
        if self._kind is not PlaylistKind.LIVE:
            return
        assert self._target_duration is not None
        minimum = MIN_WINDOW_TARGET_DURATIONS * self._target_duration
        edge = self._edge()
        while len(self._segments) - self._window_index() > self._window_segments:
            index = self._window_index()
            if edge - self._end_of(index) < minimum - _EPSILON:
                break
            self._media_sequence += 1
            # rfc8216bis 6.2.2: the discontinuity sequence counts the tags that left.
            if self._segments[index].discontinuity:
                self._discontinuity_sequence += 1

    def _changed(self) -> None:
        self._revision += 1
        self._longest_window = max(self._longest_window, self.duration)
        if self._target_duration is None:
            return
        edge = self._edge()
        retain = (PART_LIST_TARGET_DURATIONS + PART_RETAIN_TARGET_DURATIONS) \
            * self._target_duration
        while (segment := self._find(self._parts_horizon)) is not None and segment.complete:
            index = segment.msn - self._segments[0].msn
            if edge - self._end_of(index) <= retain + _EPSILON:
                break
            media = self._media[index]
            if media.joined is not None:
                media.fragments = []  # its parts are served no more; the joined bytes are
            self._parts_horizon += 1
        keep = MEMORY_TARGET_DURATIONS * self._target_duration
        if self._segments:
            self._memory_horizon = max(self._memory_horizon, self._segments[0].msn)
        while (segment := self._find(self._memory_horizon)) is not None and segment.complete:
            index = segment.msn - self._segments[0].msn
            if edge - self._end_of(index) <= keep + _EPSILON:
                break
            self._media[index].release()
            self._memory_horizon += 1
        while self._segments and self._segments[0].msn < self._media_sequence:
            oldest = self._segments[0]
            assert oldest.duration is not None  # only complete segments leave the window
            kept_for = oldest.duration + self._longest_window
            parts_kept = self._part_target is not None and oldest.msn >= self._parts_horizon
            if parts_kept or edge - self._starts[0] <= kept_for:
                break
            self._segments.pop(0)
            self._starts.pop(0)
            self._media.pop(0)
            self._release_init(oldest.init)

    def _release_init(self, init: int) -> None:
        self._init_uses[init] -= 1
        if self._init_uses[init] == 0:
            del self._init_uses[init]
            self._forget_unused_inits()

    def _forget_unused_inits(self) -> None:
        """Drop the bytes of inits no downloadable segment names, but the newest."""
        newest = max(self._inits, default=-1)
        for init in [i for i in self._inits if i != newest and i not in self._init_uses]:
            del self._inits[init]

    @staticmethod
    def _join(media: _Media) -> bytes:
        if media.joined is None:
            media.joined = b"".join(media.fragments)  # (one fragment: that same object)
        return media.joined


class PlaylistRenderer:
    """Renders a `LivePlaylist` (rfc8216bis 4.4), caching the text, and its gzip form, per
    revision: every viewer's reload between two parts gets the same bytes."""

    def __init__(self, playlist: LivePlaylist) -> None:
        self._playlist = playlist
        self._cache: dict[bool, tuple[int, str]] = {}
        self._encoded: dict[tuple[bool, bool], tuple[int, bytes]] = {}

    def render(self, *, skip: bool = False) -> str:
        """The media playlist; with `skip`, its delta form when the playlist offers one."""
        cached = self._cache.get(skip)
        if cached is not None and cached[0] == self._playlist.revision:
            return cached[1]
        text = render_media_playlist(self._playlist, skip=skip)
        self._cache[skip] = (self._playlist.revision, text)
        return text

    def encoded(self, *, skip: bool = False, gzipped: bool = False) -> bytes:
        """`render` as ASCII bytes; with `gzipped`, gzip-compressed (level 5)."""
        revision = self._playlist.revision
        cached = self._encoded.get((skip, gzipped))
        if cached is not None and cached[0] == revision:
            return cached[1]
        body = self.render(skip=skip).encode("ascii")
        if gzipped:
            body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
        self._encoded[(skip, gzipped)] = (revision, body)
        return body


def render_media_playlist(playlist: LivePlaylist, *, skip: bool = False) -> str:
    """The media playlist text. With `skip` (a `_HLS_skip=YES` request) and a playlist that
    advertises CAN-SKIP-UNTIL and has no ENDLIST, segments older than the skip boundary are
    replaced by `#EXT-X-SKIP` (rfc8216bis 4.4.5.2, 6.2.5.1); otherwise the whole playlist."""
    target_duration = playlist.target_duration
    if target_duration is None:
        raise PlaylistError("the playlist has no target duration yet; nothing to render")
    part_target = playlist.part_target
    skip_until = playlist.can_skip_until
    recording = playlist.kind is PlaylistKind.RECORDING
    vod = recording and playlist.ended

    lines = ["#EXTM3U",
             f"#EXT-X-VERSION:{VERSION_SKIP if skip_until is not None else VERSION_FMP4}",
             f"#EXT-X-TARGETDURATION:{target_duration}"]
    if recording:
        lines.append(f"#EXT-X-PLAYLIST-TYPE:{'VOD' if vod else 'EVENT'}")
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{playlist.media_sequence}")
    if playlist.discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{playlist.discontinuity_sequence}")
    lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    if not vod:
        lines.append(_server_control(target_duration, part_target, skip_until))
    if part_target is not None:
        lines.append(f"#EXT-X-PART-INF:PART-TARGET={_decimal(part_target)}")

    segments = playlist.segments
    skipped = playlist.skippable_segments() if skip else 0
    if skipped:
        # rfc8216bis 6.2.5.1: MEDIA-SEQUENCE and DISCONTINUITY-SEQUENCE stay those of the full
        # playlist; the DISCONTINUITY and MAP tags of skipped segments go with them, and the
        # MAP in force is repeated for the first segment kept (see `render_segment_lines`).
        lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
    current_init: int | None = None
    for segment in segments[skipped:]:
        if not segment.complete and not segment.parts:
            continue  # nothing of it to list yet; its tags would dangle
        render_segment_lines(lines, segment, current_init,
                             with_parts=playlist.lists_parts(segment))
        current_init = segment.init

    hint = playlist.next_part
    if hint is not None:
        uri = PART_URI.format(msn=hint[0], part=hint[1])
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{uri}"')
    if playlist.ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _server_control(target_duration: int, part_target: float | None,
                    skip_until: float | None) -> str:
    attributes = ["CAN-BLOCK-RELOAD=YES"]
    if part_target is not None:
        hold = PART_HOLD_BACK_PART_TARGETS * round(part_target, 3)
        attributes.append(f"PART-HOLD-BACK={_decimal(hold)}")
    if skip_until is not None:
        attributes.append(f"CAN-SKIP-UNTIL={_decimal(skip_until)}")
    attributes.append(f"HOLD-BACK={_decimal(HOLD_BACK_TARGET_DURATIONS * target_duration)}")
    return "#EXT-X-SERVER-CONTROL:" + ",".join(attributes)


def render_segment_lines(lines: list[str], segment: SegmentInfo, current_init: int | None, *,
                         with_parts: bool) -> None:
    """Append a segment's lines; `current_init` is the init of the segment listed before."""
    # LL-HLS.md: a segment's own tags come before its first part.
    if segment.discontinuity:
        lines.append("#EXT-X-DISCONTINUITY")
    if segment.init != current_init:
        lines.append(f'#EXT-X-MAP:URI="{INIT_URI.format(init=segment.init)}"')
    lines.append(f"#EXT-X-PROGRAM-DATE-TIME:"
                 f"{format_program_date_time(segment.program_date_time)}")
    if with_parts:
        for part in segment.parts:
            uri = PART_URI.format(msn=part.msn, part=part.index)
            independent = ",INDEPENDENT=YES" if part.independent else ""
            lines.append(f'#EXT-X-PART:DURATION={_decimal(part.duration)},URI="{uri}"'
                         f"{independent}")
    if segment.duration is not None:
        lines.append(f"#EXTINF:{_decimal(segment.duration)},")
        lines.append(SEGMENT_URI.format(msn=segment.msn))
