"""The simulcast side of /metrics: SimulcastManagers driven by a scripted push (their push
stats and queues' counters set by the test) read by the collector at scrape time; the
per-target series while the session runs, the totals folded in when it stops (counted once),
failures by severity, and one label set per target when a stream has two sessions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from relay.metrics import IngestCollector, SimulcastMetricsSource
from relay.rtmp.server import RtmpCounters
from relay.simulcast.counters import SimulcastCounters
from relay.simulcast.manager import SimulcastManager
from relay.store import Store
from relay.store.records import LiveStream
from relay.streams.registry import IngestRegistry
from tests.simulcast.fakes import (
    Call,
    FakePush,
    FakeQueue,
    broadcast_until_end,
    fail,
    parse_target,
    publish_then_fail,
    until,
)
from tests.simulcast.helpers.manager import A, B, C, end_session, stream_with
from tests.unit.helpers.metrics_srt import Samples, scrape

pytestmark = pytest.mark.anyio


@pytest.fixture
async def registry(store: Store) -> AsyncIterator[IngestRegistry]:
    running = IngestRegistry(store)
    yield running
    await running.close()


class Simulcasts:
    """What the app keeps: the process-wide counters and the running managers."""

    def __init__(self, registry: IngestRegistry) -> None:
        self.counters = SimulcastCounters()
        self.running: set[SimulcastManager] = set()
        self.collector = IngestCollector(registry, RtmpCounters(), simulcast=(
            SimulcastMetricsSource(self.counters, lambda: list(self.running))))
        self.collector.unregister()  # from the process-wide registry: scrape() has its own

    def manager(self, store: Store, stream: LiveStream,
                push: FakePush) -> tuple[SimulcastManager, list[FakeQueue]]:
        queues = [FakeQueue() for _ in stream.simulcast_targets]

        async def no_sleep(_: float) -> None:
            await asyncio.sleep(0)

        manager = SimulcastManager(
            store, stream.id, list(zip(stream.simulcast_targets, queues, strict=True)),
            ssl_context=None, push=push, parse_target=parse_target, sleep=no_sleep,
            jitter=lambda high: high, stop_grace=5.0, on_stopped=self.running.discard,
            counters=self.counters)
        self.running.add(manager)
        return manager, queues

    def scrape(self) -> Samples:
        return scrape(self.collector)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def sending(bytes_written: int, frames: int) -> FakePush:
    """Attempts that publish, report what they sent, and run until the session's end."""
    async def attempt(call: Call) -> None:
        call.stats.bytes_written += bytes_written
        call.stats.frames_sent += frames
        await broadcast_until_end(call)
    return FakePush({A: [attempt], B: [attempt]})


async def test_targets_while_live_and_totals_after(store: Store,
                                                   registry: IngestRegistry) -> None:
    simulcasts = Simulcasts(registry)
    stream = await stream_with(store, A, B)
    first, second = (t.id for t in stream.simulcast_targets)
    manager, queues = simulcasts.manager(store, stream, sending(1000, 10))
    samples = simulcasts.scrape()
    assert value(samples, "relay_simulcast_target_status", live_stream_id=stream.id,
                 simulcast_target_id=first, status="idle") == 1
    manager.start()
    await until(lambda: all(s.status == "broadcasting" for s in manager.snapshot()),
                "both broadcasting")
    queues[0].queued_bytes, queues[0].dropped_frames = 4096, 90
    queues[0].dropped_bytes, queues[0].dropped_gops = 300_000, 2
    samples = simulcasts.scrape()
    mine = {"live_stream_id": stream.id, "simulcast_target_id": first}
    for status in ("idle", "starting", "broadcasting", "errored"):
        assert value(samples, "relay_simulcast_target_status", **mine,
                     status=status) == (status == "broadcasting")
    assert value(samples, "relay_simulcast_target_attempts_total", **mine) == 1
    assert value(samples, "relay_simulcast_target_sent_bytes_total", **mine) == 1000
    assert value(samples, "relay_simulcast_target_sent_frames_total", **mine) == 10
    assert value(samples, "relay_simulcast_target_queued_bytes", **mine) == 4096
    assert value(samples, "relay_simulcast_target_dropped_frames_total", **mine) == 90
    assert value(samples, "relay_simulcast_target_dropped_bytes_total", **mine) == 300_000
    assert value(samples, "relay_simulcast_target_dropped_gops_total", **mine) == 2
    other = {"live_stream_id": stream.id, "simulcast_target_id": second}
    assert value(samples, "relay_simulcast_target_dropped_frames_total", **other) == 0
    assert value(samples, "relay_simulcast_attempts_total") == 2
    assert value(samples, "relay_simulcast_sent_bytes_total") == 2000
    assert value(samples, "relay_simulcast_sent_frames_total") == 20
    assert value(samples, "relay_simulcast_dropped_frames_total") == 90
    assert value(samples, "relay_simulcast_dropped_bytes_total") == 300_000
    assert value(samples, "relay_simulcast_dropped_gops_total") == 2
    end_session(manager, queues)
    await manager.stop()
    assert not simulcasts.running
    samples = simulcasts.scrape()
    # The session's series are gone; its totals are in the counters, once.
    assert not any(name.startswith("relay_simulcast_target_") for name, _ in samples)
    assert value(samples, "relay_simulcast_sent_bytes_total") == 2000
    assert value(samples, "relay_simulcast_sent_frames_total") == 20
    assert value(samples, "relay_simulcast_dropped_frames_total") == 90
    assert value(samples, "relay_simulcast_dropped_gops_total") == 2
    assert value(samples, "relay_simulcast_attempts_total") == 2


async def test_failures_by_severity_and_sent_bytes_across_attempts(
        store: Store, registry: IngestRegistry) -> None:
    simulcasts = Simulcasts(registry)
    stream = await stream_with(store, A, B)

    async def send_then_reset(call: Call) -> None:
        call.stats.bytes_written += 500
        await publish_then_fail("normal")(call)

    push = FakePush({A: [send_then_reset, send_then_reset, broadcast_until_end],
                     B: [fail("fatal")]})
    manager, queues = simulcasts.manager(store, stream, push)
    manager.start()
    await until(lambda: push.attempts(A) == 3 and manager.snapshot()[0].status
                == "broadcasting", "A back after two resets")
    await until(lambda: manager.snapshot()[1].status == "errored", "B refused")
    samples = simulcasts.scrape()
    assert value(samples, "relay_simulcast_failures_total", severity="normal") == 2
    assert value(samples, "relay_simulcast_failures_total", severity="fatal") == 1
    assert value(samples, "relay_simulcast_attempts_total") == 4
    first, second = (t.id for t in stream.simulcast_targets)
    assert value(samples, "relay_simulcast_target_sent_bytes_total", live_stream_id=stream.id,
                 simulcast_target_id=first) == 1000  # the two ended attempts' bytes
    assert value(samples, "relay_simulcast_target_status", live_stream_id=stream.id,
                 simulcast_target_id=second, status="errored") == 1
    end_session(manager, queues)
    await manager.stop()
    assert value(simulcasts.scrape(), "relay_simulcast_sent_bytes_total") == 1000


async def test_a_stopping_session_and_the_next_name_one_series(
        store: Store, registry: IngestRegistry) -> None:
    """A stream's ending session may still be stopping when its next one starts: the two
    have the same target ids, and one label set may have one sample only."""
    simulcasts = Simulcasts(registry)
    stream = await stream_with(store, C)
    hung = asyncio.Event()

    async def ignore_the_end(call: Call) -> None:
        call.stats.bytes_written += 7
        call.on_published()
        await hung.wait()

    old, old_queues = simulcasts.manager(store, stream, FakePush({C: [ignore_the_end]}))
    old.start()
    await until(lambda: old.snapshot()[0].status == "broadcasting", "old broadcasting")
    end_session(old, old_queues)  # stopping: the target gets its grace period
    new, new_queues = simulcasts.manager(store, stream, FakePush({C: [fail("normal")]}))
    new.start()
    await until(lambda: new.snapshot()[0].attempts >= 1, "new attempting")
    samples = simulcasts.scrape()
    statuses = [(labels, v) for (name, labels), v in samples.items()
                if name == "relay_simulcast_target_status" and v == 1]
    assert len(statuses) == 1
    (labels, _), = statuses
    assert dict(labels)["status"] != "broadcasting"  # the new session's, not the old one's
    assert value(samples, "relay_simulcast_sent_bytes_total") == 7
    hung.set()
    end_session(new, new_queues)
    await asyncio.gather(old.stop(), new.stop())
