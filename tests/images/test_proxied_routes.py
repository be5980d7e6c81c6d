"""Images of a live stream another node owns (issue 19): the node's image routes answer with
the owner's answer, fetched through `relay.hls.upstream.OwnerProxy`. The owner is the image
routes on a real socket (uvicorn), drawing from a recording; the node is the image routes
over ASGI with a proxy whose lookup names the owner. The node's own per-client rate limit
and queue bound still apply, identical requests share one fetch, and nothing is kept longer
than the owner's Cache-Control allows."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from relay.hls.packager import LivePackager
from relay.hls.upstream import HOP_HEADER, OwnerProxy
from relay.images import routes
from relay.images.pool import ClientRates, DecodePool
from testkit.lean import serving_protocol
from tests.images.helpers.jobs import GATE_ENV, FileGate, gated_thumbnail, started
from tests.images.helpers.routes import recording

__all__ = ["recording"]  # fixtures, defined in tests.images.helpers.routes

pytestmark = pytest.mark.anyio

LIVE_ID = "live1"


class OwnerDirectory:
    """The owner: `LIVE_ID` plays the recording (what it draws is not the point here)."""

    def __init__(self, recording: Path) -> None:
        self.recording = recording

    async def resolve_signed(self, playback_id: str
                             ) -> tuple[LivePackager | Path | None, bool]:
        return (self.recording if playback_id == LIVE_ID else None), False

    def live_elsewhere(self, playback_id: str) -> bool:
        return False


class NodeDirectory:
    """The node: nothing plays here; `LIVE_ID` is a live stream live elsewhere."""

    async def resolve_signed(self, playback_id: str
                             ) -> tuple[LivePackager | Path | None, bool]:
        return None, False

    def live_elsewhere(self, playback_id: str) -> bool:
        return playback_id == LIVE_ID


class Pair:
    def __init__(self, owner_pool: DecodePool, node_pool: DecodePool, proxy: OwnerProxy,
                 owner: httpx.AsyncClient, node: httpx.AsyncClient) -> None:
        self.owner_pool, self.node_pool, self.proxy = owner_pool, node_pool, proxy
        self.owner, self.node = owner, node
        self.asked: list[str] = []


@contextlib.asynccontextmanager
async def pair(recording: Path, *, node_pool: DecodePool | None = None,
               node_rates: ClientRates | None = None,
               owner_rates: ClientRates | None = None,
               owner_nodes: Callable[[str], bool] | None = None,
               owner_url: str | None = "") -> AsyncIterator[Pair]:
    """An owner and a node; `owner_url` None: the lookup finds no other owner;
    `owner_nodes`: the addresses the owner knows as live nodes'."""
    owner_pool = DecodePool()
    node_pool = node_pool if node_pool is not None else DecodePool()
    owner_app = Starlette(routes=routes.image_routes(
        OwnerDirectory(recording), pool=owner_pool, nodes=owner_nodes,
        rates=owner_rates if owner_rates is not None else ClientRates(rate=1000, burst=1000)))
    async with serving_protocol(owner_app, "h11") as address, \
            contextlib.AsyncExitStack() as stack:
        url = f"http://{address}"
        asked: list[str] = []

        async def lookup(playback_id: str) -> str | None:
            asked.append(playback_id)
            return url if owner_url == "" else owner_url

        # The owner lookup's cache does not expire here (OWNER_LOOKUP_TTL is wall time, and
        # the owner's first image waits for its worker process to start).
        proxy = OwnerProxy(lookup, clock=lambda: 0.0)
        stack.push_async_callback(proxy.aclose)
        node_app = Starlette(routes=routes.image_routes(NodeDirectory(), pool=node_pool,
                                                        rates=node_rates, proxy=proxy))
        owner = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=10))
        node = await stack.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app=node_app), base_url="http://node.test",
            timeout=10))
        both = Pair(owner_pool, node_pool, proxy, owner, node)
        both.asked = asked
        yield both
    await owner_pool.aclose()
    await node_pool.aclose()


async def test_the_node_answers_the_owners_images(recording: Path) -> None:
    async with pair(recording) as two:
        for path in (f"/{LIVE_ID}/thumbnail.jpg?time=1.6&width=32",
                     f"/{LIVE_ID}/thumbnail.png", f"/{LIVE_ID}/animated.gif?end=1&fps=5",
                     f"/{LIVE_ID}/storyboard.vtt", f"/{LIVE_ID}/storyboard.webp",
                     f"/{LIVE_ID}/thumbnail.jpg?time=9"):  # the owner's 400: past the media
            relayed = await two.node.get(path)
            direct = await two.owner.get(path)
            assert (relayed.status_code, relayed.content) == (direct.status_code,
                                                              direct.content), path
            for name in ("content-type", "cache-control", "access-control-allow-origin"):
                assert relayed.headers.get(name) == direct.headers.get(name), (path, name)
        assert relayed.status_code == 400
        assert two.asked == [LIVE_ID]  # the lookup is cached
        # The owner's Cache-Control is not immutable: nothing kept on the node, each new
        # request is a new fetch.
        fetcher = two.proxy.fetcher
        assert len(fetcher.cache) == 0 and fetcher.counters.requests == 6
        await two.node.get(f"/{LIVE_ID}/storyboard.vtt")
        assert fetcher.counters.requests == 7 and fetcher.counters.cache_hits == 0
        # A bad parameter is the node's own 400: the owner is not asked.
        bad = await two.node.get(f"/{LIVE_ID}/thumbnail.jpg?width=big")
        assert bad.status_code == 400 and fetcher.counters.requests == 7


async def test_identical_requests_at_once_share_one_fetch(recording: Path) -> None:
    async with pair(recording) as two:
        answers = await asyncio.gather(*(two.node.get(f"/{LIVE_ID}/thumbnail.jpg?time=0.5")
                                         for _ in range(10)))
        assert {a.status_code for a in answers} == {200}
        assert len({a.content for a in answers}) == 1
        assert two.proxy.fetcher.counters.requests == 1
        assert two.owner_pool.counters.requests == 1


async def test_the_nodes_rate_limit_charges_each_fetch_it_starts(recording: Path) -> None:
    async with pair(recording, node_rates=ClientRates(rate=0.01, burst=2)) as two:
        for width in ("10", "20"):
            assert (await two.node.get(f"/{LIVE_ID}/thumbnail.jpg?width={width}")
                    ).status_code == 200
        limited = await two.node.get(f"/{LIVE_ID}/thumbnail.jpg?width=30")
        assert limited.status_code == 429, limited.text
        assert limited.json()["error"]["type"] == "too_many_requests"
        assert int(limited.headers["retry-after"]) >= 1
        assert two.proxy.fetcher.counters.requests == 2  # the owner was not asked


async def test_the_owner_charges_a_known_nodes_requests_to_no_rate(recording: Path) -> None:
    """All of a node's viewers reach the owner from the node's address: the node charged
    each of them, so the owner does not charge that address, if it is a live node's. Any
    other address with the hop header is charged as usual (and its 429 reaches the viewer
    through the node)."""
    paths = [f"/{LIVE_ID}/thumbnail.jpg?width={width}" for width in (10, 20, 30)]
    async with pair(recording, owner_rates=ClientRates(rate=0.01, burst=1),
                    owner_nodes=lambda address: address == "127.0.0.1") as two:
        assert [(await two.node.get(path)).status_code for path in paths] == [200] * 3
    async with pair(recording, owner_rates=ClientRates(rate=0.01, burst=1),
                    owner_nodes=lambda address: False) as two:
        answers = [await two.node.get(path) for path in paths]
        assert [a.status_code for a in answers] == [200, 429, 429]
        assert int(answers[1].headers["retry-after"]) >= 1
        assert answers[1].json()["error"]["type"] == "too_many_requests"
    # Without the hop header, a node's address is a client like any other.
    async with pair(recording, owner_rates=ClientRates(rate=0.01, burst=1),
                    owner_nodes=lambda address: True) as two:
        assert [(await two.owner.get(path)).status_code for path in paths] == [200, 429, 429]


async def test_the_nodes_queue_bound_counts_fetches_in_flight(
        recording: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = FileGate(tmp_path / "gate")  # the owner's decode, held until the test opens it
    monkeypatch.setenv(GATE_ENV, str(gate.directory))
    monkeypatch.setattr(routes, "render_thumbnail", gated_thumbnail)
    async with pair(recording, node_pool=DecodePool(workers=1, max_pending=1)) as two:
        first = asyncio.create_task(two.node.get(f"/{LIVE_ID}/thumbnail.jpg?time=0"))
        await started(gate)
        assert two.node_pool.pending == 1
        refused = await two.node.get(f"/{LIVE_ID}/thumbnail.jpg?time=1")
        gate.open()
        done = await first
        assert done.status_code == 200 and done.content == b"jpeg"
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "service_unavailable"
        assert two.proxy.fetcher.counters.requests == 1
        assert two.node_pool.pending == 0


async def test_a_hop_request_or_no_other_owner_is_a_404(recording: Path) -> None:
    async with pair(recording) as two:
        hop = await two.node.get(f"/{LIVE_ID}/thumbnail.jpg", headers={HOP_HEADER: "1"})
        assert hop.status_code == 404 and two.asked == []
    async with pair(recording, owner_url=None) as two:
        answer = await two.node.get(f"/{LIVE_ID}/thumbnail.jpg")
        assert answer.status_code == 404 and answer.json()["error"]["type"] == "not_found"
        assert two.asked == [LIVE_ID] and two.proxy.fetcher.counters.requests == 0
