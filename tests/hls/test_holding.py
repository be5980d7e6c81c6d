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


class Recorder:
    """A direct waiter (`relay.hls.holding.Waiter`), as the lean HTTP protocol's `Held`:
    records its releases, in order, into a shared log."""

    def __init__(self, name: str, condition: Level | None = None,
                 log: list[tuple[str, object]] | None = None) -> None:
        self.name = name
        self.condition = condition if condition is not None else Level(1)
        self.log = log if log is not None else []

    def satisfied(self) -> bool:
        return self.condition()

    def release(self, outcome: HoldOutcome | Exception) -> None:
        self.log.append((self.name, outcome))


async def test_direct_waiters_are_released_in_one_pass_at_the_change() -> None:
    holds, source = HeldRequests(), Source()
    log: list[tuple[str, object]] = []
    level = Level(1)
    waiters = [Recorder(str(n), level, log) for n in range(20)]
    tasks_before = len(asyncio.all_tasks())
    assert [holds.admit(source, HOUR, w) for w in waiters] == [None] * 20
    # One pump for the stream, nothing per request.
    assert len(asyncio.all_tasks()) == tasks_before + 1
    await settle()
    source.change()  # nothing changed for the condition: nobody leaves
    await settle()
    assert log == [] and holds.held == 20
    level.value = 1
    source.change()
    # The pump runs once: every waiter is released in that step, in the order admitted.
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert log == [(str(n), HoldOutcome.READY) for n in range(20)]
    assert (holds.held, holds.held_for(source), holds.waiters_created) == (0, 0, 20)
    await settle()
    assert len(asyncio.all_tasks()) == tasks_before


async def test_a_direct_waiter_ready_or_refused_at_once_is_not_held() -> None:
    holds, source = HeldRequests(max_total=1, max_per_stream=1), Source()
    ready = Level(0)
    log: list[tuple[str, object]] = []
    assert holds.admit(source, HOUR, Recorder("ready", ready, log)) is HoldOutcome.READY
    assert holds.admit(source, HOUR, Recorder("held", Level(1), log)) is None
    assert holds.admit(source, HOUR, Recorder("over", Level(1), log)) is HoldOutcome.REFUSED
    assert (holds.held, holds.refused, holds.waiters_created) == (1, 1, 1)
    assert log == []  # what was answered at once is not released later
    source.end()
    await settle()
    assert log == [("held", HoldOutcome.READY)]


async def test_cancelling_a_direct_waiter_leaves_no_waiter_pump_or_timer() -> None:
    holds, source = HeldRequests(), Source()
    log: list[tuple[str, object]] = []
    first, second = Recorder("first", log=log), Recorder("second", log=log)
    holds.admit(source, 0.05, first)
    holds.admit(source, 0.05, second)
    await settle()
    pumps = [t for t in asyncio.all_tasks() if t.get_name() == "relay-hls-held-requests"]
    holds.cancel(first, source)
    holds.cancel(first, source)  # twice: nothing more
    assert holds.held == 1 and not pumps[0].done()
    holds.cancel(second, source)
    await settle()
    assert holds.held == 0 and holds.held_for(source) == 0 and pumps[0].done()
    await asyncio.sleep(0.1)  # past the deadline: the stream's timer went with its waiters
    assert log == []


async def test_direct_waiters_time_out_each_at_its_own_deadline() -> None:
    holds, source = HeldRequests(), Source()
    log: list[tuple[str, object]] = []
    late = Level(1)
    holds.admit(source, HOUR, Recorder("hour", log=log))
    holds.admit(source, 0.2, Recorder("later", late, log))
    holds.admit(source, 0.02, Recorder("soon", log=log))  # earlier than the armed timer
    await asyncio.sleep(0.1)
    assert log == [("soon", HoldOutcome.TIMED_OUT)]
    late.value = 1  # true now, no change signalled: the timeout still finds it
    await asyncio.sleep(0.2)
    assert log == [("soon", HoldOutcome.TIMED_OUT), ("later", HoldOutcome.READY)]
    assert holds.held == 1
    source.end()
    await settle()
    assert log[-1] == ("hour", HoldOutcome.READY) and holds.held == 0


async def test_a_direct_waiter_whose_condition_raises_gets_the_exception_alone() -> None:
    holds, source = HeldRequests(), Source()
    log: list[tuple[str, object]] = []
    armed = [False]

    class Broken(Level):
        def __call__(self) -> bool:
            if armed[0]:
                raise RuntimeError("a bug in a condition")
            return False

    good = Level(1)
    holds.admit(source, HOUR, Recorder("bad", Broken(1), log))
    holds.admit(source, HOUR, Recorder("good", good, log))
    await settle()
    armed[0] = True
    source.change()
    await settle()
    assert len(log) == 1 and log[0][0] == "bad" and isinstance(log[0][1], RuntimeError)
    assert holds.held == 1
    good.value = 1
    source.change()
    await settle()
    assert log[1] == ("good", HoldOutcome.READY) and holds.held == 0


async def test_a_release_may_admit_again_and_a_failing_release_spares_the_others() -> None:
    holds, source = HeldRequests(), Source()
    log: list[tuple[str, object]] = []
    level = Level(1)
    follow = Recorder("follow", Level(2), log)

    class Pipelined(Recorder):
        def release(self, outcome: HoldOutcome | Exception) -> None:
            super().release(outcome)
            # As a connection's next pipelined request: held again, on the same stream.
            assert holds.admit(source, HOUR, follow) is None

    class Failing(Recorder):
        def release(self, outcome: HoldOutcome | Exception) -> None:
            raise RuntimeError("a bug in an answer")

    holds.admit(source, HOUR, Pipelined("first", level, log))
    holds.admit(source, HOUR, Failing("failing", level, log))
    holds.admit(source, HOUR, Recorder("last", level, log))
    await settle()
    level.value = 1
    source.change()
    await settle()
    assert log == [("first", HoldOutcome.READY), ("last", HoldOutcome.READY)]
    assert holds.held == holds.held_for(source) == 1
    follow.condition.value = 2
    source.change()
    await settle()
    assert log[-1] == ("follow", HoldOutcome.READY) and holds.held == 0


async def test_a_change_before_the_pump_first_waits_is_not_missed() -> None:
    # The stream's pump is a task: it starts after the request that made it was admitted,
    # and a part may be cut in between (the ingest's callback, in the same loop pass).
    holds, source = HeldRequests(), Source()
    log: list[tuple[str, object]] = []
    level = Level(1)
    assert holds.admit(source, HOUR, Recorder("first", level, log)) is None
    level.value = 1
    source.change()  # nobody waits on the signal yet
    await settle()
    assert log == [("first", HoldOutcome.READY)] and holds.held == 0
