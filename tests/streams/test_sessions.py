"""Live sessions against a real store: admission, the lifecycle's rows and events, and
what the API's changes do to a live session. The publisher is a stand-in for an ingest
connection (the RTMP end-to-end tests drive the same code with ffmpeg)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from relay.media.units import TrackKind
from relay.store import Store
from relay.store.records import LiveStream
from relay.streams.lifecycle import State
from relay.streams.registry import IngestRegistry, PublishRefused, Refusal, StreamChange
from relay.streams.throttle import AuthThrottle
from tests.streams.helpers.drain_queue import Recorder
from tests.streams.helpers.sessions import (
    AUDIO,
    VIDEO,
    FakePublisher,
    frame,
    new_stream,
    push,
    settle,
)

pytestmark = pytest.mark.anyio


async def events_of(store: Store) -> list[str]:
    return [e.type for e in await store.list_events() if e.type != "video.live_stream.created"]


async def test_full_session_then_reconnect_window_expires(store: Store) -> None:
    stream = await new_stream(store, reconnect_window=0.2)
    registry = IngestRegistry(store)
    publisher = FakePublisher()
    session = await registry.admit(stream.stream_key, publisher, "127.0.0.1")
    push(session)
    await settle(registry, stream.id)
    live = await store.get_live_stream(stream.id)
    assert live is not None and live.status == "active"
    assert live.active_asset_id is not None and live.active_ingest_protocol == "rtmp"
    assert live.to_api()["active_ingest_protocol"] == "rtmp"
    asset_id = live.active_asset_id

    session.detach(publisher, "encoder left")
    await settle(registry, stream.id)
    # Reconnect inside the window: the same session and asset.
    again = await registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1")
    assert again is session
    push(again)
    again.detach(again.publisher, "encoder left")  # type: ignore[arg-type]
    await session.wait_finished()

    idle = await store.get_live_stream(stream.id)
    assert idle is not None and idle.status == "idle" and idle.active_asset_id is None
    assert idle.recent_asset_ids == (asset_id,)
    asset = await store.get_asset(asset_id)
    assert asset is not None and asset.status == "ready" and not asset.is_live
    assert len(asset.recording_times) == 2 and asset.ingest_type == "live_rtmp"
    assert [p.policy for p in asset.playback_ids] == ["public"]
    assert await events_of(store) == [
        "video.live_stream.connected", "video.asset.created", "video.live_stream.recording",
        "video.live_stream.active", "video.live_stream.disconnected",
        "video.live_stream.connected", "video.live_stream.recording",
        "video.live_stream.disconnected", "video.live_stream.idle",
        "video.asset.live_stream_completed", "video.asset.ready"]
    assert registry.counters.reconnects == 1


async def test_refusals(store: Store) -> None:
    stream = await new_stream(store)
    registry = IngestRegistry(store, throttle=AuthThrottle(free_failures=100))
    with pytest.raises(PublishRefused) as refused:
        await registry.admit("not-a-key", FakePublisher(), "10.0.0.9")
    assert refused.value.refusal is Refusal.UNKNOWN_KEY
    await registry.admit(stream.stream_key, FakePublisher(), "10.0.0.9")
    with pytest.raises(PublishRefused) as refused:
        await registry.admit(stream.stream_key, FakePublisher(), "10.0.0.9")
    assert refused.value.refusal is Refusal.ALREADY_LIVE
    other = await new_stream(store)
    await store.set_live_stream_enabled(other.id, enabled=False)
    with pytest.raises(PublishRefused) as refused:
        await registry.admit(other.stream_key, FakePublisher(), "10.0.0.9")
    assert refused.value.refusal is Refusal.DISABLED
    assert registry.throttle.failures_total == 1
    assert registry.counters.publishes_refused == 3
    await registry.close()


async def until(predicate: Callable[[], bool]) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached")


async def test_only_refusals_are_slowed_and_a_correct_key_never_waits(store: Store) -> None:
    """Behind NAT one address is many encoders: a neighbour's wrong keys slow the wrong
    keys' answers (beyond a cap: no answer at all), never an honest encoder's admission."""
    stream = await new_stream(store)
    # An hour's delay: a slowed answer never comes while the test runs.
    throttle = AuthThrottle(free_failures=1, base_delay=3600, max_slowed_per_address=2)
    registry = IngestRegistry(store, throttle=throttle)
    async with asyncio.timeout(10):
        with pytest.raises(PublishRefused):  # a free failure: answered at once
            await registry.admit("wrong", FakePublisher(), "2001:db8::1")
    slowed = [asyncio.create_task(registry.admit("wrong", FakePublisher(), f"2001:db8::{n}"))
              for n in (2, 3)]
    await until(lambda: throttle.slowed_now == 2)
    async with asyncio.timeout(10):
        # Two are waiting for this /64 already: the next wrong key is not answered at all.
        with pytest.raises(PublishRefused) as refused:
            await registry.admit("wrong", FakePublisher(), "2001:db8::4")
        assert refused.value.refusal is Refusal.THROTTLED
        # And a correct key from that same /64 is admitted at once.
        session = await registry.admit(stream.stream_key, FakePublisher(), "2001:db8::5")
    assert session.stream_id == stream.id
    assert not any(task.done() for task in slowed)
    assert throttle.failures_total == 4
    assert registry.counters.refusals_unanswered == 1
    assert registry.counters.refusals_slowed == 2
    for task in slowed:
        task.cancel()
    await asyncio.gather(*slowed, return_exceptions=True)
    assert throttle.slowed_now == 0
    await registry.close()


class HeldStore:
    """The real store, but a stream-key lookup waits until the test releases it: an
    admission in flight, for as long as the test needs."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.looking_up = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def get_live_stream_by_key(self, stream_key: str) -> LiveStream | None:
        found = await self._store.get_live_stream_by_key(stream_key)
        self.looking_up.set()
        await self.release.wait()
        return found


@pytest.mark.parametrize(("change", "refusal"), [
    (StreamChange.KEY_RESET, Refusal.UNKNOWN_KEY),
    (StreamChange.DISABLED, Refusal.DISABLED),
    (StreamChange.DELETED, Refusal.UNKNOWN_KEY),
    (StreamChange.UPDATED, None),
])
async def test_a_change_during_the_lookup_decides_the_admission(
        store: Store, change: StreamChange, refusal: Refusal | None) -> None:
    stream = await new_stream(store)
    held = HeldStore(store)
    registry = IngestRegistry(held)  # type: ignore[arg-type]
    admission = asyncio.create_task(registry.admit(stream.stream_key, FakePublisher(),
                                                   "10.0.0.3"))
    async with asyncio.timeout(10):
        await held.looking_up.wait()
    # The lookup has read the stream as it was; the application changes it now.
    registry.stream_changed(stream.id, change)
    held.release.set()
    async with asyncio.timeout(10):
        if refusal is None:
            assert (await admission).stream_id == stream.id
        else:
            with pytest.raises(PublishRefused) as refused:
                await admission
            assert refused.value.refusal is refusal
            assert not registry.sessions
    await registry.close()


@pytest.mark.parametrize("change", [StreamChange.DISABLED, StreamChange.COMPLETED,
                                    StreamChange.KEY_RESET, StreamChange.DELETED])
async def test_api_changes_end_a_live_session(store: Store, change: StreamChange) -> None:
    stream = await new_stream(store)
    registry = IngestRegistry(store)
    publisher = FakePublisher()
    session = await registry.admit(stream.stream_key, publisher, "127.0.0.1")
    push(session)
    await settle(registry, stream.id)
    if change is StreamChange.DISABLED:
        await store.set_live_stream_enabled(stream.id, enabled=False)
    elif change is StreamChange.KEY_RESET:
        await store.reset_stream_key(stream.id)
    elif change is StreamChange.DELETED:
        await store.delete_live_stream(stream.id)
    registry.stream_changed(stream.id, change)
    await session.wait_finished()
    assert len(publisher.closed) == 1
    assert stream.id not in registry.sessions
    types = await events_of(store)
    assert types[-2:] == ["video.asset.live_stream_completed", "video.asset.ready"]
    after = await store.get_live_stream(stream.id)
    if change is StreamChange.DELETED:
        assert after is None
    elif change is StreamChange.DISABLED:
        assert after is not None and after.status == "disabled"
        assert "video.live_stream.idle" not in types
    else:
        assert after is not None and after.status == "idle"
    # The old key no longer publishes (reset, delete), or the stream refuses (disable).
    if change is not StreamChange.COMPLETED:
        with pytest.raises(PublishRefused):
            await registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1")


async def test_session_limit_ends_the_session(store: Store) -> None:
    stream = await new_stream(store)
    registry = IngestRegistry(store, session_limit=0.2)
    publisher = FakePublisher()
    session = await registry.admit(stream.stream_key, publisher, "127.0.0.1")
    push(session)
    await asyncio.wait_for(session.wait_finished(), 5)
    assert publisher.closed and "limit" in publisher.closed[0]


async def test_audio_only_drops_video_and_activates_on_audio(store: Store) -> None:
    stream = await new_stream(store, audio_only=True)
    registry = IngestRegistry(store)
    session = await registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1")
    sink = Recorder()
    session.attach_sink(sink)
    session.publish_track(VIDEO)
    session.publish_track(AUDIO)
    session.publish_frame(frame(TrackKind.VIDEO, 0, keyframe=True))
    assert TrackKind.VIDEO not in session.tracks and sink.items == [AUDIO]
    audio = frame(TrackKind.AUDIO, 0)
    session.publish_frame(audio)
    assert sink.items == [AUDIO, audio]
    await settle(registry, stream.id)
    live = await store.get_live_stream(stream.id)
    assert live is not None and live.status == "active"
    await registry.close()


async def test_one_read_of_units_moves_the_lifecycle_on_inside_the_read(store: Store) -> None:
    # publish_units looks the lifecycle up once per read, and again after each frame that
    # moved it: the first frame records, the first keyframe (no packager) makes it active,
    # and a frame before its track's configuration in the same read is dropped.
    stream = await new_stream(store)
    registry = IngestRegistry(store)
    session = await registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1")
    sink = Recorder()
    session.attach_sink(sink)
    early = frame(TrackKind.AUDIO, 0)
    inter, key = frame(TrackKind.VIDEO, 0), frame(TrackKind.VIDEO, 33, keyframe=True)
    later = [frame(TrackKind.AUDIO, 23), frame(TrackKind.VIDEO, 66)]
    assert session.state is State.CONNECTED
    session.publish_units([VIDEO, early, inter, AUDIO, key, *later])
    assert sink.items == [VIDEO, inter, AUDIO, key, *later]
    assert session.state is State.ACTIVE
    assert session.health.last_video_dts == 66 and session.health.last_audio_dts == 23
    await settle(registry, stream.id)
    assert await events_of(store) == [
        "video.live_stream.connected", "video.asset.created", "video.live_stream.recording",
        "video.live_stream.active"]
    await registry.close()


async def test_restart_recovers_sessions_left_open(store: Store) -> None:
    stream = await new_stream(store)
    registry = IngestRegistry(store)
    session = await registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1")
    push(session)
    await settle(registry, stream.id)
    # As if the process died here: nothing ended the session.
    assert await store.recover_interrupted_sessions() == [stream.id]
    after = await store.get_live_stream(stream.id)
    assert after is not None and after.status == "idle" and after.active_asset_id is None
    assets = await store.list_assets(limit=10, page=1, live_stream_id=stream.id)
    assert assets[0].status == "ready"
    await registry.close()
