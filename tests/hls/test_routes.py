"""The playback routes in process: a packager fed synthetic media, an asset directory on disk,
and httpx talking ASGI. Timing, players and real encoders are the end-to-end tests' part;
here every status code, header and held request is checked deterministically."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import httpx
import pytest

from relay.hls import routes
from relay.hls.model import LatencyMode
from relay.hls.packager import HlsCounters, LivePackager
from relay.hls.playlist import VariantInfo
from relay.hls.recording import RecordingWriter, finalize
from relay.hls.routes import PlaybackDirectory, create_playback_app
from relay.store import Store
from relay.store.asset_files import AssetFiles
from relay.store.records import PlaybackId
from tests.hls.playlist_checker import check_media_playlist, check_multivariant
from tests.hls.test_packager import Feeder, av
from tests.hls.test_recording import record

pytestmark = pytest.mark.anyio

LIVE_ID = "LiveLiveLive1"
ASSET_ID = "AssetAsset1"
SIGNED_ID = "SignedSigned1"
ASSET = "asset0001"
STREAM = "stream0001"


class FakeStore:
    """The one store call the routes make."""

    def __init__(self) -> None:
        self.lookups = 0
        self.ids = {
            LIVE_ID: PlaybackId(LIVE_ID, "public", "live_stream", STREAM),
            ASSET_ID: PlaybackId(ASSET_ID, "public", "asset", ASSET),
            SIGNED_ID: PlaybackId(SIGNED_ID, "signed", "live_stream", STREAM),
        }

    async def get_playback_id(self, playback_id: str) -> PlaybackId | None:
        self.lookups += 1
        return self.ids.get(playback_id)


class Server:
    def __init__(self, tmp_path: Path) -> None:
        self.feeder = Feeder(LatencyMode.LOW)
        self.feeder.tracks()
        self.live: LivePackager | None = self.feeder.packager
        self.store = FakeStore()
        self.assets = AssetFiles(tmp_path)
        self.directory = PlaybackDirectory(cast(Store, self.store),
                                           lambda stream_id: self.live, self.assets)
        self.counters = HlsCounters()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(
                app=create_playback_app(self.directory, self.counters)),
            base_url="http://relay.test")
        self.fed_ms = 0

    def feed(self, seconds: float) -> None:
        self.feeder.frames(av(seconds, start=self.fed_ms))
        self.fed_ms += round(seconds * 1000)

    async def get(self, path: str, **params: str) -> httpx.Response:
        return await self.client.get(path, params=params)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    server = Server(tmp_path)
    async with server.client:
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
    server.feed(2.5)
    assert server.live is not None and server.live.playlist is not None
    hint = server.live.playlist.next_part
    assert hint is not None
    response = await server.get(f"/{LIVE_ID}/{hint[0]}.{hint[1]}.m4s")
    assert response.status_code == 503 and response.headers["cache-control"] == "no-store"
