"""A playback node without live streams, in this process: the lean playback server (with the
Starlette routes, images and playback, as its fallback) on 127.0.0.1, in a thread with its own
event loop, serving every live stream from the node a lookup names (`relay.hls.upstream`).
Tests and benchmarks use it as "node A" in front of a real `relay serve` that owns the stream
("node B"), so the owner lookup is injected here and nowhere in the product."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from starlette.applications import Starlette

from relay.hls.packager import HlsCounters
from relay.hls.routes import PlaybackDirectory, playback_routes
from relay.hls.serve import PlaybackServer
from relay.hls.upstream import OwnerProxy, UpstreamCounters
from relay.images.pool import DecodePool
from relay.images.routes import image_routes
from relay.store import Store
from relay.store.asset_files import AssetFiles
from relay.store.records import PlaybackId
from testkit.lean import serving_lean


class _PlaybackIds:
    """The one store call the playback directory makes."""

    def __init__(self, ids: dict[str, PlaybackId]) -> None:
        self.ids = ids

    async def get_playback_id(self, playback_id: str) -> PlaybackId | None:
        return self.ids.get(playback_id)


@dataclass
class PlaybackNode:
    """What a running node shows: its URL, the owner lookups it made, its upstream counts."""

    url: str = ""
    asked: list[str] = field(default_factory=list)
    upstream: UpstreamCounters = field(default_factory=UpstreamCounters)


def live_stream_id(playback_id: str, stream_id: str) -> dict[str, PlaybackId]:
    """The playback ids of a public live stream, as the node's store would have them."""
    return {playback_id: PlaybackId(playback_id, "public", "live_stream", stream_id)}


@contextlib.contextmanager
def serving_node(ids: dict[str, PlaybackId], owner_url: str, data_dir: Path
                 ) -> Iterator[PlaybackNode]:
    """Serve on 127.0.0.1 until the block ends; every live playback id of `ids` is owned by
    `owner_url`."""
    node = PlaybackNode()
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop: asyncio.Event | None = None
    failure: list[BaseException] = []

    async def lookup(playback_id: str) -> str | None:
        node.asked.append(playback_id)
        return owner_url

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        directory = PlaybackDirectory(cast(Store, _PlaybackIds(ids)), lambda _: None,
                                      AssetFiles(data_dir))
        proxy = OwnerProxy(lookup)
        node.upstream = proxy.fetcher.counters
        counters = HlsCounters()
        images = DecodePool()
        # The image routes first, as `relay serve` has them.
        app = Starlette(routes=[*image_routes(directory, pool=images, proxy=proxy),
                                *playback_routes(directory, counters, proxy=proxy)])
        playback = PlaybackServer(directory, counters, proxy=proxy)
        try:
            async with serving_lean(app, playback) as url:
                node.url = url
                started.set()
                await stop.wait()
        finally:
            await images.aclose()
            await proxy.aclose()

    def run() -> None:
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # reported by the caller's thread
            failure.append(exc)
        finally:
            started.set()
            loop.close()

    thread = threading.Thread(target=run, name="playback-node", daemon=True)
    thread.start()
    started.wait(10)
    if failure:
        raise failure[0]
    try:
        yield node
    finally:
        if stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        if failure:
            raise failure[0]
