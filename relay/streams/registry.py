"""Who may publish, and what the API's changes do to live sessions.

`IngestRegistry` is the single place where ingest adapters ask to publish on a stream key
and where the API reports that a stream was created, updated, completed, disabled, enabled,
deleted or given a new key. It owns the live sessions (one per stream) and the stream-key
cache.

The key cache is complete: `load_keys()` fills it from the store at start and every API
change keeps it current, so `peek()` can answer from memory alone. That is what SRT needs:
libsrt's listen callback runs on libsrt's own thread and must answer before the handshake
completes, with no time to wait for the store (relay/srt/admission.py). `admit()` stays the
authoritative check for every protocol: it reads the store, and races settle there.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from relay.limits import MAX_SESSION_SECONDS
from relay.store import Store, StreamKeyRow
from relay.store.records import LiveStream, LiveStreamStatus
from relay.streams.hub import LiveSession, Publisher
from relay.streams.ingest_warnings import WarningCounts
from relay.streams.throttle import AuthThrottle

log = logging.getLogger("relay.streams")

#: Most streams one store read of `changed_elsewhere` asks for (more take several reads):
#: keeps each query's parameter list far below the databases' caps.
STREAM_READ_BATCH = 1000

# Sessions are never longer than this, whatever a stream's max_continuous_duration (12 h).
DEFAULT_SESSION_LIMIT = float(MAX_SESSION_SECONDS)


class Refusal(StrEnum):
    """Why a publish was refused; the value is the reason the encoder is told."""

    UNKNOWN_KEY = "unknown stream key"
    DISABLED = "live stream is disabled"
    ALREADY_LIVE = "live stream already has a publisher"
    SHUTTING_DOWN = "server is shutting down"
    # Too many slowed refusals of this address are waiting already: the adapter closes the
    # connection without an answer (AuthThrottle.max_slowed_per_address).
    THROTTLED = "too many refused publishes from this address at once"


class PublishRefused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal


class StreamLeases(Protocol):
    """Who else may hold a stream live: the node's leases on a database that several nodes
    share (`relay.cluster.ClusterNode`)."""

    @property
    def node_id(self) -> str: ...

    async def acquire(self, stream_id: str) -> bool:
        """Take the stream's lease for a new session; False: another node holds it."""

    async def release(self, stream_id: str) -> None:
        """Give back a lease that no session came of."""


class StreamChange(StrEnum):
    """What the API did to a stream, as far as ingest is concerned (its live session and
    the stream-key cache)."""

    CREATED = "created"
    UPDATED = "updated"
    ENABLED = "enabled"
    COMPLETED = "completed"
    DISABLED = "disabled"
    DELETED = "deleted"
    KEY_RESET = "key_reset"


_END_REASONS = {
    StreamChange.COMPLETED: "the application completed the live stream",
    StreamChange.DISABLED: "the application disabled the live stream",
    StreamChange.DELETED: "the application deleted the live stream",
    StreamChange.KEY_RESET: "the application reset the stream key",
}


@dataclass(slots=True)
class IngestCounters:
    """Plain counters read by the metrics collector at scrape time."""

    publishes_accepted: int = 0
    publishes_refused: int = 0
    reconnects: int = 0
    refusals_slowed: int = 0  # unknown-key refusals answered after the throttle's delay
    refusals_unanswered: int = 0  # closed at once: the address had too many slowed waiting
    session_limit_ends: int = 0  # sessions the session limit ended (counted as they finish)
    #: video.live_stream.warning raised by kind, and those the per-session cap held back
    warnings: WarningCounts = field(default_factory=WarningCounts)


def _key_bytes(stream_key: str) -> bytes:
    # surrogatepass: a key a peer sent that is not valid UTF-8 (decoded with surrogateescape
    # by an adapter) still hashes, to a digest no stream has, instead of raising.
    return stream_key.encode("utf-8", "surrogatepass")


def _key_digest(stream_key: str) -> bytes:
    return hashlib.sha256(_key_bytes(stream_key)).digest()


@dataclass(frozen=True, slots=True)
class KeyState:
    """What `IngestRegistry.peek` knows of a stream key, from memory alone."""

    stream_id: str
    disabled: bool
    live: bool  # a session of the stream has a publisher now (here or on another node)
    srt_passphrase: str


@dataclass(frozen=True, slots=True)
class _KeyEntry:
    """One stream in the key cache. Immutable: a change replaces the whole entry, so a
    reader on another thread sees the old entry or the new one, never half of each."""

    stream_id: str
    key: bytes  # the stream key itself, for the constant-time comparison
    disabled: bool
    srt_passphrase: str


# The API changes that take a stream key's right to publish away; one that lands while an
# admission is looking the key up refuses that admission (with this refusal).
_REVOKING = {
    StreamChange.DISABLED: Refusal.DISABLED,
    StreamChange.DELETED: Refusal.UNKNOWN_KEY,
    StreamChange.KEY_RESET: Refusal.UNKNOWN_KEY,
}


@dataclass(slots=True, eq=False)  # hashed by identity: kept in a set while in flight
class _ChangeWatch:
    """What the API changed while one admission (or one cache read) waited for the store."""

    revoked: dict[str, Refusal] = field(default_factory=dict)  # stream id -> refusal
    # Streams the API changed meanwhile: what the store said of them before is stale and
    # must not overwrite what the change put in the key cache.
    touched: set[str] = field(default_factory=set)

    def check(self, stream_id: str) -> None:
        refusal = self.revoked.get(stream_id)
        if refusal is not None:
            raise PublishRefused(refusal)


class IngestRegistry:
    def __init__(
        self,
        store: Store,
        *,
        session_limit: float = DEFAULT_SESSION_LIMIT,
        throttle: AuthThrottle | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_session_started: Callable[[LiveSession], object] | None = None,
        leases: StreamLeases | None = None,
    ) -> None:
        self.store = store
        #: With several nodes on one database: a new session takes its stream's lease
        #: first, and a key another node holds is refused as a second publisher is.
        self.leases = leases
        self.session_limit = session_limit
        self.throttle = throttle or AuthThrottle()
        self.counters = IngestCounters()
        self.sessions: dict[str, LiveSession] = {}
        self._clock = clock
        # The key cache, complete once load_keys() has run: sha256(stream key) -> entry.
        # Looking keys up by their digest keeps the comparison of the secret itself to one
        # constant-time compare_digest. Mutated only on the event loop's thread; peek()
        # reads it from others (see there). About 450 bytes per stream (`_KeyEntry`,
        # its strings, the digest, two dict slots; benchmarks/srt_admission.py): 100,000
        # streams hold about 45 MB.
        self._keys: dict[bytes, _KeyEntry] = {}
        # stream id -> the digest its entry is under, so a change finds it without a scan.
        self._digest_of: dict[str, bytes] = {}
        # One per admission or cache read in flight (so bounded by the connections):
        # stream_changed tells each of them, since the stream an admission is for is known
        # only after its lookup.
        self._watches: set[_ChangeWatch] = set()
        # Store reads of a stream whose change came without its record (stream_changed).
        self._refreshes: set[asyncio.Task[None]] = set()
        self._closing = False
        # The streams other nodes hold live, as the last heartbeat read them (a moment
        # stale: admit()'s lease settles it). Replaced whole, never mutated: peek() reads it
        # from libsrt's thread.
        self._leased_elsewhere: frozenset[str] = frozenset()
        #: Called with every new session before its publisher starts it: the app attaches
        #: the session's consumers (the HLS packager) here.
        self.on_session_started = on_session_started

    async def admit(self, stream_key: str, publisher: Publisher, address: str) -> LiveSession:
        """Let `publisher` publish on `stream_key`, or raise PublishRefused.

        The key is looked up first: a correct key is never delayed. Unknown keys are
        answered ever more slowly per address group (AuthThrottle); when that group has too
        many slowed refusals waiting already, the refusal is Refusal.THROTTLED at once."""
        watch = _ChangeWatch()
        self._watches.add(watch)
        try:
            session = await self._admit(stream_key, publisher, watch)
        except PublishRefused as refused:
            self.counters.publishes_refused += 1
            if refused.refusal is Refusal.UNKNOWN_KEY:
                self._watches.discard(watch)
                await self._slow_refusal(address)
            raise
        finally:
            self._watches.discard(watch)
        self.counters.publishes_accepted += 1
        return session

    async def _slow_refusal(self, address: str) -> None:
        delay = self.throttle.record_failure(address, self._clock())
        if delay <= 0:
            return
        if not self.throttle.begin_slowed(address):
            self.counters.refusals_unanswered += 1
            raise PublishRefused(Refusal.THROTTLED)
        self.counters.refusals_slowed += 1
        try:
            await asyncio.sleep(delay)
        finally:
            self.throttle.end_slowed(address)

    async def _admit(self, stream_key: str, publisher: Publisher,
                     watch: _ChangeWatch) -> LiveSession:
        if self._closing:
            raise PublishRefused(Refusal.SHUTTING_DOWN)
        stream = await self._lookup(stream_key, watch)
        if stream is None:
            raise PublishRefused(Refusal.UNKNOWN_KEY)
        watch.check(stream.id)
        if stream.status == "disabled":
            raise PublishRefused(Refusal.DISABLED)
        leases, leased = self.leases, False
        try:
            while True:
                while (session := self.sessions.get(stream.id)) is not None:
                    if session.publisher is not None:
                        raise PublishRefused(Refusal.ALREADY_LIVE)
                    if session.can_resume():
                        session.resume(publisher)
                        self.counters.reconnects += 1
                        return session
                    # Its window just expired and it is still writing its end; start
                    # afresh after.
                    await session.wait_finished()
                    watch.check(stream.id)
                if self._closing:
                    raise PublishRefused(Refusal.SHUTTING_DOWN)
                if leases is None or leased:
                    break
                # Another node live on this key refuses as a publisher here would. While
                # this waited, a session of the stream may have started here: look again.
                if not await leases.acquire(stream.id):
                    raise PublishRefused(Refusal.ALREADY_LIVE)
                leased = True
                watch.check(stream.id)
        except PublishRefused:
            if leases is not None and leased and stream.id not in self.sessions:
                await leases.release(stream.id)
            raise
        session = LiveSession(stream, self.store, session_limit=self.session_limit,
                              on_ended=self._session_ended,
                              warning_counts=self.counters.warnings,
                              lease_owner=leases.node_id if leases else None)
        self.sessions[stream.id] = session
        if self.on_session_started is not None:
            self.on_session_started(session)
        session.start(publisher)
        return session

    async def _lookup(self, stream_key: str, watch: _ChangeWatch) -> LiveStream | None:
        # The store decides; the cache only says which row to read. A miss in the cache
        # still asks the store by key, so RTMP works before load_keys() and whatever the
        # cache missed; what the store says then repairs the cache, unless the API changed
        # the stream meanwhile (then the change's own update stands).
        digest = _key_digest(stream_key)
        entry = self._keys.get(digest)
        stream = (await self.store.get_live_stream(entry.stream_id) if entry is not None
                  else await self.store.get_live_stream_by_key(stream_key))
        if stream is None or not hmac.compare_digest(_key_bytes(stream.stream_key),
                                                     _key_bytes(stream_key)):
            if (entry is not None and self._keys.get(digest) is entry
                    and entry.stream_id not in watch.touched):
                self._forget(entry.stream_id)
            return None
        if stream.id not in watch.touched:
            self._remember(stream.id, stream.stream_key, stream.status, stream.srt_passphrase)
        return stream

    # -- the key cache ------------------------------------------------------------------

    async def load_keys(self) -> int:
        """Fill the key cache with every stream in the store; return how many.

        Called once at start, before the listeners open (and safe to call again: the
        cache is replaced whole, keeping what API changes said during the read)."""
        watch = _ChangeWatch()
        self._watches.add(watch)
        try:
            rows = await self.store.list_stream_keys()
        finally:
            self._watches.discard(watch)
        keys: dict[bytes, _KeyEntry] = {}
        digests: dict[str, bytes] = {}
        for row in rows:
            if row.id not in watch.touched:
                digest = _key_digest(row.stream_key)
                keys[digest] = _KeyEntry(row.id, _key_bytes(row.stream_key),
                                         row.status == "disabled", row.srt_passphrase)
                digests[row.id] = digest
        for stream_id in watch.touched:  # the API's word is newer than the read
            digest_of = self._digest_of.get(stream_id)
            current = self._keys.get(digest_of) if digest_of is not None else None
            if current is not None and digest_of is not None:
                keys[digest_of] = current
                digests[stream_id] = digest_of
        # peek() reads only _keys, so the moment between these two assignments is harmless.
        self._keys = keys
        self._digest_of = digests
        return len(keys)

    def key_counts(self) -> tuple[int, int]:
        """(disabled streams, all streams) in the key cache, for /metrics."""
        # One pass over the cache at scrape time (not a store read: collect() is sync).
        return sum(1 for entry in self._keys.values() if entry.disabled), len(self._keys)

    def peek(self, stream_key: str) -> KeyState | None:
        """What the key cache says of `stream_key`, without waiting: None for a key no
        stream has. Safe to call from any thread; `admit()` still decides.

        Thread safety: this runs on libsrt's thread while the event loop's thread changes
        the cache and the sessions. It only reads: `dict.get` on built-in dicts and
        attribute reads, each one step that CPython completes under the GIL, so it never
        sees a dict half-updated; and the writers never mutate an entry in place (a
        `_KeyEntry` is frozen and replaced whole; `LiveSession.publisher` is one reference,
        rebound), so whatever it reads is a consistent old or new value. It may be a moment
        stale, which admit() on the loop settles. (This relies on the GIL of the CPython
        3.11 Relay runs on; a free-threaded build would need a lock here.)"""
        key = _key_bytes(stream_key)
        entry = self._keys.get(hashlib.sha256(key).digest())
        if entry is None or not hmac.compare_digest(entry.key, key):
            return None
        session = self.sessions.get(entry.stream_id)
        live = ((session is not None and session.publisher is not None)
                or entry.stream_id in self._leased_elsewhere)
        return KeyState(entry.stream_id, entry.disabled, live, entry.srt_passphrase)

    @property
    def closing(self) -> bool:
        """True from the start of close(): every publish is refused from then on."""
        return self._closing

    @property
    def cached_keys(self) -> int:
        return len(self._keys)

    def _remember(self, stream_id: str, stream_key: str, status: LiveStreamStatus,
                  srt_passphrase: str) -> None:
        digest = _key_digest(stream_key)
        entry = _KeyEntry(stream_id, _key_bytes(stream_key), status == "disabled",
                          srt_passphrase)
        old = self._digest_of.get(stream_id)
        if old is not None and old != digest:
            # A new key: the old one stops now (for a moment neither is known: refused).
            self._keys.pop(old, None)
        self._keys[digest] = entry
        self._digest_of[stream_id] = digest

    def _forget(self, stream_id: str) -> None:
        digest = self._digest_of.pop(stream_id, None)
        if digest is not None:
            self._keys.pop(digest, None)

    def _set_disabled(self, stream_id: str, disabled: bool) -> None:
        digest = self._digest_of.get(stream_id)
        entry = self._keys.get(digest) if digest is not None else None
        if entry is not None and digest is not None:
            self._keys[digest] = replace(entry, disabled=disabled)

    def _update_key_cache(self, stream_id: str, change: StreamChange,
                          stream: LiveStream | None) -> None:
        if change is StreamChange.DELETED:
            self._forget(stream_id)
        elif stream is not None:
            self._remember(stream.id, stream.stream_key, stream.status, stream.srt_passphrase)
        elif change in (StreamChange.CREATED, StreamChange.KEY_RESET):
            # Without the record the new key is not known here: the old one stops now and
            # the stream is read from the store.
            self._forget(stream_id)
            self._refresh_later(stream_id)
        elif change in (StreamChange.DISABLED, StreamChange.ENABLED):
            self._set_disabled(stream_id, change is StreamChange.DISABLED)
        # UPDATED and COMPLETED change no key, status or passphrase.

    def _refresh_later(self, stream_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._refresh(stream_id),
                                                      name=f"key-refresh-{stream_id}")
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    async def _refresh(self, stream_id: str) -> None:
        watch = _ChangeWatch()
        self._watches.add(watch)
        try:
            stream = await self.store.get_live_stream(stream_id)
        except Exception as exc:  # the store is down: admit() still asks it by key
            log.warning("stream %s: its stream key could not be read into the key cache "
                        "(%s); SRT refuses it until the next change or restart",
                        stream_id, type(exc).__name__)
            return
        finally:
            self._watches.discard(watch)
        if stream_id in watch.touched:
            return  # a later change said more than this read knows
        if stream is None:
            self._forget(stream_id)
        else:
            self._remember(stream.id, stream.stream_key, stream.status, stream.srt_passphrase)

    def leased_elsewhere(self, stream_ids: frozenset[str]) -> None:
        """Which streams other live nodes hold now (each heartbeat says): `peek()` answers
        them as live, so SRT refuses them in the handshake as a second publisher."""
        self._leased_elsewhere = stream_ids

    def lease_lost(self, stream_id: str, session: object) -> None:
        """Another node took over the lease of `session` (this node was silent longer than
        the node timeout) and has ended it in the store: end it here too; its end is not
        written again (fenced by the lease)."""
        if (self.sessions.get(stream_id) is session and isinstance(session, LiveSession)
                and not session.lifecycle.ended):
            log.warning("stream %s: another node took over its lease while this node was "
                        "silent; ending the session here", stream_id)
            session.end("another node took over the live stream's lease")

    def _session_ended(self, session: LiveSession) -> None:
        if session.limit_reached:
            self.counters.session_limit_ends += 1
        if self.sessions.get(session.stream_id) is session:
            del self.sessions[session.stream_id]

    # -- what the API tells us ---------------------------------------------------------

    def stream_changed(self, stream_id: str, change: StreamChange,
                       stream: LiveStream | None = None) -> None:
        """Apply an API change to the key cache and to the stream's live session.

        `stream` is the record as the change left it (None for a delete); the API always
        passes it, so the cache holds a new key or status at once. Without it, a create or
        key reset is read back from the store."""
        revoked = _REVOKING.get(change)
        for watch in self._watches:
            watch.touched.add(stream_id)
            if revoked is not None:
                watch.revoked[stream_id] = revoked
        self._update_key_cache(stream_id, change, stream)
        session = self.sessions.get(stream_id)
        if session is None:
            return
        reason = _END_REASONS.get(change)
        if reason is not None:
            session.end(reason)

    # -- what other nodes' APIs did (relay.cluster.notices) ----------------------------

    async def changed_elsewhere(self, changes: Mapping[str, Collection[str]]) -> None:
        """Apply changes another node's API made: stream id -> the `StreamChange` values
        its notices named (none: just compare with the store). Each stream is read back
        from the store (the notices are sent after their changes commit, so the read is
        at least as new): the key cache takes its key and status, and its live session
        here ends when the stream is gone, disabled, has another key than the session
        was admitted with, or was completed. The same ends as `stream_changed`'s, whose
        record came with the change; here the store says what became of it."""
        ids = list(changes)
        for first in range(0, len(ids), STREAM_READ_BATCH):
            chunk = ids[first:first + STREAM_READ_BATCH]
            watch = _ChangeWatch()
            self._watches.add(watch)
            try:
                rows = await self.store.stream_keys(chunk)
            finally:
                self._watches.discard(watch)
            for stream_id in chunk:
                self._stored_change(stream_id, frozenset(changes[stream_id]),
                                    rows.get(stream_id), stream_id in watch.touched)

    async def check_sessions(self) -> None:
        """End the live sessions here whose streams the store says were deleted, disabled
        or given a new key (a notice of it was lost): `changed_elsewhere` for each."""
        await self.changed_elsewhere({stream_id: () for stream_id in list(self.sessions)})

    async def resync(self) -> None:
        """Reload the whole key cache and check every live session against the store: after
        the notices may have been missed (the listening connection dropped)."""
        await self.load_keys()
        await self.check_sessions()

    def _stored_change(self, stream_id: str, kinds: frozenset[str],
                       row: StreamKeyRow | None, touched: bool) -> None:
        revoked = (Refusal.UNKNOWN_KEY if row is None or StreamChange.KEY_RESET in kinds
                   else Refusal.DISABLED if row.status == "disabled" else None)
        for watch in self._watches:
            watch.touched.add(stream_id)
            if revoked is not None:
                watch.revoked[stream_id] = revoked
        if not touched:  # else an API change here came during the read: its word stands
            if row is None:
                self._forget(stream_id)
            else:
                self._remember(row.id, row.stream_key, row.status, row.srt_passphrase)
        session = self.sessions.get(stream_id)
        if session is None:
            return
        if row is None:
            change = StreamChange.DELETED
        elif row.status == "disabled" or StreamChange.DISABLED in kinds:
            change = StreamChange.DISABLED
        elif not hmac.compare_digest(_key_bytes(row.stream_key),
                                     _key_bytes(session.stream.stream_key)):
            # Compared with the session's own key, not the notice: a session admitted
            # with the new key after a reset stays.
            change = StreamChange.KEY_RESET
        elif StreamChange.COMPLETED in kinds:
            change = StreamChange.COMPLETED
        else:
            return
        if not session.lifecycle.ended:
            log.info("stream %s: %s on another node (or while a notice was lost)",
                     stream_id, change.value)
        session.end(_END_REASONS[change])

    async def close(self) -> None:
        """Refuse new publishes and end every session (shutdown)."""
        self._closing = True
        # Let key reads in flight finish: cancelling a store read midway can leave the
        # database connection unusable for the store's own close.
        await asyncio.gather(*self._refreshes, return_exceptions=True)
        sessions = list(self.sessions.values())
        for session in sessions:
            session.end("the server is shutting down")
        for session in sessions:
            await session.wait_finished()
