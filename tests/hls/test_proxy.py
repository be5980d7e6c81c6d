"""Two playback nodes in process: the owner (the playback routes with a fed packager, served by
the lean server on a socket) and a node without the stream that serves it from the owner
through `relay.hls.upstream`, by each of its two servers (the Starlette routes, the lean one).
The viewer's answers must be the owner's, blocking reloads included, and many viewers of one
part on the node must cost the owner one request."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import httpx
import jwt
import pytest

from relay.api.signing import new_key_pair
from relay.hls.packager import HlsCounters, LivePackager
from relay.hls.routes import PlaybackDirectory, create_playback_app
from relay.hls.serve import PlaybackServer
from relay.hls.signed import PlaybackGate
from relay.hls.upstream import OwnerProxy
from relay.playback.access import PlaybackAccess
from relay.store import Store
from relay.store.asset_files import AssetFiles
from testkit.lean import serving_lean
from tests.hls.helpers.routes import ASSET_ID, LIVE_ID, SIGNED_ID, FakeStore, Server
from tests.hls.playlist_checker import check_media_playlist, check_multivariant

pytestmark = pytest.mark.anyio


class Node:
    """A playback node where nothing is live: `owner_url` (or None) owns every live stream."""

    def __init__(self, tmp_path: Path, mode: str, owner_url: str | None) -> None:
        self.mode = mode
        self.owner_url = owner_url
        self.asked: list[str] = []
        self.live: LivePackager | None = None
        self.store = FakeStore()
        self.directory = PlaybackDirectory(cast(Store, self.store), lambda _: self.live,
                                           AssetFiles(tmp_path / "node"))
        self.proxy = OwnerProxy(self._lookup)
        self.counters = HlsCounters()
        self.app = create_playback_app(self.directory, self.counters, proxy=self.proxy)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                        base_url="http://node.test", timeout=10)
        self._stack = contextlib.AsyncExitStack()

    async def _lookup(self, playback_id: str) -> str | None:
        self.asked.append(playback_id)
        return self.owner_url

    async def __aenter__(self) -> Node:
        if self.mode == "lean":
            playback = PlaybackServer(self.directory, self.counters, proxy=self.proxy)
            url = await self._stack.enter_async_context(serving_lean(self.app, playback))
            self.client = httpx.AsyncClient(base_url=url, timeout=10)
        await self._stack.enter_async_context(self.client)
        self._stack.push_async_callback(self.proxy.aclose)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


@pytest.fixture
async def owner(tmp_path: Path) -> AsyncIterator[Server]:
    async with Server(tmp_path / "owner", mode="lean") as server:
        yield server


@pytest.fixture(params=["asgi", "lean"])
async def node(tmp_path: Path, owner: Server, request: pytest.FixtureRequest
               ) -> AsyncIterator[Node]:
    assert owner.client.base_url is not None
    async with Node(tmp_path, request.param, str(owner.client.base_url).rstrip("/")) as node:
        yield node


def owner_requests(owner: Server) -> int:
    return owner.counters.playlist_requests + owner.counters.media_requests


async def test_the_node_answers_what_the_owner_answers(owner: Server, node: Node) -> None:
    owner.feed(4.5)
    for path, headers in [(f"/{LIVE_ID}.m3u8", {}), (f"/{LIVE_ID}/rendition.m3u8", {}),
                          (f"/{LIVE_ID}/rendition.m3u8", {"accept-encoding": "gzip"}),
                          (f"/{LIVE_ID}/rendition.m3u8", {"accept-encoding": "identity"}),
                          (f"/{LIVE_ID}/init-0.mp4", {}), (f"/{LIVE_ID}/0.m4s", {}),
                          (f"/{LIVE_ID}/0.1.m4s", {}), (f"/{LIVE_ID}/9.m4s", {}),
                          (f"/{LIVE_ID}/rendition.m3u8?_HLS_msn=1&_HLS_part=0", {}),
                          (f"/{LIVE_ID}/rendition.m3u8?_HLS_msn=1&_HLS_skip=YES", {}),
                          (f"/{LIVE_ID}/rendition.m3u8?_HLS_part=1", {}),
                          (f"/{LIVE_ID}/rendition.m3u8?_HLS_msn=99", {})]:
        direct = await owner.client.get(path, headers=headers)
        relayed = await node.client.get(path, headers=headers)
        assert (relayed.status_code, relayed.content) == (direct.status_code,
                                                          direct.content), path
        for name in ("content-type", "cache-control", "content-encoding",
                     "access-control-allow-origin"):
            assert relayed.headers.get(name) == direct.headers.get(name), (path, name)
        assert "connection" not in relayed.headers or relayed.headers["connection"] != "close"
    check_multivariant((await node.client.get(f"/{LIVE_ID}.m3u8")).text)
    check_media_playlist((await node.client.get(f"/{LIVE_ID}/rendition.m3u8")).text)
    assert node.asked == [LIVE_ID]  # cached lookup
    # HEAD: the headers without the body.
    head = await node.client.head(f"/{LIVE_ID}/0.1.m4s")
    assert head.status_code == 200 and head.content == b""


async def test_a_blocking_reload_is_held_by_the_owner_and_shared_by_the_nodes_viewers(
        owner: Server, node: Node) -> None:
    owner.feed(2.5)
    assert owner.live is not None and owner.live.playlist is not None
    hint = owner.live.playlist.next_part
    assert hint is not None
    msn, part = hint
    before = owner_requests(owner)
    reloads = [asyncio.ensure_future(node.client.get(
        f"/{LIVE_ID}/rendition.m3u8", params={"_HLS_msn": str(msn), "_HLS_part": str(part)}))
        for _ in range(20)]
    parts = [asyncio.ensure_future(node.client.get(f"/{LIVE_ID}/{msn}.{part}.m4s"))
             for _ in range(100)]
    await asyncio.sleep(0.3)
    assert not any(r.done() for r in (*reloads, *parts))  # held: the part is not cut yet
    owner.feed(0.4)
    answers = await asyncio.wait_for(asyncio.gather(*reloads, *parts), 10)
    assert all(a.status_code == 200 for a in answers)
    assert all(f'URI="{msn}.{part}.m4s"' in a.text for a in answers[:20])
    assert len({a.content for a in answers[20:]}) == 1
    assert answers[20].content[4:8] == b"moof"
    # One reload and one part request reached the owner (its own counts, per request).
    assert owner_requests(owner) - before == 2
    fetcher = node.proxy.fetcher
    # (Viewers beyond the test client's 100 connections arrive later: from the cache.)
    assert fetcher.counters.requests == 2
    assert fetcher.counters.coalesced + fetcher.counters.cache_hits == 118
    # A later viewer of that part: from the node's cache.
    late = await node.client.get(f"/{LIVE_ID}/{msn}.{part}.m4s")
    assert late.content == answers[20].content and owner_requests(owner) - before == 2


async def test_a_stream_live_here_or_an_unknown_id_never_asks_who_owns_it(
        owner: Server, node: Node) -> None:
    owner.feed(2.5)
    node.live = owner.live  # live on this node too
    assert (await node.client.get(f"/{LIVE_ID}/rendition.m3u8")).status_code == 200
    assert (await node.client.get("/NoSuchId1.m3u8")).status_code == 404
    assert (await node.client.get("/NoSuchId1/0.m4s")).status_code == 404
    assert (await node.client.get(f"/{ASSET_ID}/rendition.m3u8")).status_code == 404
    assert node.asked == [] and owner_requests(owner) == 0


async def test_no_other_owner_is_a_404(owner: Server, node: Node) -> None:
    node.owner_url = None
    owner.feed(2.5)
    for path in (f"/{LIVE_ID}.m3u8", f"/{LIVE_ID}/rendition.m3u8", f"/{LIVE_ID}/0.0.m4s"):
        assert (await node.client.get(path)).status_code == 404, path
    assert owner_requests(owner) == 0


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_owner_is_a_503_with_the_mux_envelope(
        owner: Server, node: Node) -> None:
    node.owner_url = f"http://127.0.0.1:{closed_port()}"
    for path in (f"/{LIVE_ID}.m3u8", f"/{LIVE_ID}/rendition.m3u8?_HLS_msn=3",
                 f"/{LIVE_ID}/0.0.m4s"):
        answer = await node.client.get(path)
        assert answer.status_code == 503, path
        assert answer.headers["retry-after"] == "1"
        assert answer.headers["access-control-allow-origin"] == "*"
        error = answer.json()["error"]
        assert error["type"] == "service_unavailable"
        assert node.owner_url in error["messages"][0]
    assert node.asked == [LIVE_ID] * 3  # each failure sends the next request to the lookup


async def test_a_request_from_another_node_is_never_forwarded_again(
        owner: Server, node: Node) -> None:
    owner.feed(2.5)
    for path in (f"/{LIVE_ID}.m3u8", f"/{LIVE_ID}/rendition.m3u8", f"/{LIVE_ID}/0.0.m4s"):
        answer = await node.client.get(path, headers={"x-relay-hop": "1"})
        assert answer.status_code == 404, path
    assert node.asked == [] and owner_requests(owner) == 0


async def test_two_nodes_that_each_think_the_other_owns_the_stream_answer_404(
        tmp_path: Path) -> None:
    async with Node(tmp_path / "a", "lean", None) as first, \
            Node(tmp_path / "b", "lean", None) as second:
        first.owner_url = str(second.client.base_url).rstrip("/")
        second.owner_url = str(first.client.base_url).rstrip("/")
        answer = await first.client.get(f"/{LIVE_ID}/rendition.m3u8")
        assert answer.status_code == 404
        assert first.asked == [LIVE_ID] and second.asked == []
        assert first.proxy.fetcher.counters.requests == 1


async def test_a_failing_owner_lookup_is_a_503(owner: Server, node: Node) -> None:
    async def broken(playback_id: str) -> str | None:
        raise ConnectionError("the store is down")

    node.proxy.lookup = broken
    answer = await node.client.get(f"/{LIVE_ID}/rendition.m3u8")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert answer.json()["error"]["type"] == "service_unavailable"


async def test_a_signed_stream_plays_through_the_node_with_the_owners_decisions(
        tmp_path: Path) -> None:
    private_b64, public_pem = new_key_pair()
    access = PlaybackAccess()
    access.verifier.keys.add("K" * 40, public_pem)
    token = jwt.encode({"sub": SIGNED_ID, "aud": "v", "exp": int(time.time()) + 300},
                       base64.b64decode(private_b64), algorithm="RS256",
                       headers={"kid": "K" * 40})
    async with Server(tmp_path / "owner", mode="lean", gate=PlaybackGate(access)) as owner:
        owner.feed(4.5)
        for mode in ("asgi", "lean"):
            async with Node(tmp_path / mode, mode,
                            str(owner.client.base_url).rstrip("/")) as node:
                multivariant = await node.client.get(f"/{SIGNED_ID}.m3u8",
                                                     params={"token": token})
                assert multivariant.status_code == 200, multivariant.text
                [uri] = re.findall(r"^[^#\n].*$", multivariant.text, re.MULTILINE)
                assert uri.startswith(f"{SIGNED_ID}/rendition.m3u8?session=")
                media = await node.client.get(f"/{uri}")
                assert media.status_code == 200
                part = re.search(r'URI="(0\.1\.m4s\?session=[^"]+)"', media.text)
                assert part is not None, media.text
                got = await node.client.get(f"/{SIGNED_ID}/{part.group(1)}")
                assert got.status_code == 200 and got.content[4:8] == b"moof"
                # Refusals are the owner's, in its envelope.
                refused = await node.client.get(f"/{SIGNED_ID}/0.1.m4s")
                assert refused.status_code == 403
                assert refused.json()["error"]["type"] == "forbidden"
                bad = await node.client.get(f"/{SIGNED_ID}.m3u8", params={"token": "x.y.z"})
                assert bad.status_code == 403
