"""Nodes, stream leases and the takeover of a dead node's sessions (issue 19), on SQLite and
PostgreSQL: two `Store`s on one database stand for two nodes, with one hand-moved clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from relay.store import LATEST_VERSION, SessionWrite, Store
from relay.store.records import NodeRef, RecordedMedia
from testkit.postgres import PostgresCluster
from tests.store.helpers.store import spec

pytestmark = pytest.mark.anyio

TIMEOUT = 10.0  # the nodes' --node-timeout
WINDOW = 30.0  # the streams' reconnect window


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def nodes(database_url: str, clock: Clock) -> AsyncIterator[tuple[Store, Store, Store]]:
    """Three nodes' stores on one database."""
    opened = [await Store.open(database_url, clock, node_timeout=TIMEOUT) for _ in range(3)]
    for name, store in zip("abc", opened, strict=True):
        await store.register_node(name, f"http://{name}.internal:8080")
    try:
        yield opened[0], opened[1], opened[2]
    finally:
        for store in opened:
            await store.close()


async def live_session(store: Store, node: str) -> tuple[str, str]:
    """A stream made live on `node` as its registry does it: lease, then the session's
    writes. Returns (stream id, asset id)."""
    stream = await store.create_live_stream(spec(reconnect_window=WINDOW))
    assert (await store.acquire_stream_lease(stream.id, node)).acquired
    await store.session_writes([SessionWrite("connected", stream.id)])
    (asset,) = await store.session_writes([SessionWrite("recording", stream.id)])
    assert asset is not None
    await store.session_writes([SessionWrite("active", stream.id)])
    return stream.id, asset.id


async def count(store: Store, event_type: str, object_id: str) -> int:
    return sum(1 for e in await store.list_events(limit=10_000)
               if e.type == event_type and e.object_id == object_id)


async def test_a_lease_excludes_other_nodes_until_it_expires(
        nodes: tuple[Store, Store, Store], clock: Clock) -> None:
    a, b, _ = nodes
    stream = await a.create_live_stream(spec())
    assert (await a.acquire_stream_lease(stream.id, "a")).acquired
    refused = await b.acquire_stream_lease(stream.id, "b")
    assert not refused.acquired and refused.previous_owner == "a"
    assert (await a.acquire_stream_lease(stream.id, "a")).acquired  # its own: renewed
    clock.now += TIMEOUT - 1
    assert not (await b.acquire_stream_lease(stream.id, "b")).acquired
    clock.now += 2  # a said nothing for longer than the timeout: its lease is gone
    taken = await b.acquire_stream_lease(stream.id, "b")
    assert taken.acquired and taken.previous_owner == "a"
    # a's session never ended (that would have released the lease), though it recorded
    # nothing: b must finish it (idle) before its own.
    assert taken.open_session and taken.open_asset_id is None
    assert not (await a.acquire_stream_lease(stream.id, "a")).acquired


async def test_admissions_racing_on_two_nodes_lease_each_stream_to_one(
        nodes: tuple[Store, Store, Store]) -> None:
    a, b, _ = nodes
    ids = [(await a.create_live_stream(spec())).id for _ in range(20)]

    async def admit_all(store: Store, node: str) -> list[bool]:
        grants = await asyncio.gather(*(store.acquire_stream_lease(i, node) for i in ids))
        return [grant.acquired for grant in grants]

    on_a, on_b = await asyncio.gather(admit_all(a, "a"), admit_all(b, "b"))
    assert all(x != y for x, y in zip(on_a, on_b, strict=True)), (on_a, on_b)
    # Batched (one transaction for a burst), each grant is still per stream and in order.
    gone = "no-such-stream"
    grants = await a.acquire_stream_leases([(ids[0], "c"), (ids[0], "a"), (gone, "a")])
    owner = "a" if on_a[0] else "b"
    assert [g.acquired for g in grants] == [False, owner == "a", True]
    assert grants[0].previous_owner == owner


async def test_the_heartbeat_renews_the_leases_of_live_sessions(
        nodes: tuple[Store, Store, Store], clock: Clock) -> None:
    a, b, _ = nodes
    held = await a.create_live_stream(spec())
    other = await a.create_live_stream(spec())
    assert (await a.acquire_stream_lease(held.id, "a")).acquired
    assert (await a.acquire_stream_lease(other.id, "a")).acquired
    for _ in range(5):  # 5 x 0.8 timeouts: without renewal the lease would have expired
        clock.now += TIMEOUT * 0.8
        assert await a.node_heartbeat("a", "http://a.internal:8080", [held.id]) == []
        assert not (await b.acquire_stream_lease(held.id, "b")).acquired
    # The lease it did not renew (no session of it any more) expired.
    assert (await b.acquire_stream_lease(other.id, "b")).acquired
    # A session ended normally releases its lease: at once free for another node.
    await a.session_writes([SessionWrite("ended", held.id, node_id="a")])
    assert (await b.acquire_stream_lease(held.id, "b")).acquired


async def test_live_nodes_and_the_owner_of_a_playback_id(
        nodes: tuple[Store, Store, Store], clock: Clock) -> None:
    a, b, c = nodes
    assert [n.node_id for n in await c.list_live_nodes()] == ["a", "b", "c"]
    stream_id, asset_id = await live_session(a, "a")
    stream = await c.get_live_stream(stream_id)
    asset = await c.get_asset(asset_id)
    assert stream is not None and asset is not None
    pid = stream.playback_ids[0].id
    assert await c.owner_of_playback_id(pid) == NodeRef("a", "http://a.internal:8080")
    assert await c.owner_of_playback_id(asset.playback_ids[0].id) is None  # a recording
    assert await c.owner_of_playback_id("no-such-id") is None
    clock.now += TIMEOUT * 0.9
    for store, name in ((b, "b"), (c, "c")):
        await store.node_heartbeat(name, f"http://{name}.internal:8080", [])
    clock.now += TIMEOUT * 0.2  # a is silent: dead
    assert [n.node_id for n in await c.list_live_nodes()] == ["b", "c"]
    assert await c.owner_of_playback_id(pid) is None
    await a.node_heartbeat("a", "http://a2.internal:8080", [stream_id])  # it was only slow
    assert await c.owner_of_playback_id(pid) == NodeRef("a", "http://a2.internal:8080")
    await a.remove_node("a")
    assert await c.owner_of_playback_id(pid) is None
    assert [n.node_id for n in await c.list_live_nodes()] == ["b", "c"]


async def test_a_dead_nodes_session_is_finished_after_its_reconnect_window(
        nodes: tuple[Store, Store, Store], clock: Clock) -> None:
    a, b, _ = nodes
    stream_id, asset_id = await live_session(a, "a")
    finalized: list[str] = []

    async def finalize(asset: str) -> RecordedMedia:
        finalized.append(asset)
        return RecordedMedia(duration=12.5, tracks=({"type": "video", "max_width": 640,
                                                     "max_height": 360},))

    # a dies now. Within its lease, and then within the reconnect window after it, the
    # encoder may come back (to a or to any node): nothing is finished.
    clock.now += TIMEOUT - 1
    assert await b.finish_orphaned_sessions("b", finalize) == []
    clock.now += WINDOW
    assert await b.finish_orphaned_sessions("b", finalize) == []
    clock.now += 2
    assert await b.finish_orphaned_sessions("b", finalize) == [stream_id]
    assert finalized == [asset_id]
    stream = await b.get_live_stream(stream_id)
    assert stream is not None and stream.status == "idle" and stream.active_asset_id is None
    asset = await b.get_asset(asset_id)
    assert asset is not None and asset.status == "ready" and not asset.is_live
    assert asset.duration == 12.5
    assert await b.finish_orphaned_sessions("b", finalize) == []  # done once
    # The lease is free again: the stream can go live on any node.
    assert (await a.acquire_stream_lease(stream_id, "a")).acquired
    for kind, object_id in (("video.live_stream.idle", stream_id),
                            ("video.asset.live_stream_completed", asset_id),
                            ("video.asset.ready", asset_id)):
        assert await count(b, kind, object_id) == 1, kind


async def test_two_nodes_taking_over_at_once_write_each_event_once(
        nodes: tuple[Store, Store, Store], clock: Clock) -> None:
    a, b, c = nodes
    sessions = [await live_session(a, "a") for _ in range(6)]
    clock.now += TIMEOUT + WINDOW + 1

    async def slow_finalize(asset: str) -> None:
        # Both nodes get through their search before either claims.
        await asyncio.sleep(0.05)

    ended_b, ended_c = await asyncio.gather(b.finish_orphaned_sessions("b", slow_finalize),
                                            c.finish_orphaned_sessions("c", slow_finalize))
    assert sorted(ended_b + ended_c) == sorted(stream_id for stream_id, _ in sessions)
    for stream_id, asset_id in sessions:
        assert await count(a, "video.live_stream.idle", stream_id) == 1
        assert await count(a, "video.asset.live_stream_completed", asset_id) == 1
        assert await count(a, "video.asset.ready", asset_id) == 1


async def test_a_session_whose_end_was_not_written_is_finished_by_its_own_node(
        nodes: tuple[Store, Store, Store], clock: Clock) -> None:
    a, _, _ = nodes
    stream_id, asset_id = await live_session(a, "a")
    # a's session ended but the database was down then: the lease was never released and
    # a renews only the leases of the sessions it holds (`keep`).
    clock.now += TIMEOUT + WINDOW + 1
    assert await a.finish_orphaned_sessions("a", keep=[stream_id]) == []  # still live
    assert await a.finish_orphaned_sessions("a", keep=[]) == [stream_id]
    assert await count(a, "video.live_stream.idle", stream_id) == 1
    assert await count(a, "video.asset.ready", asset_id) == 1


async def test_a_node_that_lost_its_lease_writes_no_end(
        nodes: tuple[Store, Store, Store], clock: Clock) -> None:
    a, b, _ = nodes
    stream_id, asset_id = await live_session(a, "a")
    clock.now += TIMEOUT + WINDOW + 1  # a stalled (say, a long pause), b took over
    assert await b.finish_orphaned_sessions("b") == [stream_id]
    # a wakes up: its heartbeat tells it the lease is gone, and its session's end, fenced
    # by the lease, writes nothing.
    assert await a.node_heartbeat("a", "http://a.internal:8080", [stream_id]) == [stream_id]
    await a.session_writes([SessionWrite("ended", stream_id, asset_id, node_id="a")])
    assert await count(a, "video.live_stream.idle", stream_id) == 1
    assert await count(a, "video.asset.ready", asset_id) == 1


async def test_admission_over_a_dead_nodes_lease_reports_its_open_session(
        nodes: tuple[Store, Store, Store], clock: Clock) -> None:
    a, b, _ = nodes
    stream_id, asset_id = await live_session(a, "a")
    clock.now += TIMEOUT + 1  # a died; its encoder comes back to b inside the window
    grant = await b.acquire_stream_lease(stream_id, "b")
    assert grant.acquired and grant.previous_owner == "a"
    assert grant.open_session and grant.open_asset_id == asset_id


async def test_restart_recovery_leaves_other_live_nodes_sessions(
        nodes: tuple[Store, Store, Store], database_url: str) -> None:
    a, b, _ = nodes
    mine, _ = await live_session(a, "a")
    theirs, _ = await live_session(b, "b")
    # a restarts under the same id: its own session ends at once.
    ended = await a.recover_interrupted_sessions(node_id="a")
    if database_url.startswith("sqlite"):
        # One node's database: whatever is open was left by this node.
        assert sorted(ended) == sorted([mine, theirs])
        return
    assert ended == [mine]
    still = await a.get_live_stream(theirs)
    assert still is not None and still.status == "active"
    assert not (await a.acquire_stream_lease(theirs, "a")).acquired


async def test_nodes_starting_together_migrate_an_empty_database_once(
        postgres: PostgresCluster) -> None:
    # Several nodes started at once (a deploy, `--workers`) on one new database: the schema
    # is made by one of them, the others wait for it and find it made.
    url = postgres.create_database()
    opened = await asyncio.gather(*(Store.open(url) for _ in range(4)))
    try:
        assert {await store.schema_version() for store in opened} == {LATEST_VERSION}
    finally:
        for store in opened:
            await store.close()
