"""Stream-change notices between nodes (issue 19): PostgreSQL `LISTEN`/`NOTIFY` between two
`Store`s on one database, each with its `StreamNotices`; the registry's side of them (a
change made on one node ends the session another node owns, and updates its key cache);
and the fallback when a notice is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from relay.cluster.notices import CHANNEL, StreamNotices, _Pending, parse, payload
from relay.store import Store
from relay.streams.registry import IngestRegistry, PublishRefused, Refusal, StreamChange
from testkit.postgres import PostgresCluster
from tests.streams.helpers.sessions import FakePublisher, new_stream

pytestmark = pytest.mark.anyio

TIMEOUT = 3.0  # --node-timeout: the fallback check runs every third of it


@dataclass
class Heard:
    """What one node's notices handed on."""

    changes: list[dict[str, set[str]]] = field(default_factory=list)
    resyncs: int = 0
    checks: int = 0

    async def on_changes(self, changes: object) -> None:
        assert isinstance(changes, dict)
        self.changes.append({k: set(v) for k, v in changes.items()})

    async def on_resync(self) -> None:
        self.resyncs += 1

    async def check(self) -> None:
        self.checks += 1


async def eventually(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def url(postgres: PostgresCluster) -> str:
    return postgres.create_database()


@pytest.fixture
async def two_stores(url: str) -> AsyncIterator[tuple[Store, Store]]:
    a = await Store.open(url, node_timeout=TIMEOUT)
    b = await Store.open(url, node_timeout=TIMEOUT)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def test_pending_notices_coalesce_per_stream_and_stay_bounded() -> None:
    pending = _Pending(limit=2)
    pending.add("s1", ["disabled"])
    pending.add("s1", ["enabled"])
    pending.add("s2", ["completed"])
    assert pending.streams == {"s1": {"disabled", "enabled"}, "s2": {"completed"}}
    assert pending.take(1) == (False, {"s1": {"disabled", "enabled"}})
    pending.add("s3", ["deleted"])
    # A third stream past the limit: everything that waits becomes one reload.
    pending.add("s4", ["deleted"])
    assert pending.everything and not pending.streams
    pending.add("s5", ["deleted"])
    assert pending.take(10) == (True, {})
    assert not pending


def test_payloads_round_trip_and_malformed_ones_are_refused() -> None:
    text = payload("node-a", "stream1", ["key_reset", "disabled"])
    assert text == "node-a stream1 disabled,key_reset"
    assert parse(text) == ("node-a", "stream1", frozenset({"disabled", "key_reset"}))
    assert parse(payload("node-a", "*")) == ("node-a", "*", frozenset())
    for bad in ("", "node-a", "node-a stream1", "a b c d", " stream1 x", "node-a * x"):
        assert parse(bad) is None, bad


async def test_a_notice_sent_by_one_node_reaches_the_other_not_itself(
        two_stores: tuple[Store, Store]) -> None:
    a_store, b_store = two_stores
    heard_a, heard_b = Heard(), Heard()
    a = StreamNotices(a_store, "a", on_changes=heard_a.on_changes,
                      on_resync=heard_a.on_resync, check=heard_a.check)
    b = StreamNotices(b_store, "b", on_changes=heard_b.on_changes,
                      on_resync=heard_b.on_resync, check=heard_b.check)
    await a.start()
    await b.start()
    try:
        assert a.listening and b.listening
        a.send("stream1", "disabled")
        await eventually(lambda: bool(heard_b.changes), "b to hear a's notice")
        assert heard_b.changes == [{"stream1": {"disabled"}}]
        b.send("stream2", "key_reset")
        await eventually(lambda: bool(heard_a.changes), "a to hear b's notice")
        assert heard_a.changes == [{"stream2": {"key_reset"}}]
        await asyncio.sleep(0.2)
        # Neither hears its own, and the first connection reloads nothing (the caller
        # loads its key cache after start()).
        assert heard_b.changes == [{"stream1": {"disabled"}}]
        assert heard_a.changes == [{"stream2": {"key_reset"}}]
        assert (a.sent, b.sent, a.heard, b.heard) == (1, 1, 1, 1)
        assert heard_a.resyncs == heard_b.resyncs == 0
        # The fallback check runs every third of the node timeout.
        await eventually(lambda: heard_b.checks >= 1, "b's check", TIMEOUT)
    finally:
        await a.stop()
        await b.stop()


async def test_a_dropped_listener_reconnects_and_reloads_everything(
        two_stores: tuple[Store, Store]) -> None:
    a_store, b_store = two_stores
    heard = Heard()
    a = StreamNotices(a_store, "a", on_changes=Heard().on_changes,
                      on_resync=Heard().on_resync, check=Heard().check)
    b = StreamNotices(b_store, "b", on_changes=heard.on_changes,
                      on_resync=heard.on_resync, check=heard.check)
    await a.start()
    await b.start()
    admin = await a_store.connect_listener()
    try:
        pid = b._conn.get_server_pid()
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        # What is sent while b is away is not kept for it: the reload covers it.
        await eventually(lambda: b.connections == 2, "b to listen again")
        await eventually(lambda: heard.resyncs == 1, "b to reload everything")
        a.send("stream1", "deleted")
        await eventually(lambda: bool(heard.changes), "b to hear a's notice again")
        assert heard.changes == [{"stream1": {"deleted"}}]
    finally:
        await admin.close()
        await a.stop()
        await b.stop()


async def test_a_notice_of_everything_makes_the_other_node_reload(
        two_stores: tuple[Store, Store]) -> None:
    a_store, b_store = two_stores
    heard = Heard()
    b = StreamNotices(b_store, "b", on_changes=heard.on_changes,
                      on_resync=heard.on_resync, check=heard.check)
    await b.start()
    # What a node sends when more streams changed than its outbox holds.
    a = StreamNotices(a_store, "a", on_changes=Heard().on_changes,
                      on_resync=Heard().on_resync, check=Heard().check, max_pending=2)
    await a.start()
    try:
        for number in range(3):
            a.send(f"stream{number}", "updated")
        await eventually(lambda: heard.resyncs == 1, "b to reload everything")
        await asyncio.sleep(0.2)
        assert heard.changes == []
        await a_store.notify(CHANNEL, ["not-a-notice", "a b c d"])
        await asyncio.sleep(0.2)
        assert heard.changes == [] and heard.resyncs == 1
    finally:
        await a.stop()
        await b.stop()


# -- the registry's side ------------------------------------------------------------------


@dataclass
class Node:
    store: Store
    registry: IngestRegistry
    notices: StreamNotices

    def changed(self, stream_id: str, change: StreamChange) -> None:
        """What relay.app does with an API change (after the store's commit)."""
        self.registry.stream_changed(stream_id, change)
        self.notices.send(stream_id, change.value)


@pytest.fixture
async def two_nodes(url: str) -> AsyncIterator[tuple[Node, Node]]:
    made: list[Node] = []
    for name in ("a", "b"):
        store = await Store.open(url, node_timeout=TIMEOUT)
        registry = IngestRegistry(store)
        notices = StreamNotices(store, name, on_changes=registry.changed_elsewhere,
                                on_resync=registry.resync, check=registry.check_sessions)
        await notices.start()
        await registry.load_keys()
        made.append(Node(store, registry, notices))
    try:
        yield made[0], made[1]
    finally:
        for node in made:
            await node.registry.close()
            await node.notices.stop()
            await node.store.close()


async def test_a_change_on_one_node_ends_the_session_on_the_owner_and_updates_its_keys(
        two_nodes: tuple[Node, Node]) -> None:
    a, b = two_nodes
    stream = await new_stream(a.store)
    a.changed(stream.id, StreamChange.CREATED)
    # b's key cache learns the new stream from the notice (SRT admits from it).
    await eventually(lambda: b.registry.peek(stream.stream_key) is not None,
                     "b's key cache to learn the new key")

    publisher = FakePublisher()
    session = await b.registry.admit(stream.stream_key, publisher, "127.0.0.1")
    await a.store.set_live_stream_enabled(stream.id, enabled=False)
    a.changed(stream.id, StreamChange.DISABLED)
    await asyncio.wait_for(session.wait_finished(), 5)
    assert publisher.closed == ["the application disabled the live stream"]
    state = b.registry.peek(stream.stream_key)
    assert state is not None and state.disabled
    with pytest.raises(PublishRefused) as refused:
        await b.registry.admit(stream.stream_key, FakePublisher(), "127.0.0.1")
    assert refused.value.refusal is Refusal.DISABLED

    await a.store.set_live_stream_enabled(stream.id, enabled=True)
    a.changed(stream.id, StreamChange.ENABLED)
    await eventually(lambda: not getattr(b.registry.peek(stream.stream_key), "disabled", True),
                     "b's key cache to learn the stream is enabled")
    publisher = FakePublisher()
    session = await b.registry.admit(stream.stream_key, publisher, "127.0.0.1")
    # A complete changes nothing in the store: the notice itself says it.
    a.changed(stream.id, StreamChange.COMPLETED)
    await asyncio.wait_for(session.wait_finished(), 5)
    assert publisher.closed == ["the application completed the live stream"]

    publisher = FakePublisher()
    session = await b.registry.admit(stream.stream_key, publisher, "127.0.0.1")
    reset = await a.store.reset_stream_key(stream.id)
    assert reset is not None
    a.changed(stream.id, StreamChange.KEY_RESET)
    await asyncio.wait_for(session.wait_finished(), 5)
    assert publisher.closed == ["the application reset the stream key"]
    assert b.registry.peek(stream.stream_key) is None
    assert b.registry.peek(reset.stream_key) is not None

    publisher = FakePublisher()
    session = await b.registry.admit(reset.stream_key, publisher, "127.0.0.1")
    assert await a.store.delete_live_stream(stream.id)
    a.changed(stream.id, StreamChange.DELETED)
    await asyncio.wait_for(session.wait_finished(), 5)
    assert publisher.closed == ["the application deleted the live stream"]
    assert b.registry.peek(reset.stream_key) is None


async def test_a_session_admitted_with_the_new_key_survives_the_notice_of_its_reset(
        two_nodes: tuple[Node, Node]) -> None:
    a, b = two_nodes
    stream = await new_stream(a.store)
    reset = await a.store.reset_stream_key(stream.id)
    assert reset is not None
    publisher = FakePublisher()
    session = await b.registry.admit(reset.stream_key, publisher, "127.0.0.1")
    await b.registry.changed_elsewhere({stream.id: [StreamChange.KEY_RESET.value]})
    assert publisher.closed == [] and not session.lifecycle.ended
    session.end("the test ends it")
    await session.wait_finished()


async def test_the_owner_finds_a_change_whose_notice_was_lost_within_the_node_timeout(
        two_nodes: tuple[Node, Node]) -> None:
    a, b = two_nodes
    stream = await new_stream(a.store)
    publisher = FakePublisher()
    session = await b.registry.admit(stream.stream_key, publisher, "127.0.0.1")
    # Disabled with no notice (as if a died between its commit and its NOTIFY).
    await a.store.set_live_stream_enabled(stream.id, enabled=False)
    await asyncio.wait_for(session.wait_finished(), TIMEOUT + 1)
    assert publisher.closed == ["the application disabled the live stream"]


async def test_a_node_whose_listener_dropped_reloads_its_key_cache(
        two_nodes: tuple[Node, Node]) -> None:
    a, b = two_nodes
    # Made while b heard nothing of it (as if its notice came while b was not listening).
    stream = await new_stream(a.store)
    assert b.registry.peek(stream.stream_key) is None
    admin = await a.store.connect_listener()
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)",
                                    b.notices._conn.get_server_pid())
    finally:
        await admin.close()
    await eventually(lambda: b.registry.peek(stream.stream_key) is not None,
                     "b to reload its key cache after listening again")
    assert b.notices.connections == 2


async def test_the_listening_connection_takes_the_urls_options_asyncpg_knows(url: str) -> None:
    # SQLAlchemy's own option in the URL is not handed to asyncpg.connect (which refuses it).
    store = await Store.open(f"{url}?prepared_statement_cache_size=10", node_timeout=TIMEOUT)
    try:
        conn = await store.connect_listener()
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
    finally:
        await store.close()


async def test_changes_that_could_not_be_applied_are_applied_later(
        two_stores: tuple[Store, Store]) -> None:
    a_store, b_store = two_stores
    applied: list[dict[str, set[str]]] = []
    failures = [RuntimeError("the store is down")]

    async def on_changes(changes: object) -> None:
        if failures:
            raise failures.pop()
        assert isinstance(changes, dict)
        applied.append({k: set(v) for k, v in changes.items()})

    heard = Heard()
    a = StreamNotices(a_store, "a", on_changes=Heard().on_changes,
                      on_resync=Heard().on_resync, check=Heard().check)
    b = StreamNotices(b_store, "b", on_changes=on_changes, on_resync=heard.on_resync,
                      check=heard.check)
    await a.start()
    await b.start()
    try:
        a.send("stream1", "disabled")
        # Tried again after RETRY_SECONDS, with what came meanwhile for the same stream.
        await eventually(lambda: not failures, "the first, failing, try")
        a.send("stream1", "enabled")
        await eventually(lambda: bool(applied), "the second try")
        assert applied == [{"stream1": {"disabled", "enabled"}}]
    finally:
        await a.stop()
        await b.stop()
