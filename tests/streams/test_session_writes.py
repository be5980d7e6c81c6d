"""Session transitions written in batches: the group commit, the store's batch method (the
same rows and events as one transition at a time), and sessions that end together sharing
transactions."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from relay.store import SessionWrite, Store
from relay.store.batching import GroupCommit
from relay.store.records import RecordedMedia, RecordingTime
from relay.streams.registry import IngestRegistry
from tests.streams.helpers.sessions import FakePublisher, new_stream, push, settle

pytestmark = pytest.mark.anyio


class Recorder:
    """A `write_many` that records its batches; items named "bad" fail."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def __call__(self, items: Sequence[str]) -> list[str]:
        self.batches.append(list(items))
        await asyncio.sleep(0.01)  # a transaction takes a while; more items queue up
        if "bad" in items:
            raise RuntimeError("constraint failed")
        return [item.upper() for item in items]


async def test_items_submitted_together_share_a_batch_and_get_their_own_results() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder, max_batch=100)
    results = await asyncio.gather(*(commit.submit(f"w{n}") for n in range(250)))
    assert results == [f"W{n}" for n in range(250)]
    assert [len(batch) for batch in recorder.batches] == [100, 100, 50]
    assert (commit.batches, commit.items) == (3, 250)


async def test_items_that_arrive_during_a_write_go_in_the_next_batch() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder, max_batch=100)
    first = asyncio.ensure_future(commit.submit("a"))
    await asyncio.sleep(0.005)  # "a" is being written
    later = [asyncio.ensure_future(commit.submit(f"b{n}")) for n in range(5)]
    assert await first == "A"
    assert await asyncio.gather(*later) == [f"B{n}" for n in range(5)]
    assert recorder.batches == [["a"], [f"b{n}" for n in range(5)]]


async def test_a_failing_item_fails_alone() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder, max_batch=100)
    outcomes = await asyncio.gather(*(commit.submit(item) for item in ("x", "bad", "y")),
                                    return_exceptions=True)
    assert outcomes[0] == "X" and outcomes[2] == "Y"
    assert isinstance(outcomes[1], RuntimeError)
    # The batch, then each item alone to find the failing one.
    assert recorder.batches == [["x", "bad", "y"], ["x"], ["bad"], ["y"]]


async def test_a_caller_that_stops_waiting_does_not_stop_its_write() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder, max_batch=100)
    waiting = asyncio.ensure_future(commit.submit("gone"))
    await asyncio.sleep(0)
    waiting.cancel()
    assert await commit.submit("next") == "NEXT"
    assert ["gone"] in recorder.batches or ["gone", "next"] in recorder.batches


MEDIA = RecordedMedia(duration=6.02, tracks=({"type": "video", "max_width": 640,
                                              "max_height": 360, "duration": 6.02},),
                      started_at=1_700_000_000.0)


async def run_sessions(store: Store, batched: bool, count: int) -> list[str]:
    """Drive `count` streams through a whole session, batched or one write at a time;
    the ids of the streams."""
    streams = [await new_stream(store) for _ in range(count)]
    ids = [s.id for s in streams]

    async def each(step: str, **fields: object) -> list[object]:
        writes = [SessionWrite(step, stream_id, **fields) for stream_id in ids]  # type: ignore[arg-type]
        if batched:
            return list(await store.session_writes(writes))
        results: list[object] = []
        for write in writes:
            if step == "connected":
                results.append(await store.session_connected(write.stream_id))
            elif step == "recording":
                results.append(await store.session_recording(write.stream_id, "rtmp", None))
            elif step == "active":
                results.append(await store.session_active(write.stream_id))
        return results

    connected = await each("connected")
    assert [s.id for s in connected] == ids  # type: ignore[attr-defined]
    assets = await each("recording")
    asset_ids = [a.id for a in assets]  # type: ignore[attr-defined]
    await each("active")
    interval = RecordingTime(started_at=1_700_000_000.0, duration=6.0)
    if batched:
        await store.session_writes(
            [SessionWrite("disconnected", s, a, recorded=interval)
             for s, a in zip(ids, asset_ids, strict=True)])
        await store.session_writes(
            [SessionWrite("ended", s, a, media=MEDIA) for s, a in zip(ids, asset_ids,
                                                                      strict=True)])
    else:
        for stream_id, asset_id in zip(ids, asset_ids, strict=True):
            await store.session_disconnected(stream_id, asset_id, interval)
            await store.session_ended(stream_id, asset_id, MEDIA)
    return ids


async def outcome(store: Store, ids: list[str]) -> list[object]:
    """What a client sees of each stream and its asset, without ids and times."""
    events = await store.list_events(limit=10_000)
    seen: list[object] = []
    for stream_id in ids:
        stream = await store.get_live_stream(stream_id)
        assert stream is not None
        [asset_id] = stream.recent_asset_ids
        asset = await store.get_asset(asset_id)
        assert asset is not None
        seen.append((
            stream.status, stream.active_asset_id, asset.status, asset.is_live, asset.duration,
            [{k: v for k, v in t.items() if k != "id"} for t in asset.tracks],
            asset.recording_times, [p.policy for p in asset.playback_ids],
            [e.type for e in events if e.object_id in (stream_id, asset_id)],
        ))
    return seen


async def test_a_batch_writes_what_one_transition_at_a_time_writes(store: Store) -> None:
    one_by_one = await outcome(store, await run_sessions(store, batched=False, count=4))
    batched = await outcome(store, await run_sessions(store, batched=True, count=4))
    assert batched == one_by_one
    status, active, asset_status, is_live, duration, tracks, times, policies, types = batched[0]
    assert (status, active, asset_status, is_live, duration) == ("idle", None, "ready", False,
                                                                 6.02)
    assert tracks == [{"type": "video", "max_width": 640, "max_height": 360, "duration": 6.02}]
    assert len(times) == 1 and policies == ["public"]  # type: ignore[arg-type]
    assert types == [
        "video.live_stream.created", "video.live_stream.connected", "video.asset.created",
        "video.live_stream.recording", "video.live_stream.active",
        "video.live_stream.disconnected", "video.live_stream.idle",
        "video.asset.live_stream_completed", "video.asset.ready"]


async def test_two_transitions_of_one_stream_in_a_batch_keep_their_order(store: Store) -> None:
    stream = await new_stream(store)
    connected, asset, active = await store.session_writes([
        SessionWrite("connected", stream.id), SessionWrite("recording", stream.id),
        SessionWrite("active", stream.id)])
    assert connected is not None and asset is not None and active is not None
    live = await store.get_live_stream(stream.id)
    assert live is not None and live.status == "active" and live.active_asset_id == asset.id


async def test_sessions_that_end_together_share_transactions(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = IngestRegistry(store)
    streams = [await new_stream(store) for _ in range(40)]
    for stream in streams:
        push(await registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1"))
    for stream in streams:
        await settle(registry, stream.id)
    transactions: list[int] = []
    real = store.session_writes

    async def counted(writes: Sequence[SessionWrite]) -> object:
        transactions.append(len(writes))
        return await real(writes)

    monkeypatch.setattr(store, "session_writes", counted)
    await registry.close()  # a stop: every session ends at once
    # 40 disconnections and 40 ends, in a few transactions rather than 80.
    assert sum(transactions) == 80 and len(transactions) <= 10
    for stream in streams:
        ended = await store.get_live_stream(stream.id)
        assert ended is not None and ended.status == "idle"
