"""Several deliverers over one database, as several Relay nodes on one PostgreSQL run them
(issue 19): each event is queued and tried by one of them, an object's events still arrive
in order, and the claim of a deliverer that died mid-try is taken over after its timeout.
Mock transports and a hand-moved clock: no sockets; the databases are real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from relay.store import Store
from relay.webhooks import WebhookDeliverer, WebhookLimits
from testkit.postgres import PostgresCluster
from tests.conftest import sqlite_url
from tests.webhooks.helpers.delivery import (
    SECRET,
    URL,
    Clock,
    Receiver,
    clock,
    deliverer,
    run,
    spec,
)

__all__ = ["clock"]  # fixture, defined in tests.webhooks.helpers.delivery

pytestmark = pytest.mark.anyio

CLAIM_TIMEOUT = 30.0


async def open_two(url: str, clock: Clock) -> tuple[Store, Store]:
    return await Store.open(url, clock=clock), await Store.open(url, clock=clock)


@pytest.fixture
async def pg_stores(postgres: PostgresCluster, clock: Clock) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores (two nodes' connection pools) on one PostgreSQL database."""
    a, b = await open_two(postgres.create_database(), clock)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


@pytest.fixture
async def two_stores(database_url: str, clock: Clock) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one database, SQLite or PostgreSQL (claims work on both)."""
    a, b = await open_two(database_url, clock)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


class SlowReceiver(Receiver):
    """A receiver whose answers take a moment, so that both deliverers' tries overlap."""

    async def answer_later(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.02)
        return self(request)


async def make_events(store: Store, n: int) -> list[str]:
    """n streams, each created, updated twice, disabled and enabled: five events."""
    ids = []
    for i in range(n):
        stream = await store.create_live_stream(spec())
        await store.update_live_stream(stream.id, {"passthrough": f"a{i}"})
        await store.update_live_stream(stream.id, {"passthrough": f"b{i}"})
        await store.set_live_stream_enabled(stream.id, False)
        await store.set_live_stream_enabled(stream.id, True)
        ids.append(stream.id)
    return ids


async def test_two_deliverers_send_each_event_once_in_order_per_object(
        pg_stores: tuple[Store, Store], clock: Clock) -> None:
    a, b = pg_stores
    await asyncio.gather(a.set_webhook_endpoints([URL]), b.set_webhook_endpoints([URL]))
    await asyncio.gather(make_events(a, 4), make_events(b, 4))
    # Two in flight each, so each deliverer finds heads of its own to claim while the other's
    # tries are out.
    da, db = (deliverer(s, clock, URL, max_in_flight=2) for s in (a, b))
    receiver = SlowReceiver()
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver.answer_later)) as client:
        for _ in range(100):
            sent = await asyncio.gather(da.work_once(URL, client), db.work_once(URL, client))
            if sent == [0, 0]:
                break
    outbox = await a.list_events(limit=1000)
    assert len(outbox) == 40
    ids = [e["id"] for e in receiver.seen]
    assert sorted(ids) == sorted(e.id for e in outbox)  # every event, none twice
    for object_id in {e.object_id for e in outbox}:
        expected = [e.id for e in outbox if e.object_id == object_id]
        assert [e["id"] for e in receiver.seen
                if e["object"]["id"] == object_id] == expected  # type: ignore[index]
    assert da.delivered > 0 and db.delivered > 0  # both nodes took a share
    assert da.delivered + db.delivered == 40
    listed = await b.list_webhook_deliveries(limit=100, page=1)
    assert {(x.status, x.attempts, x.claim) for x in listed} == {("delivered", 1, None)}


async def test_two_nodes_queueing_at_once_queue_each_event_once(
        pg_stores: tuple[Store, Store]) -> None:
    a, b = pg_stores
    await a.set_webhook_endpoints([URL])
    await make_events(a, 3)
    for _ in range(5):  # each round a race between the two
        await make_events(b, 1)
        await asyncio.gather(a.queue_webhook_deliveries(URL), b.queue_webhook_deliveries(URL))
    queued = await a.list_webhook_deliveries(limit=100, page=1)
    assert len(queued) == 40
    assert len({x.event.id for x in queued}) == 40


class HeldReceiver:
    """A receiver that answers nothing until `release`d: a node stuck (or dead) mid-try."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.released = asyncio.Event()
        self.requests = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.entered.set()
        await self.released.wait()
        return httpx.Response(200)


async def test_a_dead_deliverers_claim_is_taken_over_after_its_timeout(
        two_stores: tuple[Store, Store], clock: Clock) -> None:
    a, b = two_stores
    await a.set_webhook_endpoints([URL])
    stream = await a.create_live_stream(spec())
    await a.update_live_stream(stream.id, {"passthrough": "later"})
    dead = deliverer(a, clock, URL, claim_timeout=CLAIM_TIMEOUT)
    alive = deliverer(b, clock, URL, claim_timeout=CLAIM_TIMEOUT)
    held = HeldReceiver()
    receiver = Receiver()
    async with httpx.AsyncClient(transport=httpx.MockTransport(held)) as stuck:
        first = asyncio.ensure_future(dead.work_once(URL, stuck))
        await asyncio.wait_for(held.entered.wait(), 30)
        started = clock.now
        # Claimed: not the other's to send, nor the object's next event; and the other
        # deliverer sleeps until the claim lapses rather than looking again at once.
        assert await run(alive, URL, receiver) == 0
        assert await b.next_webhook_attempt_at(URL) == started + CLAIM_TIMEOUT
        clock.now = started + CLAIM_TIMEOUT - 1
        assert await run(alive, URL, receiver) == 0
        clock.now = started + CLAIM_TIMEOUT
        assert await run(alive, URL, receiver) == 1  # taken over
        assert [e["type"] for e in receiver.seen] == ["video.live_stream.created"]
        [done] = await b.list_webhook_deliveries(limit=10, page=1, status="delivered")
        assert (done.event.type, done.attempts, done.claim) == (
            "video.live_stream.created", 1, None)
        # The stuck try comes back at last: its claim is gone, its outcome is not written.
        held.released.set()
        assert await asyncio.wait_for(first, 30) == 1
    [done] = await b.list_webhook_deliveries(limit=10, page=1, status="delivered")
    assert done.attempts == 1 and done.delivered_at == started + CLAIM_TIMEOUT
    assert await run(alive, URL, receiver) == 1
    assert [e["type"] for e in receiver.seen] == ["video.live_stream.created",
                                                  "video.live_stream.updated"]


async def test_stop_releases_the_claims_of_tries_cut_short(
        two_stores: tuple[Store, Store], clock: Clock) -> None:
    a, b = two_stores
    await a.set_webhook_endpoints([URL])
    await a.create_live_stream(spec())
    held = HeldReceiver()
    stopping = WebhookDeliverer(a, [URL], SECRET, clock=clock,
                                transport=httpx.MockTransport(held))
    await stopping.start()
    try:
        await asyncio.wait_for(held.entered.wait(), 30)
        [claimed] = await b.list_webhook_deliveries(limit=10, page=1)
        assert claimed.claim is not None
    finally:
        await stopping.stop()
    [released] = await b.list_webhook_deliveries(limit=10, page=1)
    assert (released.status, released.claim) == ("pending", None)
    receiver = Receiver()
    assert await run(deliverer(b, clock, URL), URL, receiver) == 1  # at once, no timeout


async def test_claims_must_outlast_a_try() -> None:
    with pytest.raises(ValueError, match=r"claim_timeout 5\.0 s must be longer than "
                                         r"attempt_timeout 5\.0 s"):
        WebhookLimits(claim_timeout=5.0, attempt_timeout=5.0)


async def test_on_sqlite_a_start_releases_the_claims_of_an_earlier_run(
        tmp_path: Path, clock: Clock) -> None:
    # SQLite is one node's: a claim found at start was left by a kill, not held by a peer.
    store = await Store.open(sqlite_url(tmp_path / "relay.db"), clock=clock)
    try:
        assert store.single_node
        await store.set_webhook_endpoints([URL])
        await store.create_live_stream(spec())
        await store.queue_webhook_deliveries(URL)
        [claimed] = await store.claim_webhook_deliveries(URL, clock.now, limit=8,
                                                         claim_for=CLAIM_TIMEOUT)
        assert claimed.claim is not None
        again = WebhookDeliverer(store, [URL], SECRET, clock=clock,
                                 transport=httpx.MockTransport(Receiver()))
        await again.start()
        try:
            for _ in range(600):  # at once: within the first few polls, not a claim timeout
                if again.delivered:
                    break
                await asyncio.sleep(0.05)
        finally:
            await again.stop()
        assert again.delivered == 1
    finally:
        await store.close()
