"""The store against a real SQLite file and a real PostgreSQL database (testkit/postgres.py):
records, paging, cascades, events, tokens, migrations."""

from __future__ import annotations

import pytest
from sqlalchemy import event, inspect, select
from sqlalchemy.ext.asyncio import create_async_engine

from relay.app import StartupError, open_store
from relay.store import (
    LATEST_VERSION,
    NewSimulcastTarget,
    SchemaTooNewError,
    Store,
    StreamKeyRow,
    migrations,
)
from relay.store.tables import metadata
from testkit.postgres import PostgresCluster
from testkit.relay_process import free_tcp_port
from tests.store.helpers.store import spec

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(any_store: Store) -> Store:
    """Every test here runs on SQLite and on PostgreSQL."""
    return any_store


async def event_types(store: Store) -> list[str]:
    return [e.type for e in await store.list_events()]


async def test_create_and_get_live_stream(store: Store) -> None:
    created = await store.create_live_stream(spec(passthrough="p1"),
                                             [NewSimulcastTarget("rtmp://a.example/app", "k")])
    got = await store.get_live_stream(created.id)
    assert got == created
    assert got.status == "idle" and got.passthrough == "p1"
    assert [p.policy for p in got.playback_ids] == ["public"]
    assert [t.url for t in got.simulcast_targets] == ["rtmp://a.example/app"]
    assert len(got.stream_key) >= 22 and got.stream_key.isalnum()
    assert got.srt_passphrase.isalnum() and 10 <= len(got.srt_passphrase) <= 79
    # Playback ids are not derived from the stream id or key.
    assert got.playback_ids[0].id not in (got.id, got.stream_key)
    assert await store.get_live_stream_by_key(created.stream_key) == created
    assert await store.get_live_stream("nope") is None
    assert await event_types(store) == ["video.live_stream.created"]


async def test_list_pages_newest_first_with_filters(store: Store) -> None:
    ids = [(await store.create_live_stream(spec())).id for _ in range(5)]
    page1 = await store.list_live_streams(limit=2, page=1)
    page3 = await store.list_live_streams(limit=2, page=3)
    assert [s.id for s in page1] == [ids[4], ids[3]]
    assert [s.id for s in page3] == [ids[0]]
    assert await store.list_live_streams(limit=2, page=4) == []
    await store.set_live_stream_enabled(ids[1], enabled=False)
    disabled = await store.list_live_streams(limit=25, page=1, status="disabled")
    assert [s.id for s in disabled] == [ids[1]]
    key = disabled[0].stream_key
    assert [s.id for s in await store.list_live_streams(limit=25, page=1, stream_key=key)] \
        == [ids[1]]


@pytest.mark.parametrize("page", [2**62, 2**63, 365720738912483540992])
async def test_pages_past_any_offset_are_empty(store: Store, page: int) -> None:
    # Issue 12 item 9: an offset past SQLite's 64-bit integers raised OverflowError (a 500).
    await store.create_live_stream(spec())
    assert await store.list_live_streams(limit=100, page=page) == []
    assert await store.list_assets(limit=100, page=page) == []


async def test_paging_rejects_what_no_caller_should_send(store: Store) -> None:
    for limit, page in [(0, 1), (1, 0), (-1, 1)]:
        with pytest.raises(ValueError, match="limit"):
            await store.list_live_streams(limit=limit, page=page)
        with pytest.raises(ValueError, match="limit"):
            await store.list_assets(limit=limit, page=page)


async def test_update_changes_only_given_fields(store: Store) -> None:
    stream = await store.create_live_stream(spec(passthrough="before"))
    updated = await store.update_live_stream(stream.id, {"latency_mode": "low",
                                                         "reconnect_window": 5.5})
    assert updated is not None
    assert (updated.latency_mode, updated.reconnect_window, updated.passthrough) == (
        "low", 5.5, "before")
    assert await store.update_live_stream("missing", {"passthrough": "x"}) is None
    with pytest.raises(ValueError, match="stream_key"):
        await store.update_live_stream(stream.id, {"stream_key": "mine"})


async def test_disable_enable_and_reset_key(store: Store) -> None:
    stream = await store.create_live_stream(spec())
    disabled = await store.set_live_stream_enabled(stream.id, enabled=False)
    assert disabled is not None and disabled.status == "disabled"
    again = await store.set_live_stream_enabled(stream.id, enabled=False)
    assert again is not None and again.status == "disabled"
    enabled = await store.set_live_stream_enabled(stream.id, enabled=True)
    assert enabled is not None and enabled.status == "idle"
    reset = await store.reset_stream_key(stream.id)
    assert reset is not None and reset.stream_key != stream.stream_key
    assert await store.get_live_stream_by_key(stream.stream_key) is None
    # A repeated disable writes no second event.
    assert await event_types(store) == [
        "video.live_stream.created", "video.live_stream.disabled",
        "video.live_stream.enabled", "video.live_stream.updated"]


async def test_list_stream_keys_lists_every_stream_as_it_is_now(store: Store) -> None:
    assert await store.list_stream_keys() == []
    one = await store.create_live_stream(spec())
    two = await store.create_live_stream(spec())
    gone = await store.create_live_stream(spec())
    await store.set_live_stream_enabled(one.id, enabled=False)
    reset = await store.reset_stream_key(two.id)
    assert reset is not None
    await store.delete_live_stream(gone.id)
    rows = sorted(await store.list_stream_keys(), key=lambda row: row.id)
    assert rows == sorted([
        StreamKeyRow(one.id, one.stream_key, "disabled", one.srt_passphrase),
        StreamKeyRow(two.id, reset.stream_key, "idle", two.srt_passphrase),
    ], key=lambda row: row.id)


async def test_delete_cascades_but_keeps_recordings(store: Store) -> None:
    stream = await store.create_live_stream(spec(), [NewSimulcastTarget("srt://b.example:9")])
    asset = await store.create_asset(live_stream_id=stream.id, ingest_type="live_rtmp",
                                     settings={}, playback_policies=("public",))
    pid = stream.playback_ids[0].id
    assert await store.delete_live_stream(stream.id)
    assert await store.get_live_stream(stream.id) is None
    assert await store.get_playback_id(pid) is None
    assert await store.get_simulcast_target(stream.id, stream.simulcast_targets[0].id) is None
    assert await store.get_asset(asset.id) is not None
    assert not await store.delete_live_stream(stream.id)


async def test_playback_ids_belong_to_their_object(store: Store) -> None:
    a = await store.create_live_stream(spec(playback_policies=()))
    b = await store.create_live_stream(spec(playback_policies=()))
    pid = await store.create_playback_id("live_stream", a.id, "signed")
    assert pid is not None and pid.policy == "signed"
    assert await store.get_playback_id(pid.id, "live_stream", a.id) == pid
    assert await store.get_playback_id(pid.id, "live_stream", b.id) is None
    assert not await store.delete_playback_id("live_stream", b.id, pid.id)
    assert (await store.get_playback_id(pid.id)) == pid
    assert await store.create_playback_id("asset", "missing", "public") is None
    assert await store.delete_playback_id("live_stream", a.id, pid.id)
    assert await store.get_playback_id(pid.id) is None


async def test_assets_and_recent_asset_ids(store: Store) -> None:
    stream = await store.create_live_stream(spec())
    made = [await store.create_asset(live_stream_id=stream.id, ingest_type="live_rtmp",
                                     settings={"mp4_support": "none"})
            for _ in range(12)]
    got = await store.get_live_stream(stream.id)
    assert got is not None
    # The ten newest, oldest of them first ("newest last").
    assert list(got.recent_asset_ids) == [a.id for a in made[2:]]
    listed = await store.list_assets(limit=3, page=1, live_stream_id=stream.id)
    assert [a.id for a in listed] == [a.id for a in reversed(made[-3:])]
    assert await store.list_assets(limit=3, page=1, live_stream_id="other") == []
    assert await store.delete_asset(made[-1].id)
    assert await store.get_asset(made[-1].id) is None
    assert not await store.delete_asset(made[-1].id)


async def test_access_tokens(store: Store) -> None:
    token_id, secret = await store.create_access_token()
    assert await store.verify_access_token(token_id, secret)
    assert not await store.verify_access_token(token_id, secret + "x")
    assert not await store.verify_access_token("unknown", secret)
    assert not await store.ensure_access_token(token_id, secret)
    assert await store.ensure_access_token(token_id, "a-new-secret-value")
    assert not await store.verify_access_token(token_id, secret)
    assert await store.verify_access_token(token_id, "a-new-secret-value")


async def test_list_and_revoke_access_tokens(store: Store) -> None:
    first, first_secret = await store.create_access_token()
    second, _ = await store.create_access_token()
    listed = await store.list_access_tokens()
    assert {t.id for t in listed} == {first, second}
    assert all(isinstance(t.created_at, int) for t in listed)
    assert first_secret not in repr(listed)
    assert await store.revoke_access_token(first)
    assert not await store.verify_access_token(first, first_secret)
    assert [t.id for t in await store.list_access_tokens()] == [second]
    assert not await store.revoke_access_token(first)
    assert not await store.revoke_access_token("never-existed")


async def test_events_carry_integer_created_at(store: Store) -> None:
    stream = await store.create_live_stream(spec())
    (event,) = await store.list_events()
    assert event.object_id == stream.id and event.object_type == "live_stream"
    assert event.data["created_at"] == stream.created_at
    assert isinstance(event.data["created_at"], int)
    assert len(event.id) == 36


async def test_migrated_schema_matches_tables(database_url: str) -> None:
    store = await Store.open(database_url)
    assert await store.schema_version() == LATEST_VERSION
    await store.close()
    engine = create_async_engine(database_url)
    async with engine.connect() as conn:
        def columns(sync_conn: object) -> dict[str, set[str]]:
            inspector = inspect(sync_conn)
            return {t: {c["name"] for c in inspector.get_columns(t)}
                    for t in inspector.get_table_names()}
        found = await conn.run_sync(columns)
    await engine.dispose()
    expected = {t.name: {c.name for c in t.columns} for t in metadata.sorted_tables}
    assert found == expected


async def test_older_data_dir_upgrades_in_place(database_url: str) -> None:
    url = database_url
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: migrations.migrate(c, target=1))
    await engine.dispose()
    # A version-1 store has no outbox; opening it with this Relay adds it and keeps data.
    v1 = Store(create_async_engine(url))
    assert await v1.schema_version() == 1
    token_id, secret = "legacy-token", "a-legacy-secret-value"
    async with v1._engine.begin() as conn:
        from relay.store.store import hash_secret
        from relay.store.tables import access_tokens
        await conn.execute(access_tokens.insert().values(
            id=token_id, secret_hash=hash_secret(secret), created_at=1))
    await v1.close()
    upgraded = await Store.open(url)
    assert await upgraded.schema_version() == LATEST_VERSION
    assert await upgraded.verify_access_token(token_id, secret)
    await upgraded.create_live_stream(spec())
    assert await event_types(upgraded) == ["video.live_stream.created"]
    await upgraded.close()


async def test_a_connection_in_use_as_the_store_closes_is_closed_when_given_back(
        database_url: str) -> None:
    # dispose() closes only the pooled connections: one a task held (its transaction in
    # flight) went back to the disposed pool and was garbage collected open, a
    # ResourceWarning (warnings are errors) in whichever later test gc happened to run.
    store = await Store.open(database_url)
    closed: list[object] = []
    pool = store._engine.sync_engine.pool  # dispose() hands its listeners to the new pool
    event.listen(pool, "close", lambda dbapi_conn, _record: closed.append(dbapi_conn))
    async with store._engine.begin() as conn:
        held = (await conn.get_raw_connection()).dbapi_connection
        await store.close()
        assert closed == []  # still in use: its transaction goes on
        assert await conn.scalar(select(1)) == 1
    assert closed == [held]
    # A task late to notice the close opens a connection of the new pool: closed too.
    await store.ping()
    assert len(closed) == 2 and closed[1] is not held


async def test_newer_schema_is_refused(database_url: str) -> None:
    url = database_url
    store = await Store.open(url)
    async with store._engine.begin() as conn:
        from relay.store.tables import schema_version
        await conn.execute(schema_version.update().values(version=LATEST_VERSION + 1))
    await store.close()
    with pytest.raises(SchemaTooNewError, match="upgrade Relay"):
        await Store.open(url)


async def test_unix_seconds_past_2038(database_url: str) -> None:
    # PostgreSQL's INTEGER is 32 bits: the created_at columns are BIGINT there (migration v5).
    later = float(2**31 + 10)
    store = await Store.open(database_url, clock=lambda: later)
    try:
        stream = await store.create_live_stream(spec())
        found = await store.get_live_stream(stream.id)
        assert found is not None and found.created_at == 2**31 + 10
        await store.create_access_token()
        assert [t.created_at for t in await store.list_access_tokens()] == [2**31 + 10]
        key = await store.create_signing_key("PEM", max_keys=10)
        assert key is not None and key.created_at == 2**31 + 10
    finally:
        await store.close()


async def test_postgresql_startup_errors_say_why_without_the_password(
        postgres: PostgresCluster) -> None:
    missing = postgres.url("nosuchdb").replace("relay@", "relay:hunter2@")
    with pytest.raises(StartupError, match='database "nosuchdb" does not exist') as refused:
        await open_store(missing)
    assert "hunter2" not in str(refused.value) and "relay:***@" in str(refused.value)
    with pytest.raises(StartupError, match="cannot open the database") as refused:
        await open_store(f"postgresql+asyncpg://relay:hunter2@127.0.0.1:{free_tcp_port()}/x")
    assert "hunter2" not in str(refused.value)
