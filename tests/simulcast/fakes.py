"""Stand-ins for the pusher side of simulcast (relay/streams/queue.py, relay/simulcast/pusher.py)
so that the manager is tested alone: a queue that records what the hub and the manager do
to it, and a push whose every attempt follows a script."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from relay.media.units import MediaFrame, TrackConfig
from relay.simulcast.pusher import PushStats


class FakeQueue:
    """The manager's view of `MediaQueue`: a sink that records, `restart()`, and an end."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.restarts = 0
        self.ended = asyncio.Event()
        # What the metrics read (MediaQueue's counters); tests set them.
        self.queued_bytes = 0
        self.dropped_frames = 0
        self.dropped_bytes = 0
        self.dropped_gops = 0

    def on_track(self, config: TrackConfig) -> None:
        self.calls.append("track")

    def on_frame(self, frame: MediaFrame) -> None:
        self.calls.append("frame")

    def on_discontinuity(self) -> None:
        self.calls.append("discontinuity")

    def on_end(self) -> None:
        self.calls.append("end")
        self.ended.set()

    def restart(self) -> None:
        self.restarts += 1


class FakeTargetError(Exception):
    """As `relay.simulcast.pusher.TargetError`: a severity and a reason."""

    def __init__(self, severity: Literal["fatal", "normal"], reason: str) -> None:
        super().__init__(reason)
        self.severity = severity
        self.reason = reason


@dataclass(frozen=True)
class Address:
    url: str
    stream_key: str | None


def parse_target(url: str, stream_key: str | None) -> Address:
    if not url.startswith(("rtmp://", "rtmps://")):
        raise ValueError(f"unsupported scheme in {url!r}")
    return Address(url, stream_key)


Attempt = Callable[["Call"], Awaitable[None]]


@dataclass
class Call:
    address: Address
    queue: FakeQueue
    ssl_context: ssl.SSLContext | None
    on_published: Callable[[], None]
    stats: PushStats = field(default_factory=PushStats)


@dataclass
class FakePush:
    """`push` with a script per target URL: attempt n runs script[n] (the last one repeats)."""

    scripts: dict[str, list[Attempt]]
    calls: list[Call] = field(default_factory=list)

    async def __call__(self, target: Address, queue: FakeQueue, *,
                       ssl_context: ssl.SSLContext | None,
                       on_published: Callable[[], None], stats: PushStats) -> None:
        call = Call(target, queue, ssl_context, on_published, stats)
        self.calls.append(call)
        script = self.scripts[target.url]
        made = sum(1 for c in self.calls if c.address.url == target.url)
        await script[min(made, len(script)) - 1](call)

    def attempts(self, url: str) -> int:
        return sum(1 for c in self.calls if c.address.url == url)


# -- attempts --------------------------------------------------------------------------

async def broadcast_until_end(call: Call) -> None:
    """Publish, then send until the queue's EndOfStream; return (unpublished)."""
    call.on_published()
    await call.queue.ended.wait()


def fail(severity: Literal["fatal", "normal"], reason: str = "refused") -> Attempt:
    async def attempt(call: Call) -> None:
        await asyncio.sleep(0)
        raise FakeTargetError(severity, reason)
    return attempt


def publish_then_fail(severity: Literal["fatal", "normal"],
                      after: Callable[[], Awaitable[None]] | None = None) -> Attempt:
    async def attempt(call: Call) -> None:
        call.on_published()
        if after is not None:
            await after()
        await asyncio.sleep(0)
        raise FakeTargetError(severity, "connection reset by peer")
    return attempt


async def hang(call: Call) -> None:
    """Never gets through (a connect that does not time out in the test's life)."""
    await asyncio.Event().wait()


async def publish_and_ignore_the_end(call: Call) -> None:
    """Publishes, then never returns (a target that stopped reading)."""
    call.on_published()
    await asyncio.Event().wait()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the loop (and the store's thread) run until `condition` holds; the bound is
    generous and only stops a test that would otherwise hang."""
    for _ in range(4_000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")
