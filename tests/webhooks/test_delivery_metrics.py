"""What the deliverer counts for /metrics (tries by result, latency, backlog), and its
wake-up when the store writes an event."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import httpx
import pytest

from relay.store import Store
from relay.webhooks import RetryPolicy, WebhookDeliverer, WebhookLimits
from tests.webhooks.helpers.delivery import (
    OTHER,
    SECRET,
    URL,
    Clock,
    Receiver,
    clock,
    clocked_store,
    deliverer,
    run,
    spec,
)

pytestmark = pytest.mark.anyio
__all__ = ["clock", "clocked_store"]  # fixtures


async def test_tries_are_counted_by_result(clocked_store: Store, clock: Clock) -> None:
    await clocked_store.set_webhook_endpoints([URL])
    stream = await clocked_store.create_live_stream(spec())
    d = deliverer(clocked_store, clock, URL,
                  retry=RetryPolicy(base_delay=1, max_delay=1, window=2.5))
    answers: list[int | type[Exception]] = [
        500, httpx.ReadTimeout, httpx.ConnectError, 404]

    def answer(request: httpx.Request) -> httpx.Response:
        given = answers.pop(0)
        if isinstance(given, int):
            return httpx.Response(given)
        raise given("no", request=request)  # type: ignore[call-arg]

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        for _ in range(4):
            assert await d.work_once(URL, client) == 1
            clock.now += 1
    assert d.counters.results == {"success": 0, "http_error": 2, "timeout": 1,
                                  "connection_error": 1, "failed_permanently": 1}
    assert d.counters.latency.count == 0
    # Delivered 12 s after the event was written: observed as 12 s.
    await clocked_store.update_live_stream(stream.id, {"passthrough": "x"})
    clock.now += 12
    assert await run(d, URL, Receiver()) == 1
    assert d.counters.results["success"] == 1
    latency = d.counters.latency
    assert (latency.count, latency.sum) == (1, 12.0)
    assert dict(latency.cumulative())[10.0] == 0 and dict(latency.cumulative())[30.0] == 1


async def test_the_backlog_is_counted_by_state(clocked_store: Store, clock: Clock) -> None:
    await clocked_store.set_webhook_endpoints([URL, OTHER])
    for _ in range(3):
        await clocked_store.create_live_stream(spec())
    d = deliverer(clocked_store, clock, URL, OTHER,
                  retry=RetryPolicy(base_delay=10, max_delay=10, window=100))
    await d.count_backlog()
    # Three events past both cursors, none queued yet.
    assert (d.counters.waiting, d.counters.retrying) == (6, 0)
    assert await run(d, URL, Receiver(lambda _: 500)) == 3  # all three fail once
    await d.count_backlog()
    assert (d.counters.waiting, d.counters.retrying) == (3, 3)
    assert await run(d, OTHER, Receiver()) == 3
    await d.count_backlog()
    assert (d.counters.waiting, d.counters.retrying) == (0, 3)
    clock.now += 5
    assert await run(d, URL, Receiver()) == 3
    await d.count_backlog()
    assert (d.counters.waiting, d.counters.retrying) == (0, 0)


async def test_a_new_event_wakes_the_deliverer_before_its_poll(database_url: str) -> None:
    store = await Store.open(database_url)
    receiver = Receiver()
    delivered = asyncio.Event()

    def answer(request: httpx.Request) -> httpx.Response:
        response = receiver(request)
        delivered.set()
        return response

    # A poll an hour apart: only the wake-up can deliver within the test.
    d = WebhookDeliverer(store, [URL], SECRET, limits=WebhookLimits(poll_interval=3600),
                         transport=httpx.MockTransport(answer))
    try:
        await d.start()
        for round_ in range(2):  # the second arrives while the task sleeps
            stream = await store.create_live_stream(spec())
            await asyncio.wait_for(delivered.wait(), 60)
            delivered.clear()
            assert receiver.seen[-1]["object"] == {"type": "live_stream", "id": stream.id}
            assert len(receiver.seen) == round_ + 1
    finally:
        await d.stop()
        await store.close()


async def test_listeners_hear_only_of_committed_events(database_url: str) -> None:
    store = await Store.open(database_url)
    heard: list[int] = []
    try:
        unlisten = store.on_events_written(lambda: heard.append(len(heard)))
        await store.ping()  # no event written: nothing heard
        assert heard == []
        await store.create_live_stream(spec())
        assert heard == [0]
        unlisten()
        await store.create_live_stream(spec())
        assert heard == [0]
    finally:
        await store.close()


class StoreCancelledMidQuery:
    """A store whose queries never answer and, cancelled, raise another error, as
    SQLAlchemy does when a cancel leaves its connection unusable."""

    def __init__(self) -> None:
        self.queries = 0
        self.all_waiting = asyncio.Event()

    single_node = False

    async def set_webhook_endpoints(self, urls: object) -> None:
        pass

    def on_events_written(self, listener: object) -> Callable[[], None]:
        return lambda: None

    async def _hang(self, *args: object, **kwargs: object) -> int:
        self.queries += 1
        if self.queries == 3:  # the endpoint's task, the pruner and the backlog count
            self.all_waiting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError as exc:
            raise RuntimeError("Can't reconnect until invalid transaction is rolled "
                               "back") from exc
        return 0

    queue_webhook_deliveries = webhook_backlog = prune_webhook_events = _hang


async def test_stop_ends_tasks_cancelled_inside_a_query() -> None:
    store = StoreCancelledMidQuery()
    d = WebhookDeliverer(cast(Store, store), [URL], SECRET)
    await d.start()
    await asyncio.wait_for(store.all_waiting.wait(), 60)
    await asyncio.wait_for(d.stop(), 60)  # before the fix: the loops swallowed the cancel
