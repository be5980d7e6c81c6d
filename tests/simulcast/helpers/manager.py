"""What test_manager.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

from relay.simulcast.manager import (
    SimulcastManager,
)
from relay.store import NewSimulcastTarget, Store
from relay.store.records import LiveStream
from tests.simulcast.fakes import (
    FakeQueue,
)
from tests.store.helpers.store import spec

PREFIX = "video.live_stream.simulcast_target."


A, B, C = "rtmp://a.example/app", "rtmps://b.example/live2", "rtmp://c.example/app"


async def stream_with(store: Store, *urls: str, **overrides: object) -> LiveStream:
    return await store.create_live_stream(
        spec(**overrides), [NewSimulcastTarget(url, f"key-{i}") for i, url in enumerate(urls)])


def end_session(manager: SimulcastManager, queues: list[FakeQueue]) -> None:
    """What the hub does at the end: its sinks get on_end, then the end listeners run."""
    for queue in queues:
        queue.on_end()
    manager.end()


async def events_by_target(store: Store) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for event in await store.list_events():
        if event.type.startswith(PREFIX) and not event.type.endswith("created"):
            status = event.type.removeprefix(PREFIX)
            severity = event.data.get("error_severity")
            assert event.data["status"] == status
            seen.setdefault(event.data["id"], []).append(
                f"{status}:{severity}" if severity else status)
    return seen
