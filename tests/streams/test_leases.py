"""Admission with stream leases (issue 19): two nodes' registries on one database (SQLite and
PostgreSQL), each with its `ClusterNode`, sharing a hand-moved clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import pytest

from relay.cluster import ClusterNode
from relay.store import Store
from relay.streams.registry import IngestRegistry, PublishRefused, Refusal
from tests.streams.helpers.sessions import FakePublisher, new_stream, push, settle

pytestmark = pytest.mark.anyio

TIMEOUT = 1.0  # --node-timeout: the heartbeat runs every third of it


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Node:
    store: Store
    cluster: ClusterNode
    registry: IngestRegistry


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def start_node(name: str, database_url: str, clock: Clock) -> Node:
    store = await Store.open(database_url, clock, node_timeout=TIMEOUT)
    holder: list[IngestRegistry] = []

    def held() -> Mapping[str, object]:
        return holder[0].sessions

    def lost(stream_id: str, session: object) -> None:
        holder[0].lease_lost(stream_id, session)

    def elsewhere(stream_ids: frozenset[str]) -> None:
        holder[0].leased_elsewhere(stream_ids)

    cluster = ClusterNode(store, name, f"http://{name}.internal:8080", held=held,
                          on_lease_lost=lost, on_leased_elsewhere=elsewhere)
    holder.append(IngestRegistry(store, leases=cluster))
    return Node(store, cluster, holder[0])


@pytest.fixture
async def two_nodes(database_url: str, clock: Clock) -> AsyncIterator[tuple[Node, Node]]:
    made: list[Node] = []
    for name in ("a", "b"):
        made.append(await start_node(name, database_url, clock))
    try:
        yield made[0], made[1]
    finally:
        for node in made:
            await node.registry.close()
            await node.cluster.stop()
            await node.store.close()


async def eventually(check: Callable[[], bool], what: str) -> None:
    for _ in range(100):  # a few heartbeats (every TIMEOUT / 3) at most
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def count(store: Store, event_type: str, object_id: str) -> int:
    return sum(1 for e in await store.list_events(limit=10_000)
               if e.type == event_type and e.object_id == object_id)


async def test_a_key_live_on_another_node_is_refused_as_a_second_publisher(
        two_nodes: tuple[Node, Node]) -> None:
    a, b = two_nodes
    stream = await new_stream(a.store)
    session = await b.registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1")
    for registry in (a.registry, b.registry):  # the other node, and the owner itself
        with pytest.raises(PublishRefused) as refused:
            await registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1")
        assert refused.value.refusal is Refusal.ALREADY_LIVE
        assert registry.counters.publishes_refused == 1
    assert stream.id not in a.registry.sessions
    session.end("the test ends it")
    await session.wait_finished()  # the end released the lease
    again = await a.registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1")
    assert again.lease_owner == "a"


async def test_a_node_that_lost_its_lease_ends_its_session_without_a_second_end(
        two_nodes: tuple[Node, Node], clock: Clock) -> None:
    a, b = two_nodes
    stream = await new_stream(b.store, reconnect_window=5.0)
    publisher = FakePublisher()
    session = await b.registry.admit(stream.stream_key, publisher, "127.0.0.1")
    push(session)
    await settle(b.registry, stream.id)
    asset_id = session.asset_id
    assert asset_id is not None
    # b is silent (stalled) past its lease and the reconnect window: a finishes the session.
    clock.now += TIMEOUT + 5.0 + 1
    assert await a.store.finish_orphaned_sessions("a") == [stream.id]
    # b's next heartbeat learns it and ends the session; its end writes nothing again.
    await b.cluster.start()
    await session.wait_finished()
    assert publisher.closed == ["another node took over the live stream's lease"]
    assert await count(a.store, "video.live_stream.idle", stream.id) == 1
    # Nor a disconnection after a's idle: the stream's story ended there.
    assert await count(a.store, "video.live_stream.disconnected", stream.id) == 0
    assert await count(a.store, "video.asset.ready", asset_id) == 1
    idle = await a.store.get_live_stream(stream.id)
    assert idle is not None and idle.status == "idle"


async def test_an_encoder_back_on_another_node_after_its_node_died_starts_anew(
        two_nodes: tuple[Node, Node], clock: Clock) -> None:
    a, b = two_nodes
    stream = await new_stream(b.store, reconnect_window=60.0)
    session = await b.registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1")
    push(session)
    await settle(b.registry, stream.id)
    old_asset = session.asset_id
    assert old_asset is not None
    # b dies (nothing of it runs any more); within the lease a refuses the key...
    b.registry.sessions.clear()
    with pytest.raises(PublishRefused):
        await a.registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1")
    # ...after it, inside the reconnect window, a finishes b's session and starts its own.
    clock.now += TIMEOUT + 1
    fresh = await a.registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1")
    push(fresh)
    await settle(a.registry, stream.id)
    assert fresh.asset_id not in (None, old_asset)
    done = await a.store.get_asset(old_asset)
    assert done is not None and done.status == "ready" and not done.is_live
    assert await count(a.store, "video.live_stream.idle", stream.id) == 1
    live = await a.store.get_live_stream(stream.id)
    assert live is not None and live.status == "active" and live.active_asset_id == fresh.asset_id
    # b's session object, abandoned as a dead process's, ends: fenced, it writes no end.
    session.end("the test ends it")
    await session.wait_finished()
    assert await count(a.store, "video.live_stream.idle", stream.id) == 1
    assert await count(a.store, "video.asset.ready", old_asset) == 1


async def test_the_key_cache_answers_a_key_live_on_another_node_as_live(
        two_nodes: tuple[Node, Node]) -> None:
    # What SRT's handshake asks (it cannot wait for the store): refused as already live.
    a, b = two_nodes
    stream = await new_stream(a.store)
    await a.registry.load_keys()
    await a.cluster.start()
    key = stream.stream_key

    def live_on_a() -> bool:
        state = a.registry.peek(key)
        return state is not None and state.live

    assert not live_on_a()
    session = await b.registry.admit(key, FakePublisher(), "127.0.0.1")
    await eventually(live_on_a, "a's heartbeat to learn that b holds the key")
    session.end("the test ends it")
    await session.wait_finished()
    await eventually(lambda: not live_on_a(), "a's heartbeat to learn that b let it go")
