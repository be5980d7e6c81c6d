"""The media an image is cut from, as a timeline of fMP4 (init, segment) entries.

A playback id is either live (a `LivePackager`: the window's segments and the segment in
progress, in memory) or recorded (an asset's directory: `rendition.m3u8`, `init-N.mp4`,
`N.m4s`, see `relay.hls.recording`). Both become a `Timeline`: entries with their start and
length on the media timeline (seconds from the stream's or the asset's first segment) and
the names of their init and segment, which a `MediaReader` turns into bytes in the worker
thread. The live snapshot is taken on the event loop (references to immutable bytes, no
copy); a recording is read from disk in the worker.

A `version` comes with each: it changes whenever the media an image could be cut from
changes (a new part or segment live, a new version of the recording's playlist), and is
part of the cache key, so a cached image is never older than the media it was asked of.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from relay.hls.disk import read_stored
from relay.hls.model import ResourceName, StoredMedia, parse_resource
from relay.hls.packager import LivePackager
from relay.hls.recording import RECORDING_PLAYLIST, listed_part
from relay.images.params import ImageParamError

#: Parsed recording playlists kept (one per version of the file).
RECORDING_INDEX_CACHE_ENTRIES: Final = 64

_EPSILON: Final = 1e-6


class MediaGone(Exception):
    """The media went away while an image was being cut from it (an asset deleted, a live
    segment expired); answered like an unknown playback id."""


class OutsideMedia(ImageParamError):
    """A time the media does not cover; a 400 naming the field."""


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    start: float  # seconds on the media timeline
    duration: float  # seconds known so far (the live segment in progress: its parts')
    init: str  # reader key of its init segment
    media: str  # reader key of its bytes


class MediaReader(Protocol):
    def read(self, key: str) -> bytes:
        """The bytes behind a timeline key; blocking (called in the worker); MediaGone."""
        ...


@dataclass(frozen=True, slots=True)
class Timeline:
    entries: tuple[SegmentEntry, ...]
    live: bool
    _starts: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A 12-hour recording has ~20,000 entries and a storyboard looks up 100 times.
        object.__setattr__(self, "_starts", tuple(entry.start for entry in self.entries))

    @property
    def start(self) -> float:
        return self.entries[0].start if self.entries else 0.0

    @property
    def end(self) -> float:
        last = self.entries[-1] if self.entries else None
        return last.start + last.duration if last is not None else 0.0

    def at(self, time: float) -> SegmentEntry:
        """The entry `time` falls in (the last one for its end)."""
        index = max(0, bisect.bisect_right(self._starts, time + _EPSILON) - 1)
        return self.entries[index]

    def check(self, field: str, time: float) -> None:
        """OutsideMedia unless the media covers `time`."""
        if not self.entries:
            raise MediaGone("no media")
        if not self.start - _EPSILON <= time <= self.end + _EPSILON:
            what = "the live window" if self.live else "the media"
            raise OutsideMedia(field, f"{time:g} is outside {what}, "
                                      f"{self.start:.3f}..{self.end:.3f} s")


# -- live ------------------------------------------------------------------------------------

class LiveReader:
    """Bytes of a live snapshot: each key names a tuple of fragments, joined when read."""

    def __init__(self, media: dict[str, tuple[bytes, ...] | StoredMedia]) -> None:
        self._media = media

    def read(self, key: str) -> bytes:
        fragments = self._media.get(key)
        if isinstance(fragments, StoredMedia):  # a segment the window serves from disk
            fragments = (data,) if (data := read_stored(fragments)) is not None else None
        if fragments is None:
            raise MediaGone(key)
        return fragments[0] if len(fragments) == 1 else b"".join(fragments)


@dataclass(frozen=True, slots=True)
class LiveSnapshot:
    timeline: Timeline
    reader: LiveReader
    version: Hashable


def live_snapshot(packager: LivePackager) -> LiveSnapshot | None:
    """The live window as it is now (on the event loop: no copy); None before any media."""
    playlist = packager.playlist
    if playlist is None:
        return None
    entries: list[SegmentEntry] = []
    media: dict[str, tuple[bytes, ...] | StoredMedia] = {}
    open_count = 0
    for segment in playlist.segments:
        start = playlist.segment_start(segment.msn)
        init = packager.resource(ResourceName(init=segment.init))
        if start is None or not isinstance(init, bytes):
            continue
        if segment.duration is not None:
            # As held (its parts, or whole): joining it here would copy it for nothing;
            # or its file, when the window holds it no more.
            fragments: tuple[bytes, ...] | StoredMedia = (
                playlist.fragments(segment.msn) or playlist.stored(segment.msn) or ())
            if not fragments:
                continue
            duration = segment.duration
        else:
            fragments = packager.open_fragments()
            open_count = len(fragments)
            if not fragments:
                continue
            duration = sum(part.duration for part in segment.parts)
        init_key, media_key = f"init-{segment.init}.mp4", f"{segment.msn}.m4s"
        media[init_key] = (init,)
        media[media_key] = fragments
        entries.append(SegmentEntry(start, duration, init_key, media_key))
    if not entries:
        return None
    version = ("live", entries[0].media, entries[-1].media, open_count)
    return LiveSnapshot(Timeline(tuple(entries), live=True), LiveReader(media), version)


# -- recorded ------------------------------------------------------------------------------

class RecordingReader:
    """Files of a recording's directory, by the names its playlist lists."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def read(self, key: str) -> bytes:
        if parse_resource(key) is None:  # only names the playlist could list
            raise MediaGone(key)
        try:
            return (self._directory / key).read_bytes()
        except FileNotFoundError:
            raise MediaGone(key) from None


def recording_version(directory: Path) -> Hashable | None:
    """The version of a recording's playlist (blocking: a stat); None without one."""
    try:
        stat = os.stat(directory / RECORDING_PLAYLIST)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return ("recorded", stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)


def parse_recording_playlist(text: str) -> Timeline:
    """The timeline of a recording's playlist as `relay.hls.recording` writes it: EXT-X-MAP
    names the init of the segments after it, each EXTINF the length of the next segment."""
    entries: list[SegmentEntry] = []
    init: str | None = None
    duration: float | None = None
    position = 0.0
    for line in listed_part(text).splitlines():
        if line.startswith("#EXT-X-MAP:"):
            uri = line.partition('URI="')[2].partition('"')[0]
            init = uri if parse_resource(uri) is not None else None
        elif line.startswith("#EXTINF:"):
            try:
                duration = float(line[len("#EXTINF:"):].partition(",")[0])
            except ValueError:
                duration = None
        elif line and not line.startswith("#"):
            if init is not None and duration is not None and parse_resource(line) is not None:
                entries.append(SegmentEntry(position, duration, init, line))
                position += duration
            duration = None
    return Timeline(tuple(entries), live=False)


class RecordingIndex:
    """Parsed recording playlists, one per version of the file (read in worker threads)."""

    def __init__(self, entries: int = RECORDING_INDEX_CACHE_ENTRIES) -> None:
        self._entries = entries
        self._cache: OrderedDict[tuple[Path, Hashable], Timeline] = OrderedDict()
        self._lock = threading.Lock()

    def timeline(self, directory: Path, version: Hashable) -> Timeline:
        """Blocking; MediaGone when the playlist is gone or lists nothing."""
        key = (directory, version)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        try:
            text = (directory / RECORDING_PLAYLIST).read_text("ascii", errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            raise MediaGone(str(directory.name)) from None
        timeline = parse_recording_playlist(text)
        if not timeline.entries:
            raise MediaGone(str(directory.name))
        with self._lock:
            self._cache[key] = timeline
            while len(self._cache) > self._entries:
                self._cache.popitem(last=False)
        return timeline
