"""What test_routes.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import cast

import httpx

from relay.hls.holding import HeldRequests
from relay.hls.packager import HlsCounters, LivePackager
from relay.hls.recorded import RecordedPlaylists
from relay.hls.routes import PlaybackDirectory, create_playback_app
from relay.hls.serve import PlaybackServer
from relay.hls.signed import PlaybackGate
from relay.store import Store
from relay.store.asset_files import AssetFiles
from relay.store.records import PlaybackId
from testkit.lean import serving_lean
from tests.hls.helpers.packager import Feeder, av

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
    """The playback routes with a fed packager, served by `mode`: "asgi" (the Starlette
    routes through httpx's ASGI transport) or "lean" (`relay.hls.serve` on a socket, the
    Starlette app behind it as the fallback). `start` before use."""

    def __init__(self, tmp_path: Path, holds: HeldRequests | None = None,
                 mode: str = "asgi", gate: PlaybackGate | None = None) -> None:
        self.mode = mode
        self.feeder = Feeder("low")
        self.feeder.tracks()
        self.live: LivePackager | None = self.feeder.packager
        self.store = FakeStore()
        self.assets = AssetFiles(tmp_path)
        self.directory = PlaybackDirectory(cast(Store, self.store),
                                           lambda stream_id: self.live, self.assets)
        self.counters = HlsCounters()
        self.holds = holds if holds is not None else HeldRequests()
        self.recorded = RecordedPlaylists()
        self.gate = gate
        self.app = create_playback_app(self.directory, self.counters, holds=self.holds,
                                       recorded=self.recorded, gate=gate)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                        base_url="http://relay.test")
        self.fed_ms = 0
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Server:
        if self.mode == "lean":
            playback = PlaybackServer(self.directory, self.counters, holds=self.holds,
                                      recorded=self.recorded, gate=self.gate)
            url = await self._stack.enter_async_context(serving_lean(self.app, playback))
            self.client = httpx.AsyncClient(base_url=url)
        await self._stack.enter_async_context(self.client)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def feed(self, seconds: float) -> None:
        self.feeder.frames(av(seconds, start=self.fed_ms))
        self.fed_ms += round(seconds * 1000)

    async def get(self, path: str, **params: str) -> httpx.Response:
        return await self.client.get(path, params=params)
