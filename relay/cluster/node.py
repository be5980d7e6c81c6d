"""This process as one node: its row and heartbeat, its stream leases, and the takeover of
the sessions of nodes that died.

Theory of operation. Every node writes its row's `last_seen` every third of the node
timeout (`--node-timeout`), and in the same beat renews the lease of each stream it holds a
live session of. Admission takes the lease first (`acquire`): one key is live on one node.
A node that stops beating is dead after the timeout, and its leases expire with it; once a
stream's lease has been expired for longer than the stream's reconnect window (the encoder
did not come back to any node), every live node tries to finish the session, and the
store's conditional claim lets exactly one of them write its end
(`Store.finish_orphaned_sessions`). The ingest side is reached through two callables: which
sessions this node holds, and what to do with one whose lease another node took over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable, Mapping

from relay.cluster.addresses import NodeAddresses
from relay.logs import LogLimiter
from relay.store import Store
from relay.store.records import NodeInfo, RecordedMedia
from relay.store.store import MAX_SESSION_WRITE_BATCH

log = logging.getLogger("relay.cluster")

#: Heartbeats per node timeout: a node is counted dead only after missing this many beats
#: in a row (one slow query does not kill it).
BEATS_PER_TIMEOUT = 3
#: Most leases one heartbeat statement renews (a node with more renews them in several
#: statements): keeps each statement's parameter list far below the databases' caps
#: (SQLite 32766, asyncpg 32767).
LEASE_RENEWAL_BATCH = 1000
#: The longest node id (relay.config.NODE_ID_PATTERN): a default id's host name is cut to fit.
MAX_NODE_ID_LENGTH = 64
#: Live nodes a heartbeat keeps of the store's list (`ClusterNode.live_nodes`, this one
#: included): far above any real cluster, so the list a beat reads stays small.
MAX_LIVE_NODES_SEEN = 1000

Finalize = Callable[[str], Awaitable[RecordedMedia | None]]


def default_node_id(hostname: str | None = None, pid: int | None = None) -> str:
    """`HOSTNAME-PID`: unique among the processes of one machine and among machines with
    distinct host names, and stable for the life of the process (a restarted process is a
    new node; its predecessor's sessions are ended by the recovery of whichever node gets
    to them). Characters that --node-id refuses (relay.config.NODE_ID_PATTERN) become `-`;
    a long host name is cut."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", hostname or socket.gethostname()) or "relay"
    suffix = f"-{os.getpid() if pid is None else pid}"
    return host[:MAX_NODE_ID_LENGTH - len(suffix)] + suffix


def default_advertise_url(host: str, port: int, hostname: str | None = None) -> str:
    """`http://HOST:PORT` of the playback listener: its bound address, or this machine's
    host name when it listens on every address (other nodes must resolve that name to
    this machine; where they cannot, set --advertise-url)."""
    if host in ("", "0.0.0.0", "::"):
        host = hostname or socket.gethostname()
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class ClusterNode:
    """The node's heartbeat, leases and takeovers, on `store` (whose `node_timeout` is the
    node timeout). `held()` names the streams of this node's live sessions, each with a
    token that `on_lease_lost(stream_id, token)` gets back when another node has taken that
    stream's lease (this node was silent too long): the session must end without writing
    its end. `on_leased_elsewhere(stream_ids)` hears, with each beat, which streams other
    live nodes hold (for answers that cannot wait for the store: SRT's handshake).
    `finalize(asset_id)` completes a recording left by a dead node."""

    def __init__(self, store: Store, node_id: str, advertise_url: str, *,
                 held: Callable[[], Mapping[str, object]],
                 on_lease_lost: Callable[[str, object], None],
                 on_leased_elsewhere: Callable[[frozenset[str]], None] | None = None,
                 finalize: Finalize | None = None) -> None:
        self.store = store
        self.node_id = node_id
        self.advertise_url = advertise_url
        self._held = held
        self._on_lease_lost = on_lease_lost
        self._on_leased_elsewhere = on_leased_elsewhere
        self._finalize = finalize
        self._tasks: list[asyncio.Task[None]] = []
        # Set by stop(): the loops finish the store call they are in (a store call cancelled
        # midway can leave its connection unusable for the store's close) and return.
        self._stopping = asyncio.Event()
        self._log = LogLimiter(log)
        #: Sessions of dead nodes this node finished (a metric, and for tests).
        self.taken_over = 0
        #: Heartbeats that failed (the store unreachable or slow): a metric.
        self.heartbeat_failures = 0
        #: The live nodes (this one included), as the last good heartbeat read them, at most
        #: MAX_LIVE_NODES_SEEN: a metric, and where other nodes' addresses are learnt.
        self.live_nodes: tuple[NodeInfo, ...] = ()
        #: Their addresses, as client addresses count (`relay.cluster.addresses`): the
        #: connection caps let a node's proxied requests past the per-address cap.
        self.addresses = NodeAddresses()

    @property
    def leases_held(self) -> int:
        """Streams whose lease this node holds and renews: its live sessions."""
        return len(self._held())

    @property
    def interval(self) -> float:
        return self.store.node_timeout / BEATS_PER_TIMEOUT

    async def start(self) -> None:
        """Write the node's row and start beating and watching for dead nodes' sessions."""
        await self.store.register_node(self.node_id, self.advertise_url)
        with contextlib.suppress(Exception):  # the first beat reads it again
            self.live_nodes = tuple((await self.store.list_live_nodes())[:MAX_LIVE_NODES_SEEN])
        await self.addresses.refresh(node.advertise_url for node in self.live_nodes)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._beat(), name="relay-node-heartbeat"),
                       loop.create_task(self._take_over(), name="relay-node-takeover")]
        log.info("node %s (advertised at %s): heartbeat every %gs, dead after %gs",
                 self.node_id, self.advertise_url, self.interval, self.store.node_timeout)

    async def stop(self) -> None:
        """Stop beating and remove the node's row (its sessions have ended by now, their
        leases released by their ends). Safe to repeat."""
        tasks, self._tasks = self._tasks, []
        self._stopping.set()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if tasks:
            try:
                await self.store.remove_node(self.node_id)
            except Exception as exc:  # it will simply look dead after the timeout
                log.warning("node %s: could not remove its row on stop: %s", self.node_id,
                            type(exc).__name__)

    # -- admission ------------------------------------------------------------------

    async def acquire(self, stream_id: str) -> bool:
        """Take the stream's lease for a new live session; False when another live node
        holds it. A dead node's session still open on the stream (its encoder came back
        here inside the reconnect window) is finished first: its recording is completed
        and the new session starts a new one."""
        grant = await self.store.acquire_stream_lease(stream_id, self.node_id)
        if not grant.acquired or not grant.open_session:
            return grant.acquired
        log.info("stream %s: node %s died with its session open; finishing that session "
                 "before the new one", stream_id, grant.previous_owner)
        if await self.store.finish_taken_over_session(stream_id, grant.open_asset_id,
                                                      self.node_id, self._finalize):
            self.taken_over += 1
        return (await self.store.acquire_stream_lease(stream_id, self.node_id)).acquired

    async def release(self, stream_id: str) -> None:
        """Give a lease back that no session came of (the admission was refused after it)."""
        try:
            await self.store.release_stream_lease(stream_id, self.node_id)
        except Exception as exc:  # it expires after the node timeout anyway
            self._log.warning("release", "stream %s: could not release its lease (%s); it "
                              "expires within %gs", stream_id, type(exc).__name__,
                              self.store.node_timeout)

    # -- the loops --------------------------------------------------------------------

    async def _pause(self) -> bool:
        """Wait one interval; False when the node is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.interval)
        return not self._stopping.is_set()

    async def _beat(self) -> None:
        while await self._pause():
            held = dict(self._held())
            ids = list(held)
            try:
                lost: list[str] = []
                for first in range(0, max(len(ids), 1), LEASE_RENEWAL_BATCH):
                    lost += await self.store.node_heartbeat(
                        self.node_id, self.advertise_url,
                        ids[first:first + LEASE_RENEWAL_BATCH])
                if self._on_leased_elsewhere is not None:
                    self._on_leased_elsewhere(frozenset(
                        await self.store.streams_leased_elsewhere(self.node_id)))
                nodes = await self.store.list_live_nodes()
                self.live_nodes = tuple(nodes[:MAX_LIVE_NODES_SEEN])
            except Exception as exc:
                self.heartbeat_failures += 1
                self._log.warning("heartbeat", "node %s: heartbeat failed (%s); other nodes "
                                  "count this one dead after %gs without one", self.node_id,
                                  type(exc).__name__, self.store.node_timeout)
                continue
            for stream_id in lost:  # or the session ended (and released it) meanwhile
                self._on_lease_lost(stream_id, held[stream_id])
            await self.addresses.refresh(node.advertise_url for node in self.live_nodes)

    async def _take_over(self) -> None:
        while await self._pause():
            try:
                while not self._stopping.is_set():
                    ended = await self.store.finish_orphaned_sessions(
                        self.node_id, self._finalize, keep=frozenset(self._held()))
                    if ended:
                        self.taken_over += len(ended)
                        log.info("finished %d live session(s) of dead node(s) after their "
                                 "reconnect window", len(ended))
                    if len(ended) < MAX_SESSION_WRITE_BATCH:
                        break
            except Exception as exc:
                self._log.warning("takeover", "node %s: could not look for dead nodes' "
                                  "sessions (%s); trying again in %gs", self.node_id,
                                  type(exc).__name__, self.interval)
