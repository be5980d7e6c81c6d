"""The store: every read and write of Relay's control data, behind one async interface.

Callers (the API, later the ingest hub and the webhook deliverer) see records and plain
arguments, never SQL, so the engine behind it can be SQLite (the embedded default) or
PostgreSQL without touching them. Every change that Mux reports as a webhook writes its
event to the outbox in the same transaction as the change itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import importlib
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, cast

from sqlalchemy import (
    Row,
    and_,
    bindparam,
    case,
    delete,
    event,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.elements import BindParameter

from relay.ids import (
    TOKEN_SECRET_LENGTH,
    new_object_id,
    new_srt_passphrase,
    new_stream_key,
    random_token,
)
from relay.limits import DEFAULT_NODE_TIMEOUT
from relay.store import migrations
from relay.store.async_engine import create_async_engine
from relay.store.batching import GroupCommit
from relay.store.records import (
    AccessTokenInfo,
    Asset,
    Event,
    IngestProtocol,
    JSONDict,
    LatencyMode,
    LeaseGrant,
    LiveStream,
    LiveStreamStatus,
    NodeInfo,
    NodeRef,
    PlaybackId,
    PlaybackObjectType,
    PlaybackPolicy,
    PlaybackRestriction,
    RecordedMedia,
    RecordingTime,
    SigningKey,
    SimulcastErrorSeverity,
    SimulcastTarget,
    SimulcastTargetStatus,
    WebhookDelivery,
    WebhookDeliveryStatus,
)
from relay.store.tables import (
    access_tokens,
    assets,
    events,
    live_streams,
    nodes,
    playback_ids,
    playback_restrictions,
    signing_keys,
    simulcast_targets,
    webhook_deliveries,
    webhook_endpoints,
)

if TYPE_CHECKING:
    # Annotations only: the classes come from relay.store.async_engine's import.
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# How many of a stream's newest recordings `recent_asset_ids` lists.
RECENT_ASSETS = 10

#: The largest row offset a query may carry: SQL engines keep OFFSET in a signed 64-bit
#: integer (SQLite raises OverflowError past it, PostgreSQL "bigint out of range"). A page
#: that starts beyond it cannot hold a row, so it is answered empty without a query.
MAX_SQL_OFFSET = 2**63 - 1

# Compared against when a token id is unknown, so that a miss costs what a hit costs.
_DUMMY_HASH = hashlib.sha256(b"relay: no such token").hexdigest()

# Columns of a live stream that PATCH may change.
UPDATABLE_LIVE_STREAM_FIELDS = frozenset({
    "passthrough", "latency_mode", "reconnect_window", "use_slate_for_standard_latency",
    "reconnect_slate_url", "max_continuous_duration", "new_asset_settings", "meta",
})


def hash_secret(secret: str) -> str:
    """Hash of an access-token secret as stored.

    Secrets are generated with ~285 bits of entropy, so a fast hash is enough: no
    dictionary or brute-force attack applies, and verification stays cheap per request.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class NewLiveStream:
    """A validated create request with every default already applied."""

    latency_mode: LatencyMode
    reconnect_window: float
    max_continuous_duration: int
    audio_only: bool
    use_slate_for_standard_latency: bool
    test: bool
    new_asset_settings: JSONDict
    playback_policies: tuple[PlaybackPolicy, ...]
    passthrough: str | None = None
    reconnect_slate_url: str | None = None
    meta: JSONDict | None = None


@dataclass(frozen=True, slots=True)
class NewSimulcastTarget:
    url: str
    stream_key: str | None = None
    passthrough: str | None = None


@dataclass(frozen=True, slots=True)
class StreamKeyRow:
    """What admission needs of one live stream (`Store.list_stream_keys`)."""

    id: str
    stream_key: str
    status: LiveStreamStatus
    srt_passphrase: str


SessionStep = Literal["connected", "recording", "active", "disconnected", "ended", "warning"]


@dataclass(frozen=True, slots=True)
class SessionWrite:
    """One transition of a live stream's session for `Store.session_write(s)`: `step` names
    the one-at-a-time method (`session_<step>`), the other fields are its arguments."""

    step: SessionStep
    stream_id: str
    asset_id: str | None = None
    protocol: IngestProtocol = "rtmp"  # recording
    recorded: RecordingTime | None = None  # disconnected: the connection's interval
    media: RecordedMedia | None = None  # ended: the recording as packaged
    warning: tuple[str, str] | None = None  # warning: (type, message)
    #: disconnected and ended: written only while this node holds the stream's lease (or
    #: the stream is gone), and an end releases the lease; None writes them whoever holds it.
    node_id: str | None = None


#: Most session transitions written in one transaction. A batch holds the database's write
#: lock while it is written (about 1 ms per ended session on SQLite), so an API write that
#: waits behind one stays well inside SQLite's busy timeout (5 s).
MAX_SESSION_WRITE_BATCH = 250

#: How long the row of a node silent for good is kept (seconds): a node started under a new
#: id (the default id changes with the process) leaves its old row behind; rows older than
#: this go when a node registers, so the table holds the nodes of about one day.
NODE_ROW_RETENTION = 86_400.0


#: URL query options SQLAlchemy's asyncpg dialect takes for itself (its `connect`), which
#: asyncpg.connect would refuse: left out of the listening connection's arguments.
_SQLALCHEMY_ASYNCPG_OPTIONS = ("prepared_statement_cache_size", "prepared_statement_name_func",
                               "async_creator_fn")

#: The key, in a connection's `info`, that says its transaction wrote outbox events.
_WROTE_EVENTS = "relay.wrote_events"


@dataclass(frozen=True, slots=True)
class WebhookBacklog:
    """Deliveries still to make: `waiting` never tried (queued, or an event still past an
    endpoint's cursor), `retrying` failed at least once and due again later."""

    waiting: int
    retrying: int


class Store:
    """Relay's control data. Open with `Store.open(url)`, close with `close()`."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], float] = time.time, *,
                 node_timeout: float = DEFAULT_NODE_TIMEOUT) -> None:
        self._engine = engine
        self._clock = clock
        #: Seconds a node may be silent before it counts as dead; also how long a stream
        #: lease lasts from each renewal (--node-timeout). Nodes sharing a database use one
        #: value, and their clocks agree to well within it (NTP).
        self.node_timeout = node_timeout
        self._event_listeners: list[Callable[[], None]] = []
        self._closed = False
        # A connection goes back to the pool after its transaction has committed (or rolled
        # back): then readers see the events it wrote, and the listeners hear of them. The
        # async engine runs these hooks on the event loop's thread.
        event.listen(engine.sync_engine.pool, "checkin", self._checked_in)
        event.listen(engine.sync_engine, "rollback", _forget_events)
        # Through a lambda, so the batches go through `session_writes` as it is looked up
        # on the instance at the time (a test may wrap it).
        self._session_batches: GroupCommit[SessionWrite, Asset | LiveStream | None] = (
            GroupCommit(lambda writes: self.session_writes(writes), MAX_SESSION_WRITE_BATCH))
        self._lease_batches: GroupCommit[tuple[str, str], LeaseGrant] = GroupCommit(
            lambda requests: self.acquire_stream_leases(requests), MAX_SESSION_WRITE_BATCH)

    @classmethod
    async def open(cls, url: str, clock: Callable[[], float] = time.time, *,
                   node_timeout: float = DEFAULT_NODE_TIMEOUT) -> Store:
        """Connect to the database at `url` and migrate its schema to the latest version."""
        engine = create_async_engine(url)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _configure_sqlite)
        store = cls(engine, clock, node_timeout=node_timeout)
        try:
            async with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    # Nodes started together on a new database would each create the tables
                    # (and all but one fail): one migrates, the others wait, then find it done.
                    await conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
                await conn.run_sync(migrations.migrate)
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def close(self) -> None:
        # dispose() closes the connections in the pool, not one a task still holds (its
        # transaction in flight as the store closes): that one goes back to the old pool
        # later, where nothing would close it, and is garbage collected open (for
        # aiosqlite, a ResourceWarning naming no culprit). `_checked_in` closes it then, as
        # it closes one a late task checks out of the fresh pool after this.
        self._closed = True
        await self._engine.dispose()

    def on_events_written(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` (on the event loop, without arguments) after each transaction
        that wrote outbox events has committed; return what removes it again."""
        self._event_listeners.append(listener)
        return lambda: self._event_listeners.remove(listener)

    def _checked_in(self, _dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        if record.info.pop(_WROTE_EVENTS, False):
            for listener in list(self._event_listeners):
                listener()
        if self._closed:
            # Given back after close(): closed rather than pooled (see close()). Check-ins
            # run inside SQLAlchemy's greenlet, where the async driver's close can run.
            record.close()

    async def ping(self) -> None:
        """Raise when the database cannot answer a trivial query."""
        async with self._engine.connect() as conn:
            await conn.execute(select(1))

    async def schema_version(self) -> int:
        async with self._engine.connect() as conn:
            return await conn.run_sync(migrations.current_version)

    def _now(self) -> int:
        return int(self._clock())

    # -- access tokens ---------------------------------------------------------------

    async def create_access_token(self) -> tuple[str, str]:
        """Create a token; return (id, secret). Only the secret's hash is stored."""
        token_id, secret = new_object_id(), random_token(TOKEN_SECRET_LENGTH)
        await self.ensure_access_token(token_id, secret)
        return token_id, secret

    async def ensure_access_token(self, token_id: str, secret: str) -> bool:
        """Make `token_id` exist with `secret`; return True when anything changed."""
        digest = hash_secret(secret)
        async with self._engine.begin() as conn:
            stored = await conn.scalar(
                select(access_tokens.c.secret_hash).where(access_tokens.c.id == token_id)
            )
            if stored is None:
                await conn.execute(insert(access_tokens).values(
                    id=token_id, secret_hash=digest, created_at=self._now()))
                return True
            if not hmac.compare_digest(stored, digest):
                await conn.execute(update(access_tokens)
                                   .where(access_tokens.c.id == token_id)
                                   .values(secret_hash=digest))
                return True
            return False

    async def verify_access_token(self, token_id: str, secret: str) -> bool:
        """True when the pair is valid; the comparison takes the same time either way."""
        async with self._engine.connect() as conn:
            stored = await conn.scalar(
                select(access_tokens.c.secret_hash).where(access_tokens.c.id == token_id)
            )
        matches = hmac.compare_digest(stored or _DUMMY_HASH, hash_secret(secret))
        return stored is not None and matches

    async def list_access_tokens(self) -> list[AccessTokenInfo]:
        """Every access token's id and creation time, oldest first."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(
                select(access_tokens.c.id, access_tokens.c.created_at)
                .order_by(access_tokens.c.created_at, access_tokens.c.id))).all()
        return [AccessTokenInfo(id=r.id, created_at=r.created_at) for r in rows]

    async def revoke_access_token(self, token_id: str) -> bool:
        """Delete a token: requests using it fail from now on. False if there is none."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(access_tokens).where(access_tokens.c.id == token_id))
            return result.rowcount > 0

    # -- live streams ----------------------------------------------------------------

    async def create_live_stream(
        self,
        spec: NewLiveStream,
        targets: Sequence[NewSimulcastTarget] = (),
    ) -> LiveStream:
        stream_id = new_object_id()
        async with self._engine.begin() as conn:
            await conn.execute(insert(live_streams).values(
                id=stream_id,
                created_at=self._now(),
                stream_key=new_stream_key(),
                status="idle",
                latency_mode=spec.latency_mode,
                reconnect_window=spec.reconnect_window,
                max_continuous_duration=spec.max_continuous_duration,
                audio_only=spec.audio_only,
                use_slate_for_standard_latency=spec.use_slate_for_standard_latency,
                test=spec.test,
                srt_passphrase=new_srt_passphrase(),
                new_asset_settings=spec.new_asset_settings,
                passthrough=spec.passthrough,
                reconnect_slate_url=spec.reconnect_slate_url,
                meta=spec.meta,
            ))
            for policy in spec.playback_policies:
                await _insert_playback_id(conn, "live_stream", stream_id, policy)
            for target in targets:
                await _insert_simulcast_target(conn, stream_id, target)
            stream = await _require_live_stream(conn, stream_id)
            await self._append_event(conn, "video.live_stream.created", stream)
        return stream

    async def get_live_stream(self, stream_id: str) -> LiveStream | None:
        async with self._engine.connect() as conn:
            return await _load_live_stream(conn, live_streams.c.id == stream_id)

    async def get_live_stream_by_key(self, stream_key: str) -> LiveStream | None:
        async with self._engine.connect() as conn:
            return await _load_live_stream(conn, live_streams.c.stream_key == stream_key)

    async def list_stream_keys(self) -> list[StreamKeyRow]:
        """Every live stream's id, key, status and SRT passphrase, for the ingest key cache.

        Four columns of each row and nothing else (no playback ids, targets or JSON
        settings), in one query: the registry loads this once at start."""
        columns = (live_streams.c.id, live_streams.c.stream_key, live_streams.c.status,
                   live_streams.c.srt_passphrase)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(*columns))).all()
        return [StreamKeyRow(stream_id, key, cast(LiveStreamStatus, status), passphrase)
                for stream_id, key, status, passphrase in rows]

    async def list_live_streams(
        self,
        *,
        limit: int,
        page: int,
        status: LiveStreamStatus | None = None,
        stream_key: str | None = None,
    ) -> list[LiveStream]:
        """One page of live streams, newest first."""
        query = select(live_streams).order_by(live_streams.c.seq.desc())
        if status is not None:
            query = query.where(live_streams.c.status == status)
        if stream_key is not None:
            query = query.where(live_streams.c.stream_key == stream_key)
        offset = _page_offset(limit, page)
        if offset is None:
            return []
        query = query.limit(limit).offset(offset)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            return await _live_streams_from_rows(conn, rows)

    async def update_live_stream(
        self, stream_id: str, changes: Mapping[str, Any]
    ) -> LiveStream | None:
        """Apply `changes` (a subset of UPDATABLE_LIVE_STREAM_FIELDS); None if no such stream."""
        unknown = set(changes) - UPDATABLE_LIVE_STREAM_FIELDS
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        return await self._change_live_stream(
            stream_id, dict(changes), "video.live_stream.updated")

    async def set_live_stream_enabled(self, stream_id: str, enabled: bool) -> LiveStream | None:
        """Disable (status `disabled`) or enable (back to `idle`) a stream."""
        async with self._engine.begin() as conn:
            stream = await _load_live_stream(conn, live_streams.c.id == stream_id)
            if stream is None:
                return None
            if enabled and stream.status == "disabled":
                stream = await self._apply(conn, stream_id, {"status": "idle"},
                                           "video.live_stream.enabled")
            elif not enabled and stream.status != "disabled":
                stream = await self._apply(
                    conn, stream_id,
                    {"status": "disabled", "active_ingest_protocol": None},
                    "video.live_stream.disabled")
            return stream

    async def reset_stream_key(self, stream_id: str) -> LiveStream | None:
        return await self._change_live_stream(
            stream_id, {"stream_key": new_stream_key()}, "video.live_stream.updated")

    async def delete_live_stream(self, stream_id: str) -> bool:
        """Delete a stream with its playback ids and targets; its recordings stay."""
        async with self._engine.begin() as conn:
            stream = await _load_live_stream(conn, live_streams.c.id == stream_id)
            if stream is None:
                return False
            await conn.execute(delete(playback_ids).where(
                (playback_ids.c.object_type == "live_stream")
                & (playback_ids.c.object_id == stream_id)))
            await conn.execute(delete(simulcast_targets).where(
                simulcast_targets.c.live_stream_id == stream_id))
            await conn.execute(delete(live_streams).where(live_streams.c.id == stream_id))
            await self._append_event(conn, "video.live_stream.deleted", stream)
            return True

    async def _change_live_stream(
        self, stream_id: str, values: dict[str, Any], event_type: str
    ) -> LiveStream | None:
        async with self._engine.begin() as conn:
            if await _load_live_stream(conn, live_streams.c.id == stream_id) is None:
                return None
            return await self._apply(conn, stream_id, values, event_type)

    async def _apply(
        self, conn: AsyncConnection, stream_id: str, values: dict[str, Any], event_type: str
    ) -> LiveStream:
        if values:
            await conn.execute(update(live_streams)
                               .where(live_streams.c.id == stream_id).values(**values))
        stream = await _require_live_stream(conn, stream_id)
        await self._append_event(conn, event_type, stream)
        return stream

    # -- playback ids ----------------------------------------------------------------

    async def create_playback_id(
        self, object_type: PlaybackObjectType, object_id: str, policy: PlaybackPolicy
    ) -> PlaybackId | None:
        """Add a playback id to a stream or asset; None if that object does not exist."""
        table = live_streams if object_type == "live_stream" else assets
        async with self._engine.begin() as conn:
            exists = await conn.scalar(select(table.c.seq).where(table.c.id == object_id))
            if exists is None:
                return None
            return await _insert_playback_id(conn, object_type, object_id, policy)

    async def get_playback_id(
        self,
        playback_id: str,
        object_type: PlaybackObjectType | None = None,
        object_id: str | None = None,
    ) -> PlaybackId | None:
        """Look a playback id up, optionally requiring that it belongs to the given object."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(
                select(playback_ids).where(playback_ids.c.id == playback_id))).first()
        if row is None:
            return None
        pid = _playback_id_from_row(row)
        if object_type is not None and (pid.object_type, pid.object_id) != (object_type,
                                                                              object_id):
            return None
        return pid

    async def delete_playback_id(
        self, object_type: PlaybackObjectType, object_id: str, playback_id: str
    ) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(playback_ids).where(
                (playback_ids.c.id == playback_id)
                & (playback_ids.c.object_type == object_type)
                & (playback_ids.c.object_id == object_id)))
            return result.rowcount > 0

    # -- simulcast targets -----------------------------------------------------------

    async def create_simulcast_target(
        self, stream_id: str, target: NewSimulcastTarget
    ) -> SimulcastTarget | None:
        async with self._engine.begin() as conn:
            stream = await _load_live_stream(conn, live_streams.c.id == stream_id)
            if stream is None:
                return None
            created = await _insert_simulcast_target(conn, stream_id, target)
            await self._append_event(
                conn, "video.live_stream.simulcast_target.created", stream,
                data=created.to_api())
            return created

    async def get_simulcast_target(self, stream_id: str, target_id: str) -> SimulcastTarget | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(simulcast_targets).where(
                (simulcast_targets.c.id == target_id)
                & (simulcast_targets.c.live_stream_id == stream_id)))).first()
        return None if row is None else _simulcast_target_from_row(row)

    async def delete_simulcast_target(self, stream_id: str, target_id: str) -> bool:
        async with self._engine.begin() as conn:
            stream = await _load_live_stream(conn, live_streams.c.id == stream_id)
            target = next((t for t in stream.simulcast_targets if t.id == target_id),
                          None) if stream else None
            if stream is None or target is None:
                return False
            await conn.execute(delete(simulcast_targets)
                               .where(simulcast_targets.c.id == target_id))
            await self._append_event(
                conn, "video.live_stream.simulcast_target.deleted", stream,
                data=target.to_api())
            return True

    async def set_simulcast_target_status(
        self, stream_id: str, target_id: str, status: SimulcastTargetStatus,
        error_severity: SimulcastErrorSeverity | None = None,
    ) -> SimulcastTarget | None:
        """A target's pusher changed state: its status (and `error_severity`, kept only
        with `errored`) and `video.live_stream.simulcast_target.<status>` in one
        transaction. None, and nothing written, when the target is gone (deleted with its
        stream while live)."""
        severity = error_severity if status == "errored" else None
        async with self._engine.begin() as conn:
            stream = await _load_live_stream(conn, live_streams.c.id == stream_id)
            target = next((t for t in stream.simulcast_targets if t.id == target_id),
                          None) if stream else None
            if stream is None or target is None:
                return None
            await conn.execute(update(simulcast_targets)
                               .where(simulcast_targets.c.id == target_id)
                               .values(status=status, error_severity=severity))
            changed = replace(target, status=status, error_severity=severity)
            await self._append_event(
                conn, f"video.live_stream.simulcast_target.{status}", stream,
                data=changed.to_api())
            return changed

    async def _idle_simulcast_targets(self, stream_ids: Sequence[str] | None = None) -> int:
        """Targets a previous process left pushing (it stopped or crashed) go back to
        `idle`, each with its event; returns how many. With `stream_ids`, only the targets
        of those streams (the others may belong to another node's live sessions)."""
        t = simulcast_targets.c
        where = t.status != "idle"
        if stream_ids is not None:
            if not stream_ids:
                return 0
            where = where & t.live_stream_id.in_(stream_ids)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(
                select(simulcast_targets.c.id, simulcast_targets.c.live_stream_id)
                .where(where)
                # Creation order on both databases (PostgreSQL has no implicit row order).
                .order_by(simulcast_targets.c.seq))).all()
        for row in rows:
            await self.set_simulcast_target_status(row.live_stream_id, row.id, "idle")
        return len(rows)

    # -- assets ----------------------------------------------------------------------

    async def create_asset(
        self,
        *,
        live_stream_id: str | None,
        ingest_type: str | None,
        settings: JSONDict,
        playback_policies: Sequence[PlaybackPolicy] = (),
        passthrough: str | None = None,
        test: bool = False,
        is_live: bool = True,
    ) -> Asset:
        """Create a recording (status `preparing`) with its playback ids."""
        asset_id = new_object_id()
        async with self._engine.begin() as conn:
            await conn.execute(insert(assets).values(
                id=asset_id, created_at=self._now(), live_stream_id=live_stream_id,
                status="preparing", is_live=is_live, test=test, passthrough=passthrough,
                ingest_type=ingest_type, recording_times=[], tracks=[], settings=settings))
            for policy in playback_policies:
                await _insert_playback_id(conn, "asset", asset_id, policy)
            asset = await _require_asset(conn, asset_id)
            await self._append_asset_event(conn, "video.asset.created", asset)
        return asset

    async def get_asset(self, asset_id: str) -> Asset | None:
        async with self._engine.connect() as conn:
            return await _load_asset(conn, asset_id)

    async def list_assets(
        self, *, limit: int, page: int, live_stream_id: str | None = None
    ) -> list[Asset]:
        """One page of assets, newest first."""
        query = select(assets).order_by(assets.c.seq.desc())
        if live_stream_id is not None:
            query = query.where(assets.c.live_stream_id == live_stream_id)
        offset = _page_offset(limit, page)
        if offset is None:
            return []
        query = query.limit(limit).offset(offset)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            pids = await _playback_ids_of(conn, "asset", [r.id for r in rows])
        return [_asset_from_row(r, pids.get(r.id, ())) for r in rows]

    async def delete_asset(self, asset_id: str) -> bool:
        """Delete an asset's row and playback ids (its media files are the caller's)."""
        async with self._engine.begin() as conn:
            asset = await _load_asset(conn, asset_id)
            if asset is None:
                return False
            await conn.execute(delete(playback_ids).where(
                (playback_ids.c.object_type == "asset")
                & (playback_ids.c.object_id == asset_id)))
            await conn.execute(delete(assets).where(assets.c.id == asset_id))
            if asset.live_stream_id is not None:
                await conn.execute(update(live_streams)
                                   .where(live_streams.c.active_asset_id == asset_id)
                                   .values(active_asset_id=None))
            await self._append_asset_event(conn, "video.asset.deleted", asset)
            return True

    # -- signing keys and playback restrictions (signed playback, issue 17) ---------------

    async def create_signing_key(self, public_key: str, *, max_keys: int) -> SigningKey | None:
        """Keep the public half of a new signing key; None when `max_keys` exist already.

        The count and the insert are one statement under a lock of the table
        (`_lock_for_bound`), so concurrent creates cannot pass the bound together."""
        key = SigningKey(id=new_object_id(), created_at=self._now(), public_key=public_key)
        async with self._engine.begin() as conn:
            await _lock_for_bound(conn, signing_keys)
            inserted = await conn.execute(_insert_below_bound(
                signing_keys, max_keys,
                {"id": key.id, "created_at": key.created_at, "public_key": key.public_key}))
        return key if inserted.rowcount > 0 else None

    async def get_signing_key(self, key_id: str) -> SigningKey | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(
                select(signing_keys).where(signing_keys.c.id == key_id))).first()
        return None if row is None else _signing_key_from_row(row)

    async def list_signing_keys(self, *, limit: int, page: int) -> list[SigningKey]:
        """One page of signing keys, newest first."""
        offset = _page_offset(limit, page)
        if offset is None:
            return []
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(signing_keys)
                                       .order_by(signing_keys.c.seq.desc())
                                       .limit(limit).offset(offset))).all()
        return [_signing_key_from_row(r) for r in rows]

    async def all_signing_keys(self) -> list[SigningKey]:
        """Every signing key, oldest first (as many as the API's bound let be created)."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(
                select(signing_keys).order_by(signing_keys.c.seq))).all()
        return [_signing_key_from_row(r) for r in rows]

    async def delete_signing_key(self, key_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(signing_keys).where(signing_keys.c.id == key_id))
            return result.rowcount > 0

    async def create_playback_restriction(
        self, *, allowed_domains: Sequence[str], allow_no_referrer: bool,
        allow_no_user_agent: bool, allow_high_risk_user_agent: bool, max_restrictions: int,
    ) -> PlaybackRestriction | None:
        """Keep a new restriction; None when `max_restrictions` exist already."""
        now = self._now()
        created = PlaybackRestriction(
            id=new_object_id(), created_at=now, updated_at=now,
            allowed_domains=tuple(allowed_domains), allow_no_referrer=allow_no_referrer,
            allow_no_user_agent=allow_no_user_agent,
            allow_high_risk_user_agent=allow_high_risk_user_agent)
        async with self._engine.begin() as conn:
            await _lock_for_bound(conn, playback_restrictions)
            inserted = await conn.execute(_insert_below_bound(
                playback_restrictions, max_restrictions,
                {"id": created.id, "created_at": now, "updated_at": now,
                 **_restriction_columns(created)}))
        return created if inserted.rowcount > 0 else None

    async def get_playback_restriction(self, restriction_id: str) -> PlaybackRestriction | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(playback_restrictions).where(
                playback_restrictions.c.id == restriction_id))).first()
        return None if row is None else _restriction_from_row(row)

    async def list_playback_restrictions(
        self, *, limit: int, page: int
    ) -> list[PlaybackRestriction]:
        """One page of playback restrictions, newest first."""
        offset = _page_offset(limit, page)
        if offset is None:
            return []
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(playback_restrictions)
                                       .order_by(playback_restrictions.c.seq.desc())
                                       .limit(limit).offset(offset))).all()
        return [_restriction_from_row(r) for r in rows]

    async def all_playback_restrictions(self) -> list[PlaybackRestriction]:
        """Every playback restriction, oldest first."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(
                select(playback_restrictions).order_by(playback_restrictions.c.seq))).all()
        return [_restriction_from_row(r) for r in rows]

    async def update_playback_restriction(
        self, restriction_id: str, *,
        referrer: tuple[Sequence[str], bool] | None = None,
        user_agent: tuple[bool, bool] | None = None,
    ) -> PlaybackRestriction | None:
        """Replace the referrer rule (allowed domains, allow no referrer) or the user-agent
        rule (allow none, allow high risk); None if there is no such restriction."""
        async with self._engine.begin() as conn:
            row = (await conn.execute(select(playback_restrictions).where(
                playback_restrictions.c.id == restriction_id))).first()
            if row is None:
                return None
            current = _restriction_from_row(row)
            changed = replace(current, updated_at=self._now())
            if referrer is not None:
                changed = replace(changed, allowed_domains=tuple(referrer[0]),
                                  allow_no_referrer=referrer[1])
            if user_agent is not None:
                changed = replace(changed, allow_no_user_agent=user_agent[0],
                                  allow_high_risk_user_agent=user_agent[1])
            await conn.execute(update(playback_restrictions)
                               .where(playback_restrictions.c.id == restriction_id)
                               .values(updated_at=changed.updated_at,
                                       **_restriction_columns(changed)))
            return changed

    async def delete_playback_restriction(self, restriction_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(playback_restrictions).where(
                playback_restrictions.c.id == restriction_id))
            return result.rowcount > 0

    # -- live sessions (written by the lifecycle in relay.streams) ----------------------
    #
    # Each method is one transition of a live stream's session: the stream's new state and
    # the events it causes are written in one transaction, so the outbox never disagrees
    # with the rows. A stream or asset deleted while live is skipped, not recreated.

    async def session_connected(self, stream_id: str) -> LiveStream | None:
        """An encoder was admitted: `video.live_stream.connected`."""
        async with self._engine.begin() as conn:
            found = await self._sessions_connected(conn, [SessionWrite("connected", stream_id)])
            return found.get(stream_id)

    async def session_recording(
        self, stream_id: str, protocol: IngestProtocol, asset_id: str | None
    ) -> Asset | None:
        """Media arrived: start the recording (a new asset unless `asset_id` continues one)
        and emit `video.live_stream.recording` (after `video.asset.created` when new)."""
        async with self._engine.begin() as conn:
            found = await self._sessions_recording(
                conn, [SessionWrite("recording", stream_id, asset_id, protocol=protocol)])
            return found.get(stream_id)

    async def session_active(self, stream_id: str) -> LiveStream | None:
        """The first segment is playable: status `active`, `video.live_stream.active`."""
        async with self._engine.begin() as conn:
            found = await self._sessions_active(conn, [SessionWrite("active", stream_id)])
            return found.get(stream_id)

    async def session_disconnected(
        self, stream_id: str, asset_id: str | None, recorded: RecordingTime | None
    ) -> None:
        """The encoder went away: close its recording interval and emit
        `video.live_stream.disconnected`."""
        async with self._engine.begin() as conn:
            await self._sessions_disconnected(
                conn, [SessionWrite("disconnected", stream_id, asset_id, recorded=recorded)])

    async def session_ended(self, stream_id: str, asset_id: str | None,
                            media: RecordedMedia | None = None) -> None:
        """The session is over (reconnect window expired, complete, disable, delete, limit):
        the stream goes `idle` (unless disabled) and the recording becomes a ready asset.
        `media` is the recording as packaged (duration, tracks); without it the asset's
        duration is the sum of its recording times."""
        async with self._engine.begin() as conn:
            await self._end_sessions(conn, [SessionWrite("ended", stream_id, asset_id,
                                                         media=media)])

    async def session_warning(self, stream_id: str, kind: str, message: str) -> None:
        """The ingest is unhealthy in a way the streamer can fix:
        `video.live_stream.warning`, its data the stream plus `warning: {type, message}`."""
        async with self._engine.begin() as conn:
            await self._sessions_warning(
                conn, [SessionWrite("warning", stream_id, warning=(kind, message))])

    async def session_writes(
        self, writes: Sequence[SessionWrite]
    ) -> list[Asset | LiveStream | None]:
        """Many sessions' transitions in one transaction: the rows and events of the methods
        above, and what each returns. Each transition is written for the whole batch with a
        few queries: a stop ends thousands of sessions at once, and after a restart
        thousands of encoders connect at once; one transaction each, or even one round of
        queries each, takes far longer than a container is given to stop. One failing write
        fails the batch (nothing of it is written)."""
        async with self._engine.begin() as conn:
            if len({w.stream_id for w in writes}) == len(writes):
                return await self._session_writes(conn, writes)
            # Two transitions of one stream: keep their order, one after the other.
            return [(await self._session_writes(conn, [w]))[0] for w in writes]

    async def session_write(self, write: SessionWrite) -> Asset | LiveStream | None:
        """One session's transition, written together with the others that arrive while a
        transaction is being written (`session_writes`, group commit). A failing batch is
        written again one write per transaction, so only the failing write raises."""
        return await self._session_batches.submit(write)

    async def _session_writes(
        self, conn: AsyncConnection, writes: Sequence[SessionWrite]
    ) -> list[Asset | LiveStream | None]:
        """`writes` of distinct streams, each step for all of them at once."""
        def of(step: SessionStep) -> list[SessionWrite]:
            return [w for w in writes if w.step == step]

        found: dict[tuple[SessionStep, str], Asset | LiveStream] = {}
        for stream_id, stream in (await self._sessions_connected(conn, of("connected"))).items():
            found["connected", stream_id] = stream
        for stream_id, asset in (await self._sessions_recording(conn, of("recording"))).items():
            found["recording", stream_id] = asset
        for stream_id, stream in (await self._sessions_active(conn, of("active"))).items():
            found["active", stream_id] = stream
        await self._sessions_warning(conn, of("warning"))
        await self._sessions_disconnected(conn, of("disconnected"))
        await self._end_sessions(conn, of("ended"))
        return [found.get((w.step, w.stream_id)) for w in writes]

    async def _sessions_connected(
        self, conn: AsyncConnection, writes: Sequence[SessionWrite]
    ) -> dict[str, LiveStream]:
        """`video.live_stream.connected` for each stream that still exists."""
        streams = await _load_live_streams(conn, [w.stream_id for w in writes])
        await self._append_events(conn, "video.live_stream.connected", list(streams.values()))
        return streams

    async def _sessions_recording(
        self, conn: AsyncConnection, writes: Sequence[SessionWrite]
    ) -> dict[str, Asset]:
        """Each stream's recording starts: a new asset (`video.asset.created`) unless the
        write names one to continue; the stream points at it; `video.live_stream.recording`."""
        streams = await _load_live_streams(conn, [w.stream_id for w in writes])
        writes = [w for w in writes if w.stream_id in streams]
        continued = await _load_assets(conn, [w.asset_id for w in writes if w.asset_id])
        chosen: dict[str, str] = {}  # stream id -> asset id
        created: list[dict[str, Any]] = []
        policies: list[tuple[str, PlaybackPolicy]] = []
        for write in writes:
            if write.asset_id is not None and write.asset_id in continued:
                chosen[write.stream_id] = write.asset_id
                continue
            stream = streams[write.stream_id]
            settings = dict(stream.new_asset_settings)
            asset_id = new_object_id()
            policies += [(asset_id, policy) for policy in settings.pop("playback_policies", [])]
            created.append(dict(
                id=asset_id, created_at=self._now(), live_stream_id=write.stream_id,
                status="preparing", is_live=True, test=stream.test,
                passthrough=settings.pop("passthrough", None),
                ingest_type=f"live_{write.protocol}", recording_times=[], tracks=[],
                settings=settings))
            chosen[write.stream_id] = asset_id
        if created:
            await conn.execute(insert(assets), created)
        if policies:
            await conn.execute(insert(playback_ids), [dict(
                id=new_object_id(), policy=policy, object_type="asset", object_id=asset_id)
                for asset_id, policy in policies])
        found = await _load_assets(conn, list(chosen.values()))
        await self._append_asset_events(conn, "video.asset.created",
                                        [found[row["id"]] for row in created])
        if chosen:
            await conn.execute(
                update(live_streams).where(live_streams.c.id == bindparam("stream_id"))
                .values(active_asset_id=bindparam("asset_id"),
                        active_ingest_protocol=bindparam("protocol")),
                [{"stream_id": w.stream_id, "asset_id": chosen[w.stream_id],
                  "protocol": w.protocol} for w in writes])
            after = await _load_live_streams(conn, list(chosen))
            await self._append_events(conn, "video.live_stream.recording",
                                      [after[w.stream_id] for w in writes])
        return {stream_id: found[asset_id] for stream_id, asset_id in chosen.items()}

    async def _sessions_active(
        self, conn: AsyncConnection, writes: Sequence[SessionWrite]
    ) -> dict[str, LiveStream]:
        """Status `active` and `video.live_stream.active` for each stream not active yet (a
        stream disabled mid-session keeps `disabled`; the session is ending anyway)."""
        streams = await _load_live_streams(conn, [w.stream_id for w in writes])
        change = [w.stream_id for w in writes if w.stream_id in streams
                  and streams[w.stream_id].status not in ("active", "disabled")]
        if change:
            await conn.execute(update(live_streams).where(live_streams.c.id.in_(change))
                               .values(status="active"))
            after = await _load_live_streams(conn, change)
            await self._append_events(conn, "video.live_stream.active",
                                      [after[i] for i in change])
            streams.update(after)
        return streams

    async def _sessions_disconnected(
        self, conn: AsyncConnection, writes: Sequence[SessionWrite]
    ) -> None:
        """Close each connection's recording interval; `video.live_stream.disconnected`."""
        writes = await _lease_held(conn, writes)
        if not writes:
            return
        await _add_recording_times(conn, [(w.asset_id, w.recorded) for w in writes
                                          if w.asset_id is not None and w.recorded is not None])
        streams = await _load_live_streams(conn, [w.stream_id for w in writes])
        await self._append_events(conn, "video.live_stream.disconnected",
                                  [streams[w.stream_id] for w in writes if w.stream_id in streams])

    async def _sessions_warning(
        self, conn: AsyncConnection, writes: Sequence[SessionWrite]
    ) -> None:
        """`video.live_stream.warning` for each stream that still exists."""
        if not writes:
            return
        streams = await _load_live_streams(conn, [w.stream_id for w in writes])
        rows = []
        for write in writes:
            stream = streams.get(write.stream_id)
            if stream is None or write.warning is None:
                continue
            kind, message = write.warning
            rows.append(dict(
                id=str(uuid.uuid4()), type="video.live_stream.warning",
                object_type="live_stream", object_id=stream.id,
                data={**stream.to_event_data(), "warning": {"type": kind, "message": message}},
                created_at=self._clock(), attempts=0))
        if rows:
            await _writing_events(conn)
            await conn.execute(insert(events), rows)

    async def recover_interrupted_sessions(
        self, finalize: Callable[[str], Awaitable[RecordedMedia | None]] | None = None,
        *, node_id: str | None = None,
    ) -> list[str]:
        """End the sessions a previous process left open (it stopped or crashed while
        streams were live); return the ids of the streams it ended. `finalize(asset_id)`
        completes an interrupted recording's media and describes it (or None).

        With `node_id` on a database that several nodes share (PostgreSQL), only the
        sessions of that node (an earlier run under the same id) and those no node holds
        are ended here: another node's are its own, or, once it is dead, taken over after
        their reconnect window (`finish_orphaned_sessions`). SQLite is one node's database,
        so there every open session was left by this node's previous run."""
        open_session = ((live_streams.c.active_asset_id.is_not(None))
                        | (live_streams.c.status == "active"))
        if node_id is None or self._engine.dialect.name == "sqlite":
            async with self._engine.connect() as conn:
                rows = (await conn.execute(
                    select(live_streams.c.id, live_streams.c.active_asset_id)
                    .where(open_session)
                    # Creation order on both databases, so the recovery's events are too.
                    .order_by(live_streams.c.seq))).all()
            found = [(row.id, row.active_asset_id) for row in rows]
            ended = await self._finish_sessions(found, finalize, node_id=None)
            await self._idle_simulcast_targets()
            return ended
        ours = open_session & (live_streams.c.owner_node.is_(None)
                               | (live_streams.c.owner_node == node_id))
        ended = []
        # A batch at a time; an ended session no longer matches, so this ends.
        while batch := await self._claim_and_finish(ours, node_id, finalize):
            ended += batch
        await self._idle_simulcast_targets(ended)
        return ended

    async def _finish_sessions(
        self, found: Sequence[tuple[str, str | None]],
        finalize: Callable[[str], Awaitable[RecordedMedia | None]] | None,
        *, node_id: str | None,
    ) -> list[str]:
        """End each (stream id, asset id) session, its recording finalized first; with
        `node_id`, only those that node still holds the lease of. Returns the stream ids."""
        async def media_of(asset_id: str | None) -> RecordedMedia | None:
            if finalize is None or asset_id is None:
                return None
            return await finalize(asset_id)

        # Side by side and in batches: a crash with thousands of live sessions must not make
        # the next start take minutes (`finalize` bounds its own concurrency: threads).
        media = await asyncio.gather(*(media_of(asset_id) for _, asset_id in found))
        ends = [SessionWrite("ended", stream_id, asset_id, media=described, node_id=node_id)
                for (stream_id, asset_id), described in zip(found, media, strict=True)]
        for first in range(0, len(ends), MAX_SESSION_WRITE_BATCH):
            await self.session_writes(ends[first:first + MAX_SESSION_WRITE_BATCH])
        return [stream_id for stream_id, _ in found]

    async def _claim_and_finish(
        self, claimable: Any, node_id: str,
        finalize: Callable[[str], Awaitable[RecordedMedia | None]] | None,
        skip: Collection[str] = (),
    ) -> list[str]:
        """Take the lease of up to MAX_SESSION_WRITE_BATCH streams matching `claimable` (and
        not in `skip`), then finish their sessions under it.

        The claim is one conditional UPDATE: on PostgreSQL a second node's UPDATE of the
        same row waits for the first to commit and then re-checks `claimable` against the
        new row (READ COMMITTED), which names this node and fails it; SQLite runs one writer
        at a time. The end is fenced by the lease (`SessionWrite.node_id`): of several nodes
        that try at once, one writes each session's events."""
        now = self._clock()
        c = live_streams.c
        async with self._engine.connect() as conn:
            found = (await conn.execute(select(c.id).where(claimable).order_by(c.seq)
                                        .limit(MAX_SESSION_WRITE_BATCH))).scalars().all()
        ids = [stream_id for stream_id in found if stream_id not in skip]
        if not ids:
            return []
        async with self._engine.begin() as conn:
            claimed = (await conn.execute(
                update(live_streams).where(c.id.in_(ids), claimable)
                .values(owner_node=node_id, lease_expires_at=now + self.node_timeout)
                .returning(c.id, c.active_asset_id, c.seq))).all()
        claimed = sorted(claimed, key=lambda row: row.seq)
        return await self._finish_sessions([(row.id, row.active_asset_id) for row in claimed],
                                           finalize, node_id=node_id)

    async def _end_sessions(self, conn: AsyncConnection, ends: Sequence[SessionWrite]) -> None:
        """Each session is over: its stream goes `idle` (unless disabled), with
        `video.live_stream.idle`; its recording becomes a ready asset, with
        `video.asset.live_stream_completed` and `video.asset.ready`. A few queries for all of
        `ends` (the streams are distinct)."""
        ends = await _lease_held(conn, ends)
        if not ends:
            return
        before = await _load_live_streams(conn, [e.stream_id for e in ends])
        found = [e.stream_id for e in ends if e.stream_id in before]
        if found:
            await conn.execute(update(live_streams).where(live_streams.c.id.in_(found))
                               .values(active_asset_id=None, active_ingest_protocol=None,
                                       owner_node=None, lease_expires_at=None))
            idle = [i for i in found if before[i].status == "active"]
            if idle:
                await conn.execute(update(live_streams).where(live_streams.c.id.in_(idle))
                                   .values(status="idle"))
            told = [i for i in found if before[i].status != "disabled"]
            after = await _load_live_streams(conn, told)
            await self._append_events(conn, "video.live_stream.idle", [after[i] for i in told])
        assets_before = await _load_assets(
            conn, [e.asset_id for e in ends if e.asset_id is not None])
        changes: list[dict[str, Any]] = []
        for end in ends:
            asset = assets_before.pop(end.asset_id, None) if end.asset_id else None
            if asset is not None and asset.is_live:
                changes.append(_completed_asset_values(asset, end.media))
        if not changes:
            return
        await conn.execute(update(assets).where(assets.c.id == bindparam("asset_id"))
                           .values(is_live=False, status="ready",
                                   duration=bindparam("duration"),
                                   tracks=bindparam("tracks"),
                                   recording_times=bindparam("recording_times")),
                           changes)
        completed = await _load_assets(conn, [c["asset_id"] for c in changes])
        done = [completed[c["asset_id"]] for c in changes]
        await self._append_asset_events(conn, "video.asset.live_stream_completed", done)
        await self._append_asset_events(conn, "video.asset.ready", done)

    # -- nodes and stream leases (several nodes on one database, issue 19) --------------
    #
    # Each node has a row and a heartbeat (`last_seen`); silent for `node_timeout` it is
    # dead. A live session is owned by the node its encoder reached: admission takes the
    # stream's lease (`owner_node` until `lease_expires_at`), the heartbeat renews it, the
    # session's end releases it. A lease expired by more than the stream's reconnect window
    # marks a session whose node died: another node finishes it (`finish_orphaned_sessions`).
    # Times are the nodes' clocks (Unix seconds), which must agree to well within the timeout.

    async def register_node(self, node_id: str, advertise_url: str) -> None:
        """Make `node_id`'s row say it started now at `advertise_url`; forget the rows of
        nodes silent for longer than NODE_ROW_RETENTION."""
        now = self._clock()
        async with self._engine.begin() as conn:
            await conn.execute(delete(nodes).where(nodes.c.id != node_id,
                                                   nodes.c.last_seen < now - NODE_ROW_RETENTION))
            await _upsert_node(conn, node_id, advertise_url, now, started=True)

    async def node_heartbeat(self, node_id: str, advertise_url: str,
                             stream_ids: Sequence[str]) -> list[str]:
        """The node is alive: its `last_seen` is now, and its leases on `stream_ids` (the
        streams of its live sessions) last another `node_timeout`. Returns those of
        `stream_ids` whose lease is no longer the node's (another node took it over while
        this one was silent): the node must end them without writing their end."""
        now = self._clock()
        c = live_streams.c
        async with self._engine.begin() as conn:
            await _upsert_node(conn, node_id, advertise_url, now, started=False)
            if not stream_ids:
                return []
            await conn.execute(update(live_streams)
                               .where(c.id.in_(stream_ids), c.owner_node == node_id)
                               .values(lease_expires_at=now + self.node_timeout))
            lost = (await conn.execute(select(c.id).where(
                c.id.in_(stream_ids),
                or_(c.owner_node.is_(None), c.owner_node != node_id)))).scalars().all()
        return list(lost)

    async def remove_node(self, node_id: str) -> None:
        """The node stopped cleanly (its sessions ended and released their leases)."""
        async with self._engine.begin() as conn:
            await conn.execute(delete(nodes).where(nodes.c.id == node_id))

    async def list_live_nodes(self) -> list[NodeInfo]:
        """The nodes heard from within `node_timeout`, by id."""
        since = self._clock() - self.node_timeout
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(nodes).where(nodes.c.last_seen >= since)
                                       .order_by(nodes.c.id))).all()
        return [NodeInfo(node_id=r.id, advertise_url=r.advertise_url,
                         started_at=r.started_at, last_seen=r.last_seen) for r in rows]

    async def owner_of_playback_id(self, playback_id: str) -> NodeRef | None:
        """The live node that holds the live session of the stream `playback_id` plays:
        None when it is not a live stream's, no node holds its lease, or the holder is
        dead (its lease or its heartbeat older than `node_timeout`)."""
        now = self._clock()
        p, s, n = playback_ids.c, live_streams.c, nodes.c
        query = (select(n.id, n.advertise_url)
                 .select_from(playback_ids.join(live_streams, s.id == p.object_id)
                              .join(nodes, n.id == s.owner_node))
                 .where(p.id == playback_id, p.object_type == "live_stream",
                        s.lease_expires_at >= now, n.last_seen >= now - self.node_timeout))
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else NodeRef(node_id=row.id, advertise_url=row.advertise_url)

    async def acquire_stream_lease(self, stream_id: str, node_id: str) -> LeaseGrant:
        """Take the lease of a stream for a new live session on `node_id`, unless another
        node holds it unexpired; written together with the other admissions that arrive
        meanwhile (`acquire_stream_leases`, group commit: after a restart thousands of
        encoders come back at once)."""
        return await self._lease_batches.submit((stream_id, node_id))

    async def acquire_stream_leases(
        self, requests: Sequence[tuple[str, str]]
    ) -> list[LeaseGrant]:
        """`acquire_stream_lease` for each (stream id, node id), in one transaction.

        The rows are read with FOR UPDATE (PostgreSQL), in id order so that two nodes'
        batches cannot deadlock, and stay locked until the grants are written: no other
        node can take a lease between the check and the write. On SQLite the UPDATE's own
        condition decides (see there). A stream that is gone grants nothing to hold."""
        now = self._clock()
        until = now + self.node_timeout
        c = live_streams.c
        async with self._engine.begin() as conn:
            rows = (await conn.execute(
                select(c.id, c.owner_node, c.lease_expires_at, c.active_asset_id)
                .where(c.id.in_({stream_id for stream_id, _ in requests}))
                .order_by(c.id).with_for_update())).all()
            state = {row.id: (row.owner_node, row.lease_expires_at, row.active_asset_id)
                     for row in rows}
            grants: list[LeaseGrant] = []
            taken: dict[str, str] = {}  # stream id -> node id
            for stream_id, node_id in requests:
                if stream_id not in state:
                    grants.append(LeaseGrant(acquired=True))
                    continue
                owner, expires, asset_id = state[stream_id]
                if (owner is not None and owner != node_id and expires is not None
                        and expires >= now):
                    grants.append(LeaseGrant(acquired=False, previous_owner=owner))
                    continue
                # A session's end releases its lease, so another node's lease (expired, or
                # it would have been refused) is a session that never ended: its node died.
                previous = owner if owner not in (None, node_id) else None
                grants.append(LeaseGrant(acquired=True, previous_owner=previous,
                                         open_session=previous is not None,
                                         open_asset_id=asset_id if previous else None))
                state[stream_id] = (node_id, until, asset_id)
                taken[stream_id] = node_id
            if not taken:
                return grants
            # Conditional all the same: SQLite's driver begins the transaction only at this
            # UPDATE, so the rows read above may be stale there; the WHERE is evaluated
            # under its write lock, and the owners read back say who got each lease.
            node: BindParameter[str] = bindparam("lease_node")
            await conn.execute(
                update(live_streams).where(
                    c.id == bindparam("lease_stream"),
                    or_(c.owner_node.is_(None), c.owner_node == node,
                        c.lease_expires_at.is_(None), c.lease_expires_at < now))
                .values(owner_node=node, lease_expires_at=until),
                [{"lease_stream": stream_id, "lease_node": node_id}
                 for stream_id, node_id in taken.items()])
            owners = {row.id: row.owner_node for row in (await conn.execute(
                select(c.id, c.owner_node).where(c.id.in_(taken)))).all()}
        return [grant if not grant.acquired or stream_id not in owners
                or owners[stream_id] == node_id
                else LeaseGrant(acquired=False, previous_owner=owners[stream_id])
                for grant, (stream_id, node_id) in zip(grants, requests, strict=True)]

    async def streams_leased_elsewhere(self, node_id: str) -> list[str]:
        """The streams whose live session another node holds now (an unexpired lease): the
        keys this node's SRT handshake refuses as already live."""
        c = live_streams.c
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(c.id).where(
                c.lease_expires_at >= self._clock(), c.owner_node != node_id))).scalars()
            return list(rows)

    async def release_stream_lease(self, stream_id: str, node_id: str) -> None:
        """Give up `node_id`'s lease of a stream it holds no session of (a refused
        admission); a session's end releases its lease itself (`SessionWrite.node_id`)."""
        c = live_streams.c
        async with self._engine.begin() as conn:
            await conn.execute(update(live_streams)
                               .where(c.id == stream_id, c.owner_node == node_id)
                               .values(owner_node=None, lease_expires_at=None))

    async def finish_taken_over_session(
        self, stream_id: str, asset_id: str | None, node_id: str,
        finalize: Callable[[str], Awaitable[RecordedMedia | None]] | None = None,
    ) -> bool:
        """End the session a dead node left open on a stream whose lease `node_id` has just
        taken (`LeaseGrant.open_session`): its recording is finalized and completed, the
        stream goes idle, and the lease is released with the end. False when another node
        holds the lease by now (it writes the end instead)."""
        async with self._engine.connect() as conn:
            owner = await conn.scalar(select(live_streams.c.owner_node)
                                      .where(live_streams.c.id == stream_id))
        if owner != node_id:
            return False
        await self._finish_sessions([(stream_id, asset_id)], finalize, node_id=node_id)
        await self._idle_simulcast_targets([stream_id])
        return True

    async def finish_orphaned_sessions(
        self, node_id: str,
        finalize: Callable[[str], Awaitable[RecordedMedia | None]] | None = None,
        *, keep: Collection[str] = (),
    ) -> list[str]:
        """Finish, as `node_id`, the sessions whose node died: their lease expired more
        than their stream's reconnect window ago (so the encoder did not come back to any
        node). Each stream goes idle and its recording is completed from what is on disk
        (`finalize`), its events written once however many nodes try at the same time.
        Returns the ids of the streams this call ended (at most MAX_SESSION_WRITE_BATCH;
        the next call takes more).

        `node_id`'s own expired leases count too, except on `keep` (the streams of its live
        sessions): a session of its own whose end could not be written (the database was
        down then) is finished here instead of waiting for a restart."""
        now = self._clock()
        c = live_streams.c
        orphaned = and_(c.owner_node.is_not(None),
                        c.lease_expires_at < now,  # the index narrows the scan to these
                        c.lease_expires_at + c.reconnect_window < now)
        ended = await self._claim_and_finish(orphaned, node_id, finalize, skip=keep)
        if ended:
            await self._idle_simulcast_targets(ended)
        return ended

    # -- change notices between nodes (PostgreSQL LISTEN/NOTIFY) ---------------------

    async def notify(self, channel: str, payloads: Sequence[str]) -> None:
        """Send each payload as a notice on `channel` (PostgreSQL `NOTIFY`), in one
        statement and one transaction: the listeners get them when it commits, in order.
        Nothing on SQLite, where the one node has no one to tell."""
        if self.single_node or not payloads:
            return
        async with self._engine.begin() as conn:
            await conn.execute(
                text("SELECT pg_notify(:channel, payload) "
                     "FROM unnest(CAST(:payloads AS text[])) AS payload"),
                {"channel": channel, "payloads": list(payloads)})

    async def connect_listener(self) -> Any:
        """A new asyncpg connection to this store's PostgreSQL database, outside the pool
        (a `LISTEN` holds its connection for good), built from the same URL. The caller
        closes it."""
        if self._engine.dialect.name != "postgresql":
            raise RuntimeError("LISTEN needs PostgreSQL")
        asyncpg = importlib.import_module("asyncpg")  # untyped: kept behind this method
        args, params = self._engine.dialect.create_connect_args(self._engine.url)
        for option in _SQLALCHEMY_ASYNCPG_OPTIONS:  # the dialect's, not asyncpg's
            params.pop(option, None)
        return await asyncpg.connect(*args, **params)

    async def stream_keys(self, stream_ids: Collection[str]) -> dict[str, StreamKeyRow]:
        """`list_stream_keys` for the streams named (those that exist), by id: one query,
        for the key cache and the live sessions after other nodes' changes."""
        if not stream_ids:
            return {}
        c = live_streams.c
        async with self._engine.connect() as conn:
            rows = (await conn.execute(
                select(c.id, c.stream_key, c.status, c.srt_passphrase)
                .where(c.id.in_(set(stream_ids))))).all()
        return {stream_id: StreamKeyRow(stream_id, key, cast(LiveStreamStatus, status),
                                        passphrase)
                for stream_id, key, status, passphrase in rows}

    # -- event outbox ----------------------------------------------------------------

    async def list_events(self, *, after_seq: int = 0, limit: int = 100) -> list[Event]:
        """Events in the order they happened, for the webhook deliverer and tests."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(
                select(events).where(events.c.seq > after_seq)
                .order_by(events.c.seq).limit(limit))).all()
        return [Event(id=r.id, type=r.type, object_type=r.object_type,
                      object_id=r.object_id, data=r.data, created_at=r.created_at)
                for r in rows]

    async def _append_event(
        self, conn: AsyncConnection, event_type: str, stream: LiveStream,
        data: JSONDict | None = None,
    ) -> None:
        await _writing_events(conn)
        await conn.execute(insert(events).values(
            id=str(uuid.uuid4()), type=event_type, object_type="live_stream",
            object_id=stream.id, data=data if data is not None else stream.to_event_data(),
            created_at=self._clock(), attempts=0))

    async def _append_events(
        self, conn: AsyncConnection, event_type: str, streams: Sequence[LiveStream]
    ) -> None:
        """`_append_event` for many streams, in one statement."""
        if streams:
            await _writing_events(conn)
            await conn.execute(insert(events), [dict(
                id=str(uuid.uuid4()), type=event_type, object_type="live_stream",
                object_id=stream.id, data=stream.to_event_data(), created_at=self._clock(),
                attempts=0) for stream in streams])

    async def _append_asset_events(
        self, conn: AsyncConnection, event_type: str, found: Sequence[Asset]
    ) -> None:
        """`_append_asset_event` for many assets, in one statement."""
        if found:
            await _writing_events(conn)
            await conn.execute(insert(events), [dict(
                id=str(uuid.uuid4()), type=event_type, object_type="asset",
                object_id=asset.id, data=asset.to_event_data(), created_at=self._clock(),
                attempts=0) for asset in found])

    async def _append_asset_event(
        self, conn: AsyncConnection, event_type: str, asset: Asset
    ) -> None:
        await _writing_events(conn)
        await conn.execute(insert(events).values(
            id=str(uuid.uuid4()), type=event_type, object_type="asset",
            object_id=asset.id, data=asset.to_event_data(),
            created_at=self._clock(), attempts=0))


    # -- webhook deliveries ------------------------------------------------------------
    # Each endpoint has a cursor into the outbox; `queue_webhook_deliveries` turns the events
    # after it into delivery rows, and the deliverer works those rows. The rows hold all of
    # the delivery state, so a restart (even after kill -9) resumes where it was.

    async def set_webhook_endpoints(self, urls: Sequence[str]) -> None:
        """Make these the endpoints: a new one starts after the newest event; one no longer
        listed is forgotten and its pending deliveries are marked failed (else they would
        wait, and hold back pruning, forever)."""
        async with self._engine.begin() as conn:
            known = set((await conn.execute(select(webhook_endpoints.c.url))).scalars())
            gone = known - set(urls)
            if gone:
                await conn.execute(delete(webhook_endpoints).where(
                    webhook_endpoints.c.url.in_(gone)))
                await conn.execute(update(webhook_deliveries).where(
                    webhook_deliveries.c.endpoint.in_(gone),
                    webhook_deliveries.c.status == "pending").values(
                    status="failed", last_error="the endpoint is no longer configured",
                    claim=None, claimed_until=None))
                known -= gone
            newest = (await conn.execute(select(func.max(events.c.seq)))).scalar() or 0
            for url in urls:
                if url not in known:
                    # Nodes starting together may both add it: the first one's row stays.
                    await conn.execute(_insert_or_ignore(conn, webhook_endpoints).values(
                        url=url, cursor=newest, created_at=self._clock()))
                    known.add(url)

    async def queue_webhook_deliveries(self, endpoint: str, *, limit: int = 1000) -> int:
        """Queue up to `limit` events after `endpoint`'s cursor for it; return how many."""
        async with self._engine.begin() as conn:
            # FOR UPDATE (PostgreSQL; SQLite has one writer anyway): when two nodes queue for
            # the endpoint at once, the second waits here for the first to commit and then
            # reads the cursor it moved, instead of queueing the same events again.
            cursor = (await conn.execute(select(webhook_endpoints.c.cursor).where(
                webhook_endpoints.c.url == endpoint).with_for_update())).scalar()
            if cursor is None:
                raise ValueError(f"no webhook endpoint {endpoint!r}: add_webhook_endpoints "
                                 "first")
            rows = (await conn.execute(
                select(events.c.seq, events.c.object_id).where(events.c.seq > cursor)
                .order_by(events.c.seq).limit(limit))).all()
            if not rows:
                return 0
            now = self._clock()
            await conn.execute(insert(webhook_deliveries), [dict(
                endpoint=endpoint, event_seq=seq, object_id=object_id, status="pending",
                attempts=0, attempt_log=[], created_at=now, next_attempt_at=now)
                for seq, object_id in rows])
            await conn.execute(update(webhook_endpoints).where(
                webhook_endpoints.c.url == endpoint).values(cursor=rows[-1][0]))
            return len(rows)

    def _heads(self, endpoint: str) -> Any:
        """The pending delivery of each object that no earlier pending one of that object
        precedes: only these may be sent, which keeps one object's events in order."""
        d, earlier = webhook_deliveries, webhook_deliveries.alias("earlier")
        return and_(d.c.endpoint == endpoint, d.c.status == "pending", ~exists(
            select(literal(1)).where(
                earlier.c.endpoint == endpoint, earlier.c.status == "pending",
                earlier.c.object_id == d.c.object_id, earlier.c.event_seq < d.c.event_seq)))

    async def claim_webhook_deliveries(
        self, endpoint: str, now: float, *, limit: int, claim_for: float,
    ) -> list[WebhookDelivery]:
        """Claim up to `limit` deliveries of `endpoint` that may be tried at `now`, one per
        object, oldest event first, for `claim_for` seconds; return them with their `claim`.

        A claimed delivery is no other deliverer's to try (on any node) until the claim is
        recorded (`record_webhook_attempt`), released, or lapses: a node that dies mid-try
        hands it on after `claim_for`. It stays pending meanwhile, so the object's later
        events wait behind it. On PostgreSQL the rows are picked FOR UPDATE SKIP LOCKED: two
        nodes claiming at once take different rows rather than queueing on each other's."""
        d = webhook_deliveries
        free = and_(d.c.status == "pending",
                    or_(d.c.claimed_until.is_(None), d.c.claimed_until <= now))
        pick = (select(d.c.seq).where(self._heads(endpoint), d.c.next_attempt_at <= now, free)
                .order_by(d.c.event_seq).limit(limit).with_for_update(skip_locked=True))
        token = str(uuid.uuid4())
        async with self._engine.begin() as conn:
            seqs = (await conn.execute(pick)).scalars().all()
            if not seqs:
                return []
            # Conditional as well (`free` again): SQLite has no FOR UPDATE, and there the
            # pick above is a read that another connection's claim may overtake.
            await conn.execute(update(d).where(d.c.seq.in_(seqs), free).values(
                claim=token, claimed_until=now + claim_for))
            rows = (await conn.execute(
                select(d, events).join(events, events.c.seq == d.c.event_seq)
                .where(d.c.claim == token).order_by(d.c.event_seq))).all()
        return [_delivery_from_row(r) for r in rows]

    async def release_webhook_claims(self, claims: Sequence[str] | None = None) -> int:
        """Give up these claims (None: every claim) untried; return how many deliveries."""
        d = webhook_deliveries
        query = update(d).where(d.c.claim.is_not(None))
        if claims is not None:
            if not claims:
                return 0
            query = query.where(d.c.claim.in_(claims))
        async with self._engine.begin() as conn:
            return (await conn.execute(query.values(claim=None, claimed_until=None))).rowcount

    @property
    def single_node(self) -> bool:
        """Whether no other process can share this database (SQLite: Relay runs one node on
        it), so claims found there at start were left by an earlier run of this one."""
        return self._engine.dialect.name == "sqlite"

    async def next_webhook_attempt_at(self, endpoint: str) -> float | None:
        """When the earliest of `endpoint`'s sendable deliveries is due (None: none pending):
        a claimed one no sooner than its claim lapses."""
        d = webhook_deliveries
        due = case((d.c.claimed_until > d.c.next_attempt_at, d.c.claimed_until),
                   else_=d.c.next_attempt_at)
        async with self._engine.connect() as conn:
            found = (await conn.execute(
                select(func.min(due)).where(self._heads(endpoint)))).scalar()
        return None if found is None else float(found)

    async def record_webhook_attempt(
        self, seq: int, *, claim: str, status: WebhookDeliveryStatus, attempts: int,
        next_attempt_at: float, first_attempt_at: float, last_error: str | None,
        attempt_log: Sequence[JSONDict], delivered_at: float | None = None,
    ) -> bool:
        """Write a try's outcome and end the claim; False (nothing written) when `claim` is
        no longer the delivery's: it lapsed and another deliverer has it, whose outcome
        counts (this try may have reached the receiver: at least once)."""
        d = webhook_deliveries
        async with self._engine.begin() as conn:
            done = await conn.execute(update(d).where(d.c.seq == seq, d.c.claim == claim).values(
                status=status, attempts=attempts, next_attempt_at=next_attempt_at,
                first_attempt_at=first_attempt_at, last_error=last_error,
                attempt_log=list(attempt_log), delivered_at=delivered_at,
                claim=None, claimed_until=None))
            return bool(done.rowcount == 1)

    async def list_webhook_deliveries(
        self, *, limit: int, page: int, status: WebhookDeliveryStatus | None = None,
        event_type: str | None = None, object_id: str | None = None,
        endpoint: str | None = None,
    ) -> list[WebhookDelivery]:
        """One page of deliveries, newest event first."""
        d = webhook_deliveries
        query = (select(d, events).join(events, events.c.seq == d.c.event_seq)
                 .order_by(d.c.event_seq.desc(), d.c.seq))
        if status is not None:
            query = query.where(d.c.status == status)
        if event_type is not None:
            query = query.where(events.c.type == event_type)
        if object_id is not None:
            query = query.where(d.c.object_id == object_id)
        if endpoint is not None:
            query = query.where(d.c.endpoint == endpoint)
        offset = _page_offset(limit, page)
        if offset is None:
            return []
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit).offset(offset))).all()
        return [_delivery_from_row(r) for r in rows]

    async def webhook_backlog(self, endpoints: Sequence[str]) -> WebhookBacklog:
        """What `endpoints` still have to deliver, in one query (the deliveries' head index
        and the events' primary key keep it short)."""
        d, e, w = webhook_deliveries.c, events.c, webhook_endpoints.c
        pending = and_(d.endpoint.in_(endpoints), d.status == "pending")
        query = select(
            select(func.count()).select_from(webhook_deliveries)
            .where(pending, d.attempts == 0).scalar_subquery(),
            select(func.count()).select_from(webhook_deliveries)
            .where(pending, d.attempts > 0).scalar_subquery(),
            select(func.count()).select_from(events.join(webhook_endpoints, e.seq > w.cursor))
            .where(w.url.in_(endpoints)).scalar_subquery())
        async with self._engine.connect() as conn:
            queued, retrying, unqueued = (await conn.execute(query)).one()
        return WebhookBacklog(waiting=queued + unqueued, retrying=retrying)

    async def prune_webhook_events(self, before: float) -> int:
        """Delete the events made before `before` that no endpoint still has to deliver, with
        their delivery rows (delivered or failed); return how many events went."""
        d = webhook_deliveries
        pending = exists(select(literal(1)).where(d.c.event_seq == events.c.seq,
                                                  d.c.status == "pending"))
        # Nor an event some endpoint has not queued yet (its cursor is behind it).
        unqueued = exists(select(literal(1)).where(webhook_endpoints.c.cursor < events.c.seq))
        async with self._engine.begin() as conn:
            old = (await conn.execute(select(events.c.seq).where(
                events.c.created_at < before, ~pending, ~unqueued))).scalars().all()
            if old:
                await conn.execute(delete(d).where(d.c.event_seq.in_(old)))
                await conn.execute(delete(events).where(events.c.seq.in_(old)))
            return len(old)


# -- row mapping (module level: pure functions of a connection) --------------------------

async def _upsert_node(conn: AsyncConnection, node_id: str, advertise_url: str, now: float,
                       *, started: bool) -> None:
    values: dict[str, Any] = {"advertise_url": advertise_url, "last_seen": now}
    if started:
        values["started_at"] = now
    changed = await conn.execute(update(nodes).where(nodes.c.id == node_id).values(**values))
    if changed.rowcount == 0:  # new, or its row was pruned while it was silent
        await conn.execute(insert(nodes).values(id=node_id, advertise_url=advertise_url,
                                                started_at=now, last_seen=now))


async def _lease_held(conn: AsyncConnection,
                      ends: Sequence[SessionWrite]) -> list[SessionWrite]:
    """The writes to make: those without a node, and those whose node still holds the
    stream's lease (or whose stream is gone). One whose lease another node took over is
    dropped: that node has ended the session, and its events are written once.

    The rows are locked (PostgreSQL) until the transaction ends, so a claim cannot slip in
    between this check and the end's writes."""
    fenced = [e for e in ends if e.node_id is not None]
    if not fenced:
        return list(ends)
    rows = (await conn.execute(
        select(live_streams.c.id, live_streams.c.owner_node)
        .where(live_streams.c.id.in_({e.stream_id for e in fenced}))
        .order_by(live_streams.c.id).with_for_update())).all()  # id order: no deadlock
    owners = {row.id: row.owner_node for row in rows}
    return [e for e in ends if e.node_id is None or e.stream_id not in owners
            or owners[e.stream_id] == e.node_id]


def _page_offset(limit: int, page: int) -> int | None:
    """The offset of 1-based `page` of `limit` rows, or None when it lies past any row."""
    if limit < 1 or page < 1:
        raise ValueError(f"paging starts at page 1 with a limit of at least 1 "
                         f"(got limit={limit}, page={page})")
    offset = (page - 1) * limit
    return offset if offset + limit <= MAX_SQL_OFFSET else None


def _forget_events(conn: Any) -> None:
    """A rolled-back transaction wrote no events after all."""
    conn.info.pop(_WROTE_EVENTS, None)


# The transaction-level advisory lock that event-writing transactions hold on PostgreSQL.
OUTBOX_LOCK_KEY = 0x52454C4159  # "RELAY"
# The one that the migrations of `Store.open` hold on PostgreSQL.
MIGRATION_LOCK_KEY = 0x52454C41594D  # "RELAYM"


async def _writing_events(conn: AsyncConnection) -> None:
    """Mark the transaction as writing outbox events (listeners hear of it after commit), and
    on PostgreSQL serialize it with the others that write events.

    The webhook queue reads the outbox by a cursor: every event after the last seq queued.
    That needs seqs to become visible in order. SQLite has one writer at a time, so they do;
    on PostgreSQL, a transaction that took seq 10 may commit after one that took seq 11, and
    the cursor would pass 10 before it exists. Held from before the insert (which takes the
    seq) until commit or rollback, the lock makes commit order seq order."""
    conn.info[_WROTE_EVENTS] = True
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(OUTBOX_LOCK_KEY)))


async def _lock_for_bound(conn: AsyncConnection, table: Any) -> None:
    """Serialize the bounded creates of `table` until the transaction ends.

    SQLite runs one write transaction at a time, so there the count in the INSERT sees every
    committed row. PostgreSQL's READ COMMITTED lets two transactions each count `bound - 1`
    and both insert: SHARE ROW EXCLUSIVE conflicts with itself (and with writes), not with
    reads, so the creates queue while lists and gets go on."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text(f"LOCK TABLE {table.name} IN SHARE ROW EXCLUSIVE MODE"))


def _insert_or_ignore(conn: AsyncConnection, table: Any) -> Any:
    """INSERT that skips a row whose key exists already (ON CONFLICT DO NOTHING; both
    databases spell it so, each through its own dialect's construct). The dialect's module
    is the one the engine loaded when it was made: an import of the other (PostgreSQL's is
    about 2 MiB) would only cost a relay memory it never uses."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql
        return postgresql.insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects import sqlite
    return sqlite.insert(table).on_conflict_do_nothing()


def _insert_below_bound(table: Any, bound: int, values: Mapping[str, Any]) -> Any:
    """INSERT of one row that inserts nothing when `table` holds `bound` rows already: the
    count and the insert in one statement (INSERT ... SELECT ... WHERE count < bound)."""
    names = list(values)
    count = select(func.count()).select_from(table).scalar_subquery()
    row = select(*(literal(values[name], type_=table.c[name].type).label(name)
                   for name in names)).where(count < bound)
    return insert(table).from_select(names, row)


def _signing_key_from_row(row: Row[Any]) -> SigningKey:
    return SigningKey(id=row.id, created_at=row.created_at, public_key=row.public_key)


def _restriction_columns(restriction: PlaybackRestriction) -> dict[str, Any]:
    return {
        "referrer": {"allowed_domains": list(restriction.allowed_domains),
                     "allow_no_referrer": restriction.allow_no_referrer},
        "user_agent": {"allow_no_user_agent": restriction.allow_no_user_agent,
                       "allow_high_risk_user_agent": restriction.allow_high_risk_user_agent},
    }


def _restriction_from_row(row: Row[Any]) -> PlaybackRestriction:
    referrer, user_agent = row.referrer, row.user_agent
    return PlaybackRestriction(
        id=row.id, created_at=row.created_at, updated_at=row.updated_at,
        allowed_domains=tuple(referrer["allowed_domains"]),
        allow_no_referrer=bool(referrer["allow_no_referrer"]),
        allow_no_user_agent=bool(user_agent["allow_no_user_agent"]),
        allow_high_risk_user_agent=bool(user_agent["allow_high_risk_user_agent"]))


def _configure_sqlite(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # WAL lets readers (API) and the writer (ingest lifecycle) proceed together; the busy
    # timeout turns a brief lock into a wait instead of an error.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


async def _insert_playback_id(
    conn: AsyncConnection, object_type: PlaybackObjectType, object_id: str,
    policy: PlaybackPolicy,
) -> PlaybackId:
    pid = PlaybackId(id=new_object_id(), policy=policy, object_type=object_type,
                     object_id=object_id)
    await conn.execute(insert(playback_ids).values(
        id=pid.id, policy=pid.policy, object_type=pid.object_type, object_id=pid.object_id))
    return pid


async def _insert_simulcast_target(
    conn: AsyncConnection, stream_id: str, target: NewSimulcastTarget
) -> SimulcastTarget:
    created = SimulcastTarget(id=new_object_id(), live_stream_id=stream_id, url=target.url,
                              stream_key=target.stream_key, passthrough=target.passthrough)
    await conn.execute(insert(simulcast_targets).values(
        id=created.id, live_stream_id=stream_id, url=created.url,
        stream_key=created.stream_key, passthrough=created.passthrough,
        status=created.status))
    return created


def _playback_id_from_row(row: Row[Any]) -> PlaybackId:
    return PlaybackId(id=row.id, policy=row.policy, object_type=row.object_type,
                      object_id=row.object_id)


def _simulcast_target_from_row(row: Row[Any]) -> SimulcastTarget:
    return SimulcastTarget(id=row.id, live_stream_id=row.live_stream_id, url=row.url,
                           stream_key=row.stream_key, passthrough=row.passthrough,
                           status=row.status, error_severity=row.error_severity)


async def _playback_ids_of(
    conn: AsyncConnection, object_type: PlaybackObjectType, object_ids: list[str]
) -> dict[str, tuple[PlaybackId, ...]]:
    if not object_ids:
        return {}
    rows = (await conn.execute(
        select(playback_ids)
        .where((playback_ids.c.object_type == object_type)
               & playback_ids.c.object_id.in_(object_ids))
        .order_by(playback_ids.c.seq))).all()
    grouped: dict[str, list[PlaybackId]] = {}
    for row in rows:
        grouped.setdefault(row.object_id, []).append(_playback_id_from_row(row))
    return {k: tuple(v) for k, v in grouped.items()}


async def _live_streams_from_rows(
    conn: AsyncConnection, rows: Sequence[Row[Any]]
) -> list[LiveStream]:
    ids = [r.id for r in rows]
    if not ids:
        return []
    pids = await _playback_ids_of(conn, "live_stream", ids)
    target_rows = (await conn.execute(
        select(simulcast_targets).where(simulcast_targets.c.live_stream_id.in_(ids))
        .order_by(simulcast_targets.c.seq))).all()
    targets: dict[str, list[SimulcastTarget]] = {}
    for row in target_rows:
        targets.setdefault(row.live_stream_id, []).append(_simulcast_target_from_row(row))
    # The newest RECENT_ASSETS recordings of each stream, in one query for the whole page.
    rank = func.row_number().over(partition_by=assets.c.live_stream_id,
                                  order_by=assets.c.seq.desc()).label("rank")
    ranked = (select(assets.c.id, assets.c.live_stream_id, assets.c.seq, rank)
              .where(assets.c.live_stream_id.in_(ids)).subquery())
    asset_rows = (await conn.execute(
        select(ranked.c.id, ranked.c.live_stream_id)
        .where(ranked.c.rank <= RECENT_ASSETS).order_by(ranked.c.seq))).all()
    recent: dict[str, list[str]] = {}
    for row in asset_rows:
        recent.setdefault(row.live_stream_id, []).append(row.id)
    return [
        LiveStream(
            id=r.id, created_at=r.created_at, stream_key=r.stream_key,
            status=cast(LiveStreamStatus, r.status), latency_mode=r.latency_mode,
            reconnect_window=r.reconnect_window,
            max_continuous_duration=r.max_continuous_duration, audio_only=r.audio_only,
            use_slate_for_standard_latency=r.use_slate_for_standard_latency, test=r.test,
            srt_passphrase=r.srt_passphrase, new_asset_settings=r.new_asset_settings,
            passthrough=r.passthrough, reconnect_slate_url=r.reconnect_slate_url,
            meta=r.meta, active_asset_id=r.active_asset_id,
            active_ingest_protocol=r.active_ingest_protocol,
            playback_ids=pids.get(r.id, ()), simulcast_targets=tuple(targets.get(r.id, ())),
            recent_asset_ids=tuple(recent.get(r.id, ())),
        )
        for r in rows
    ]


async def _load_live_stream(conn: AsyncConnection, where: Any) -> LiveStream | None:
    rows = (await conn.execute(select(live_streams).where(where))).all()
    found = await _live_streams_from_rows(conn, rows)
    return found[0] if found else None


async def _require_live_stream(conn: AsyncConnection, stream_id: str) -> LiveStream:
    stream = await _load_live_stream(conn, live_streams.c.id == stream_id)
    assert stream is not None, "written in this transaction"
    return stream


def _asset_from_row(row: Row[Any], pids: tuple[PlaybackId, ...]) -> Asset:
    return Asset(
        id=row.id, created_at=row.created_at, status=row.status, is_live=row.is_live,
        test=row.test, live_stream_id=row.live_stream_id, duration=row.duration,
        passthrough=row.passthrough, ingest_type=row.ingest_type,
        recording_times=tuple(RecordingTime(**r) for r in row.recording_times),
        tracks=tuple(row.tracks), settings=row.settings, playback_ids=pids,
    )


#: Recorded media this much longer than the asset's recording times means an interval is
#: missing (seconds; segment rounding and the first keyframe's wait stay below it).
RECORDING_TIME_SLACK = 1.0


def _completed_asset_values(asset: Asset, media: RecordedMedia | None) -> dict[str, Any]:
    """The columns of a live asset whose session ended, `media` being its recording as
    packaged (or as finalized after a crash); without it the duration is the sum of the
    recording times."""
    times = [_recording_time_row(r) for r in asset.recording_times]
    tracks: list[JSONDict] = list(asset.tracks)
    if media is None:
        duration = round(sum(r.duration for r in asset.recording_times), 3)
    else:
        duration = round(media.duration, 3)
        covered = sum(r.duration for r in asset.recording_times)
        if media.started_at is not None and media.duration - covered > RECORDING_TIME_SLACK:
            # The interval of the connection that was live when the process died.
            times.append(_recording_time_row(RecordingTime(
                started_at=media.started_at + covered,
                duration=round(media.duration - covered, 3))))
        if media.tracks:
            tracks = [{"id": new_object_id(), **track} for track in media.tracks]
    return {"asset_id": asset.id, "duration": duration, "tracks": tracks,
            "recording_times": times}


def _recording_time_row(recorded: RecordingTime) -> JSONDict:
    return {"started_at": recorded.started_at, "duration": recorded.duration,
            "type": recorded.type}


async def _add_recording_times(
    conn: AsyncConnection, intervals: Sequence[tuple[str, RecordingTime]]
) -> None:
    """Append each interval to its asset's recording times (two statements in all)."""
    if not intervals:
        return
    rows = (await conn.execute(select(assets.c.id, assets.c.recording_times).where(
        assets.c.id.in_({asset_id for asset_id, _ in intervals})))).all()
    times = {row.id: list(row.recording_times) for row in rows}
    for asset_id, recorded in intervals:
        if asset_id in times:
            times[asset_id].append(_recording_time_row(recorded))
    if times:
        await conn.execute(
            update(assets).where(assets.c.id == bindparam("asset_id"))
            .values(recording_times=bindparam("times")),
            [{"asset_id": asset_id, "times": value} for asset_id, value in times.items()])


async def _load_live_streams(
    conn: AsyncConnection, stream_ids: Sequence[str]
) -> dict[str, LiveStream]:
    if not stream_ids:
        return {}
    rows = (await conn.execute(
        select(live_streams).where(live_streams.c.id.in_(set(stream_ids))))).all()
    return {stream.id: stream for stream in await _live_streams_from_rows(conn, rows)}


async def _load_assets(conn: AsyncConnection, asset_ids: Sequence[str]) -> dict[str, Asset]:
    if not asset_ids:
        return {}
    rows = (await conn.execute(select(assets).where(assets.c.id.in_(set(asset_ids))))).all()
    pids = await _playback_ids_of(conn, "asset", [row.id for row in rows])
    return {row.id: _asset_from_row(row, pids.get(row.id, ())) for row in rows}


async def _load_asset(conn: AsyncConnection, asset_id: str) -> Asset | None:
    row = (await conn.execute(select(assets).where(assets.c.id == asset_id))).first()
    if row is None:
        return None
    pids = await _playback_ids_of(conn, "asset", [asset_id])
    return _asset_from_row(row, pids.get(asset_id, ()))


async def _require_asset(conn: AsyncConnection, asset_id: str) -> Asset:
    asset = await _load_asset(conn, asset_id)
    assert asset is not None, "written in this transaction"
    return asset


__all__ = ["NewLiveStream", "NewSimulcastTarget", "SessionWrite", "Store", "hash_secret"]


def _delivery_from_row(r: Row[Any]) -> WebhookDelivery:
    m = r._mapping
    d, e = webhook_deliveries.c, events.c
    event = Event(id=m[e.id], type=m[e.type], object_type=m[e.object_type],
                  object_id=m[e.object_id], data=m[e.data], created_at=m[e.created_at])
    return WebhookDelivery(
        seq=m[d.seq], endpoint=m[d.endpoint], event=event, status=m[d.status],
        attempts=m[d.attempts], created_at=m[d.created_at],
        next_attempt_at=m[d.next_attempt_at], first_attempt_at=m[d.first_attempt_at],
        last_error=m[d.last_error],
        delivered_at=m[d.delivered_at], attempt_log=tuple(m[d.attempt_log]),
        claim=m[d.claim])
