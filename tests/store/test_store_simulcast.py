"""The store's side of simulcast: each target status change is one row update plus its
`video.live_stream.simulcast_target.<status>` event, written together."""

from __future__ import annotations

import pytest

from relay.store import NewSimulcastTarget, Store
from tests.store.helpers.store import spec

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(any_store: Store) -> Store:
    """Every test here runs on SQLite and on PostgreSQL."""
    return any_store

PREFIX = "video.live_stream.simulcast_target."


async def test_status_changes_write_the_row_and_the_event(store: Store) -> None:
    stream = await store.create_live_stream(
        spec(), [NewSimulcastTarget("rtmp://a.example/app", "k1"),
                 NewSimulcastTarget("rtmps://b.example/app", "k2")])
    one, two = stream.simulcast_targets
    seen = len(await store.list_events())
    changed = await store.set_simulcast_target_status(stream.id, one.id, "starting")
    assert changed is not None and changed.status == "starting"
    changed = await store.set_simulcast_target_status(stream.id, one.id, "errored", "normal")
    assert changed is not None and changed.error_severity == "normal"
    got = await store.get_simulcast_target(stream.id, one.id)
    assert got is not None and (got.status, got.error_severity) == ("errored", "normal")
    # The API resource shows it (through the live stream too); the other target is untouched.
    live = await store.get_live_stream(stream.id)
    assert live is not None
    assert [t.to_api().get("error_severity") for t in live.simulcast_targets] == ["normal", None]
    assert live.simulcast_targets[1].status == "idle"
    # A severity is kept only with errored.
    changed = await store.set_simulcast_target_status(stream.id, one.id, "broadcasting", "fatal")
    assert changed is not None and changed.error_severity is None
    assert "error_severity" not in changed.to_api()
    events = (await store.list_events())[seen:]
    assert [e.type for e in events] == [PREFIX + "starting", PREFIX + "errored",
                                        PREFIX + "broadcasting"]
    assert all((e.object_type, e.object_id) == ("live_stream", stream.id) for e in events)
    assert [e.data["status"] for e in events] == ["starting", "errored", "broadcasting"]
    assert events[1].data == {"id": one.id, "url": one.url, "stream_key": "k1",
                              "status": "errored", "error_severity": "normal"}
    assert two.id not in {e.data["id"] for e in events}


async def test_a_gone_target_writes_nothing(store: Store) -> None:
    stream = await store.create_live_stream(spec(), [NewSimulcastTarget("rtmp://a.example/x")])
    target = stream.simulcast_targets[0]
    assert await store.set_simulcast_target_status("missing", target.id, "starting") is None
    assert await store.delete_live_stream(stream.id)
    seen = len(await store.list_events())
    assert await store.set_simulcast_target_status(stream.id, target.id, "idle") is None
    assert len(await store.list_events()) == seen


async def test_recovery_returns_targets_left_pushing_to_idle(store: Store) -> None:
    stream = await store.create_live_stream(
        spec(), [NewSimulcastTarget("rtmp://a.example/x"), NewSimulcastTarget("rtmp://b/x"),
                 NewSimulcastTarget("rtmp://c/x")])
    a, b, c = stream.simulcast_targets
    await store.session_connected(stream.id)
    await store.session_recording(stream.id, "rtmp", None)
    await store.session_active(stream.id)
    await store.set_simulcast_target_status(stream.id, a.id, "broadcasting")
    await store.set_simulcast_target_status(stream.id, b.id, "errored", "fatal")
    seen = len(await store.list_events())
    # The process crashed here; the next start recovers.
    assert await store.recover_interrupted_sessions() == [stream.id]
    after = await store.get_live_stream(stream.id)
    assert after is not None
    assert [(t.status, t.error_severity) for t in after.simulcast_targets] == [
        ("idle", None)] * 3
    targets = [(e.type, e.data["id"]) for e in (await store.list_events())[seen:]
               if e.type.startswith(PREFIX)]
    assert sorted(targets) == sorted([(PREFIX + "idle", a.id), (PREFIX + "idle", b.id)])
    assert c.id not in {i for _, i in targets}
