"""An asset's media playlist as served, cached per version of its file.

A recording's playlist grows by a few lines a segment: about 1.7 MB after 12 hours, which
takes about 7 ms to gzip. Reading, cutting and compressing it for every request, on the event
loop, would stall every other stream that long per request. So each version of the file
(device, inode, mtime, size: an append changes the size and mtime, `finalize` replaces the
file and so its inode) is read and encoded once, in a worker thread, and its plain and gzip
forms are kept in a small LRU cache bounded in entries and bytes. Requests that miss on the
same version at once share one load.

The file is stat-ed before it is read (`os.fstat` on the open file), so the body cached under
a version is never older than that version: a reader that races an append caches a longer
body under the older version and reloads on the next request, never the reverse.
"""

from __future__ import annotations

import asyncio
import gzip
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from relay.hls.playlist import GZIP_LEVEL
from relay.hls.recording import listed_part

#: Recorded playlists kept encoded at once (the LRU's entries).
RECORDED_PLAYLIST_CACHE_ENTRIES: Final = 64
#: Bytes the cached playlists (plain and gzip forms together) may hold; a 12-hour
#: recording's playlist takes about 2 MB in both forms.
RECORDED_PLAYLIST_CACHE_BYTES: Final = 64 * 1024 * 1024
#: Playlists shorter than this go uncompressed (gzip would not pay for its header).
GZIP_MIN_BYTES: Final = 512

_ENDLIST: Final = b"#EXT-X-ENDLIST"


@dataclass(frozen=True, slots=True)
class FileVersion:
    """What tells one content of a file from the next."""

    device: int
    inode: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, stat: os.stat_result) -> FileVersion:
        return cls(stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)


@dataclass(frozen=True, slots=True)
class ServedPlaylist:
    """A recorded playlist as it is served."""

    version: FileVersion
    body: bytes  # whole once finished; else cut after its last complete entry
    gzipped: bytes | None  # None when the body is too short to be worth compressing
    finished: bool  # it ends with ENDLIST: a VOD playlist that no longer changes

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzipped or b"")


def file_version(path: Path) -> FileVersion | None:
    """The version of the file at `path`, or None when there is none (blocking)."""
    try:
        return FileVersion.of(os.stat(path))
    except (FileNotFoundError, NotADirectoryError):
        return None


def load_playlist(path: Path, gzip_min_bytes: int = GZIP_MIN_BYTES) -> ServedPlaylist | None:
    """Read and encode a recorded playlist (blocking: run it in a worker thread)."""
    try:
        with path.open("rb") as file:
            version = FileVersion.of(os.fstat(file.fileno()))
            data = file.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    # A recording's playlist is ASCII (Relay writes it); anything else is replaced.
    text = data.decode("ascii", "replace")
    finished = text.rstrip().endswith(_ENDLIST.decode())
    body = (text if finished else listed_part(text)).encode("ascii")
    gzipped = (gzip.compress(body, compresslevel=GZIP_LEVEL)
               if len(body) >= gzip_min_bytes else None)
    return ServedPlaylist(version, body, gzipped, finished)


class RecordedPlaylists:
    """Recorded playlists, each read and encoded once per file version (LRU)."""

    def __init__(self, *, max_entries: int = RECORDED_PLAYLIST_CACHE_ENTRIES,
                 max_bytes: int = RECORDED_PLAYLIST_CACHE_BYTES,
                 gzip_min_bytes: int = GZIP_MIN_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.gzip_min_bytes = gzip_min_bytes
        self.hits = 0
        self.misses = 0  # loads: a new version, or one that was evicted
        self.bytes = 0  # held by the cached entries now
        self._entries: OrderedDict[Path, ServedPlaylist] = OrderedDict()
        self._loading: dict[tuple[Path, FileVersion], asyncio.Future[ServedPlaylist | None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, path: Path) -> ServedPlaylist | None:
        """The playlist at `path` as served, or None when the file does not exist."""
        version = await asyncio.to_thread(file_version, path)
        if version is None:
            self._forget(path)
            return None
        cached = self._entries.get(path)
        if cached is not None and cached.version == version:
            self.hits += 1
            self._entries.move_to_end(path)
            return cached
        key = (path, version)
        loading = self._loading.get(key)
        if loading is None:
            self.misses += 1
            loading = asyncio.ensure_future(
                asyncio.to_thread(load_playlist, path, self.gzip_min_bytes))
            self._loading[key] = loading
            loading.add_done_callback(lambda _: self._loading.pop(key, None))
        # Shielded: a requester that goes away does not cancel the load the others wait on.
        loaded = await asyncio.shield(loading)
        if loaded is None:
            self._forget(path)
        else:
            self._keep(path, loaded)
        return loaded

    def _keep(self, path: Path, playlist: ServedPlaylist) -> None:
        current = self._entries.get(path)
        if current is playlist or (
                current is not None and current.version.mtime_ns > playlist.version.mtime_ns):
            return  # a slower load of an older version finished after a newer one
        self._forget(path)
        if playlist.size > self.max_bytes:
            return  # served, but it would crowd out everything else
        self._entries[path] = playlist
        self.bytes += playlist.size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.size

    def _forget(self, path: Path) -> None:
        dropped = self._entries.pop(path, None)
        if dropped is not None:
            self.bytes -= dropped.size
