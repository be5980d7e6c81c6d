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

Disk trouble: every append of a segment's lines is one write of whole lines, and a write
that fails (a full disk) is cut back off the file, so the playlist never holds a torn line
and lists only segments whose file is complete. `finalize` makes its result durable (the
segment files written last, the playlist, the directory are fsynced), and on a full disk,
where the new playlist cannot be written beside the old one, it rewrites the playlist in the
place the old one already takes (`_rewrite_in_place`), so a recording that ran the disk full
is still finished as a playable VOD.

Everything here blocks on the file system: the packager runs it in a worker thread, one call
at a time per recording, in order.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from relay.hls.model import INIT_URI, SEGMENT_URI, SegmentInfo
from relay.hls.multivariant import VariantInfo
from relay.hls.playlist import VERSION_FMP4, render_segment_lines

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


#: Segment files a writer fsyncs when it finishes: the ones written last. Older ones were
#: written back by the kernel long before (its periodic writeback flushes data older than
#: 30 s by default; 32 segments are at least 64 s), and fsyncing every segment of a 12-hour
#: recording would make a stop of many sessions take minutes.
FSYNC_RECENT_SEGMENTS: Final = 32

#: The errors of a full file system (or a user's quota): the recording cannot grow any more.
DISK_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data` at the file's offset; a short write goes on where it stopped."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_atomically(path: Path, data: bytes | Sequence[bytes], *,
                      durable: bool = False) -> None:
    """Replace `path` with `data` (bytes, or buffers written one after another) through a
    temporary file, so a reader sees the old or the new bytes, never a mix; with `durable`,
    fsync the file before it is renamed (the caller fsyncs the directory). A failed write
    removes the temporary file (and the space it took)."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            for chunk in (data,) if isinstance(data, bytes) else data:
                _write_all(fd, chunk)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append_lines(path: Path, text: bytes) -> None:
    """Append `text` (whole lines) in one write; on failure cut the file back to where it
    was, so no torn line stays behind (a reader may still catch the append half-way, which
    `listed_part` allows for)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, text)
        except BaseException:
            os.ftruncate(fd, size)  # frees, never needs, space
            raise
    finally:
        os.close(fd)


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
        # Segment files written last: fsynced when the recording is finished.
        self._recent: deque[Path] = deque(maxlen=FSYNC_RECENT_SEGMENTS)

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

    def write_segment(self, segment: SegmentInfo, data: bytes | Sequence[bytes],
                      target_duration: int) -> Path:
        """Store a complete segment (its bytes, or its parts in order: the live window holds
        a segment as its parts, and joining them for the disk would copy it), then list it
        in the playlist (both or neither); returns its file (the live window serves the
        segment from it once it lets its bytes go)."""
        self._prepare()
        path = self.directory / SEGMENT_URI.format(msn=segment.msn)
        _write_atomically(path, data)
        lines: list[str] = []
        started = self._started or _has_content(self._playlist)
        if not started:
            # A reconnect continues the same asset with the same packager, so the header is
            # written once per recording; the first msn is the media sequence.
            lines += ["#EXTM3U", f"#EXT-X-VERSION:{VERSION_FMP4}",
                      f"#EXT-X-TARGETDURATION:{target_duration}", _EVENT,
                      f"#EXT-X-MEDIA-SEQUENCE:{segment.msn}", "#EXT-X-INDEPENDENT-SEGMENTS"]
        render_segment_lines(lines, segment, self._current_init, with_parts=False)
        try:
            _append_lines(self._playlist, ("\n".join(lines) + "\n").encode("ascii"))
        except OSError:
            path.unlink(missing_ok=True)  # not listed: give its space back
            raise
        self._started = True
        self._current_init = segment.init
        self._recent.append(path)
        return path

    def write_variant(self, variant: VariantInfo) -> None:
        self._prepare()
        _write_atomically(self.directory / VARIANT_FILE,
                          json.dumps(asdict(variant)).encode())

    def finish(self, variant: VariantInfo | None = None) -> RecordingSummary | None:
        """Finalize the recording (durably: the segments written last are fsynced first);
        `variant`, when given, is written with it (`finalize`)."""
        if self._created and not self.directory.is_dir():
            return None
        for path in self._recent:
            try:
                _fsync_path(path)
            except FileNotFoundError:
                continue  # finalize drops its entry
        self._recent.clear()
        return finalize(self.directory, variant)


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def listed_part(text: str) -> str:
    """An EVENT playlist as far as its last complete entry (a reader may catch an append)."""
    end = text.rfind(".m4s\n")
    return text[:end + len(".m4s\n")] if end >= 0 else ""


def finalize(directory: Path, variant: VariantInfo | None = None) -> RecordingSummary | None:
    """Make the recording in `directory` a VOD playlist with ENDLIST; None when it holds no
    segment (the directory, if any, is then left as it is). Safe to repeat. The variant file
    is restated from the segments kept: `variant` when given (the packager's, written here
    once rather than once more before), else the one in the directory."""
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
    finished = ("\n".join([*kept, _ENDLIST]) + "\n").encode("ascii")
    try:
        _write_atomically(path, finished, durable=True)
    except OSError as exc:
        if exc.errno not in DISK_FULL_ERRNOS:
            raise
        log.warning("recording %s: no room for a new playlist (%s); finalizing it in place",
                    directory.name, exc.strerror)
        _rewrite_in_place(path, finished)
    average = round(total_bits / duration) if duration > 0 else 0
    summary = RecordingSummary(duration=round(duration, 3), segments=segments,
                               peak_bps=round(peak), average_bps=average,
                               started_at=started_at)
    given = variant is not None
    if variant is None:
        variant = read_variant(directory)
    if variant is not None and (given or average > 0):
        if average > 0:
            # The variant written while live measured the segments up to then; a finished
            # recording states the peak and average of all it kept (rfc8216bis 4.4.6.2).
            variant = dataclasses.replace(variant, bandwidth=max(summary.peak_bps, average),
                                          average_bandwidth=average)
        restated = json.dumps(asdict(variant)).encode()
        try:
            _write_atomically(directory / VARIANT_FILE, restated, durable=True)
        except OSError as exc:
            if exc.errno not in DISK_FULL_ERRNOS:
                raise
            # The variant written while live stays: it is valid, if less exact.
            log.warning("recording %s: no room to restate the variant (%s)", directory.name,
                        exc.strerror)
    _fsync_path(directory, directory=True)  # the renames above
    return summary


def _rewrite_in_place(path: Path, finished: bytes) -> None:
    """Write the finished playlist over the old one in the space that file already holds.

    On a full disk the finished playlist cannot be written beside the old one, but it is
    never much longer: the old one's entries, EVENT -> VOD (2 bytes fewer) and ENDLIST (15
    more). Overwriting blocks a file already has needs no new ones (on the file systems
    Relay expects: ext4, XFS, tmpfs; a copy-on-write one may still refuse, and the error is
    raised). Where even 13 bytes more do not fit in the file's last block, the optional
    EXT-X-INDEPENDENT-SEGMENTS tag (rfc8216bis 4.4.2.1) is left out, which makes the file
    shorter than before. Not atomic: only for a disk that leaves no other way."""
    fd = os.open(path, os.O_RDWR)
    try:
        stat = os.fstat(fd)
        room = max(stat.st_size, stat.st_blocks * 512)
        if len(finished) > room:
            finished = finished.replace(b"#EXT-X-INDEPENDENT-SEGMENTS\n", b"", 1)
        if len(finished) > room:
            raise OSError(errno.ENOSPC, f"the finished playlist needs {len(finished)} bytes "
                          f"and the file holds {room}", str(path))
        view = memoryview(finished)
        offset = 0
        while offset < len(finished):
            offset += os.pwrite(fd, view[offset:], offset)
        os.ftruncate(fd, len(finished))
        os.fsync(fd)
    finally:
        os.close(fd)


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
