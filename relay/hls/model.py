"""What a rendition's playlist says, independent of how it is rendered or served.

The segmenter produces these records; the playlist renderer turns them into text; the HTTP
routes resolve the URIs below back to bytes. URIs are relative to the media playlist, which
lives at `/{PLAYBACK_ID}/rendition.m3u8`:

    init-{init}.mp4        the init segment (EXT-X-MAP); `init` changes when the tracks do
    {msn}.m4s              a whole media segment
    {msn}.{part}.m4s       one LL-HLS part of segment `msn`
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final


@dataclass(frozen=True, slots=True)
class PartInfo:
    """One part (rfc8216bis 4.4.4.9)."""

    msn: int  # the media sequence number of the segment it belongs to
    index: int  # its index within that segment, from 0
    duration: float  # seconds
    independent: bool  # starts with a keyframe (every audio-only part does)


@dataclass(slots=True)
class SegmentInfo:
    """One media segment, complete or (the last one, in LL-HLS) still growing."""

    msn: int
    init: int  # the EXT-X-MAP it needs
    program_date_time: float  # wall-clock time of its first frame, epoch seconds
    discontinuity: bool = False  # first segment after a reconnect
    parts: list[PartInfo] = field(default_factory=list)
    duration: float | None = None  # seconds; None while the segment is in progress

    @property
    def complete(self) -> bool:
        return self.duration is not None


@dataclass(frozen=True, slots=True)
class StoredMedia:
    """A segment or part the live window no longer holds in memory: `length` bytes at
    `offset` of the file at `path` (the recording's segment file, or the session's spool
    file). The HTTP layer reads it off the event loop (`relay.hls.disk.read_stored`)."""

    path: str
    offset: int
    length: int


INIT_URI: Final = "init-{init}.mp4"
SEGMENT_URI: Final = "{msn}.m4s"
PART_URI: Final = "{msn}.{part}.m4s"
MEDIA_PLAYLIST_URI: Final = "rendition.m3u8"

# One spelling per resource, the one written above: [0-9] rather than \d (which takes any
# Unicode digit), no leading zeros, and fullmatch (a `$` also matches before a final "\n").
# Otherwise "06.m4s" or "6.m4s\n" would name segment 6 too: another URL, so another cache
# entry, for an immutable resource, and a name the recorded route, which opens the file by
# it, would not find.
_RESOURCE = re.compile(
    r"init-(?P<init>0|[1-9][0-9]{0,8})\.mp4"
    r"|(?P<msn>0|[1-9][0-9]{0,11})(?:\.(?P<part>0|[1-9][0-9]{0,5}))?\.m4s")


@dataclass(frozen=True, slots=True)
class ResourceName:
    """A parsed media resource name: exactly one of `init` or `msn` is set."""

    init: int | None = None
    msn: int | None = None
    part: int | None = None


def parse_resource(name: str) -> ResourceName | None:
    """Parse an init/segment/part file name; None when it is not one of ours, exactly as the
    playlist writes it."""
    match = _RESOURCE.fullmatch(name)
    if match is None:
        return None
    if match["init"] is not None:
        return ResourceName(init=int(match["init"]))
    part = match["part"]
    return ResourceName(msn=int(match["msn"]), part=int(part) if part is not None else None)
