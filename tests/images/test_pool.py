"""The decode pool: shared decodes, the cache bound, the queue bound; the client rate."""

from __future__ import annotations

import asyncio
import threading

import pytest

from relay.images.pool import (
    BUSY_RETRY_AFTER,
    MAX_CACHED_IMAGE_BYTES,
    ClientRates,
    DecodePool,
    ImageBusy,
    RateLimited,
)
from relay.images.render import Rendered

pytestmark = pytest.mark.anyio


def made(body: bytes = b"x") -> Rendered:
    return Rendered(body, "image/jpeg")


class Gate:
    """A job that blocks its worker until opened, counting its runs."""

    def __init__(self, body: bytes = b"image") -> None:
        self.opened = threading.Event()
        self.runs = 0
        self.body = body

    def __call__(self) -> Rendered:
        self.runs += 1
        assert self.opened.wait(10)
        return made(self.body)


async def test_concurrent_requests_for_one_image_share_one_decode() -> None:
    pool = DecodePool(workers=2)
    gate = Gate()
    waiters = [asyncio.create_task(pool.run("k", gate)) for _ in range(20)]
    await asyncio.sleep(0.05)
    assert pool.pending == 1
    gate.opened.set()
    results = await asyncio.gather(*waiters)
    assert gate.runs == 1 and {r.body for r in results} == {b"image"}
    assert pool.counters.decodes == 1 and pool.counters.shared == 19
    # Then from the cache, with no decode.
    assert (await pool.run("k", gate)).body == b"image" and gate.runs == 1
    assert pool.counters.cache_hits == 1 and pool.has("k")
    pool.close()


async def test_a_requester_that_leaves_does_not_cancel_the_shared_decode() -> None:
    pool = DecodePool(workers=1)
    gate = Gate()
    first = asyncio.create_task(pool.run("k", gate))
    second = asyncio.create_task(pool.run("k", gate))
    await asyncio.sleep(0.05)
    first.cancel()
    gate.opened.set()
    assert (await second).body == b"image"
    pool.close()


async def test_past_the_queue_bound_a_new_decode_is_refused() -> None:
    pool = DecodePool(workers=1, max_pending=2)
    gates = [Gate(), Gate()]
    running = [asyncio.create_task(pool.run(i, gate)) for i, gate in enumerate(gates)]
    await asyncio.sleep(0.05)
    with pytest.raises(ImageBusy) as refused:
        await pool.run("third", Gate())
    assert refused.value.retry_after == BUSY_RETRY_AFTER
    assert "limit 2" in str(refused.value)
    joined = asyncio.create_task(pool.run(0, gates[0]))  # joining one is no new decode
    for gate in gates:
        gate.opened.set()
    await asyncio.gather(*running, joined)
    assert pool.counters.busy == 1 and pool.pending == 0
    pool.close()


async def test_errors_reach_every_waiter_and_are_not_cached() -> None:
    pool = DecodePool()
    calls = 0

    def broken() -> Rendered:
        nonlocal calls
        calls += 1
        raise ValueError("bad time")

    results = await asyncio.gather(pool.run("k", broken), pool.run("k", broken),
                                   return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results) and calls == 1
    with pytest.raises(ValueError):
        await pool.run("k", broken)
    assert calls == 2 and pool.counters.failed == 2
    pool.close()


async def test_the_cache_is_bounded_in_bytes_and_entries() -> None:
    pool = DecodePool(cache_entries=3, cache_bytes=100)
    for key in range(5):
        await pool.run(key, lambda: made(b"a" * 40))
    assert pool.cached_bytes == 80  # two of 40 fit under 100
    assert not pool.has(0) and pool.has(3) and pool.has(4)
    small = DecodePool(cache_entries=2, cache_bytes=10_000)
    for key in range(4):
        await small.run(key, lambda: made(b"b"))
    assert [small.has(k) for k in range(4)] == [False, False, True, True]
    # An image over MAX_CACHED_IMAGE_BYTES is served and not kept.
    big = DecodePool(cache_bytes=4 * MAX_CACHED_IMAGE_BYTES)
    body = b"c" * (MAX_CACHED_IMAGE_BYTES + 1)
    assert (await big.run("big", lambda: made(body))).body == body
    assert not big.has("big") and big.cached_bytes == 0
    for each in (pool, small, big):
        each.close()


def test_the_client_rate_is_a_token_bucket_per_client() -> None:
    now = [0.0]
    rates = ClientRates(rate=2.0, burst=3, clock=lambda: now[0])
    for _ in range(3):
        rates.take("a")
    with pytest.raises(RateLimited) as limited:
        rates.take("a")
    assert limited.value.retry_after == 1
    rates.take("b")  # another client has its own bucket
    now[0] += 0.5  # one token back
    rates.take("a")
    with pytest.raises(RateLimited):
        rates.take("a")
    now[0] += 100
    for _ in range(3):  # refilled up to the burst, not beyond
        rates.take("a")
    with pytest.raises(RateLimited):
        rates.take("a")


def test_the_client_table_is_bounded() -> None:
    now = [0.0]
    rates = ClientRates(rate=1.0, burst=1, max_clients=2, clock=lambda: now[0])
    rates.take("a")
    rates.take("b")
    rates.take("c")  # "a" is forgotten: it starts again with a full bucket
    rates.take("a")
    with pytest.raises(RateLimited):
        rates.take("c")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="workers"):
        DecodePool(workers=0)
    with pytest.raises(ValueError, match="rate"):
        ClientRates(rate=0)
