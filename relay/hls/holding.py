"""Held playlist and part requests (rfc8216bis 6.2.5.2 blocking reload, the hinted part).

Theory of operation: a held request is a `Waiter`, an object the caller already has (the
lean HTTP protocol's answer for the request, or a future on the coroutine path, `hold`):
`admit` files it under its stream with a deadline and returns at once; no task, future or
timer is made for it. Each live stream with held requests has one pump task that waits on
the packager's change signal (`LivePackager.wait_change`) and, at every change, checks each
of that stream's waiters, takes out those whose condition now holds (or all of them when
the stream ends) and calls their `release` in that same pass, so the requests a part
releases are answered back to back. Each stream also has one timer, armed for its earliest
deadline; when it fires, the waiters due are released with the condition as it then is
(`TIMED_OUT` if it still does not hold). The pump and the timer end when the stream's last
waiter leaves, so a stream nobody waits on costs nothing.

The number of held requests is bounded in total and per stream: a request beyond either cap
is refused at once (`HoldOutcome.REFUSED`; the HTTP layer answers 503 with Retry-After)
instead of holding a connection and memory without bound. Each held request also holds an
HTTP connection, so `max_total` should stay well below the HTTP connection cap.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

log = logging.getLogger("relay.hls")

#: Held requests at once, all streams together (--hls-max-held-requests).
DEFAULT_MAX_HELD_REQUESTS: Final = 3000
#: Held requests at once for one stream (--hls-max-held-requests-per-stream).
DEFAULT_MAX_HELD_REQUESTS_PER_STREAM: Final = 1500
#: The Retry-After (seconds) of a request refused because a cap was reached: a held request
#: lasts at most a part or a segment, so a slot is likely free again within a second.
REFUSED_RETRY_AFTER: Final = 1
# A timer may fire this early (the loop's clock resolution): a deadline this close is due.
_TIMER_SLACK: Final = 0.001


class ChangeSource(Protocol):
    """What holding reads from a live packager."""

    @property
    def ended(self) -> bool: ...

    async def wait_change(self) -> None: ...


class HoldOutcome(enum.Enum):
    READY = "ready"  # the condition holds (or the stream ended): answer now
    TIMED_OUT = "timed out"  # still not there after the timeout: 503
    REFUSED = "refused"  # a cap was reached: 503 with Retry-After, at once


class Waiter(Protocol):
    """One held request, as `HeldRequests` sees it."""

    def satisfied(self) -> bool:
        """Whether the request can be answered now (called at each change of its stream)."""

    def release(self, outcome: HoldOutcome | Exception) -> None:
        """Called once when the request leaves the hold other than by `HeldRequests.cancel`:
        READY, TIMED_OUT, or the exception its condition (or the change signal) raised.
        It may admit further requests, of any stream."""


@dataclass(slots=True, eq=False)
class _StreamWaiters:
    """The held requests of one stream (each with its deadline, loop time), the task that
    wakes them and the timer of the earliest deadline."""

    source: ChangeSource
    loop: asyncio.AbstractEventLoop
    waiters: dict[Waiter, float] = field(default_factory=dict)
    pump: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    timer_at: float = 0.0


class HeldRequests:
    """Holds requests until a live playlist satisfies them, with caps and one waiter each."""

    def __init__(self, *, max_total: int = DEFAULT_MAX_HELD_REQUESTS,
                 max_per_stream: int = DEFAULT_MAX_HELD_REQUESTS_PER_STREAM) -> None:
        if max_total < 1 or max_per_stream < 1:
            raise ValueError(f"held-request caps must be at least 1, got total {max_total} "
                             f"and per stream {max_per_stream}")
        self.max_total = max_total
        self.max_per_stream = max_per_stream
        self.held = 0  # requests held now
        self.refused = 0  # requests refused at a cap, since start
        self.waiters_created = 0  # one per admitted request, never one per wake-up
        self._streams: dict[ChangeSource, _StreamWaiters] = {}

    def held_for(self, source: ChangeSource) -> int:
        """Requests held now on one stream."""
        stream = self._streams.get(source)
        return len(stream.waiters) if stream is not None else 0

    def admit(self, source: ChangeSource, max_seconds: float, waiter: Waiter
              ) -> HoldOutcome | None:
        """Hold `waiter` until `waiter.satisfied()` or the stream ends, at most
        `max_seconds`, and return None (`waiter.release` tells the outcome later); or
        return the outcome now: READY when there is nothing to wait for, REFUSED at a cap.
        A condition that raises now raises here. Needs a running loop."""
        if source.ended or waiter.satisfied():
            return HoldOutcome.READY
        stream = self._streams.get(source)
        if self.held >= self.max_total or (
                stream is not None and len(stream.waiters) >= self.max_per_stream):
            self.refused += 1
            return HoldOutcome.REFUSED
        if stream is None:
            stream = self._streams[source] = _StreamWaiters(source, asyncio.get_running_loop())
        loop = stream.loop
        deadline = loop.time() + max_seconds
        self.waiters_created += 1
        stream.waiters[waiter] = deadline
        self.held += 1
        if stream.pump is None:
            stream.pump = loop.create_task(self._pump(stream), name="relay-hls-held-requests")
        if stream.timer is None or deadline < stream.timer_at:
            if stream.timer is not None:
                stream.timer.cancel()
            stream.timer = loop.call_at(deadline, self._expire, stream)
            stream.timer_at = deadline
        return None

    def cancel(self, waiter: Waiter, source: ChangeSource) -> None:
        """Stop holding `waiter` without releasing it (its connection closed); nothing if
        it was released already."""
        stream = self._streams.get(source)
        if stream is not None and stream.waiters.pop(waiter, None) is not None:
            self.held -= 1
            if not stream.waiters:
                self._drop(stream)

    async def hold(self, source: ChangeSource, max_seconds: float,
                   satisfied: Callable[[], bool]) -> HoldOutcome:
        """`admit` for a coroutine: wait, without polling, until `satisfied()` or the stream
        ends, at most `max_seconds`; refuse at once when a cap is reached."""
        waiter = _FutureWaiter(satisfied, asyncio.get_running_loop().create_future())
        outcome = self.admit(source, max_seconds, waiter)
        if outcome is not None:
            return outcome
        try:
            return await waiter.future
        finally:
            self.cancel(waiter, source)

    def _drop(self, stream: _StreamWaiters) -> None:
        """The stream's last waiter left: its pump and timer go."""
        if self._streams.get(stream.source) is stream:
            del self._streams[stream.source]
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        pump, stream.pump = stream.pump, None
        if pump is not None and pump is not asyncio.current_task():
            pump.cancel()  # wait_change shields the packager's own future

    def _take(self, stream: _StreamWaiters, ready: list[Waiter]) -> None:
        """Take `ready` out of the stream (before any is released: a release may admit
        requests, to this stream too)."""
        waiters = stream.waiters
        for waiter in ready:
            del waiters[waiter]
        self.held -= len(ready)
        if not waiters:
            self._drop(stream)

    async def _pump(self, stream: _StreamWaiters) -> None:
        """Release the stream's waiters whose condition holds, now (a change may have come
        between their admission and this task's start) and at each change, until none is
        left or the stream ends."""
        try:
            while stream.waiters:
                ended = stream.source.ended
                ready: list[Waiter] = []
                failed: list[tuple[Waiter, Exception]] = []
                for waiter in stream.waiters:
                    try:
                        if ended or waiter.satisfied():
                            ready.append(waiter)
                    except Exception as exc:  # a bug in a condition fails that request only
                        failed.append((waiter, exc))
                if ready or failed:
                    self._take(stream, ready + [waiter for waiter, _ in failed])
                    for waiter in ready:
                        _release(waiter, HoldOutcome.READY)
                    for waiter, failure in failed:
                        _release(waiter, failure)
                if ended or not stream.waiters:
                    return
                await stream.source.wait_change()
                if stream.pump is not asyncio.current_task():
                    return  # dropped meanwhile (a cancel raced with the change)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("held requests: waiting for a playlist change failed")
            left = list(stream.waiters)
            self._take(stream, left)
            for waiter in left:
                _release(waiter, exc)
        finally:
            if stream.pump is asyncio.current_task():
                stream.pump = None

    def _expire(self, stream: _StreamWaiters) -> None:
        """The stream's earliest deadline: release the waiters due, with the condition as
        it is now (it may have just become true), and re-arm for the next deadline."""
        stream.timer = None
        due_by = stream.loop.time() + _TIMER_SLACK
        due = [waiter for waiter, deadline in stream.waiters.items() if deadline <= due_by]
        if due:
            self._take(stream, due)
        if stream.waiters:
            next_at = min(stream.waiters.values())
            stream.timer = stream.loop.call_at(next_at, self._expire, stream)
            stream.timer_at = next_at
        for waiter in due:
            try:
                outcome = HoldOutcome.READY if waiter.satisfied() else HoldOutcome.TIMED_OUT
            except Exception as failure:
                _release(waiter, failure)
                continue
            _release(waiter, outcome)


def _release(waiter: Waiter, outcome: HoldOutcome | Exception) -> None:
    """Release one waiter; a release that raises is logged, and the others still go."""
    try:
        waiter.release(outcome)
    except Exception:
        log.exception("held requests: answering a released request failed")


@dataclass(slots=True, eq=False)
class _FutureWaiter:
    """A waiter the coroutine path (`HeldRequests.hold`) awaits."""

    condition: Callable[[], bool]
    future: asyncio.Future[HoldOutcome]

    def satisfied(self) -> bool:
        return self.condition()

    def release(self, outcome: HoldOutcome | Exception) -> None:
        if self.future.done():
            return
        if isinstance(outcome, Exception):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)
