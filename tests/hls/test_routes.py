"""The playback routes in process: a packager fed synthetic media, an asset directory on disk,
and httpx talking ASGI. Timing, players and real encoders are the end-to-end tests' part;
here every status code, header and held request is checked deterministically."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Generator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from relay.hls import recorded, routes, serve
from relay.hls.disk import STORED_READS, StoredReads
from relay.hls.holding import HeldRequests
from relay.hls.http1 import Request, Response
from relay.hls.model import StoredMedia
from relay.hls.multivariant import VariantInfo
from relay.hls.recording import RecordingWriter, finalize
from relay.hls.request_counts import RequestKind
from relay.hls.routes import create_playback_app
from relay.hls.serve import PlaybackServer
from relay.store import Store
from relay.store.asset_files import AssetFiles
from relay.store.records import PlaybackId
from tests.hls.helpers.recording import record
from tests.hls.helpers.routes import ASSET, ASSET_ID, LIVE_ID, SIGNED_ID, Server
from tests.hls.playlist_checker import check_media_playlist, check_multivariant

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asgi", "lean"])
async def server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    async with Server(tmp_path, mode=request.param) as server:
        yield server


async def test_a_live_stream_before_its_first_segment_is_not_found(server: Server) -> None:
    server.feed(1.0)
    unknown = await server.get("/NoSuchId.m3u8")
    for path in (f"/{LIVE_ID}.m3u8", f"/{LIVE_ID}/rendition.m3u8", "/bad-id!.m3u8",
                 f"/{SIGNED_ID}.m3u8", f"/{LIVE_ID}/init-0.mp4"):
        response = await server.get(path)
        assert (response.status_code, response.text) == (404, unknown.text), path
    assert unknown.status_code == 404 and unknown.headers["access-control-allow-origin"] == "*"
    assert unknown.headers["cache-control"] == "no-store"
    assert server.counters.not_found == 6


async def test_live_playlists_media_and_headers(server: Server) -> None:
    server.feed(4.5)
    multivariant = await server.get(f"/{LIVE_ID}.m3u8")
    assert multivariant.status_code == 200
    assert multivariant.headers["content-type"] == "application/vnd.apple.mpegurl"
    check_multivariant(multivariant.text)
    assert f"\n{LIVE_ID}/rendition.m3u8\n" in multivariant.text
    assert 'CODECS="avc1.64001f,mp4a.40.2"' in multivariant.text

    media = await server.client.get(f"/{LIVE_ID}/rendition.m3u8",
                                    headers={"Accept-Encoding": "gzip"})
    assert media.status_code == 200 and media.headers["content-encoding"] == "gzip"
    assert media.headers["cache-control"] == routes.PLAYLIST_CACHE
    assert media.headers["access-control-allow-origin"] == "*"
    check_media_playlist(media.text)
    plain = await server.client.get(f"/{LIVE_ID}/rendition.m3u8",
                                    headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text == media.text

    part = await server.get(f"/{LIVE_ID}/0.1.m4s")
    assert part.status_code == 200 and part.content[4:8] == b"moof"
    assert part.headers["cache-control"] == routes.MEDIA_CACHE
    segment = await server.get(f"/{LIVE_ID}/0.m4s")
    assert segment.status_code == 200 and segment.content.startswith(part.content[:4])
    init = await server.get(f"/{LIVE_ID}/init-0.mp4")
    assert init.status_code == 200 and init.headers["cache-control"] == routes.INIT_CACHE
    for missing in ("9.m4s", "0.99.m4s", "init-7.mp4", "notes.txt", "0.m4s.bak"):
        assert (await server.get(f"/{LIVE_ID}/{missing}")).status_code == 404, missing


async def test_blocking_reload_returns_when_the_part_exists(server: Server) -> None:
    server.feed(2.5)
    playlist = server.live.playlist if server.live else None
    assert playlist is not None and playlist.next_part is not None
    msn, part = playlist.next_part
    request = asyncio.ensure_future(
        server.get(f"/{LIVE_ID}/rendition.m3u8", _HLS_msn=str(msn), _HLS_part=str(part)))
    await asyncio.sleep(0.05)
    assert not request.done()  # held: the part does not exist yet
    server.feed(0.4)
    response = await asyncio.wait_for(request, 2)
    assert response.status_code == 200
    assert f'URI="{msn}.{part}.m4s"' in response.text


async def test_a_part_past_the_end_of_a_segment_means_the_next_segments_first(
        server: Server) -> None:
    server.feed(4.5)
    response = await server.get(f"/{LIVE_ID}/rendition.m3u8", _HLS_msn="0", _HLS_part="50")
    assert response.status_code == 200 and 'URI="1.0.m4s"' in response.text


@pytest.mark.parametrize(("params", "reason"), [
    ({"_HLS_part": "1"}, "needs _HLS_msn"),
    ({"_HLS_msn": "9"}, "more than 2 past"),
    ({"_HLS_msn": "x"}, "non-negative integer"),
    ({"_HLS_msn": "1", "_HLS_skip": "NO"}, "YES or v2"),
])
async def test_bad_directives_are_400(server: Server, params: dict[str, str],
                                      reason: str) -> None:
    server.feed(2.5)
    response = await server.get(f"/{LIVE_ID}/rendition.m3u8", **params)
    assert response.status_code == 400 and reason in response.text


async def test_a_request_held_too_long_is_503(server: Server,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "hold_timeout", lambda target_duration: 0.1)
    monkeypatch.setattr(serve, "hold_timeout", lambda target_duration: 0.1)
    server.feed(2.5)
    response = await server.get(f"/{LIVE_ID}/rendition.m3u8", _HLS_msn="2")
    assert response.status_code == 503
    assert (server.counters.held_requests, server.counters.held_timeouts) == (1, 1)


async def test_the_end_releases_held_requests_with_the_whole_playlist(server: Server) -> None:
    server.feed(2.5)
    request = asyncio.ensure_future(server.get(f"/{LIVE_ID}/rendition.m3u8", _HLS_msn="2"))
    await asyncio.sleep(0.05)
    assert server.live is not None
    server.live.on_end()
    response = await asyncio.wait_for(request, 2)
    assert response.status_code == 200 and response.text.endswith("#EXT-X-ENDLIST\n")


async def test_the_hinted_part_is_held_until_complete(server: Server) -> None:
    server.feed(2.5)
    assert server.live is not None and server.live.playlist is not None
    hint = server.live.playlist.next_part
    assert hint is not None
    request = asyncio.ensure_future(server.get(f"/{LIVE_ID}/{hint[0]}.{hint[1]}.m4s"))
    await asyncio.sleep(0.05)
    assert not request.done()
    server.feed(0.4)
    response = await asyncio.wait_for(request, 2)
    assert response.status_code == 200 and response.content[4:8] == b"moof"
    # A part further ahead than the hint is not held: 404 at once.
    assert (await server.get(f"/{LIVE_ID}/{hint[0]}.{hint[1] + 3}.m4s")).status_code == 404


async def test_delta_updates_skip_old_segments(server: Server) -> None:
    server.feed(20)
    full = await server.get(f"/{LIVE_ID}/rendition.m3u8")
    delta = await server.get(f"/{LIVE_ID}/rendition.m3u8", _HLS_skip="YES")
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=" in delta.text
    assert len(delta.text) < len(full.text)
    check_media_playlist(delta.text)


async def test_assets_play_from_their_directory(server: Server, tmp_path: Path) -> None:
    directory = tmp_path / ASSET
    record(directory, [2.0, 2.0], first_msn=0)
    with (directory / "rendition.m3u8").open("a") as playlist:
        playlist.write("#EXTINF:2.0")  # an append caught half-way
    live = await server.get(f"/{ASSET_ID}/rendition.m3u8")
    assert live.status_code == 200 and live.text.endswith("1.m4s\n")
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in live.text
    assert live.headers["cache-control"] == routes.PLAYLIST_CACHE
    assert (await server.get(f"/{ASSET_ID}.m3u8")).status_code == 404  # no variant yet
    finalize(directory)
    RecordingWriter(directory).write_variant(VariantInfo(bandwidth=1000, codecs=("mp4a.40.2",)))
    assert (await server.get(f"/{ASSET_ID}.m3u8")).headers["cache-control"] == \
        routes.VOD_PLAYLIST_CACHE
    vod = await server.get(f"/{ASSET_ID}/rendition.m3u8")
    assert vod.text.endswith("#EXT-X-ENDLIST\n")
    assert vod.headers["cache-control"] == routes.VOD_PLAYLIST_CACHE
    segment = await server.get(f"/{ASSET_ID}/1.m4s")
    assert segment.status_code == 200 and segment.content == b"segment 1"
    assert segment.headers["cache-control"] == routes.MEDIA_CACHE
    for missing in ("5.m4s", "rendition.json", "..%2Frelay.db"):
        assert (await server.get(f"/{ASSET_ID}/{missing}")).status_code == 404, missing


async def test_lookups_are_cached_briefly(server: Server) -> None:
    server.feed(2.5)
    for _ in range(5):
        assert (await server.get(f"/{LIVE_ID}/rendition.m3u8")).status_code == 200
    assert server.store.lookups == 1


class GatedStore:
    """The store call of `PlaybackDirectory`, answered when the test opens `gate`."""

    def __init__(self) -> None:
        self.lookups = 0
        self.gate = asyncio.Event()
        self.deleted = False

    async def get_playback_id(self, playback_id: str) -> PlaybackId | None:
        self.lookups += 1
        await self.gate.wait()
        return None if self.deleted else PlaybackId(playback_id, "public", "asset", ASSET)


async def test_concurrent_and_just_expired_lookups_share_one_store_query(
        tmp_path: Path) -> None:
    store, now = GatedStore(), [100.0]
    directory = routes.PlaybackDirectory(cast(Store, store), lambda _: None,
                                         AssetFiles(tmp_path), clock=lambda: now[0])
    waiting = [asyncio.ensure_future(directory.resolve_signed(ASSET_ID)) for _ in range(50)]
    await asyncio.sleep(0)
    waiting[0].cancel()  # a request that goes away does not cancel the others' lookup
    await asyncio.sleep(0)
    store.gate.set()
    results = await asyncio.gather(*waiting[1:])
    assert store.lookups == 1
    assert {target for target, _ in results} == {AssetFiles(tmp_path).directory(ASSET)}
    # Just expired: answered from as it was while one query refreshes it.
    store.gate.clear()
    store.deleted = True
    now[0] += routes.LOOKUP_TTL + routes.LOOKUP_STALE / 2
    for _ in range(20):
        found, target, _ = directory.resolve_cached_signed(ASSET_ID)
        assert found and target is not None
    await asyncio.sleep(0)
    assert store.lookups == 2
    store.gate.set()
    await asyncio.sleep(0.01)
    assert directory.resolve_cached_signed(ASSET_ID) == (True, None, False)  # refreshed
    # Longer expired: not answered from; the caller awaits a query.
    now[0] += routes.LOOKUP_TTL + routes.LOOKUP_STALE
    assert directory.resolve_cached_signed(ASSET_ID) == (False, None, False)
    assert await directory.resolve_signed(ASSET_ID) == (None, False)
    assert store.lookups == 3


async def test_player_page_and_static_files(server: Server) -> None:
    page = await server.get(f"/player/{LIVE_ID}")
    assert page.status_code == 200 and f"/{LIVE_ID}.m3u8" in page.text
    assert (await server.get("/player/bad-id!")).status_code == 404
    assert (await server.get("/static/relay.db")).status_code == 404
    script = await server.get("/static/hls.min.js")  # built by make before pytest runs
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")


async def test_short_playlists_go_uncompressed(server: Server) -> None:
    server.feed(2.5)
    response = await server.client.get(f"/{LIVE_ID}.m3u8", headers={"Accept-Encoding": "gzip"})
    assert len(response.content) < routes.GZIP_MIN_BYTES
    assert "content-encoding" not in response.headers


@pytest.mark.parametrize(("header", "gzip"), [
    ("gzip", True), ("gzip, deflate, br", True), ("br;q=1.0, gzip;q=0.5", True),
    ("gzip;q=0", False), ("GZIP;Q=0.0", False), ("identity", False), ("", False),
    ("*", True), ("*;q=0", False), ("gzip;q=0, *", False), ("deflate, *;q=0.1", True),
    ("gzip;q=bad", False),
])
def test_accept_encoding_is_parsed(header: str, gzip: bool) -> None:
    assert routes.accepts_gzip(header) is gzip


async def test_a_hinted_part_that_never_completes_is_503(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "hold_timeout", lambda target_duration: 0.1)
    monkeypatch.setattr(serve, "hold_timeout", lambda target_duration: 0.1)
    server.feed(2.5)
    assert server.live is not None and server.live.playlist is not None
    hint = server.live.playlist.next_part
    assert hint is not None
    response = await server.get(f"/{LIVE_ID}/{hint[0]}.{hint[1]}.m4s")
    assert response.status_code == 503 and response.headers["cache-control"] == "no-store"


async def test_a_held_request_has_one_waiter_however_often_it_is_woken(
        server: Server) -> None:
    """A request held across many playlist changes creates no task per change: its waiter
    is made once, and one task per stream wakes the waiters."""
    server.feed(2.5)
    assert server.live is not None and server.live.playlist is not None
    wanted = (server.live.playlist.last_complete_msn or 0) + 2
    created: list[str] = []
    loop = asyncio.get_running_loop()

    def counting(loop: asyncio.AbstractEventLoop, coro: Generator[Any, None, Any]
                 | Coroutine[Any, Any, Any], **kwargs: Any) -> asyncio.Task[Any]:
        created.append(getattr(coro, "__qualname__", type(coro).__name__))
        return asyncio.Task(coro, loop=loop, **kwargs)

    # A request first: the connection (lean: a socket) is open and the lookup cached.
    assert (await server.get(f"/{LIVE_ID}/rendition.m3u8")).status_code == 200
    loop.set_task_factory(counting)
    try:
        request = asyncio.ensure_future(
            server.get(f"/{LIVE_ID}/rendition.m3u8", _HLS_msn=str(wanted)))
        wakes = 0
        while not request.done():
            server.feed(0.1)  # about one part each: a change the request is woken by
            wakes += 1
            for _ in range(5):
                await asyncio.sleep(0)
            assert wakes < 100, "the held request never completed"
        response = await request
    finally:
        loop.set_task_factory(None)
    assert response.status_code == 200 and f"\n{wanted}.m4s\n" in response.text
    assert wakes > 10
    # The request itself and at most one task that waits for the stream's changes (the
    # lean server holds the request without a task of its own).
    assert len(created) <= 2, created
    assert server.holds.waiters_created == 1 and server.holds.held == 0


@pytest.mark.parametrize("mode", ["asgi", "lean"])
async def test_held_requests_beyond_the_per_stream_cap_are_503_with_retry_after(
        tmp_path: Path, mode: str) -> None:
    async with Server(tmp_path, holds=HeldRequests(max_total=10, max_per_stream=2),
                      mode=mode) as server:
        server.feed(2.5)
        assert server.live is not None and server.live.playlist is not None
        hint = server.live.playlist.next_part
        assert hint is not None
        held = [asyncio.ensure_future(server.get(f"/{LIVE_ID}/rendition.m3u8",
                                                 _HLS_msn="1")),
                asyncio.ensure_future(server.get(f"/{LIVE_ID}/{hint[0]}.{hint[1]}.m4s"))]
        for _ in range(20):
            await asyncio.sleep(0)
        assert server.holds.held == 2
        for path, params in ((f"/{LIVE_ID}/rendition.m3u8", {"_HLS_msn": "1"}),
                             (f"/{LIVE_ID}/{hint[0]}.{hint[1]}.m4s", {})):
            refused = await server.get(path, **params)
            assert refused.status_code == 503, path
            assert refused.headers["retry-after"] == "1"
            assert refused.headers["cache-control"] == "no-store"
            assert "at most 2 per stream" in refused.text
        assert server.holds.refused == 2 and server.counters.held_requests == 0
        # What was not refused is served once the media arrives.
        server.feed(4.0)
        answers = await asyncio.gather(*held)
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        assert server.counters.held_requests == 2


class Reads:
    """Counts the reads of recording playlists and the gzip compressions, and the threads
    they ran on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opens: list[str] = []
        self.compressions: list[str] = []
        original_open = Path.open
        original_compress = gzip.compress

        def open_(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if path.name == "rendition.m3u8" and not set(mode) & set("wax+"):
                self.opens.append(threading.current_thread().name)
            return original_open(path, mode, *args, **kwargs)

        def compress(data: bytes, *args: Any, **kwargs: Any) -> bytes:
            self.compressions.append(threading.current_thread().name)
            return original_compress(data, *args, **kwargs)

        monkeypatch.setattr(Path, "open", open_)
        monkeypatch.setattr(gzip, "compress", compress)

    @property
    def on_the_loop(self) -> int:
        here = threading.current_thread().name
        return sum(name == here for name in self.opens + self.compressions)


async def test_a_recorded_playlist_is_read_and_gzipped_once_per_version_off_the_loop(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / ASSET
    record(directory, [2.0] * 40, first_msn=0)  # long enough to be gzipped
    reads = Reads(monkeypatch)
    gzip_ok = {"Accept-Encoding": "gzip"}
    path = f"/{ASSET_ID}/rendition.m3u8"
    first = await server.client.get(path, headers=gzip_ok)
    assert first.status_code == 200 and first.headers["content-encoding"] == "gzip"
    assert first.text.endswith("39.m4s\n") and "#EXT-X-PLAYLIST-TYPE:EVENT" in first.text
    for _ in range(4):
        again = await server.client.get(path, headers=gzip_ok)
        assert again.content == first.content
    plain = await server.client.get(path, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text == first.text
    assert (len(reads.opens), len(reads.compressions)) == (1, 1)
    assert reads.on_the_loop == 0

    # An appended segment is a new version of the file: read (and compressed) once more.
    record(directory, [2.0], first_msn=40)
    grown = await server.client.get(path, headers=gzip_ok)
    assert grown.text.endswith("40.m4s\n") and grown.text.startswith(first.text)
    await server.client.get(path, headers=gzip_ok)
    assert (len(reads.opens), len(reads.compressions)) == (2, 2)
    assert reads.on_the_loop == 0


async def test_a_finished_assets_playlists_serve_from_the_cache(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / ASSET
    record(directory, [2.0] * 40, first_msn=0)
    finalize(directory)
    RecordingWriter(directory).write_variant(VariantInfo(bandwidth=1000, codecs=("mp4a.40.2",)))
    reads = Reads(monkeypatch)
    for _ in range(3):
        vod = await server.client.get(f"/{ASSET_ID}/rendition.m3u8",
                                      headers={"Accept-Encoding": "gzip"})
        assert vod.text.endswith("#EXT-X-ENDLIST\n")
        assert vod.headers["cache-control"] == routes.VOD_PLAYLIST_CACHE
        multivariant = await server.get(f"/{ASSET_ID}.m3u8")
        assert multivariant.headers["cache-control"] == routes.VOD_PLAYLIST_CACHE
    assert (len(reads.opens), len(reads.compressions)) == (1, 1)
    assert server.recorded.misses == 1 and server.recorded.hits == 5
    # Deleting the asset's files ends it: the cache does not serve what is gone.
    (directory / "rendition.m3u8").unlink()
    assert (await server.get(f"/{ASSET_ID}/rendition.m3u8")).status_code == 404
    assert len(server.recorded) == 0
    assert recorded.RECORDED_PLAYLIST_CACHE_ENTRIES >= 1


async def test_live_requests_count_their_client_addresses_as_viewers(server: Server) -> None:
    server.feed(4.5)
    assert server.live is not None
    app = create_playback_app(server.directory, server.counters, holds=server.holds,
                              recorded=server.recorded)
    paths = (f"/{LIVE_ID}.m3u8", f"/{LIVE_ID}/rendition.m3u8")
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.1"):
        async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, client=(address, 40000)),
                base_url="http://relay.test") as player:
            for path in paths:
                assert (await player.get(path)).status_code == 200
    assert server.live.viewers.count(time.monotonic()) == 2
    await server.get(f"/{ASSET_ID}.m3u8")  # a recording is not a live viewer
    assert server.live.viewers.count(time.monotonic()) == 2


async def test_requests_are_counted_by_kind_and_status(server: Server) -> None:
    server.feed(4.5)
    for path, status in ((f"/{LIVE_ID}.m3u8", 200), ("/NoSuchId.m3u8", 404),
                         (f"/{LIVE_ID}/rendition.m3u8", 200), (f"/{LIVE_ID}/init-0.mp4", 200),
                         (f"/{LIVE_ID}/0.m4s", 200), (f"/{LIVE_ID}/0.m4s", 200),
                         (f"/{LIVE_ID}/1.0.m4s", 200), (f"/{LIVE_ID}/99.m4s", 404),
                         (f"/player/{LIVE_ID}", 200), ("/static/relay.db", 404),
                         (f"/{LIVE_ID}/notes.txt", 404), ("/favicon.ico", 404)):
        assert (await server.get(path)).status_code == status, path
    assert (await server.get(f"/{LIVE_ID}/rendition.m3u8", _HLS_part="1")).status_code == 400
    assert {(kind.value, status): count
            for (kind, status), count in server.counters.requests.answered.items()} == {
        ("multivariant", 200): 1, ("multivariant", 404): 1, ("media_playlist", 200): 1,
        ("media_playlist", 400): 1, ("init", 200): 1, ("segment", 200): 2,
        ("segment", 404): 1, ("part", 200): 1, ("player", 200): 1, ("static", 404): 1,
        ("other", 404): 2}


async def test_a_handler_that_raises_counts_as_500(server: Server,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(playback_id: str, params: object) -> str:
        raise RuntimeError("a bug")
    monkeypatch.setattr(routes, "render_player_page_for", broken)
    app = create_playback_app(server.directory, server.counters)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://relay.test") as client:
        assert (await client.get(f"/player/{LIVE_ID}")).status_code == 500
    assert dict(server.counters.requests.answered) == {(RequestKind.PLAYER, 500): 1}


async def test_blocking_reload_waits_are_observed(server: Server,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    server.feed(2.5)
    playlist = server.live.playlist if server.live else None
    assert playlist is not None and playlist.next_part is not None
    msn, part = playlist.next_part
    # Satisfied at once: not held, not observed.
    assert (await server.get(f"/{LIVE_ID}/rendition.m3u8", _HLS_msn="0")).status_code == 200
    assert server.counters.reload_wait.count == 0
    request = asyncio.ensure_future(
        server.get(f"/{LIVE_ID}/rendition.m3u8", _HLS_msn=str(msn), _HLS_part=str(part)))
    await asyncio.sleep(0.05)
    server.feed(0.4)
    assert (await asyncio.wait_for(request, 2)).status_code == 200
    wait = server.counters.reload_wait
    assert wait.count == 1 and wait.sum > 0
    first = wait.sum
    monkeypatch.setattr(routes, "hold_timeout", lambda target_duration: 0.1)
    monkeypatch.setattr(serve, "hold_timeout", lambda target_duration: 0.1)
    assert (await server.get(f"/{LIVE_ID}/rendition.m3u8", _HLS_msn="3")).status_code == 503
    assert wait.count == 2 and wait.sum - first >= 0.099  # held until the timeout


async def test_the_lean_server_answers_playback_itself_and_hands_over_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    answered: list[tuple[str, str, int]] = []
    monkeypatch.setattr(PlaybackServer, "answered", lambda self, request, response:
                        answered.append((request.path, response.kind, response.status)))
    async with Server(tmp_path, mode="lean") as server:
        server.feed(4.5)
        for path in (f"/{LIVE_ID}.m3u8", f"/{LIVE_ID}/rendition.m3u8", f"/{LIVE_ID}/0.m4s",
                     f"/{LIVE_ID}/0.1.m4s", f"/{LIVE_ID}/init-0.mp4", f"/{LIVE_ID}/9.m4s",
                     f"/{ASSET_ID}/rendition.m3u8"):
            assert (await server.get(path)).status_code in (200, 404)
        assert [(kind, status) for _, kind, status in answered] == [
            ("multivariant", 200), ("playlist", 200), ("segment", 200), ("part", 200),
            ("init", 200), ("segment", 404), ("playlist", 404)]
        page = await server.get(f"/player/{LIVE_ID}")
        assert page.status_code == 200 and f"/{LIVE_ID}.m3u8" in page.text
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-cache"
        assert answered[-1][1:] == ("player", 200)
        # A static file goes to the fallback, and the connection with it.
        assert (await server.get("/static/hls.min.js")).status_code == 200
        assert (await server.get(f"/{LIVE_ID}/rendition.m3u8")).status_code == 200
        assert len(answered) == 8


async def test_the_lean_server_counts_client_addresses_as_viewers(tmp_path: Path) -> None:
    async with Server(tmp_path) as server:
        server.feed(4.5)
        assert server.live is not None
        playback = PlaybackServer(server.directory, server.counters, holds=server.holds,
                                  recorded=server.recorded)
        await server.directory.resolve(LIVE_ID)  # cached: the answers come at once
        for address in ("192.0.2.1", "192.0.2.2", "192.0.2.1"):
            for path in (f"/{LIVE_ID}.m3u8", f"/{LIVE_ID}/rendition.m3u8"):
                answer = playback.handle(Request(False, path, "", "", address))
                assert isinstance(answer, Response) and answer.status == 200, path
        assert server.live.viewers.count(time.monotonic()) == 2
        playback.close()


async def test_segments_behind_the_live_edge_are_served_from_their_files(
        server: Server, tmp_path: Path) -> None:
    server.feed(12.5)
    packager = server.live
    assert packager is not None and packager.playlist is not None
    playlist = packager.playlist
    # As the recording does: each complete segment's file, then `store`.
    expected: dict[int, bytes] = {}
    for segment in playlist.segments:
        if segment.complete:
            expected[segment.msn] = b"".join(playlist.fragments(segment.msn))
            path = tmp_path / f"{segment.msn}.m4s"
            await asyncio.to_thread(path.write_bytes, expected[segment.msn])
            playlist.store(segment.msn, str(path))
    assert not playlist.fragments(1) and playlist.fragments(5)  # 1 left memory, 5 did not
    reads = STORED_READS.reads
    whole = await server.get(f"/{LIVE_ID}/1.m4s")
    assert whole.status_code == 200 and whole.content == expected[1]
    assert whole.headers["cache-control"] == routes.MEDIA_CACHE
    assert whole.headers["content-type"] == routes.MP4_TYPE
    first = playlist.segment(1)
    assert first is not None
    parts = [await server.get(f"/{LIVE_ID}/1.{part.index}.m4s") for part in first.parts]
    assert all(part.status_code == 200 for part in parts)
    assert b"".join(part.content for part in parts) == expected[1]
    assert STORED_READS.reads == reads + 1 + len(parts)
    # A file that is gone (the asset deleted mid-stream) is a 404, not an error.
    await asyncio.to_thread((tmp_path / "2.m4s").unlink)
    assert (await server.get(f"/{LIVE_ID}/2.m4s")).status_code == 404
    assert (await server.get(f"/{LIVE_ID}/2.0.m4s")).status_code == 404


async def test_concurrent_reads_of_the_same_bytes_are_shared(tmp_path: Path) -> None:
    path = tmp_path / "5.m4s"
    await asyncio.to_thread(path.write_bytes, bytes(range(256)) * 100)
    reads = StoredReads(threads=1)
    try:
        stored = StoredMedia(str(path), 256, 512)
        answers = await asyncio.gather(*(reads.read(stored) for _ in range(50)))
        assert all(answer is answers[0] for answer in answers)
        assert answers[0] == bytes(range(256)) * 2
        assert reads.reads == 1 and reads.failed == 0
        assert await reads.read(StoredMedia(str(path), 25_500, 512)) is None  # past the end
        assert await reads.read(StoredMedia(str(tmp_path / "gone"), 0, 1)) is None
        assert (reads.reads, reads.failed) == (3, 2)
    finally:
        reads.shutdown()


async def test_a_failing_store_fails_the_awaiting_requests_and_logs_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store, now = GatedStore(), [100.0]
    store.gate.set()
    directory = routes.PlaybackDirectory(cast(Store, store), lambda _: None,
                                         AssetFiles(tmp_path), clock=lambda: now[0])
    await directory.resolve_signed(ASSET_ID)
    broken = RuntimeError("the database is locked")

    async def failing(playback_id: str) -> PlaybackId | None:
        store.lookups += 1
        raise broken

    store.get_playback_id = failing  # type: ignore[method-assign]
    now[0] += routes.LOOKUP_TTL + routes.LOOKUP_STALE / 2
    for _ in range(3):  # just expired: answered as it was; each failed refresh is retried
        assert directory.resolve_cached_signed(ASSET_ID)[0]
        await asyncio.sleep(0.01)
    now[0] += routes.LOOKUP_STALE
    with pytest.raises(RuntimeError, match="locked"):
        await directory.resolve_signed(ASSET_ID)
    assert store.lookups == 1 + 4
    lines = [r for r in caplog.records if "looking up a playback id" in r.getMessage()]
    assert len(lines) == 1 and "locked" in lines[0].getMessage()
