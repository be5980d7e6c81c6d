"""SimulcastManager with a scripted push (tests/simulcast/fakes.py): the status of each target,
its events in the outbox in order, the backoff, fatal errors, the end of the session, and a
real LiveSession driving it (active, reconnect inside the window, end)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import pytest

from relay.simulcast import manager as manager_module
from relay.simulcast.manager import (
    RECONNECT_INITIAL_DELAY,
    RECONNECT_MAX_DELAY,
    RECONNECT_RESET_AFTER,
    SimulcastManager,
    error_of,
)
from relay.simulcast.target_status import TargetInput, TargetMachine, TargetStatusError
from relay.simulcast.tls import TargetTls
from relay.store import Store
from relay.store.records import LiveStream
from relay.streams.registry import IngestRegistry, StreamChange
from tests.simulcast.fakes import (
    Attempt,
    FakePush,
    FakeQueue,
    FakeTargetError,
    broadcast_until_end,
    fail,
    hang,
    parse_target,
    publish_and_ignore_the_end,
    publish_then_fail,
    until,
)
from tests.simulcast.helpers.manager import (
    PREFIX,
    A,
    B,
    C,
    end_session,
    events_by_target,
    stream_with,
)
from tests.streams.helpers.sessions import FakePublisher, push

pytestmark = pytest.mark.anyio


class Sleeps:
    """The backoff's sleep: records each delay; returns at once unless blocked."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.blocked = False

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.blocked:
            await asyncio.Event().wait()
        await asyncio.sleep(0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def build(store: Store, stream: LiveStream, scripts: dict[str, list[Attempt]], *,
          sleeps: Sleeps | None = None, clock: Callable[[], float] | None = None,
          context: ssl.SSLContext | TargetTls | None = None, stop_grace: float = 5.0,
          ) -> tuple[SimulcastManager, FakePush, list[FakeQueue]]:
    fake = FakePush(scripts)
    queues = [FakeQueue() for _ in stream.simulcast_targets]
    manager = SimulcastManager(
        store, stream.id, list(zip(stream.simulcast_targets, queues, strict=True)),
        ssl_context=context, push=fake, parse_target=parse_target,
        sleep=sleeps or Sleeps(), jitter=lambda high: high,  # the top of each backoff range
        clock=clock or Clock(), stop_grace=stop_grace)
    return manager, fake, queues


async def stored(store: Store, stream: LiveStream, index: int) -> tuple[str, str | None]:
    target = await store.get_simulcast_target(stream.id, stream.simulcast_targets[index].id)
    assert target is not None
    return target.status, target.error_severity


# -- the status machine ------------------------------------------------------------------

def test_the_status_table() -> None:
    machine = TargetMachine()
    assert machine.handle(TargetInput.CONNECT) and machine.status == "starting"
    assert machine.handle(TargetInput.PUBLISHED) and machine.status == "broadcasting"
    assert machine.handle(TargetInput.FAILED, "normal")
    assert (machine.status, machine.error_severity) == ("errored", "normal")
    assert machine.handle(TargetInput.RETRY) and machine.error_severity is None
    assert machine.handle(TargetInput.FAILED, "fatal")
    with pytest.raises(TargetStatusError, match="fatal error is not retried"):
        machine.handle(TargetInput.RETRY)
    assert machine.handle(TargetInput.STOP) and machine.status == "idle"
    assert not machine.handle(TargetInput.STOP)  # idle stays idle: nothing to write
    for event in (TargetInput.PUBLISHED, TargetInput.RETRY):
        with pytest.raises(TargetStatusError, match="not accepted in status idle"):
            machine.handle(event)
    with pytest.raises(TargetStatusError, match="only failed has one"):
        machine.handle(TargetInput.FAILED)


def test_errors_are_classified() -> None:
    assert error_of(FakeTargetError("fatal", "publish refused: bad key")) == (
        "fatal", "publish refused: bad key")
    assert error_of(FakeTargetError("normal", "reset\nforged line")) == (
        "normal", "reset\\x0aforged line")
    # A defect is retried as network trouble, not a silent end.
    severity, reason = error_of(KeyError("x"))
    assert severity == "normal" and reason.startswith("unexpected KeyError")


# -- one target ----------------------------------------------------------------------------

async def test_success_then_end(store: Store) -> None:
    stream = await stream_with(store, A)
    context = ssl.create_default_context()
    manager, fake, queues = build(store, stream, {A: [broadcast_until_end]}, context=context)
    manager.start()
    await until(lambda: manager.status(stream.simulcast_targets[0].id)[0] == "broadcasting",
                "broadcasting")
    await until(lambda: manager._writer is not None and not manager._writes, "written")
    await until(lambda: len(fake.calls) == 1, "a push")
    assert fake.calls[0].ssl_context is None  # rtmp://: no TLS
    assert fake.calls[0].address.stream_key == "key-0"
    end_session(manager, queues)
    await manager.stop()
    assert await events_by_target(store) == {
        stream.simulcast_targets[0].id: ["starting", "broadcasting", "idle"]}
    assert await stored(store, stream, 0) == ("idle", None)
    assert fake.attempts(A) == 1 and queues[0].restarts == 0


async def test_the_api_resource_shows_the_status_while_live(store: Store) -> None:
    stream = await stream_with(store, B)
    context = ssl.create_default_context()
    manager, fake, queues = build(store, stream, {B: [broadcast_until_end]}, context=context)
    manager.start()
    target = stream.simulcast_targets[0]

    async def shown() -> str:
        got = await store.get_live_stream(stream.id)
        assert got is not None
        return str(got.simulcast_targets[0].to_api()["status"])

    for _ in range(400):
        if await shown() == "broadcasting":
            break
        await asyncio.sleep(0.005)
    assert await shown() == "broadcasting"
    assert fake.calls[0].ssl_context is context  # rtmps:// gets the configured context
    end_session(manager, queues)
    await manager.stop()
    assert await shown() == "idle" and manager.status(target.id) == ("idle", None)


async def test_the_servers_context_is_made_for_the_first_rtmps_target_only(
        store: Store) -> None:
    # As `relay serve` gives it (relay.app.load_simulcast_tls): made on first use.
    tls = TargetTls()

    async def push_once(url: str) -> ssl.SSLContext | None:
        """The context one push to `url` was given."""
        stream = await stream_with(store, url)
        manager, fake, queues = build(store, stream, {url: [broadcast_until_end]},
                                      context=tls)
        manager.start()
        await until(lambda: len(fake.calls) == 1, "a push")
        end_session(manager, queues)
        await manager.stop()
        return fake.calls[0].ssl_context

    assert await push_once(A) is None and not tls.made  # rtmp://
    made = await push_once(B)  # rtmps://
    assert isinstance(made, ssl.SSLContext) and tls.made
    assert made.verify_mode is ssl.CERT_REQUIRED and made.check_hostname
    assert await tls.context() is made


async def test_normal_errors_back_off_and_recover(store: Store) -> None:
    stream = await stream_with(store, A)
    sleeps = Sleeps()
    manager, fake, queues = build(
        store, stream, {A: [fail("normal"), fail("normal"), publish_then_fail("normal"),
                            broadcast_until_end]}, sleeps=sleeps)
    manager.start()
    await until(lambda: fake.attempts(A) == 4, "the fourth attempt")
    await until(lambda: manager.status(stream.simulcast_targets[0].id)[0] == "broadcasting",
                "broadcasting again")
    # Exponential: 1, 2, 4 s (the jitter here picks the top of each range).
    assert sleeps.delays == [RECONNECT_INITIAL_DELAY, 2 * RECONNECT_INITIAL_DELAY,
                             4 * RECONNECT_INITIAL_DELAY]
    # Every retry starts from the track configurations and a keyframe; the first does not.
    assert queues[0].restarts == 3
    end_session(manager, queues)
    await manager.stop()
    assert (await events_by_target(store))[stream.simulcast_targets[0].id] == [
        "starting", "errored:normal", "starting", "errored:normal",
        "starting", "broadcasting", "errored:normal", "starting", "broadcasting", "idle"]


async def test_the_backoff_is_capped_and_jittered(store: Store) -> None:
    stream = await stream_with(store, A)
    sleeps = Sleeps()
    highs: list[float] = []
    manager, fake, queues = build(store, stream, {A: [fail("normal")]}, sleeps=sleeps)

    def jitter(high: float) -> float:
        highs.append(high)
        return high / 2

    manager._jitter = jitter
    manager.start()
    await until(lambda: fake.attempts(A) >= 10, "ten attempts")
    end_session(manager, queues)
    await manager.stop()
    assert highs[:9] == [1, 2, 4, 8, 16, 32, RECONNECT_MAX_DELAY, RECONNECT_MAX_DELAY,
                         RECONNECT_MAX_DELAY]
    assert sleeps.delays[:9] == [high / 2 for high in highs[:9]]
    # The default jitter draws from the whole range [0, high).
    default = SimulcastManager(store, stream.id, [], ssl_context=None)
    draws = [default._jitter(8.0) for _ in range(200)]
    assert all(0 <= d <= 8.0 for d in draws) and min(draws) < 2 and max(draws) > 6


async def test_a_long_broadcast_resets_the_backoff(store: Store) -> None:
    stream = await stream_with(store, A)
    sleeps, clock = Sleeps(), Clock()

    async def long_broadcast() -> None:
        clock.now += RECONNECT_RESET_AFTER

    manager, fake, queues = build(
        store, stream, {A: [fail("normal"), fail("normal"), publish_then_fail("normal"),
                            publish_then_fail("normal", long_broadcast), hang]},
        sleeps=sleeps, clock=clock)
    manager.start()
    await until(lambda: fake.attempts(A) == 5, "the fifth attempt")
    end_session(manager, queues)
    await manager.stop()
    # A publish that is dropped at once keeps backing off; one that lasted resets it.
    assert sleeps.delays == [1, 2, 4, 1]


async def test_a_fatal_error_is_not_retried(store: Store) -> None:
    stream = await stream_with(store, A)
    sleeps = Sleeps()
    manager, fake, queues = build(store, stream, {A: [fail("fatal", "publish refused")]},
                                  sleeps=sleeps)
    manager.start()
    target = stream.simulcast_targets[0].id
    await until(lambda: manager.status(target) == ("errored", "fatal"), "errored")
    for _ in range(20):
        await asyncio.sleep(0)
    assert fake.attempts(A) == 1 and sleeps.delays == []
    await until(lambda: not manager._writes, "written")
    await until(lambda: manager._writer is not None, "writer")
    for _ in range(50):
        if (await stored(store, stream, 0)) == ("errored", "fatal"):
            break
        await asyncio.sleep(0.005)
    assert await stored(store, stream, 0) == ("errored", "fatal")
    end_session(manager, queues)
    await manager.stop()
    assert (await events_by_target(store))[target] == ["starting", "errored:fatal", "idle"]


async def test_a_url_that_does_not_parse_is_fatal(store: Store) -> None:
    # Stored before the API checked schemes (srt:// was accepted then).
    stream = await stream_with(store, "srt://old.example:9000")
    manager, fake, queues = build(store, stream, {})
    manager.start()
    target = stream.simulcast_targets[0]
    await until(lambda: manager.status(target.id) == ("errored", "fatal"), "errored")
    assert fake.calls == []
    end_session(manager, queues)
    await manager.stop()
    assert (await events_by_target(store))[target.id] == ["starting", "errored:fatal", "idle"]


async def test_an_unexpected_exception_is_retried(store: Store,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    stream = await stream_with(store, A)

    async def buggy(call: object) -> None:
        raise RuntimeError("a bug")

    manager, _fake, queues = build(store, stream, {A: [buggy, broadcast_until_end]})
    manager.start()
    await until(lambda: manager.status(stream.simulcast_targets[0].id)[0] == "broadcasting",
                "broadcasting")
    end_session(manager, queues)
    await manager.stop()
    assert "RuntimeError: a bug" in caplog.text
    assert (await events_by_target(store))[stream.simulcast_targets[0].id] == [
        "starting", "errored:normal", "starting", "broadcasting", "idle"]


# -- the end ------------------------------------------------------------------------------

async def test_the_end_cancels_backoff_and_connects(store: Store) -> None:
    stream = await stream_with(store, A, B)
    sleeps = Sleeps()
    sleeps.blocked = True
    manager, fake, queues = build(store, stream, {A: [fail("normal")], B: [hang]},
                                  sleeps=sleeps, context=ssl.create_default_context())
    manager.start()
    a, b = (t.id for t in stream.simulcast_targets)
    await until(lambda: sleeps.delays == [1.0], "backing off")
    await until(lambda: fake.attempts(B) == 1, "connecting")
    end_session(manager, queues)
    await manager.stop()
    assert all(t.task is not None and t.task.cancelled() for t in manager.targets)
    assert manager.status(a) == manager.status(b) == ("idle", None)
    assert await events_by_target(store) == {a: ["starting", "errored:normal", "idle"],
                                             b: ["starting", "idle"]}
    assert fake.attempts(A) == 1


async def test_a_target_that_ignores_the_end_is_cancelled_after_the_grace(
        store: Store) -> None:
    stream = await stream_with(store, A)
    manager, _fake, queues = build(store, stream, {A: [publish_and_ignore_the_end]},
                                  stop_grace=0.01)
    manager.start()
    await until(lambda: manager.status(stream.simulcast_targets[0].id)[0] == "broadcasting",
                "broadcasting")
    end_session(manager, queues)
    await manager.stop()
    assert manager.targets[0].task is not None and manager.targets[0].task.cancelled()
    assert await stored(store, stream, 0) == ("idle", None)


async def test_nothing_starts_after_the_end(store: Store) -> None:
    stream = await stream_with(store, A)
    manager, fake, queues = build(store, stream, {A: [broadcast_until_end]})
    end_session(manager, queues)
    await manager.stop()
    manager.start()
    await manager.stop()
    assert fake.calls == [] and await events_by_target(store) == {}


async def test_a_target_deleted_with_its_stream_writes_nothing(store: Store) -> None:
    stream = await stream_with(store, A)
    manager, _fake, queues = build(store, stream, {A: [broadcast_until_end]})
    manager.start()
    await until(lambda: manager.status(stream.simulcast_targets[0].id)[0] == "broadcasting",
                "broadcasting")
    await until(lambda: not manager._writes, "written")
    assert await store.delete_live_stream(stream.id)
    end_session(manager, queues)
    await manager.stop()  # the idle write finds no target and is skipped
    assert manager.status(stream.simulcast_targets[0].id) == ("idle", None)


async def test_the_store_failing_does_not_stop_the_pushes(
        store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    stream = await stream_with(store, A)

    async def down(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "set_simulcast_target_status", down)
    manager, fake, queues = build(store, stream, {A: [broadcast_until_end]})
    manager.start()
    await until(lambda: manager.status(stream.simulcast_targets[0].id)[0] == "broadcasting",
                "broadcasting")
    end_session(manager, queues)
    await manager.stop()
    assert "could not record simulcast target" in caplog.text
    assert fake.attempts(A) == 1


async def test_pending_status_writes_are_bounded(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = await stream_with(store, A)
    monkeypatch.setattr(manager_module, "MAX_PENDING_STATUS_WRITES", 4)
    manager, _fake, _queues = build(store, stream, {A: [broadcast_until_end]})
    target = stream.simulcast_targets[0]
    for _ in range(6):  # six changes while the writer has not run yet
        manager.targets[0].machine.status = "broadcasting"
        manager._change(manager.targets[0], TargetInput.STOP)
    assert len(manager._writes) == 4 and manager.writes_dropped == 2
    await manager.stop()
    assert (await events_by_target(store))[target.id] == ["idle"] * 4


# -- several targets ------------------------------------------------------------------------

async def test_many_targets_are_independent(store: Store) -> None:
    stream = await stream_with(store, A, B, C)
    sleeps = Sleeps()
    manager, fake, queues = build(
        store, stream, {A: [fail("fatal")], B: [fail("normal"), fail("normal"),
                                                broadcast_until_end],
                        C: [broadcast_until_end]}, sleeps=sleeps)
    manager.start()
    a, b, c = (t.id for t in stream.simulcast_targets)
    await until(lambda: manager.status(b)[0] == "broadcasting", "b broadcasting")
    await until(lambda: manager.status(c)[0] == "broadcasting", "c broadcasting")
    assert manager.status(a) == ("errored", "fatal")
    end_session(manager, queues)
    await manager.stop()
    assert await events_by_target(store) == {
        a: ["starting", "errored:fatal", "idle"],
        b: ["starting", "errored:normal", "starting", "errored:normal", "starting",
            "broadcasting", "idle"],
        c: ["starting", "broadcasting", "idle"],
    }
    assert [fake.attempts(u) for u in (A, B, C)] == [1, 3, 1]
    assert [q.restarts for q in queues] == [0, 2, 0]
    assert sleeps.delays == [1.0, 2.0]  # only B backed off


# -- driven by a live session -------------------------------------------------------------

async def test_a_live_session_starts_on_active_and_ends_idle(store: Store) -> None:
    """The hub's hooks: targets start once the stream is active (after its event), an
    encoder reconnecting inside the window restarts nothing (the queue sees a
    discontinuity), and the session's end brings every target back to idle."""
    stream = await stream_with(store, A, B)
    managers: list[SimulcastManager] = []
    fakes: list[FakePush] = []
    all_queues: list[FakeQueue] = []

    def started(session: object) -> None:
        from relay.streams.hub import LiveSession
        assert isinstance(session, LiveSession)
        manager, fake, queues = build(store, session.stream,
                                      {A: [broadcast_until_end], B: [broadcast_until_end]})
        for queue in queues:
            session.attach_sink(queue)
        session.active_listeners.append(manager.start)
        session.end_listeners.append(manager.end)
        managers.append(manager)
        fakes.append(fake)
        all_queues.extend(queues)

    registry = IngestRegistry(store, on_session_started=started)
    publisher = FakePublisher()
    session = await registry.admit(stream.stream_key, publisher, "127.0.0.1")
    push(session)
    [manager], [fake] = managers, fakes
    await until(lambda: all(manager.status(t.id)[0] == "broadcasting"
                            for t in stream.simulcast_targets), "broadcasting")
    for _ in range(400):
        types = [e.type for e in await store.list_events()]
        if types.count(PREFIX + "broadcasting") == 2:
            break
        await asyncio.sleep(0.005)
    assert types.index("video.live_stream.active") < types.index(PREFIX + "starting")
    # The encoder drops and comes back inside the reconnect window.
    session.detach(publisher, "gone")
    again = await registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1")
    assert again is session
    push(session)
    await until(lambda: session.state.value == "active", "active again")
    for _ in range(20):
        await asyncio.sleep(0.005)
    assert [fake.attempts(u) for u in (A, B)] == [1, 1]
    assert all("discontinuity" in q.calls for q in all_queues)
    assert all(q.restarts == 0 for q in all_queues)
    registry.stream_changed(stream.id, StreamChange.DISABLED)
    await session.wait_finished()
    await manager.stop()
    assert all(q.calls[-1] == "end" for q in all_queues)
    assert await events_by_target(store) == {
        t.id: ["starting", "broadcasting", "idle"] for t in stream.simulcast_targets}
