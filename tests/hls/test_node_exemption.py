"""Another node's proxied requests past the per-address cap (issue 19), over real sockets on
the playback listener as `relay serve` runs it: the lean server with uvicorn's h11 protocol
behind it ("lean"), and uvicorn's alone (`--playback-server asgi`). With
`--http-max-connections-per-ip 1` and one connection held, a second connection from the same
address is let in only when the address is a live node's and its request carries the hop
header; a stranger's hop header gets the per-address 503 on accept."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import pytest

from relay.hls.packager import HlsCounters
from relay.hls.routes import PlaybackDirectory, create_playback_app
from relay.hls.serve import PlaybackServer
from relay.hls.upstream import HOP_HEADER
from relay.http_limits import HttpCounters, HttpLimits, limited_protocol
from relay.store import Store
from relay.store.asset_files import AssetFiles
from testkit.lean import serving_lean, serving_protocol
from tests.hls.helpers.routes import FakeStore

pytestmark = pytest.mark.anyio

LIMITS = HttpLimits(max_connections_per_address=1)
HOP = f"{HOP_HEADER}: 1\r\n".encode()


def serving_asgi(app: object, counters: HttpCounters, trusted: Callable[[str], bool]
                 ) -> contextlib.AbstractAsyncContextManager[str]:
    """uvicorn's h11 protocol with Relay's limits alone on a socket."""
    limited = limited_protocol(LIMITS, counters)
    limited.table.nodes = trusted
    return serving_protocol(app, limited)


@contextlib.asynccontextmanager
async def listener(tmp_path: Path, mode: str, counters: HttpCounters,
                   trusted: Callable[[str], bool]) -> AsyncIterator[tuple[str, int]]:
    directory = PlaybackDirectory(cast(Store, FakeStore()), lambda _: None,
                                  AssetFiles(tmp_path))
    app = create_playback_app(directory, HlsCounters())
    opened: contextlib.AbstractAsyncContextManager[str]
    if mode == "lean":
        playback = PlaybackServer(directory, HlsCounters())
        opened = serving_lean(app, playback, LIMITS, counters, trusted=trusted)
    else:
        opened = serving_asgi(app, counters, trusted)
    async with opened as url:
        host, _, port = url.removeprefix("http://").rpartition(":")
        yield host, int(port)


async def ask(address: tuple[str, int], request: bytes, *, split: bool = False) -> bytes:
    """`request` on a new connection (in two writes with `split`); what the server sends
    before it closes or within 10 s."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        if split:
            writer.write(request[:20])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(request[20:])
        else:
            writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def request(method: str = "GET", path: str = "/NoSuchId1.m3u8", extra: bytes = b"") -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: relay\r\n%s\r\n" % (method.encode(), path.encode(), extra)


@pytest.mark.parametrize("mode", ["lean", "asgi"])
async def test_a_nodes_hop_request_passes_the_per_address_cap(tmp_path: Path,
                                                              mode: str) -> None:
    counters = HttpCounters()
    async with listener(tmp_path, mode, counters, lambda a: a == "127.0.0.1") as address:
        _, held = await asyncio.open_connection(*address)  # the address's share
        try:
            for sent, split in ((request(extra=HOP), False), (request(extra=HOP), True),
                                # A body: the lean server hands it to h11.
                                (request("POST", extra=HOP + b"content-length: 0\r\n"),
                                 False)):
                answer = await ask(address, sent, split=split)
                assert not answer.startswith(b"HTTP/1.1 503"), (sent, answer)
                assert answer.startswith(b"HTTP/1.1 "), answer
            assert counters.node_exemptions == 3 and counters.refused_per_address == 0
            # The node's address without the hop header: refused, at its first request.
            refused = await ask(address, request())
            assert refused.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in refused
            assert counters.refused_per_address == 1
        finally:
            held.close()


@pytest.mark.parametrize("mode", ["lean", "asgi"])
async def test_a_strangers_hop_header_gets_no_exemption(tmp_path: Path, mode: str) -> None:
    counters = HttpCounters()
    async with listener(tmp_path, mode, counters, lambda a: False) as address:
        _, held = await asyncio.open_connection(*address)
        try:
            refused = await ask(address, request(extra=HOP))
            assert refused.startswith(b"HTTP/1.1 503 "), refused
            assert counters.refused_per_address == 1 and counters.node_exemptions == 0
        finally:
            held.close()
