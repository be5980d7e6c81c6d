"""The registry's complete stream-key cache: loaded from the store, kept current by every
API change, read by `peek` without waiting (SRT's admission), repaired by `admit`."""

from __future__ import annotations

import asyncio
import threading
import tracemalloc
from collections.abc import Callable
from typing import Any, cast

import httpx
import pytest

from relay.api import AuthLimits, create_api
from relay.store import Store
from relay.streams.registry import IngestRegistry, KeyState, PublishRefused, Refusal, StreamChange
from tests.streams.helpers.sessions import FakePublisher, new_stream

pytestmark = pytest.mark.anyio

# The cache's own methods never touch the store.
NO_STORE = cast(Store, object())


async def until(predicate: Callable[[], bool]) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached")


async def test_load_keys_reads_every_stream(store: Store) -> None:
    plain = await new_stream(store)
    disabled = await new_stream(store)
    await store.set_live_stream_enabled(disabled.id, enabled=False)
    registry = IngestRegistry(store)
    assert registry.peek(plain.stream_key) is None  # nothing before the load
    assert await registry.load_keys() == 2
    assert registry.cached_keys == 2
    assert registry.peek(plain.stream_key) == KeyState(
        stream_id=plain.id, disabled=False, live=False, srt_passphrase=plain.srt_passphrase)
    assert registry.peek(disabled.stream_key) == KeyState(
        stream_id=disabled.id, disabled=True, live=False,
        srt_passphrase=disabled.srt_passphrase)
    assert registry.peek("not-a-key") is None
    assert registry.peek(plain.stream_key[:-1]) is None
    # A key that is not valid UTF-8 (an adapter's surrogateescape) is unknown, not an error.
    assert registry.peek("\udcff" + plain.stream_key) is None
    await registry.close()


async def test_live_follows_the_publisher(store: Store) -> None:
    stream = await new_stream(store, reconnect_window=60.0)
    registry = IngestRegistry(store)
    await registry.load_keys()
    publisher = FakePublisher()
    session = await registry.admit(stream.stream_key, publisher, "127.0.0.1")
    state = registry.peek(stream.stream_key)
    assert state is not None and state.live
    # Gone, but inside the reconnect window: the key may publish again.
    session.detach(publisher, "encoder left")
    state = registry.peek(stream.stream_key)
    assert state is not None and not state.live
    await registry.close()
    state = registry.peek(stream.stream_key)
    assert state is not None and not state.live
    assert registry.closing


async def test_every_api_change_reaches_the_cache_at_once(store: Store) -> None:
    """Through the real routes: create, reset, disable, enable, update, delete."""
    registry = IngestRegistry(store)
    await registry.load_keys()
    token_id, secret = await store.create_access_token()
    app = create_api(store, _ready, on_stream_change=registry.stream_changed,
                     auth_limits=AuthLimits(failure_delay=0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://relay", auth=(token_id, secret)) as http:
        created = await _data(http.post("/video/v1/live-streams",
                                        json={"playback_policy": ["public"]}))
        path = f"/video/v1/live-streams/{created['id']}"
        # Each check follows the API's answer with no await between: nothing was read
        # back from the store in the background.
        state = registry.peek(created["stream_key"])
        assert state == KeyState(created["id"], False, False, created["srt_passphrase"])

        reset = await _data(http.post(f"{path}/reset-stream-key"))
        assert registry.peek(created["stream_key"]) is None
        state = registry.peek(reset["stream_key"])
        assert state == KeyState(created["id"], False, False, reset["srt_passphrase"])

        await _data(http.put(f"{path}/disable"))
        state = registry.peek(reset["stream_key"])
        assert state is not None and state.disabled
        await _data(http.put(f"{path}/enable"))
        state = registry.peek(reset["stream_key"])
        assert state is not None and not state.disabled

        await _data(http.patch(path, json={"reconnect_window": 30}))
        assert registry.peek(reset["stream_key"]) == state

        assert (await http.delete(path)).status_code == 204
        assert registry.peek(reset["stream_key"]) is None
        assert registry.cached_keys == 0
    await registry.close()


async def _ready() -> list[str]:
    return []


async def _data(request: Any) -> dict[str, Any]:
    response: httpx.Response = await request
    assert response.status_code in (200, 201), response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def test_a_change_without_its_record_still_reaches_the_cache(store: Store) -> None:
    stream = await new_stream(store)
    registry = IngestRegistry(store)
    await registry.load_keys()
    registry.stream_changed(stream.id, StreamChange.DISABLED)
    state = registry.peek(stream.stream_key)
    assert state is not None and state.disabled
    registry.stream_changed(stream.id, StreamChange.ENABLED)
    state = registry.peek(stream.stream_key)
    assert state is not None and not state.disabled

    reset = await store.reset_stream_key(stream.id)
    assert reset is not None
    registry.stream_changed(stream.id, StreamChange.KEY_RESET)
    assert registry.peek(stream.stream_key) is None  # the old key stops at once
    await until(lambda: registry.peek(reset.stream_key) is not None)  # read back

    created = await new_stream(store)
    registry.stream_changed(created.id, StreamChange.CREATED)
    await until(lambda: registry.peek(created.stream_key) is not None)
    await registry.close()


class HeldStore:
    """The real store, but the named read waits until the test releases it."""

    def __init__(self, store: Store, held: str) -> None:
        self._store = store
        self._held = held
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)
        if name != self._held:
            return method

        async def held(*args: Any, **kwargs: Any) -> Any:
            found = await method(*args, **kwargs)
            self.reading.set()
            await self.release.wait()
            return found
        return held


async def test_a_change_during_the_load_wins_over_the_read(store: Store) -> None:
    changed = await new_stream(store)
    deleted = await new_stream(store)
    held = HeldStore(store, "list_stream_keys")
    registry = IngestRegistry(held)  # type: ignore[arg-type]
    loading = asyncio.create_task(registry.load_keys())
    async with asyncio.timeout(10):
        await held.reading.wait()
    disabled = await store.set_live_stream_enabled(changed.id, enabled=False)
    registry.stream_changed(changed.id, StreamChange.DISABLED, disabled)
    await store.delete_live_stream(deleted.id)
    registry.stream_changed(deleted.id, StreamChange.DELETED)
    held.release.set()
    async with asyncio.timeout(10):
        await loading
    state = registry.peek(changed.stream_key)
    assert state is not None and state.disabled  # not the "idle" the read saw
    assert registry.peek(deleted.stream_key) is None
    await registry.close()


async def test_an_admissions_stale_read_does_not_overwrite_a_change(store: Store) -> None:
    stream = await new_stream(store)
    held = HeldStore(store, "get_live_stream")
    registry = IngestRegistry(held)  # type: ignore[arg-type]
    await registry.load_keys()
    admission = asyncio.create_task(registry.admit(stream.stream_key, FakePublisher(),
                                                   "10.0.0.3"))
    async with asyncio.timeout(10):
        await held.reading.wait()
    disabled = await store.set_live_stream_enabled(stream.id, enabled=False)
    registry.stream_changed(stream.id, StreamChange.DISABLED, disabled)
    held.release.set()
    async with asyncio.timeout(10):
        with pytest.raises(PublishRefused) as refused:
            await admission
    assert refused.value.refusal is Refusal.DISABLED
    state = registry.peek(stream.stream_key)
    assert state is not None and state.disabled
    await registry.close()


async def test_admit_repairs_what_the_cache_missed(store: Store) -> None:
    """RTMP's admission asks the store whatever the cache says; a stream the cache never
    heard of (written behind the API's back) is admitted and cached from then on, and a
    cached key the store no longer has is dropped."""
    registry = IngestRegistry(store)
    await registry.load_keys()
    unheard = await new_stream(store)
    assert registry.peek(unheard.stream_key) is None
    session = await registry.admit(unheard.stream_key, FakePublisher(), "127.0.0.1")
    assert session.stream_id == unheard.id
    state = registry.peek(unheard.stream_key)
    assert state is not None and state.live

    stale = await new_stream(store)
    await registry.load_keys()
    await store.reset_stream_key(stale.id)  # the API was not told
    assert registry.peek(stale.stream_key) is not None
    with pytest.raises(PublishRefused):
        await registry.admit(stale.stream_key, FakePublisher(), "127.0.0.1")
    assert registry.peek(stale.stream_key) is None
    await registry.close()


def test_peek_from_another_thread_while_the_loop_changes_the_cache() -> None:
    """peek only reads: a reader thread hammering it while the cache and the sessions
    change under it never fails and never mixes one stream's answer with another's."""
    registry = IngestRegistry(NO_STORE)
    keys = {f"key-{n:04d}": f"stream-{n:04d}" for n in range(200)}
    for key, stream_id in keys.items():
        registry._remember(stream_id, key, "idle", "pass-" + stream_id)
    stop = threading.Event()
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            for key, stream_id in keys.items():
                try:
                    state = registry.peek(key)
                except Exception as exc:
                    problems.append(repr(exc))
                    return
                if state is not None and (state.stream_id != stream_id
                                          or state.srt_passphrase != "pass-" + stream_id):
                    problems.append(f"{key} -> {state}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for round_ in range(30):
            for key, stream_id in keys.items():
                registry._set_disabled(stream_id, round_ % 2 == 0)
                registry._forget(stream_id)
                registry._remember(stream_id, key, "disabled", "pass-" + stream_id)
            # Churn the dict's size so it resizes under the reader.
            for n in range(300):
                registry._remember(f"extra-{n}", f"extra-key-{n}", "idle", "x")
            for n in range(300):
                registry._forget(f"extra-{n}")
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert problems == []


def test_the_cache_costs_under_a_kilobyte_per_stream() -> None:
    """The cost noted in IngestRegistry.__init__ (about 450 bytes per stream), with the
    lengths of real ids, keys and passphrases (relay.ids)."""
    from relay.ids import new_object_id, new_srt_passphrase, new_stream_key

    rows = [(new_object_id(), new_stream_key(), new_srt_passphrase()) for _ in range(5000)]
    registry = IngestRegistry(NO_STORE)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for stream_id, key, passphrase in rows:
            # Copies: the cache keeps the id and passphrase strings of rows it discards,
            # so they count as its own.
            registry._remember(stream_id.encode().decode(), key, "idle",
                               passphrase.encode().decode())
        per_stream = (tracemalloc.get_traced_memory()[0] - before) / len(rows)
    finally:
        tracemalloc.stop()
    assert registry.cached_keys == len(rows)
    print(f"key cache: {per_stream:.0f} bytes per stream")
    assert 200 < per_stream < 1024, per_stream
