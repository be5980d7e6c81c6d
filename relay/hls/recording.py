"""An asset's recording on disk: `DATA_DIR/assets/{asset_id}/`.

Theory of operation: the directory holds exactly what a player of the asset fetches, under
the URIs of `relay.hls.model`:

    rendition.m3u8     the media playlist: EVENT while the stream is live, VOD once it ended
    rendition.json     the variant (bandwidth, codecs, resolution, frame rate) for the
                       multivariant playlist
    init-{init}.mp4    init segments
    {msn}.m4s          media segments

The playlist is append-only while live: a segment's file is written (to a temporary name,
then renamed) before the lines that name it are appended, so every segment listed exists,
and a reader that catches an append half-way sees at worst a tail it must cut after the last
segment URI (`listed_part`). When the stream goes idle, `finalize` rewrites the playlist once
as VOD with `#EXT-X-ENDLIST`. A process killed mid-stream leaves an EVENT playlist; the next
start runs the same `finalize` on it, which drops a torn tail and any entry whose file is
missing, so the interrupted recording becomes a playable asset.

Everything here blocks on the file system: the packager runs it in a worker thread, one call
at a time per recording, in order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from relay.hls.model import INIT_URI, SEGMENT_URI, SegmentInfo
from relay.hls.playlist import VERSION_FMP4, VariantInfo, render_segment_lines

log = logging.getLogger("relay.hls")

RECORDING_PLAYLIST: Final = "rendition.m3u8"
VARIANT_FILE: Final = "rendition.json"

_EXTINF = re.compile(r"^#EXTINF:([0-9.]+),")
_SEGMENT_LINE = re.compile(r"^\d{1,12}\.m4s$")
_EVENT = "#EXT-X-PLAYLIST-TYPE:EVENT"
_VOD = "#EXT-X-PLAYLIST-TYPE:VOD"
_ENDLIST = "#EXT-X-ENDLIST"
_PDT = "#EXT-X-PROGRAM-DATE-TIME:"


@dataclass(frozen=True, slots=True)
class RecordingSummary:
    """What a finished recording holds."""

    duration: float  # seconds of media: the sum of its segments' EXTINF
    segments: int
    peak_bps: int = 0  # the highest segment bit rate (file size over EXTINF)
    average_bps: int = 0
    started_at: float | None = None  # the first segment's PROGRAM-DATE-TIME, epoch seconds


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class RecordingGone(OSError):
    """The recording's directory vanished after it was created: the asset was deleted."""


class RecordingWriter:
    """Writes one asset's recording into `directory` (created on first use)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._playlist = directory / RECORDING_PLAYLIST
        self._current_init: int | None = None
        self._started = False
        self._created = False

    def _prepare(self) -> None:
        if self._created:
            if not self.directory.is_dir():
                raise RecordingGone(f"{self.directory} was removed (the asset was deleted)")
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._created = True

    def write_init(self, init: int, data: bytes) -> None:
        self._prepare()
        _write_atomically(self.directory / INIT_URI.format(init=init), data)

    def write_segment(self, segment: SegmentInfo, data: bytes, target_duration: int) -> None:
        """Store a complete segment, then list it in the playlist."""
        self._prepare()
        _write_atomically(self.directory / SEGMENT_URI.format(msn=segment.msn), data)
        lines: list[str] = []
        if not self._started:
            self._started = self._playlist.exists()
        if not self._started:
            # A reconnect continues the same asset with the same packager, so the header is
            # written once per recording; the first msn is the media sequence.
            lines += ["#EXTM3U", f"#EXT-X-VERSION:{VERSION_FMP4}",
                      f"#EXT-X-TARGETDURATION:{target_duration}", _EVENT,
                      f"#EXT-X-MEDIA-SEQUENCE:{segment.msn}", "#EXT-X-INDEPENDENT-SEGMENTS"]
            self._started = True
        render_segment_lines(lines, segment, self._current_init, with_parts=False)
        self._current_init = segment.init
        with self._playlist.open("a", encoding="ascii") as playlist:
            playlist.write("\n".join(lines) + "\n")

    def write_variant(self, variant: VariantInfo) -> None:
        self._prepare()
        _write_atomically(self.directory / VARIANT_FILE,
                          json.dumps(asdict(variant)).encode())

    def finish(self) -> RecordingSummary | None:
        if self._created and not self.directory.is_dir():
            return None
        return finalize(self.directory)


def listed_part(text: str) -> str:
    """An EVENT playlist as far as its last complete entry (a reader may catch an append)."""
    end = text.rfind(".m4s\n")
    return text[:end + len(".m4s\n")] if end >= 0 else ""


def finalize(directory: Path) -> RecordingSummary | None:
    """Make the recording in `directory` a VOD playlist with ENDLIST; None when it holds no
    segment (the directory, if any, is then left as it is). Safe to repeat."""
    path = directory / RECORDING_PLAYLIST
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None
    kept: list[str] = []
    entry: list[str] = []
    duration = 0.0
    segments = 0
    gap = False
    total_bits = 0
    peak = 0.0
    started_at: float | None = None
    for line in text.splitlines():
        if line in (_EVENT, _VOD):
            kept.append(_VOD)
        elif line == _ENDLIST:
            continue
        elif _SEGMENT_LINE.match(line):
            extinf = next((m for m in map(_EXTINF.match, entry) if m is not None), None)
            if extinf is not None and (directory / line).is_file():
                if gap and "#EXT-X-DISCONTINUITY" not in entry:
                    entry.insert(0, "#EXT-X-DISCONTINUITY")  # the media jumps over the gap
                gap = False
                seconds = float(extinf.group(1))
                if started_at is None:
                    started_at = _program_date_time(entry)
                bits = (directory / line).stat().st_size * 8
                total_bits += bits
                if seconds > 0:
                    peak = max(peak, bits / seconds)
                duration += seconds
                segments += 1
                kept += [*entry, line]
            else:
                gap = segments > 0
                log.warning("recording %s: dropped entry %s (no duration or no file)",
                            directory.name, line)
            entry = []
        elif segments or line.startswith(("#EXT-X-DISCONTINUITY", "#EXT-X-MAP",
                                           "#EXT-X-PROGRAM-DATE-TIME", "#EXTINF")):
            entry.append(line)  # belongs to the next segment (or a torn tail)
        else:
            kept.append(line)  # header
    if not segments:
        return None
    for stray in directory.glob("*.tmp"):
        stray.unlink(missing_ok=True)
    _write_atomically(path, ("\n".join([*kept, _ENDLIST]) + "\n").encode("ascii"))
    average = round(total_bits / duration) if duration > 0 else 0
    summary = RecordingSummary(duration=round(duration, 3), segments=segments,
                               peak_bps=round(peak), average_bps=average,
                               started_at=started_at)
    variant = read_variant(directory)
    if variant is not None and average > 0:
        # The variant written while live measured the segments up to then; a finished
        # recording states the peak and average of all it kept (rfc8216bis 4.4.6.2).
        _write_atomically(directory / VARIANT_FILE, json.dumps(asdict(dataclasses.replace(
            variant, bandwidth=max(summary.peak_bps, average),
            average_bandwidth=average))).encode())
    return summary


def _program_date_time(entry: list[str]) -> float | None:
    for line in entry:
        if line.startswith(_PDT):
            try:
                return datetime.fromisoformat(line[len(_PDT):].replace("Z", "+00:00")).timestamp()
            except ValueError:
                return None
    return None


def read_variant(directory: Path) -> VariantInfo | None:
    """The recording's variant, or None when it is missing or unreadable."""
    try:
        data = json.loads((directory / VARIANT_FILE).read_bytes())
        return VariantInfo(
            bandwidth=int(data["bandwidth"]), codecs=tuple(data["codecs"]),
            average_bandwidth=data.get("average_bandwidth"),
            resolution=tuple(data["resolution"]) if data.get("resolution") else None,
            frame_rate=data.get("frame_rate"), path=str(data.get("path", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
