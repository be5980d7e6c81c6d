"""The recorded-playlist cache: one load per file version, LRU within entries and bytes."""

from __future__ import annotations

import asyncio
import gzip
import os
from pathlib import Path

import pytest

from relay.hls import recorded
from relay.hls.recorded import RecordedPlaylists, load_playlist
from relay.hls.recording import RECORDING_PLAYLIST, finalize
from tests.hls.helpers.recording import record

pytestmark = pytest.mark.anyio


def playlist(directory: Path, segments: int = 40, first_msn: int = 0) -> Path:
    record(directory, [2.0] * segments, first_msn=first_msn)
    return directory / RECORDING_PLAYLIST


async def test_a_repeat_is_a_hit_and_a_change_is_a_miss(tmp_path: Path) -> None:
    cache = RecordedPlaylists()
    path = playlist(tmp_path)
    first = await cache.get(path)
    assert first is not None and not first.finished
    assert first.gzipped is not None and gzip.decompress(first.gzipped) == first.body
    for _ in range(3):
        assert await cache.get(path) is first
    assert (cache.misses, cache.hits) == (1, 3)

    record(tmp_path, [2.0], first_msn=40)  # an append: new size and mtime
    grown = await cache.get(path)
    assert grown is not None and grown.body.startswith(first.body)
    assert grown.body.endswith(b"40.m4s\n") and cache.misses == 2

    finalize(tmp_path)  # rewritten as VOD under a new inode
    done = await cache.get(path)
    assert done is not None and done.finished and done.body.endswith(b"#EXT-X-ENDLIST\n")
    assert cache.misses == 3 and len(cache) == 1
    assert cache.bytes == done.size


async def test_a_rewrite_with_the_same_size_and_mtime_is_still_a_new_version(
        tmp_path: Path) -> None:
    cache = RecordedPlaylists()
    path = playlist(tmp_path)
    before = await cache.get(path)
    assert before is not None
    stat = path.stat()
    replacement = tmp_path / "replacement"
    replacement.write_bytes(before.body.replace(b"#EXTINF:2.000", b"#EXTINF:1.999"))
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(replacement, path)
    after = await cache.get(path)
    assert after is not None and b"#EXTINF:1.999" in after.body


async def test_a_torn_append_is_cut_after_the_last_complete_entry(tmp_path: Path) -> None:
    path = playlist(tmp_path, segments=3)
    with path.open("a") as file:
        file.write("#EXTINF:2.0")
    loaded = load_playlist(path)
    assert loaded is not None and loaded.body.endswith(b"2.m4s\n")


async def test_a_missing_file_is_none_and_forgotten(tmp_path: Path) -> None:
    cache = RecordedPlaylists()
    assert await cache.get(tmp_path / "nowhere" / RECORDING_PLAYLIST) is None
    path = playlist(tmp_path)
    assert await cache.get(path) is not None
    path.unlink()
    assert await cache.get(path) is None
    assert (len(cache), cache.bytes) == (0, 0)


async def test_the_cache_is_bounded_in_entries_least_recently_used_first(
        tmp_path: Path) -> None:
    cache = RecordedPlaylists(max_entries=3)
    paths = [playlist(tmp_path / f"asset{i}", segments=5) for i in range(4)]
    for path in paths[:3]:
        await cache.get(path)
    await cache.get(paths[0])  # now the most recently used
    await cache.get(paths[3])  # evicts paths[1], the least recently used
    assert len(cache) == 3
    misses = cache.misses
    await cache.get(paths[0])
    await cache.get(paths[2])
    assert cache.misses == misses  # still cached
    await cache.get(paths[1])
    assert cache.misses == misses + 1  # was evicted


async def test_the_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    one = await RecordedPlaylists().get(playlist(tmp_path / "probe"))
    assert one is not None
    cache = RecordedPlaylists(max_bytes=int(one.size * 2.5))
    paths = [playlist(tmp_path / f"asset{i}") for i in range(5)]
    for path in paths:
        assert await cache.get(path) is not None
        assert cache.bytes <= cache.max_bytes
    assert len(cache) == 2
    # One playlist larger than the whole budget is served but not kept.
    small = RecordedPlaylists(max_bytes=one.size - 1)
    assert await small.get(paths[0]) is not None
    assert (len(small), small.bytes) == (0, 0)


async def test_concurrent_misses_on_one_version_share_one_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = playlist(tmp_path)
    loads = []

    def counted(path: Path, gzip_min_bytes: int = recorded.GZIP_MIN_BYTES
                ) -> recorded.ServedPlaylist | None:
        loads.append(path)
        return load_playlist(path, gzip_min_bytes)

    monkeypatch.setattr(recorded, "load_playlist", counted)
    cache = RecordedPlaylists()
    results = await asyncio.gather(*(cache.get(path) for _ in range(10)))
    assert len(loads) == 1 and len({id(r) for r in results}) == 1
    assert cache.misses == 1


async def test_short_playlists_have_no_gzip_form(tmp_path: Path) -> None:
    path = tmp_path / RECORDING_PLAYLIST
    path.write_text("#EXTM3U\n#EXTINF:2.0,\n0.m4s\n")
    loaded = await RecordedPlaylists().get(path)
    assert loaded is not None and loaded.gzipped is None
