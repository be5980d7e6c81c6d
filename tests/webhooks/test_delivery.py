"""The deliverer against a mock transport and a hand-moved clock: no sockets, no sleeps."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from relay.store import Store
from relay.webhooks import RetryPolicy
from tests.webhooks.helpers.delivery import (
    OTHER,
    URL,
    Clock,
    Receiver,
    clock,
    clocked_store,
    deliverer,
    run,
    spec,
)

__all__ = ["clock", "clocked_store"]  # fixtures, defined in tests.webhooks.helpers.delivery

pytestmark = pytest.mark.anyio


async def test_every_event_delivered_signed_in_order(clocked_store: Store,
                                                     clock: Clock) -> None:
    d = deliverer(clocked_store, clock, URL)
    await clocked_store.set_webhook_endpoints([URL])
    stream = await clocked_store.create_live_stream(spec())
    await clocked_store.update_live_stream(stream.id, {"passthrough": "x"})
    receiver = Receiver()
    # One object: one event per round, oldest first.
    assert await run(d, URL, receiver) == 1
    assert await run(d, URL, receiver) == 1
    assert await run(d, URL, receiver) == 0
    assert [e["type"] for e in receiver.seen] == ["video.live_stream.created",
                                                  "video.live_stream.updated"]
    listed = await clocked_store.list_webhook_deliveries(limit=10, page=1)
    assert {(x.status, x.attempts) for x in listed} == {("delivered", 1)}


async def test_an_endpoint_added_later_starts_after_the_newest_event(
        clocked_store: Store, clock: Clock) -> None:
    await clocked_store.create_live_stream(spec())
    d = deliverer(clocked_store, clock, URL)
    await clocked_store.set_webhook_endpoints([URL])
    assert await run(d, URL, Receiver()) == 0


async def test_a_failing_object_holds_only_its_own_later_events(
        clocked_store: Store, clock: Clock) -> None:
    await clocked_store.set_webhook_endpoints([URL])
    first = await clocked_store.create_live_stream(spec())
    second = await clocked_store.create_live_stream(spec())
    await clocked_store.update_live_stream(first.id, {"passthrough": "later"})
    refuse_first = Receiver(lambda e: 500 if e["object"] == {  # type: ignore[comparison-overlap]
        "type": "live_stream", "id": first.id} else 200)
    d = deliverer(clocked_store, clock, URL, retry=RetryPolicy(base_delay=10, max_delay=10,
                                                               window=100))
    assert await run(d, URL, refuse_first) == 2  # the heads of both objects
    assert await run(d, URL, refuse_first) == 0  # first's retry is not due; its update waits
    clock.now += 5  # draw 0.5 of a 10 s bound
    refuse_first.answer = lambda _: 200
    assert await run(d, URL, refuse_first) == 1
    assert await run(d, URL, refuse_first) == 1
    order = [(e["object"], e["type"]) for e in refuse_first.seen  # type: ignore[index]
             if e["object"]["id"] == first.id]  # type: ignore[index]
    assert [t for _, t in order] == ["video.live_stream.created", "video.live_stream.created",
                                     "video.live_stream.updated"]
    retried = refuse_first.seen[2]
    assert retried["id"] == refuse_first.seen[0]["id"]  # stable across retries
    assert [a["response_status_code"] for a in retried["attempts"]] == [500]  # type: ignore[attr-defined]
    assert second.id in {e["object"]["id"] for e in refuse_first.seen}  # type: ignore[index]


async def test_failed_after_the_window_and_the_next_event_goes(
        clocked_store: Store, clock: Clock) -> None:
    await clocked_store.set_webhook_endpoints([URL])
    stream = await clocked_store.create_live_stream(spec())
    await clocked_store.update_live_stream(stream.id, {"passthrough": "y"})
    d = deliverer(clocked_store, clock, URL, retry=RetryPolicy(base_delay=1, max_delay=1,
                                                               window=3))
    receiver = Receiver(lambda _: 503)
    tries = 0
    while await run(d, URL, receiver) or tries == 0:
        tries += 1
        clock.now += 1
        if tries > 20:
            break
    found = await clocked_store.list_webhook_deliveries(limit=10, page=1, status="failed")
    assert len(found) == 2  # both given up, each after its own window
    assert all(f.last_error is not None and "HTTP 503" in f.last_error for f in found)
    assert all(f.attempts >= 3 for f in found)
    assert await clocked_store.next_webhook_attempt_at(URL) is None


async def test_endpoints_are_independent(clocked_store: Store, clock: Clock) -> None:
    await clocked_store.set_webhook_endpoints([URL, OTHER])
    await clocked_store.create_live_stream(spec())
    d = deliverer(clocked_store, clock, URL, OTHER)
    dead = Receiver(lambda _: 500)
    assert await run(d, URL, dead) == 1
    live = Receiver()
    assert await run(d, OTHER, live) == 1
    assert [x.status for x in await clocked_store.list_webhook_deliveries(
        limit=10, page=1, endpoint=OTHER)] == ["delivered"]
    assert [x.status for x in await clocked_store.list_webhook_deliveries(
        limit=10, page=1, endpoint=URL)] == ["pending"]


async def test_pruning_keeps_what_is_pending_or_recent(clocked_store: Store,
                                                       clock: Clock) -> None:
    await clocked_store.set_webhook_endpoints([URL, OTHER])
    await clocked_store.create_live_stream(spec())
    d = deliverer(clocked_store, clock, URL, OTHER, retention=100.0)
    await run(d, URL, Receiver())
    await run(d, OTHER, Receiver(lambda _: 500))
    clock.now += 1000
    assert await d.prune() == 0  # OTHER still has it pending
    await clocked_store.set_webhook_endpoints([URL])  # OTHER removed: its delivery fails
    await clocked_store.create_live_stream(spec())  # recent: kept
    assert await d.prune() == 1
    assert len(await clocked_store.list_events()) == 1
    await clocked_store.queue_webhook_deliveries(URL)
    assert [x.status for x in await clocked_store.list_webhook_deliveries(
        limit=10, page=1)] == ["pending"]


async def test_a_timeout_is_a_failed_attempt(clocked_store: Store, clock: Clock) -> None:
    await clocked_store.set_webhook_endpoints([URL])
    await clocked_store.create_live_stream(spec())
    d = deliverer(clocked_store, clock, URL)

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("too slow", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as client:
        assert await d.work_once(URL, client) == 1
    [pending] = await clocked_store.list_webhook_deliveries(limit=10, page=1)
    assert (pending.status, pending.attempts, pending.last_error) == ("pending", 1,
                                                                      "timed out")


async def test_an_event_committed_after_a_later_one_is_still_queued(
        clocked_store: Store) -> None:
    # A transaction that wrote an event stays open while another writes one and the queue
    # runs: the queue must not move its cursor past the first event before it commits (on
    # PostgreSQL, seqs are taken at insert, not at commit: store._writing_events).
    store = clocked_store
    await store.set_webhook_endpoints([URL])
    stream = await store.create_live_stream(spec())
    assert await store.queue_webhook_deliveries(URL) == 1
    async with store._engine.begin() as conn:
        await store._append_event(conn, "video.live_stream.idle", stream)
        later = asyncio.ensure_future(store.create_live_stream(spec()))
        await asyncio.wait({later}, timeout=2)  # done, or waiting for the first to commit
        await store.queue_webhook_deliveries(URL)
    await later
    await store.queue_webhook_deliveries(URL)
    queued = await store.list_webhook_deliveries(limit=10, page=1)
    assert sorted(x.event.type for x in queued) == sorted([
        "video.live_stream.created", "video.live_stream.idle", "video.live_stream.created"])
