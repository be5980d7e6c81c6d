"""Stream changes between nodes: a disable, complete, key reset or delete made through one
node's API reaches the node that owns the stream's live session, and every node's key cache
(issue 19).

Theory of operation. After an API change has committed, its node sends a notice on one
PostgreSQL channel (`NOTIFY`, `CHANNEL`): `ORIGIN STREAM_ID CHANGE[,CHANGE...]`, a few
dozen bytes (PostgreSQL's limit is 8000). Every node `LISTEN`s on a dedicated asyncpg
connection outside the store's pool, and hands each notice of another node to `on_changes`,
which reads the stream back from the store and applies it (the key cache, and the end of a
local session: `IngestRegistry.changed_elsewhere`). Since the notice goes out after the
commit, that read is never older than the change it announces.

Notices can be lost: while the listening connection is down (PostgreSQL keeps nothing for
a listener that is not connected), or when the sending node dies between its commit and
its notice. So:
- after every reconnection the whole key cache is reloaded and every live session checked
  (`on_resync`): LISTEN is in place before that read, so nothing committed after it goes
  unheard;
- every heartbeat interval (a third of --node-timeout) each node compares its own live
  sessions with the store (`check`): a stream disabled, deleted or given a new key while
  its notice was lost is ended by its owner within the node timeout, as a lease taken over
  is. One indexed read of the streams this node holds, and none when it holds none; the
  alternative, reloading the whole key cache each beat, would read every stream of the
  database on every node three times per timeout. (A `complete` changes nothing in the
  store, so a lost notice of one is lost; the key cache of a node that is not the owner
  is only a hint for SRT's handshake, and admission reads the store itself.)

Bounded: notices wait, on each side, coalesced per stream id (a flood of changes to one
stream is one entry), at most `max_pending` streams; past that the waiting ones are dropped
for one "everything" mark: the sender sends `ORIGIN *`, on which each node reloads
everything, and the receiver reloads everything itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from relay.cluster.node import BEATS_PER_TIMEOUT
from relay.logs import LogLimiter, peer_text
from relay.store import Store

log = logging.getLogger("relay.cluster")

#: The PostgreSQL channel of the stream-change notices.
CHANNEL = "relay_stream_changes"
#: The stream id of a notice that asks every node to reload everything.
EVERYTHING = "*"
#: Most streams whose notices may wait at once on each side (sending, and applying); past
#: it they are dropped for one reload of everything. A stream id with its changes is about
#: 200 bytes here, so at most about 2 MB per side.
MAX_PENDING_STREAMS = 10_000
#: Most notices one NOTIFY statement sends, and most streams one `on_changes` call gets.
NOTICE_BATCH = 500
#: The listening connection is retried after this long, doubled after each failure up to
#: the maximum (a database restart is not hammered by every node at once).
RECONNECT_MIN_SECONDS = 0.25
RECONNECT_MAX_SECONDS = 10.0
#: How long connecting, or a keep-alive query on the listening connection, may take before
#: the connection counts as lost.
LISTENER_TIMEOUT_SECONDS = 10.0
#: After a failed send or apply, the wait before trying again (the store is down).
RETRY_SECONDS = 1.0

Changes = Mapping[str, Collection[str]]


class _Pending:
    """Stream id -> the changes that wait for it, at most `limit` streams; past that, only
    the mark that everything must be reloaded."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.streams: dict[str, set[str]] = {}
        self.everything = False

    def __bool__(self) -> bool:
        return self.everything or bool(self.streams)

    def add(self, stream_id: str, changes: Collection[str]) -> None:
        if self.everything:
            return
        waiting = self.streams.get(stream_id)
        if waiting is not None:
            waiting.update(changes)
        elif len(self.streams) >= self.limit:
            self.mark_everything()
        else:
            self.streams[stream_id] = set(changes)

    def mark_everything(self) -> None:
        self.streams.clear()
        self.everything = True

    def take(self, most: int) -> tuple[bool, dict[str, set[str]]]:
        """(everything, up to `most` streams), removed; everything supersedes the streams."""
        if self.everything:
            self.everything = False
            self.streams.clear()
            return True, {}
        taken = {}
        for stream_id in list(self.streams)[:most]:
            taken[stream_id] = self.streams.pop(stream_id)
        return False, taken

    def put_back(self, everything: bool, streams: Changes) -> None:
        if everything:
            self.mark_everything()
        for stream_id, changes in streams.items():
            self.add(stream_id, changes)


def payload(origin: str, stream_id: str, changes: Collection[str] = ()) -> str:
    """One notice's text: `ORIGIN STREAM_ID CHANGES` (ids and change names have no spaces
    or commas), or `ORIGIN *` for everything."""
    if stream_id == EVERYTHING:
        return f"{origin} {EVERYTHING}"
    return f"{origin} {stream_id} {','.join(sorted(changes))}"


def parse(text: str) -> tuple[str, str, frozenset[str]] | None:
    """(origin, stream id, changes) of a notice's text; None when it is not one."""
    parts = text.split(" ")
    if len(parts) == 2 and parts[1] == EVERYTHING and parts[0]:
        return parts[0], EVERYTHING, frozenset()
    if len(parts) != 3 or not parts[0] or not parts[1] or parts[1] == EVERYTHING:
        return None
    return parts[0], parts[1], frozenset(filter(None, parts[2].split(",")))


class StreamNotices:
    """This node's side of the notices, on `store` (PostgreSQL): `send()` announces a change
    made here; the notices of other nodes go to `on_changes` (stream id -> changes);
    `on_resync()` reloads everything after notices may have been missed; `check()` runs
    every heartbeat interval (the fallback for a lost notice)."""

    def __init__(self, store: Store, node_id: str, *,
                 on_changes: Callable[[Changes], Awaitable[None]],
                 on_resync: Callable[[], Awaitable[None]],
                 check: Callable[[], Awaitable[None]],
                 max_pending: int = MAX_PENDING_STREAMS) -> None:
        self.store = store
        self.node_id = node_id
        self._on_changes = on_changes
        self._on_resync = on_resync
        self._check = check
        self._outbox = _Pending(max_pending)
        self._inbox = _Pending(max_pending)
        self._to_send = asyncio.Event()
        self._received = asyncio.Event()
        self._stopping = asyncio.Event()
        self._conn: Any = None  # the listening asyncpg connection, while there is one
        self._lost = asyncio.Event()  # it dropped
        self._tasks: list[asyncio.Task[None]] = []
        self._log = LogLimiter(log)
        #: Counts, for tests and metrics: notices sent and heard (other nodes'), and how
        #: often the listening connection was (re)established.
        self.sent = 0
        self.heard = 0
        self.connections = 0

    @property
    def interval(self) -> float:
        return self.store.node_timeout / BEATS_PER_TIMEOUT

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._lost.is_set()

    async def start(self) -> None:
        """LISTEN (before the caller loads its key cache: no change committed after that
        load goes unheard), then run. A database that does not answer yet is retried in
        the background (and everything reloaded once it does)."""
        try:
            await self._connect()
        except Exception as exc:
            log.warning("node %s: cannot listen for other nodes' stream changes yet (%s); "
                        "retrying", self.node_id, type(exc).__name__)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen(), name="relay-notices-listen"),
                       loop.create_task(self._send(), name="relay-notices-send"),
                       loop.create_task(self._apply(), name="relay-notices-apply"),
                       loop.create_task(self._sweep(), name="relay-notices-check")]

    async def stop(self) -> None:
        """Send what waits (once), stop listening. Safe to repeat."""
        tasks, self._tasks = self._tasks, []
        self._stopping.set()
        for task in tasks:  # each finishes the store call it is in (see ClusterNode.stop)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if tasks and self._outbox:
            with contextlib.suppress(Exception):
                await self._send_batch()
        await self._disconnect()

    def send(self, stream_id: str, change: str) -> None:
        """Announce that this node's API changed `stream_id` (committed already)."""
        self._outbox.add(stream_id, (change,))
        self._to_send.set()

    # -- listening ----------------------------------------------------------------------

    async def _connect(self) -> None:
        conn = await asyncio.wait_for(self.store.connect_listener(), LISTENER_TIMEOUT_SECONDS)
        try:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn: lost.set())
            await asyncio.wait_for(conn.add_listener(CHANNEL, self._heard),
                                   LISTENER_TIMEOUT_SECONDS)
        except BaseException:
            conn.terminate()
            raise
        self._conn, self._lost = conn, lost
        self.connections += 1

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await asyncio.wait_for(conn.close(), LISTENER_TIMEOUT_SECONDS)
        except Exception:
            conn.terminate()

    async def _listen(self) -> None:
        delay = RECONNECT_MIN_SECONDS
        while not self._stopping.is_set():
            if self._conn is None:
                try:
                    await self._connect()
                except Exception as exc:
                    self._log.warning("listen", "node %s: cannot listen for other nodes' "
                                      "stream changes (%s); retrying in %gs", self.node_id,
                                      type(exc).__name__, delay)
                    await self._wait(self._stopping, delay)
                    delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                    continue
                delay = RECONNECT_MIN_SECONDS
                log.info("node %s: listening for stream changes again; reloading the key "
                         "cache (notices may have been missed)", self.node_id)
                self._inbox.mark_everything()
                self._received.set()
            # A drop is usually heard at once (the termination listener); a connection that
            # went silent without closing is found by the keep-alive query.
            await self._wait(self._lost, self.interval)
            if self._stopping.is_set():
                return
            if not self._lost.is_set():
                try:
                    await asyncio.wait_for(self._conn.execute("SELECT 1"),
                                           LISTENER_TIMEOUT_SECONDS)
                    continue
                except Exception as exc:
                    reason = type(exc).__name__
            else:
                reason = "the connection closed"
            self._log.warning("lost", "node %s: the connection listening for stream changes "
                              "was lost (%s); reconnecting", self.node_id, reason)
            await self._disconnect()

    def _heard(self, _conn: object, _pid: int, _channel: str, text: str) -> None:
        notice = parse(text)
        if notice is None:
            self._log.warning("malformed", "ignored a malformed stream-change notice %s",
                              peer_text(text))
            return
        origin, stream_id, changes = notice
        if origin == self.node_id:
            return  # this node applied its own change when it made it
        self.heard += 1
        if stream_id == EVERYTHING:
            self._inbox.mark_everything()
        else:
            self._inbox.add(stream_id, changes)
        self._received.set()

    async def _apply(self) -> None:
        while await self._woken(self._received):
            while self._inbox and not self._stopping.is_set():
                everything, streams = self._inbox.take(NOTICE_BATCH)
                try:
                    if everything:
                        await self._on_resync()
                    else:
                        await self._on_changes(streams)
                except Exception as exc:
                    self._inbox.put_back(everything, streams)
                    self._log.warning("apply", "node %s: could not apply other nodes' stream "
                                      "changes (%s); trying again in %gs", self.node_id,
                                      type(exc).__name__, RETRY_SECONDS)
                    await self._wait(self._stopping, RETRY_SECONDS)

    # -- sending ------------------------------------------------------------------------

    async def _send(self) -> None:
        while await self._woken(self._to_send):
            while self._outbox and not self._stopping.is_set():
                try:
                    await self._send_batch()
                except Exception as exc:
                    self._log.warning("send", "node %s: could not announce stream changes to "
                                      "the other nodes (%s); trying again in %gs (their "
                                      "owners also find them within the node timeout)",
                                      self.node_id, type(exc).__name__, RETRY_SECONDS)
                    await self._wait(self._stopping, RETRY_SECONDS)

    async def _send_batch(self) -> None:
        everything, streams = self._outbox.take(NOTICE_BATCH)
        texts = ([payload(self.node_id, EVERYTHING)] if everything else
                 [payload(self.node_id, stream_id, changes)
                  for stream_id, changes in streams.items()])
        try:
            await self.store.notify(CHANNEL, texts)
        except BaseException:
            self._outbox.put_back(everything, streams)
            raise
        self.sent += len(texts)

    # -- the fallback ---------------------------------------------------------------------

    async def _sweep(self) -> None:
        while not await self._wait(self._stopping, self.interval):
            try:
                await self._check()
            except Exception as exc:
                self._log.warning("check", "node %s: could not compare its live sessions "
                                  "with the store (%s); trying again in %gs", self.node_id,
                                  type(exc).__name__, self.interval)

    # -- waiting ------------------------------------------------------------------------

    async def _wait(self, event: asyncio.Event, seconds: float | None = None) -> bool:
        """Wait until `event`, the stop or `seconds`; whether `event` is set."""
        waits = {asyncio.ensure_future(event.wait()),
                 asyncio.ensure_future(self._stopping.wait())}
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        return event.is_set()

    async def _woken(self, event: asyncio.Event) -> bool:
        """Wait until `event` or the stop; clear it; False when stopping."""
        await self._wait(event)
        event.clear()
        return not self._stopping.is_set()
