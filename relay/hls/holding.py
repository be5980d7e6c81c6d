"""Held playlist and part requests (rfc8216bis 6.2.5.2 blocking reload, the hinted part).

Theory of operation: a held request costs one future and one timer, made once when it is
admitted and never re-made while it waits. Each live stream with held requests has one pump
task that waits on the packager's change signal (`LivePackager.wait_change`) and, at every
change, checks each of that stream's waiters and resolves those whose condition now holds
(or all of them when the stream ends). The pump ends when the stream's last waiter leaves,
so a stream nobody waits on costs nothing.

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


class ChangeSource(Protocol):
    """What holding reads from a live packager."""

    @property
    def ended(self) -> bool: ...

    async def wait_change(self) -> None: ...


class HoldOutcome(enum.Enum):
    READY = "ready"  # the condition holds (or the stream ended): answer now
    TIMED_OUT = "timed out"  # still not there after the timeout: 503
    REFUSED = "refused"  # a cap was reached: 503 with Retry-After, at once


@dataclass(slots=True)
class _StreamWaiters:
    """The held requests of one stream and the task that wakes them."""

    source: ChangeSource
    waiters: dict[asyncio.Future[bool], Callable[[], bool]] = field(default_factory=dict)
    pump: asyncio.Task[None] | None = None


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

    async def hold(self, source: ChangeSource, max_seconds: float,
                   satisfied: Callable[[], bool]) -> HoldOutcome:
        """Wait, without polling, until `satisfied()` or the stream ends, at most
        `max_seconds`; refuse at once when a cap is reached."""
        if source.ended or satisfied():
            return HoldOutcome.READY
        stream = self._streams.get(source)
        if self.held >= self.max_total or (
                stream is not None and len(stream.waiters) >= self.max_per_stream):
            self.refused += 1
            return HoldOutcome.REFUSED
        if stream is None:
            stream = self._streams[source] = _StreamWaiters(source)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self.waiters_created += 1
        stream.waiters[waiter] = satisfied
        self.held += 1
        if stream.pump is None:
            stream.pump = loop.create_task(self._pump(stream),
                                           name="relay-hls-held-requests")
        timer = loop.call_later(max_seconds, _expire, waiter, satisfied)
        try:
            return HoldOutcome.READY if await waiter else HoldOutcome.TIMED_OUT
        finally:
            timer.cancel()
            del stream.waiters[waiter]
            self.held -= 1
            if not stream.waiters and self._streams.get(source) is stream:
                del self._streams[source]
                if stream.pump is not None:
                    stream.pump.cancel()  # wait_change shields the packager's own future

    async def _pump(self, stream: _StreamWaiters) -> None:
        """Wake the stream's waiters whose condition holds, at each change, until none is
        left or the stream ends."""
        try:
            while stream.waiters:
                await stream.source.wait_change()
                ended = stream.source.ended
                for waiter, satisfied in list(stream.waiters.items()):
                    if waiter.done():
                        continue
                    try:
                        if ended or satisfied():
                            waiter.set_result(True)
                    except Exception as exc:  # a bug in a condition fails that request only
                        waiter.set_exception(exc)
                if ended:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("held requests: waiting for a playlist change failed")
            for waiter in stream.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
        finally:
            if stream.pump is asyncio.current_task():
                stream.pump = None


def _expire(waiter: asyncio.Future[bool], satisfied: Callable[[], bool]) -> None:
    """The timeout: answer with the condition as it is now (it may have just become true)."""
    if waiter.done():
        return
    try:
        waiter.set_result(satisfied())
    except Exception as exc:
        waiter.set_exception(exc)
