"""Failed API authentication is slowed per address; right credentials never wait.

The middleware's sleep is replaced by one the test releases, so nothing here depends on time;
tests/integration/test_api_auth.py shows the same over real sockets with the real delay.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from relay.api import create_api
from relay.api.auth import AuthLimits, FailedAuthQueue, address_key
from relay.api.middleware import BasicAuthMiddleware
from relay.store import Store

pytestmark = pytest.mark.anyio

LIMITS = AuthLimits(failure_delay=2.0, max_slowed_per_address=3, max_slowed_total=5)


def test_address_key_counts_ipv6_per_64_and_names_a_missing_client() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_key(None) == "-"


def test_failures_of_one_address_are_answered_one_per_delay() -> None:
    queue = FailedAuthQueue(LIMITS)
    assert queue.failed("a", now=100.0) == 102.0
    assert queue.failed("a", now=100.5) == 104.0  # waits behind the first
    assert queue.failed("b", now=100.5) == 102.5  # another address has its own queue
    queue.released("a")
    queue.released("a")
    assert queue.failed("a", now=110.0) == 112.0  # an idle address starts afresh
    queue.released("a")
    queue.released("b")
    assert queue.addresses == 0 and queue.total == 0


def test_refusal_at_the_caps() -> None:
    queue = FailedAuthQueue(LIMITS)
    for _ in range(3):
        assert not queue.refuses("a")
        queue.failed("a", now=0.0)
    assert queue.refuses("a")  # per address
    assert not queue.refuses("b")  # an address with nothing waiting is never refused
    queue.failed("b", now=0.0)
    queue.failed("c", now=0.0)
    assert queue.total == 5
    assert queue.refuses("b") and queue.refuses("c")  # total reached: failing ones refused
    assert not queue.refuses("d")
    queue.released("a")
    assert not queue.refuses("b")
    assert queue.refused == 3


class ReleasableSleep:
    """Stands in for asyncio.sleep: records each delay asked for, returns when released."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self.release = asyncio.Event()
        self._asked_more = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        self._asked_more.set()
        await self.release.wait()

    async def wait_for(self, count: int) -> None:
        """Return once `count` failures are waiting (a generous bound against a hang)."""
        async with asyncio.timeout(60):
            while len(self.asked) < count:
                self._asked_more.clear()
                await self._asked_more.wait()


@pytest.fixture
async def token(store: Store) -> tuple[str, str]:
    return await store.create_access_token()


@pytest.fixture
async def sleep() -> ReleasableSleep:
    return ReleasableSleep()


@pytest.fixture
async def clients(store: Store, sleep: ReleasableSleep
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async def ready() -> list[str]:
        return []

    app = create_api(store, ready, auth_limits=LIMITS)
    # Build the middleware stack now, to give the auth middleware the test's sleep.
    app.middleware_stack = app.build_middleware_stack()
    layer: Any = app.middleware_stack
    while not isinstance(layer, BasicAuthMiddleware):
        layer = layer.app
    layer._sleep = sleep
    layer._clock = lambda: 1000.0
    app.state.auth = layer
    near = httpx.ASGITransport(app=app, client=("2001:db8::1", 40000))
    same_64 = httpx.ASGITransport(app=app, client=("2001:db8::2", 40001))
    async with httpx.AsyncClient(transport=near, base_url="http://relay") as a, \
            httpx.AsyncClient(transport=same_64, base_url="http://relay") as b:
        yield a, b


async def test_right_token_is_not_delayed_while_failures_wait(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], token: tuple[str, str],
    sleep: ReleasableSleep,
) -> None:
    near, same_64 = clients
    wrong = [asyncio.create_task(near.get("/video/v1/live-streams", auth=(token[0], "nope")))
             for _ in range(2)]
    await sleep.wait_for(2)
    assert sleep.asked == [2.0, 4.0]  # one answer per failure_delay for the address
    # The right token from the same /64 goes through while the failures wait.
    right = await same_64.get("/video/v1/live-streams", auth=token)
    assert right.status_code == 200
    assert not any(task.done() for task in wrong)
    sleep.release.set()
    answers = await asyncio.gather(*wrong)
    assert [a.status_code for a in answers] == [401, 401]
    assert answers[0].json()["error"]["type"] == "unauthorized"


async def test_a_full_address_gets_429_for_failures_and_a_right_token_still_passes(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], token: tuple[str, str],
    sleep: ReleasableSleep, store: Store,
) -> None:
    near, same_64 = clients
    wrong = [asyncio.create_task(near.get("/video/v1/assets", auth=("nobody", "guess")))
             for _ in range(LIMITS.max_slowed_per_address)]
    await sleep.wait_for(LIMITS.max_slowed_per_address)
    refused = await same_64.get("/video/v1/assets", auth=("nobody", "another guess"))
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "too_many_requests"
    assert refused.headers["retry-after"] == "2"
    # A right token behind the same /64 is neither refused nor delayed.
    assert (await same_64.get("/video/v1/assets", auth=token)).status_code == 200
    # Without credentials there is no guess: 401 at once, never 429.
    assert (await near.get("/video/v1/assets")).status_code == 401
    # Another /64 is not affected.
    other = httpx.ASGITransport(app=near._transport.app,  # type: ignore[attr-defined]
                                client=("2001:db8:0:1::1", 1))
    async with httpx.AsyncClient(transport=other, base_url="http://relay") as elsewhere:
        assert (await elsewhere.get("/video/v1/assets", auth=token)).status_code == 200
    sleep.release.set()
    assert [(await t).status_code for t in wrong] == [401] * LIMITS.max_slowed_per_address
    assert (await near.get("/video/v1/assets", auth=token)).status_code == 200


async def test_a_cancelled_failure_frees_its_place(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], sleep: ReleasableSleep,
) -> None:
    near, _ = clients
    middleware: Any = near._transport.app.state.auth  # type: ignore[attr-defined]
    waiting = asyncio.create_task(near.get("/video/v1/assets", auth=("a", "b")))
    await sleep.wait_for(1)
    assert middleware.failures.total == 1
    waiting.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert middleware.failures.total == 0 and middleware.failures.addresses == 0
