"""relay/app.py's attach_simulcast: a session whose stream has targets gets a manager and one
queue per target behind one fan-out sink; it starts on active, and leaves the running set
once stopped."""

from __future__ import annotations

import pytest

from relay.app import SIMULCAST_ATTACHMENT, attach_simulcast
from relay.simulcast import manager as manager_module
from relay.simulcast.fanout import SimulcastFanOut
from relay.simulcast.manager import SimulcastManager
from relay.store import Store
from relay.streams.hub import LiveSession
from relay.streams.queue import BatchClock
from relay.streams.registry import IngestRegistry, StreamChange
from tests.simulcast.fakes import FakePush, FakeQueue, broadcast_until_end, parse_target, until
from tests.simulcast.helpers.manager import A, B, events_by_target, stream_with
from tests.streams.helpers.sessions import FakePublisher, push

pytestmark = pytest.mark.anyio


async def test_a_stream_with_targets_gets_a_simulcast(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakePush({A: [broadcast_until_end], B: [broadcast_until_end]})
    monkeypatch.setattr(manager_module, "_pusher", lambda: (fake, parse_target))
    with_targets = await stream_with(store, A, B)
    without = await stream_with(store)
    running: set[SimulcastManager] = set()
    queues: list[FakeQueue] = []
    sessions: list[LiveSession] = []

    def new_queue(clock: BatchClock) -> FakeQueue:
        queues.append(FakeQueue())
        return queues[-1]

    def started(session: LiveSession) -> None:
        sessions.append(session)
        attach_simulcast(session, ssl_context=None, running=running, new_queue=new_queue)

    registry = IngestRegistry(store, on_session_started=started)
    plain = await registry.admit(without.stream_key, FakePublisher(), "127.0.0.1")
    assert SIMULCAST_ATTACHMENT not in plain.attachments and plain.sinks == []
    session = await registry.admit(with_targets.stream_key, FakePublisher(), "127.0.0.1")
    manager = session.attachments[SIMULCAST_ATTACHMENT]
    assert isinstance(manager, SimulcastManager) and running == {manager}
    # One sink for the targets: the fan-out that hands each frame to every target's queue.
    assert len(session.sinks) == 1 and isinstance(session.sinks[0], SimulcastFanOut)
    assert session.sinks[0].queues == queues and len(queues) == 2
    assert fake.calls == []  # not before the stream is active
    push(session)
    await until(lambda: fake.attempts(A) == fake.attempts(B) == 1, "both pushing")
    assert all("frame" in q.calls and "track" in q.calls for q in queues)
    registry.stream_changed(with_targets.id, StreamChange.COMPLETED)
    await registry.close()
    await until(lambda: not running, "stopped")
    assert await events_by_target(store) == {
        t.id: ["starting", "broadcasting", "idle"] for t in with_targets.simulcast_targets}
