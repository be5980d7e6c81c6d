"""Who may publish, and what the API's changes do to live sessions.

`IngestRegistry` is the single place where ingest adapters ask to publish on a stream key
and where the API reports that a stream was completed, disabled, deleted or given a new key.
It owns the live sessions (one per stream) and the stream-key cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from relay.store import Store
from relay.store.records import LiveStream
from relay.streams.hub import LiveSession, Publisher
from relay.streams.throttle import AuthThrottle

log = logging.getLogger("relay.streams")

# Sessions are never longer than this, whatever a stream's max_continuous_duration (12 h).
DEFAULT_SESSION_LIMIT = 43_200.0


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


class StreamChange(StrEnum):
    """What the API did to a stream, as far as its live session is concerned."""

    UPDATED = "updated"
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


def _key_digest(stream_key: str) -> bytes:
    return hashlib.sha256(stream_key.encode()).digest()


# The API changes that take a stream key's right to publish away; one that lands while an
# admission is looking the key up refuses that admission (with this refusal).
_REVOKING = {
    StreamChange.DISABLED: Refusal.DISABLED,
    StreamChange.DELETED: Refusal.UNKNOWN_KEY,
    StreamChange.KEY_RESET: Refusal.UNKNOWN_KEY,
}


@dataclass(slots=True, eq=False)  # hashed by identity: kept in a set while in flight
class _AdmissionWatch:
    """What the API revoked while one admission was waiting for the store."""

    revoked: dict[str, Refusal] = field(default_factory=dict)  # stream id -> refusal

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
    ) -> None:
        self.store = store
        self.session_limit = session_limit
        self.throttle = throttle or AuthThrottle()
        self.counters = IngestCounters()
        self.sessions: dict[str, LiveSession] = {}
        self._clock = clock
        # sha256(stream key) -> stream id. Looking keys up by their digest keeps the
        # comparison of the secret itself to one constant-time compare_digest.
        self._keys: dict[bytes, str] = {}
        # One per admission in flight (so bounded by the connections): stream_changed tells
        # each of them, since the stream an admission is for is known only after its lookup.
        self._watches: set[_AdmissionWatch] = set()
        self._closing = False
        #: Called with every new session before its publisher starts it: the app attaches
        #: the session's consumers (the HLS packager) here.
        self.on_session_started = on_session_started

    async def admit(self, stream_key: str, publisher: Publisher, address: str) -> LiveSession:
        """Let `publisher` publish on `stream_key`, or raise PublishRefused.

        The key is looked up first: a correct key is never delayed. Unknown keys are
        answered ever more slowly per address group (AuthThrottle); when that group has too
        many slowed refusals waiting already, the refusal is Refusal.THROTTLED at once."""
        watch = _AdmissionWatch()
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
                     watch: _AdmissionWatch) -> LiveSession:
        if self._closing:
            raise PublishRefused(Refusal.SHUTTING_DOWN)
        stream = await self._lookup(stream_key)
        if stream is None:
            raise PublishRefused(Refusal.UNKNOWN_KEY)
        watch.check(stream.id)
        if stream.status == "disabled":
            raise PublishRefused(Refusal.DISABLED)
        while (session := self.sessions.get(stream.id)) is not None:
            if session.publisher is not None:
                raise PublishRefused(Refusal.ALREADY_LIVE)
            if session.can_resume():
                session.resume(publisher)
                self.counters.reconnects += 1
                return session
            # Its window just expired and it is still writing its end; start afresh after.
            await session.wait_finished()
            watch.check(stream.id)
        if self._closing:
            raise PublishRefused(Refusal.SHUTTING_DOWN)
        session = LiveSession(stream, self.store, session_limit=self.session_limit,
                              on_ended=self._session_ended)
        self.sessions[stream.id] = session
        if self.on_session_started is not None:
            self.on_session_started(session)
        session.start(publisher)
        return session

    async def _lookup(self, stream_key: str) -> LiveStream | None:
        digest = _key_digest(stream_key)
        stream_id = self._keys.get(digest)
        stream = (await self.store.get_live_stream(stream_id) if stream_id is not None
                  else await self.store.get_live_stream_by_key(stream_key))
        if stream is None or not hmac.compare_digest(stream.stream_key.encode(),
                                                     stream_key.encode()):
            if stream_id is not None:
                del self._keys[digest]
            return None
        self._keys[digest] = stream.id
        return stream

    def _session_ended(self, session: LiveSession) -> None:
        if self.sessions.get(session.stream_id) is session:
            del self.sessions[session.stream_id]

    # -- what the API tells us ---------------------------------------------------------

    def stream_changed(self, stream_id: str, change: StreamChange) -> None:
        """Apply an API change to the stream's live session, if it has one."""
        if change is not StreamChange.UPDATED:
            self._forget_keys_of(stream_id)
        revoked = _REVOKING.get(change)
        if revoked is not None:
            for watch in self._watches:
                watch.revoked[stream_id] = revoked
        session = self.sessions.get(stream_id)
        if session is None:
            return
        reason = _END_REASONS.get(change)
        if reason is not None:
            session.end(reason)

    def _forget_keys_of(self, stream_id: str) -> None:
        for digest in [d for d, sid in self._keys.items() if sid == stream_id]:
            del self._keys[digest]

    async def close(self) -> None:
        """Refuse new publishes and end every session (shutdown)."""
        self._closing = True
        sessions = list(self.sessions.values())
        for session in sessions:
            session.end("the server is shutting down")
        for session in sessions:
            await session.wait_finished()
