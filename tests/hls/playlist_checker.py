"""A reusable checker of HLS playlists against LL-HLS.md (and the rfc8216bis rules behind it).

`check_media_playlist(text, previous=...)` parses a media playlist and asserts every rule
that can be seen in its text, and, given the previous sample of the same playlist, every
rule about how a playlist may change between reloads. `check_multivariant(text)` does the
same for a multivariant playlist. Both raise one AssertionError listing every violation,
one per line, each starting with the rule's tag in brackets (e.g. `[target-duration]`) and
naming the line, segment or value at fault.

Rules that are not visible in playlist text (HTTP status codes, timing, caching, CORS,
gzip, keyframes inside the media) belong to the end-to-end tests that drive the server.

Playlists from other servers and packagers parse too: unknown tags are skipped, and the
rules Relay adds on top of rfc8216bis (a PROGRAM-DATE-TIME on every segment,
EXT-X-INDEPENDENT-SEGMENTS, EXT-X-MAP) can be switched off by keyword.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime

_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"\r\n]*"|[^",]*)(?:,|$)')
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_INTEGER = re.compile(r"[0-9]+")
_RESOLUTION = re.compile(r"([0-9]+)x([0-9]+)")
_CODEC = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]*")
_VIDEO_CODECS = ("avc1", "avc3", "hvc1", "hev1", "av01", "vp09", "dvh1", "dvhe")

# Tags that belong to the next media segment and so must come before its first part.
_SEGMENT_TAGS = ("#EXT-X-DISCONTINUITY", "#EXT-X-MAP", "#EXT-X-PROGRAM-DATE-TIME",
                 "#EXT-X-KEY", "#EXT-X-BITRATE")
_MULTIVARIANT_TAGS = ("#EXT-X-STREAM-INF", "#EXT-X-MEDIA", "#EXT-X-I-FRAME-STREAM-INF",
                      "#EXT-X-SESSION-DATA", "#EXT-X-SESSION-KEY")
_MEDIA_TAGS = ("#EXTINF", "#EXT-X-TARGETDURATION", "#EXT-X-MEDIA-SEQUENCE", "#EXT-X-PART",
               "#EXT-X-MAP", "#EXT-X-ENDLIST", "#EXT-X-PRELOAD-HINT", "#EXT-X-SKIP")
# Sums of values written with three decimals drift by up to 0.5 ms each.
_TOLERANCE = 0.01
_EPSILON = 1e-9


@dataclass
class Part:
    duration: float
    uri: str
    independent: bool
    line: int


@dataclass
class Segment:
    msn: int
    line: int  # where its first line is
    duration: float | None = None  # EXTINF; None for the open segment (parts only)
    uri: str | None = None
    discontinuity: bool = False
    map_uri: str | None = None  # the EXT-X-MAP in force
    program_date_time: datetime | None = None
    parts: list[Part] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.uri is not None


@dataclass
class MediaPlaylist:
    version: int = 1
    target_duration: int | None = None
    media_sequence: int = 0
    discontinuity_sequence: int = 0
    playlist_type: str | None = None
    independent_segments: bool = False
    server_control: dict[str, str] | None = None
    part_target: float | None = None
    skipped: int | None = None  # EXT-X-SKIP:SKIPPED-SEGMENTS
    segments: list[Segment] = field(default_factory=list)
    hints: list[dict[str, str]] = field(default_factory=list)
    endlist: bool = False
    has_map: bool = False
    decimal_extinf: bool = False
    problems: list[str] = field(default_factory=list)  # found while parsing

    def duration(self) -> float:
        """Seconds listed: complete segments plus the parts of an open one."""
        return sum(segment_duration(segment) for segment in self.segments)

    def by_msn(self) -> dict[int, Segment]:
        return {segment.msn: segment for segment in self.segments}


def segment_duration(segment: Segment) -> float:
    if segment.duration is not None:
        return segment.duration
    return sum(part.duration for part in segment.parts)


def parse_attributes(text: str, problems: list[str], where: str) -> dict[str, str]:
    """An attribute list (rfc8216bis 4.2); quoted values keep their quotes."""
    attributes: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _ATTRIBUTE.match(text, position)
        if match is None:
            problems.append(f"[syntax] {where}: malformed attribute list {text!r}")
            break
        name, value = match.group(1), match.group(2)
        if name in attributes:
            problems.append(f"[syntax] {where}: attribute {name} given twice")
        attributes[name] = value
        position = match.end()
    return attributes


def _unquote(value: str | None) -> str | None:
    if value is None or len(value) < 2 or not (value[0] == value[-1] == '"'):
        return None
    return value[1:-1]


def _float(value: str | None) -> float | None:
    if value is None or not _DECIMAL.fullmatch(value):
        return None
    return float(value)


@dataclass
class _Pending:
    line: int = 0
    discontinuity: bool = False
    program_date_time: datetime | None = None
    duration: float | None = None
    parts: list[Part] = field(default_factory=list)
    touched: bool = False


class _MediaParser:
    def __init__(self) -> None:
        self.playlist = MediaPlaylist()
        self.problems = self.playlist.problems
        self.pending = _Pending()
        self.map_uri: str | None = None
        self.seen: set[str] = set()

    def parse(self, text: str) -> MediaPlaylist:
        lines = text.splitlines()
        if not lines or lines[0].strip() != "#EXTM3U":
            self.problems.append("[header] the first line must be #EXTM3U")
        for number, raw in enumerate(lines[1:], start=2):
            line = raw.strip()
            if not line or (line.startswith("#") and not line.startswith("#EXT")):
                continue
            if line.startswith("#"):
                self.tag(line, number)
            else:
                self.uri(line, number)
        if self.pending.parts:
            self.add_segment(None)
        elif self.pending.touched:
            self.problems.append(f"[syntax] line {self.pending.line}: segment tags at the end "
                                 f"apply to no segment or part")
        return self.playlist

    def once(self, tag: str, number: int) -> None:
        if tag in self.seen:
            self.problems.append(f"[syntax] line {number}: {tag} appears more than once")
        self.seen.add(tag)

    def before_segments(self, tag: str, number: int) -> None:
        if self.playlist.segments or self.pending.touched:
            self.problems.append(f"[syntax] line {number}: {tag} must come before the first "
                                 f"media segment")

    def integer(self, tag: str, value: str, number: int) -> int:
        if not _INTEGER.fullmatch(value):
            self.problems.append(f"[syntax] line {number}: {tag} needs a decimal integer, "
                                 f"got {value!r}")
            return 0
        return int(value)

    def segment_tag(self, tag: str, number: int) -> None:
        if self.pending.parts:
            self.problems.append(f"[part-order] line {number}: {tag} comes after the first "
                                 f"EXT-X-PART of its segment; a segment's tags go before its "
                                 f"parts")
        if not self.pending.touched:
            self.pending.line = number
            self.pending.touched = True

    def tag(self, line: str, number: int) -> None:
        tag, _, value = line.partition(":")
        playlist = self.playlist
        where = f"line {number}"
        if tag in _MULTIVARIANT_TAGS:
            self.problems.append(f"[syntax] {where}: {tag} belongs in a multivariant playlist")
        elif tag == "#EXT-X-VERSION":
            self.once(tag, number)
            playlist.version = self.integer(tag, value, number)
        elif tag == "#EXT-X-TARGETDURATION":
            self.once(tag, number)
            playlist.target_duration = self.integer(tag, value, number)
        elif tag == "#EXT-X-MEDIA-SEQUENCE":
            self.once(tag, number)
            self.before_segments(tag, number)
            playlist.media_sequence = self.integer(tag, value, number)
        elif tag == "#EXT-X-DISCONTINUITY-SEQUENCE":
            self.once(tag, number)
            self.before_segments(tag, number)
            playlist.discontinuity_sequence = self.integer(tag, value, number)
        elif tag == "#EXT-X-PLAYLIST-TYPE":
            self.once(tag, number)
            if value not in ("EVENT", "VOD"):
                self.problems.append(f"[syntax] {where}: PLAYLIST-TYPE must be EVENT or VOD, "
                                     f"got {value!r}")
            playlist.playlist_type = value
        elif tag == "#EXT-X-INDEPENDENT-SEGMENTS":
            playlist.independent_segments = True
        elif tag == "#EXT-X-SERVER-CONTROL":
            self.once(tag, number)
            playlist.server_control = parse_attributes(value, self.problems, where)
        elif tag == "#EXT-X-PART-INF":
            self.once(tag, number)
            attributes = parse_attributes(value, self.problems, where)
            playlist.part_target = _float(attributes.get("PART-TARGET"))
            if playlist.part_target is None or playlist.part_target <= 0:
                self.problems.append(f"[part-inf] {where}: PART-TARGET must be a positive "
                                     f"decimal, got {attributes.get('PART-TARGET')!r}")
        elif tag == "#EXT-X-ENDLIST":
            self.once(tag, number)
            playlist.endlist = True
        elif tag == "#EXT-X-SKIP":
            self.once(tag, number)
            self.before_segments(tag, number)
            attributes = parse_attributes(value, self.problems, where)
            skipped = attributes.get("SKIPPED-SEGMENTS", "")
            if not _INTEGER.fullmatch(skipped):
                self.problems.append(f"[skip] {where}: SKIPPED-SEGMENTS must be a decimal "
                                     f"integer, got {skipped!r}")
                skipped = "0"
            playlist.skipped = int(skipped)
        elif tag == "#EXT-X-DISCONTINUITY":
            self.segment_tag(tag, number)
            self.pending.discontinuity = True
        elif tag == "#EXT-X-MAP":
            self.segment_tag(tag, number)
            uri = _unquote(parse_attributes(value, self.problems, where).get("URI"))
            if uri is None:
                self.problems.append(f"[map] {where}: EXT-X-MAP needs a quoted URI")
            self.map_uri = uri
            playlist.has_map = True
        elif tag == "#EXT-X-PROGRAM-DATE-TIME":
            self.segment_tag(tag, number)
            self.pending.program_date_time = self.date_time(value, number)
        elif tag in ("#EXT-X-KEY", "#EXT-X-BITRATE"):
            self.segment_tag(tag, number)
        elif tag == "#EXT-X-PART":
            self.part(value, number)
        elif tag == "#EXTINF":
            self.extinf(value, number)
        elif tag == "#EXT-X-PRELOAD-HINT":
            hint = parse_attributes(value, self.problems, where)
            hint["line"] = str(number)
            playlist.hints.append(hint)

    def date_time(self, value: str, number: int) -> datetime | None:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None or "T" not in value:
            self.problems.append(f"[program-date-time] line {number}: {value!r} is not an "
                                 f"ISO 8601 date-time with a time zone")
            return None
        return moment

    def part(self, value: str, number: int) -> None:
        where = f"line {number}"
        attributes = parse_attributes(value, self.problems, where)
        duration = _float(attributes.get("DURATION"))
        uri = _unquote(attributes.get("URI"))
        independent = attributes.get("INDEPENDENT")
        if duration is None or uri is None:
            self.problems.append(f"[part] {where}: EXT-X-PART needs DURATION and a quoted URI")
        if independent not in (None, "YES"):
            self.problems.append(f"[part] {where}: INDEPENDENT must be YES when present, "
                                 f"got {independent!r}")
        if not self.pending.touched:
            self.pending.line = number
            self.pending.touched = True
        self.pending.parts.append(Part(duration or 0.0, uri or "", independent == "YES",
                                       number))

    def extinf(self, value: str, number: int) -> None:
        text = value.split(",", 1)[0].strip()
        duration = _float(text)
        if duration is None or duration <= 0:
            self.problems.append(f"[extinf] line {number}: EXTINF needs a positive duration, "
                                 f"got {text!r}")
            duration = 0.0
        if "." in text:
            self.playlist.decimal_extinf = True
        if not self.pending.touched:
            self.pending.line = number
            self.pending.touched = True
        self.pending.duration = duration

    def uri(self, line: str, number: int) -> None:
        if self.pending.duration is None:
            self.problems.append(f"[extinf] line {number}: segment URI {line!r} has no EXTINF")
            self.pending.duration = 0.0
        if not self.pending.touched:
            self.pending.line = number
        self.add_segment(line)

    def add_segment(self, uri: str | None) -> None:
        playlist = self.playlist
        pending = self.pending
        msn = playlist.media_sequence + (playlist.skipped or 0) + len(playlist.segments)
        playlist.segments.append(Segment(
            msn=msn, line=pending.line, duration=pending.duration if uri else None, uri=uri,
            discontinuity=pending.discontinuity, map_uri=self.map_uri,
            program_date_time=pending.program_date_time, parts=pending.parts))
        self.pending = _Pending()


def parse_media_playlist(text: str) -> MediaPlaylist:
    """Parse without judging; syntax problems are collected in `problems`."""
    return _MediaParser().parse(text)


def check_media_playlist(
    text: str,
    *,
    previous: str | MediaPlaylist | None = None,
    require_program_date_time: bool = True,
    require_independent_segments: bool = True,
    require_map: bool = True,
) -> MediaPlaylist:
    """Assert every text-visible rule of LL-HLS.md on a media playlist; return it parsed.

    `previous` is the last sample of the same playlist, for the rules on how a playlist
    changes (TARGETDURATION constant, MEDIA-SEQUENCE never decreasing, ...).
    """
    playlist = parse_media_playlist(text)
    before = parse_media_playlist(previous) if isinstance(previous, str) else previous
    problems = list(playlist.problems)
    for rule in (_version, _target_duration, _parts, _server_control, _hints, _part_window,
                 _skip, _playlist_type):
        rule(playlist, problems)
    if require_map:
        _map(playlist, problems)
    _program_date_time(playlist, problems, required=require_program_date_time)
    _independent(playlist, problems, required=require_independent_segments)
    if before is not None:
        _changes(before, playlist, problems)
    if problems:
        raise AssertionError(f"{len(problems)} playlist rule(s) broken:\n" + "\n".join(problems)
                             + "\n--- playlist ---\n" + text)
    return playlist


def _version(playlist: MediaPlaylist, problems: list[str]) -> None:
    needs = [(playlist.has_map, 6, "EXT-X-MAP"), (playlist.skipped is not None, 9, "EXT-X-SKIP"),
             (playlist.decimal_extinf, 3, "a decimal EXTINF")]
    for present, version, feature in needs:
        if present and playlist.version < version:
            problems.append(f"[version] {feature} needs EXT-X-VERSION >= {version}, "
                            f"the playlist says {playlist.version}")


def _map(playlist: MediaPlaylist, problems: list[str]) -> None:
    for segment in playlist.segments:
        if segment.map_uri is None:
            problems.append(f"[map] segment {segment.msn} (line {segment.line}) has no "
                            f"EXT-X-MAP in force; fMP4 media needs one")


def _target_duration(playlist: MediaPlaylist, problems: list[str]) -> None:
    target = playlist.target_duration
    if target is None:
        problems.append("[target-duration] EXT-X-TARGETDURATION is missing")
        return
    for segment in playlist.segments:
        if segment.duration is not None and math.floor(segment.duration + 0.5) > target:
            problems.append(f"[target-duration] segment {segment.msn} (line {segment.line}): "
                            f"EXTINF {segment.duration} rounds above TARGETDURATION {target}")


def _program_date_time(playlist: MediaPlaylist, problems: list[str], *, required: bool) -> None:
    previous: Segment | None = None
    for segment in playlist.segments:
        moment = segment.program_date_time
        earlier = previous.program_date_time if previous is not None else None
        if moment is None and required:
            problems.append(f"[program-date-time] segment {segment.msn} (line {segment.line}) "
                            f"has no EXT-X-PROGRAM-DATE-TIME")
        elif (previous is not None and moment is not None and earlier is not None
              and not segment.discontinuity and moment < earlier):
            problems.append(f"[program-date-time] segment {segment.msn} (line {segment.line}) "
                            f"starts before segment {previous.msn} without a discontinuity")
        previous = segment


def _parts(playlist: MediaPlaylist, problems: list[str]) -> None:
    listed = [segment for segment in playlist.segments if segment.parts]
    target = playlist.part_target
    if listed and target is None:
        problems.append(f"[part-inf] EXT-X-PART (line {listed[0].parts[0].line}) without "
                        f"EXT-X-PART-INF")
        return
    if target is None:
        return
    for segment in listed:
        for position, part in enumerate(segment.parts):
            if part.duration > target + _EPSILON:
                problems.append(f"[part-duration] part {part.uri} (line {part.line}) lasts "
                                f"{part.duration}, more than PART-TARGET {target}")
            last = position == len(segment.parts) - 1
            if (part.duration + _EPSILON < 0.85 * target and not part.independent
                    and not last):
                problems.append(f"[part-duration] part {part.uri} (line {part.line}) lasts "
                                f"{part.duration}, less than 85% of PART-TARGET {target}, and "
                                f"is neither INDEPENDENT nor the last of its segment")
        if segment.duration is not None:
            summed = sum(part.duration for part in segment.parts)
            if abs(summed - segment.duration) > 0.002 * len(segment.parts) + 0.001:
                problems.append(f"[part-duration] segment {segment.msn} (line {segment.line}) "
                                f"lasts {segment.duration} but its parts sum to {summed:.3f}")


def _independent(playlist: MediaPlaylist, problems: list[str], *, required: bool) -> None:
    if required and not playlist.independent_segments:
        problems.append("[independent] the playlist lacks EXT-X-INDEPENDENT-SEGMENTS")
    for segment in playlist.segments:
        if segment.parts and not segment.parts[0].independent:
            first = segment.parts[0]
            problems.append(f"[independent] part {first.uri} (line {first.line}) starts "
                            f"segment {segment.msn} but is not INDEPENDENT=YES")


def _server_control(playlist: MediaPlaylist, problems: list[str]) -> None:
    control = playlist.server_control or {}
    target = playlist.target_duration or 0
    part_target = playlist.part_target
    if part_target is not None:
        if control.get("CAN-BLOCK-RELOAD") != "YES":
            problems.append("[server-control] a playlist with parts needs "
                            "EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES")
        if "PART-HOLD-BACK" not in control:
            problems.append("[server-control] a playlist with parts needs PART-HOLD-BACK")
    if "CAN-BLOCK-RELOAD" in control and control["CAN-BLOCK-RELOAD"] != "YES":
        problems.append(f"[server-control] CAN-BLOCK-RELOAD must be YES, got "
                        f"{control['CAN-BLOCK-RELOAD']!r}")
    bounds = [("PART-HOLD-BACK", 3 * (part_target or 0), "3 x PART-TARGET"),
              ("HOLD-BACK", 3 * target, "3 x TARGETDURATION"),
              ("CAN-SKIP-UNTIL", 6 * target, "6 x TARGETDURATION")]
    for name, minimum, described in bounds:
        if name not in control:
            continue
        value = _float(control[name])
        if value is None:
            problems.append(f"[server-control] {name} must be a decimal, got {control[name]!r}")
        elif value + 0.0015 < minimum:  # a value written with 3 decimals may round down
            problems.append(f"[server-control] {name}={control[name]} is less than "
                            f"{described} ({minimum:.3f})")


def _hints(playlist: MediaPlaylist, problems: list[str]) -> None:
    if playlist.hints and playlist.endlist:
        problems.append("[hint] EXT-X-PRELOAD-HINT in a playlist with EXT-X-ENDLIST")
    seen: set[str] = set()
    listed = {part.uri for segment in playlist.segments for part in segment.parts}
    for hint in playlist.hints:
        kind, uri, line = hint.get("TYPE"), _unquote(hint.get("URI")), hint["line"]
        if kind not in ("PART", "MAP") or uri is None:
            problems.append(f"[hint] line {line}: a hint needs TYPE=PART or MAP and a quoted "
                            f"URI")
            continue
        if kind in seen:
            problems.append(f"[hint] line {line}: a second EXT-X-PRELOAD-HINT of TYPE={kind}")
        seen.add(kind)
        if kind == "PART" and playlist.part_target is None:
            problems.append(f"[hint] line {line}: a PART hint without EXT-X-PART-INF")
        if kind == "PART" and uri in listed:
            problems.append(f"[hint] line {line}: the hinted part {uri} is already listed")


def _part_window(playlist: MediaPlaylist, problems: list[str]) -> None:
    """Parts stay listed while their segment ends within 3 x TD of the live edge."""
    if playlist.part_target is None or playlist.target_duration is None:
        return
    limit = 3 * playlist.target_duration
    edge = playlist.duration()
    end = 0.0
    for segment in playlist.segments:
        end += segment_duration(segment)
        if not segment.complete:
            continue
        age = edge - end
        if segment.parts and age > limit + _TOLERANCE:
            problems.append(f"[part-window] segment {segment.msn} (line {segment.line}) still "
                            f"lists parts but ends {age:.3f} s before the live edge, more "
                            f"than 3 x TARGETDURATION")
        if not segment.parts and age < limit - _TOLERANCE:
            problems.append(f"[part-window] segment {segment.msn} (line {segment.line}) ends "
                            f"{age:.3f} s before the live edge, within 3 x TARGETDURATION, "
                            f"but lists no parts")


def _skip(playlist: MediaPlaylist, problems: list[str]) -> None:
    if playlist.skipped is None:
        return
    if playlist.endlist:
        problems.append("[skip] EXT-X-SKIP in a playlist with EXT-X-ENDLIST")
    control = playlist.server_control or {}
    skip_until = _float(control.get("CAN-SKIP-UNTIL"))
    if skip_until is None:
        problems.append("[skip] EXT-X-SKIP without CAN-SKIP-UNTIL in EXT-X-SERVER-CONTROL")
        return
    listed = playlist.duration()
    if listed + _TOLERANCE < skip_until:
        problems.append(f"[skip] the delta update skips segments newer than the skip "
                        f"boundary: it lists {listed:.3f} s, less than CAN-SKIP-UNTIL "
                        f"{skip_until}")


def _playlist_type(playlist: MediaPlaylist, problems: list[str]) -> None:
    if playlist.playlist_type == "VOD" and not playlist.endlist:
        problems.append("[playlist-type] a VOD playlist needs EXT-X-ENDLIST")


def _changes(before: MediaPlaylist, after: MediaPlaylist, problems: list[str]) -> None:
    """rfc8216bis 6.2.1, 6.2.2: how a playlist may change between two reloads."""
    if (before.target_duration is not None and after.target_duration is not None
            and before.target_duration != after.target_duration):
        problems.append(f"[target-duration] TARGETDURATION changed from "
                        f"{before.target_duration} to {after.target_duration}")
    if after.media_sequence < before.media_sequence:
        problems.append(f"[media-sequence] MEDIA-SEQUENCE went back from "
                        f"{before.media_sequence} to {after.media_sequence}")
    if after.discontinuity_sequence < before.discontinuity_sequence:
        problems.append(f"[media-sequence] DISCONTINUITY-SEQUENCE went back from "
                        f"{before.discontinuity_sequence} to {after.discontinuity_sequence}")
    old = before.by_msn()
    removed = range(before.media_sequence, after.media_sequence)
    if removed and all(msn in old for msn in removed):
        expected = before.discontinuity_sequence + sum(old[msn].discontinuity
                                                       for msn in removed)
        if after.discontinuity_sequence != expected:
            problems.append(f"[media-sequence] DISCONTINUITY-SEQUENCE is "
                            f"{after.discontinuity_sequence}, but the segments removed since "
                            f"the previous reload make it {expected}")
    for segment in after.segments:
        earlier = old.get(segment.msn)
        if earlier is None or not (earlier.complete and segment.complete):
            continue
        if earlier.uri != segment.uri or abs((earlier.duration or 0) - (segment.duration or 0)) \
                > _EPSILON:
            problems.append(f"[media-sequence] segment {segment.msn} changed between reloads: "
                            f"{earlier.uri} {earlier.duration} -> {segment.uri} "
                            f"{segment.duration}")
    if before.playlist_type == "EVENT" and after.media_sequence != before.media_sequence:
        problems.append("[playlist-type] an EVENT playlist removed segments "
                        "(MEDIA-SEQUENCE changed)")
    if before.endlist:
        same = [(s.uri, s.duration) for s in before.segments] == \
            [(s.uri, s.duration) for s in after.segments]
        if not after.endlist or not same:
            problems.append("[endlist] the playlist changed after EXT-X-ENDLIST")


@dataclass
class Variant:
    attributes: dict[str, str]
    uri: str
    line: int


def check_multivariant(text: str, *, require_independent_segments: bool = True) -> list[Variant]:
    """Assert the multivariant playlist rules; return its variants."""
    problems: list[str] = []
    lines = text.splitlines()
    if not lines or lines[0].strip() != "#EXTM3U":
        problems.append("[header] the first line must be #EXTM3U")
    variants: list[Variant] = []
    pending: tuple[dict[str, str], int] | None = None
    independent = False
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line or (line.startswith("#") and not line.startswith("#EXT")):
            continue
        tag, _, value = line.partition(":")
        if not line.startswith("#"):
            if pending is None:
                problems.append(f"[stream-inf] line {number}: URI {line!r} without "
                                f"EXT-X-STREAM-INF")
            else:
                variants.append(Variant(pending[0], line, pending[1]))
                pending = None
        elif pending is not None:
            problems.append(f"[stream-inf] line {pending[1]}: EXT-X-STREAM-INF must be "
                            f"followed by its URI")
            pending = None
        if tag == "#EXT-X-STREAM-INF":
            pending = (parse_attributes(value, problems, f"line {number}"), number)
        elif tag == "#EXT-X-INDEPENDENT-SEGMENTS":
            independent = True
        elif tag in _MEDIA_TAGS:
            problems.append(f"[syntax] line {number}: {tag} belongs in a media playlist")
    if pending is not None:
        problems.append(f"[stream-inf] line {pending[1]}: EXT-X-STREAM-INF without a URI")
    if not variants:
        problems.append("[stream-inf] no EXT-X-STREAM-INF")
    if require_independent_segments and not independent:
        problems.append("[independent] the playlist lacks EXT-X-INDEPENDENT-SEGMENTS")
    for variant in variants:
        _check_variant(variant, problems)
    if problems:
        raise AssertionError(f"{len(problems)} multivariant rule(s) broken:\n"
                             + "\n".join(problems) + "\n--- playlist ---\n" + text)
    return variants


def _check_variant(variant: Variant, problems: list[str]) -> None:
    attributes, where = variant.attributes, f"line {variant.line}"
    bandwidth = attributes.get("BANDWIDTH", "")
    if not _INTEGER.fullmatch(bandwidth) or int(bandwidth) == 0:
        problems.append(f"[stream-inf] {where}: BANDWIDTH must be a positive integer, got "
                        f"{bandwidth!r}")
        bandwidth = "0"
    average = attributes.get("AVERAGE-BANDWIDTH")
    if average is not None and (not _INTEGER.fullmatch(average) or int(average) == 0
                                or int(average) > int(bandwidth)):
        problems.append(f"[stream-inf] {where}: AVERAGE-BANDWIDTH {average!r} must be a "
                        f"positive integer no larger than BANDWIDTH {bandwidth}")
    codecs = _unquote(attributes.get("CODECS"))
    if not codecs or not all(_CODEC.fullmatch(codec) for codec in codecs.split(",")):
        problems.append(f"[stream-inf] {where}: CODECS must be a quoted list of RFC 6381 "
                        f"codecs, got {attributes.get('CODECS')!r}")
        codecs = ""
    video = any(codec.startswith(_VIDEO_CODECS) for codec in codecs.split(","))
    resolution = attributes.get("RESOLUTION")
    if resolution is not None:
        match = _RESOLUTION.fullmatch(resolution)
        if match is None or int(match.group(1)) == 0 or int(match.group(2)) == 0:
            problems.append(f"[stream-inf] {where}: RESOLUTION must be WIDTHxHEIGHT, got "
                            f"{resolution!r}")
        if codecs and not video:
            problems.append(f"[stream-inf] {where}: RESOLUTION on a variant without video "
                            f"({codecs})")
    frame_rate = attributes.get("FRAME-RATE")
    if frame_rate is not None:
        value = _float(frame_rate)
        if value is None or value == 0 or len(frame_rate.partition(".")[2]) > 3:
            problems.append(f"[stream-inf] {where}: FRAME-RATE must be a positive decimal "
                            f"with at most 3 decimals, got {frame_rate!r}")
        if codecs and not video:
            problems.append(f"[stream-inf] {where}: FRAME-RATE on a variant without video")
