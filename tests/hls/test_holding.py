"""Held requests: one waiter each, woken by one pump per stream, capped in total and per
stream. A fake change source stands in for the packager; no clock is read (timeouts that
must not fire are an hour long)."""

from __future__ import annotations

import asyncio

import pytest

from relay.hls.holding import HeldRequests, HoldOutcome

pytestmark = pytest.mark.anyio

HOUR = 3600.0


class Source:
    """A packager's change signal: `change()` wakes whoever waits, as `_notify` does."""

    def __init__(self) -> None:
        self.ended = False
        self.waits = 0  # calls of wait_change: one per change per pump, not per request
        self._change: asyncio.Future[None] | None = None

    async def wait_change(self) -> None:
        self.waits += 1
        if self.ended:
            return
        if self._change is None:
            self._change = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._change)

    def change(self) -> None:
        change, self._change = self._change, None
        if change is not None and not change.done():
            change.set_result(None)

    def end(self) -> None:
        self.ended = True
        self.change()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class Level:
    """A condition that becomes true when `value` reaches `wanted`; counts its checks."""

    def __init__(self, wanted: int) -> None:
        self.wanted = wanted
        self.value = 0
        self.checks = 0

    def __call__(self) -> bool:
        self.checks += 1
        return self.value >= self.wanted


async def test_a_request_waits_until_its_condition_holds() -> None:
    holds, source = HeldRequests(), Source()
    level = Level(3)
    request = asyncio.ensure_future(holds.hold(source, HOUR, level))
    await settle()
    for value in (1, 2):
        level.value = value
        source.change()
        await settle()
        assert not request.done()
    level.value = 3
    source.change()
    assert await request is HoldOutcome.READY
    assert (holds.held, holds.held_for(source), holds.waiters_created) == (0, 0, 1)


async def test_one_pump_per_stream_and_one_waiter_per_request() -> None:
    holds, source = HeldRequests(), Source()
    levels = [Level(10) for _ in range(50)]
    requests = [asyncio.ensure_future(holds.hold(source, HOUR, level)) for level in levels]
    await settle()
    assert holds.held == holds.held_for(source) == 50
    for value in range(1, 11):
        for level in levels:
            level.value = value
        source.change()
        await settle()
    assert set(await asyncio.gather(*requests)) == {HoldOutcome.READY}
    # Ten changes, fifty requests: fifty waiters; the source was waited on by one pump,
    # about once per change, not once per request per change.
    assert holds.waiters_created == 50
    assert source.waits <= 11
    assert holds.held == 0


async def test_a_condition_already_true_or_an_ended_stream_does_not_hold() -> None:
    holds, source = HeldRequests(max_total=1, max_per_stream=1), Source()
    assert await holds.hold(source, HOUR, lambda: True) is HoldOutcome.READY
    source.ended = True
    assert await holds.hold(source, HOUR, lambda: False) is HoldOutcome.READY
    assert (holds.waiters_created, holds.refused) == (0, 0)


async def test_the_end_releases_every_held_request() -> None:
    holds, source = HeldRequests(), Source()
    requests = [asyncio.ensure_future(holds.hold(source, HOUR, lambda: False))
                for _ in range(3)]
    await settle()
    source.end()
    assert [await r for r in requests] == [HoldOutcome.READY] * 3
    assert holds.held == 0


async def test_a_request_times_out_with_the_condition_as_it_then_is() -> None:
    holds, source = HeldRequests(), Source()
    assert await holds.hold(source, 0.01, lambda: False) is HoldOutcome.TIMED_OUT
    level = Level(1)
    request = asyncio.ensure_future(holds.hold(source, 0.05, level))
    await settle()
    level.value = 1  # true now, but no change was signalled: the timeout still finds it
    assert await request is HoldOutcome.READY
    assert holds.held == 0


async def test_the_per_stream_cap_refuses_at_once_and_leaves_other_streams_alone() -> None:
    holds = HeldRequests(max_total=10, max_per_stream=2)
    busy, quiet = Source(), Source()
    held = [asyncio.ensure_future(holds.hold(busy, HOUR, lambda: False)) for _ in range(2)]
    await settle()
    assert await holds.hold(busy, HOUR, lambda: False) is HoldOutcome.REFUSED
    other = asyncio.ensure_future(holds.hold(quiet, HOUR, lambda: False))
    await settle()
    assert (holds.held, holds.held_for(busy), holds.held_for(quiet)) == (3, 2, 1)
    assert holds.refused == 1
    busy.end()
    quiet.end()
    await asyncio.gather(*held, other)


async def test_the_total_cap_counts_every_stream() -> None:
    holds = HeldRequests(max_total=3, max_per_stream=2)
    sources = [Source(), Source()]
    held = [asyncio.ensure_future(holds.hold(s, HOUR, lambda: False))
            for s in (sources[0], sources[0], sources[1])]
    await settle()
    assert await holds.hold(sources[1], HOUR, lambda: False) is HoldOutcome.REFUSED
    assert await holds.hold(Source(), HOUR, lambda: False) is HoldOutcome.REFUSED
    assert holds.refused == 2
    sources[0].end()
    await asyncio.gather(*held[:2])
    # Slots come back as requests leave.
    again = asyncio.ensure_future(holds.hold(sources[1], HOUR, lambda: False))
    await settle()
    assert holds.held == 2
    sources[1].end()
    await asyncio.gather(held[2], again)


async def test_a_cancelled_request_leaves_no_waiter_and_no_pump() -> None:
    holds, source = HeldRequests(), Source()
    request = asyncio.ensure_future(holds.hold(source, HOUR, lambda: False))
    await settle()
    pumps = [t for t in asyncio.all_tasks() if t.get_name() == "relay-hls-held-requests"]
    assert len(pumps) == 1
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await settle()
    assert holds.held == 0 and holds.held_for(source) == 0
    assert pumps[0].done()


async def test_a_condition_that_raises_fails_only_its_own_request() -> None:
    holds, source = HeldRequests(), Source()
    armed = [False]

    def broken() -> bool:
        if armed[0]:
            raise RuntimeError("a bug in a condition")
        return False

    level = Level(1)
    bad = asyncio.ensure_future(holds.hold(source, HOUR, broken))
    good = asyncio.ensure_future(holds.hold(source, HOUR, level))
    await settle()
    armed[0] = True
    source.change()
    with pytest.raises(RuntimeError):
        await bad
    assert not good.done()
    level.value = 1
    source.change()
    assert await good is HoldOutcome.READY


def test_caps_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        HeldRequests(max_total=0)
