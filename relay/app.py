"""Wiring: open the store, bind every listener, serve on one uvloop loop, shut down cleanly.

`RelayServer` owns the process-level lifecycle of `relay serve`:
1. check the data dir and open (and migrate) the store;
2. make sure the seed access token exists;
3. bind every listener before serving any, so a taken port fails the start with a
   one-line error instead of leaving a half-started server;
4. serve until `stop()` (SIGTERM/SIGINT in the CLI), then stop accepting, let in-flight
   requests finish and close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus, urlsplit

import uvicorn
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from starlette.types import ASGIApp

from relay.api import create_api
from relay.cluster import ClusterNode, StreamNotices, default_advertise_url, default_node_id
from relay.config import Settings
from relay.file_limit import RESERVED_FILES, ensure_file_limit
from relay.hls.disk import DISK, DiskPool
from relay.hls.holding import HeldRequests
from relay.hls.packager import (
    DEFAULT_RECORDING_MAX_BACKLOG,
    PACKAGER_QUEUE_MAX_BYTES,
    PACKAGER_QUEUE_MAX_FRAMES,
    HlsCounters,
    LivePackager,
    RecordingQueue,
)
from relay.hls.recorded import RecordedPlaylists
from relay.hls.recording import RecordingWriter, finalize, read_variant
from relay.hls.routes import PlaybackDirectory, playback_routes
from relay.hls.serve import PlaybackServer, playback_protocol
from relay.hls.signed import PlaybackGate
from relay.hls.spool import SPOOL_DIR, Spools
from relay.hls.upstream import OwnerLookup, OwnerProxy, UpstreamCounters, UpstreamFetcher
from relay.http_limits import ConnectionTable, HttpCounters, HttpLimits, limited_protocol
from relay.https import TlsAcceptor
from relay.images.pool import DecodePool
from relay.images.routes import image_routes
from relay.limits import DEFAULT_NODE_TIMEOUT
from relay.logs import LogLimiter
from relay.metrics import (
    IngestCollector,
    SimulcastMetricsSource,
    SrtMetricsSource,
    create_metrics_app,
)
from relay.playback.access import PlaybackAccess
from relay.playback.sessions import SESSION_SECRET_FILE, load_session_secret
from relay.rtmp.buffer_budget import BufferBudget
from relay.rtmp.server import RtmpConnection, RtmpCounters, RtmpLimits, RtmpServer
from relay.rtmp.slots import ConnectionSlots
from relay.simulcast.counters import SimulcastCounters
from relay.simulcast.fanout import SimulcastFanOut
from relay.simulcast.manager import (
    SimulcastManager,
    TargetQueue,
    new_batch_clock,
    new_target_queue,
)
from relay.simulcast.tls import TargetTls, check_ca_file
from relay.srt import SrtUnavailable
from relay.srt.admission import SrtAdmission, SrtAdmissionLimits
from relay.store import SchemaTooNewError, Store
from relay.store.asset_files import AssetFiles
from relay.store.records import JSONDict, LiveStream, RecordedMedia
from relay.streams.hub import LiveSession
from relay.streams.queue import BatchClock, DrainQueue
from relay.streams.registry import IngestRegistry, StreamChange
from relay.trusted_proxies import ForwardedClientMiddleware, TrustedProxies
from relay.webhooks import WebhookDeliverer, WebhookLimits

if TYPE_CHECKING:  # these load libsrt: imported at run time only when SRT is on
    from relay.srt.listener import SrtListener
    from relay.srt.server import SrtServer

log = logging.getLogger("relay")

# How long in-flight HTTP requests may take to finish once shutdown starts.
GRACEFUL_SHUTDOWN_SECONDS = 5
#: How often the HTTP servers do their housekeeping (the Date header is per second).
TICK_SECONDS = 1.0
#: Connections the metrics listener keeps open at once (a scraper needs one or two).
METRICS_MAX_CONNECTIONS = 64
#: How long /readyz waits for the store to answer before calling it unreachable.
READINESS_STORE_TIMEOUT = 2.0
#: File modes of what Relay creates for its control data: only its own user reads them
#: (the database holds token hashes, stream keys and SRT passphrases).
DATA_DIR_MODE = 0o700
DATABASE_FILE_MODE = 0o600

# /readyz may be probed every few seconds while the store is down: one line per interval.
_READINESS_LOG = LogLimiter(log)


class StartupError(RuntimeError):
    """`relay serve` cannot start; the message says why and what to do."""


@dataclass(slots=True)
class Listener:
    """A bound listening socket and how to describe it to the operator."""

    name: str  # what it serves, e.g. "http"
    scheme: str  # URL scheme for the log line
    flag: str  # the option that sets its port, for error messages
    sock: socket.socket

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def url(self, host: str) -> str:
        shown = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{shown}:{self.port}"


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn on Relay's loop: `relay serve` owns the signals, not each HTTP server.

    uvicorn's housekeeping tick (the Date header, the exit check) runs ten times a second,
    which costs an idle relay as much CPU as a live stream's fraction of a core; here it runs
    once a second (the Date header's resolution), and `stop()` ends the server at once."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stopping = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def stop(self) -> None:
        self.should_exit = True
        self._stopping.set()

    async def main_loop(self) -> None:
        while not await self.on_tick(0):  # tick 0: uvicorn refreshes the Date header
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), TICK_SECONDS)


class RelayServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.listeners: list[Listener] = []
        self._store: Store | None = None
        self._servers: list[tuple[_EmbeddedUvicorn, asyncio.Task[None]]] = []
        #: The HTTPS listener's accept loop (relay.https), while it runs.
        self.https: TlsAcceptor | None = None
        #: The lean playback server on the HTTP port (--playback-server lean), else None.
        self.playback: PlaybackServer | None = None
        self.registry: IngestRegistry | None = None
        self.rtmp_servers: list[RtmpServer] = []
        self.rtmp_counters = RtmpCounters()
        self.srt_server: SrtServer | None = None
        self.srt_listener: SrtListener | None = None
        #: The SRT side's counters for the metrics collector (set while SRT runs).
        self.srt_metrics: SrtMetricsSource | None = None
        self.hls_counters = HlsCounters()
        self.http_counters = HttpCounters()
        #: --trusted-proxy: who may state the client (PROXY header, X-Forwarded-For).
        self.trusted = TrustedProxies(settings.trusted_proxy)
        self.held_requests = HeldRequests(
            max_total=settings.hls_max_held_requests,
            max_per_stream=settings.hls_max_held_requests_per_stream)
        self._collector: IngestCollector | None = None
        #: The recordings' disk threads (--disk-threads).
        self.disk = DiskPool(settings.disk_threads)
        #: The live windows' segments of sessions whose recording ended early.
        self.spools = Spools(settings.data_dir / SPOOL_DIR, disk=self.disk)
        #: The simulcast of each live session with targets, until it has stopped.
        self.simulcasts: set[SimulcastManager] = set()
        self.simulcast_counters = SimulcastCounters()
        #: Works the webhook outbox (and prunes it) while the server runs.
        self.webhooks: WebhookDeliverer | None = None
        #: Signing keys, playback restrictions and session values for signed playback
        #: (issue 17), kept in step with the API; set while the server runs.
        self.playback_access: PlaybackAccess | None = None
        #: Where thumbnails, animated images and storyboards are decoded (relay.images), by
        #: --image-workers processes.
        self.image_pool = DecodePool(workers=settings.image_workers)
        #: Who owns a live stream not live on this node: on a shared database (PostgreSQL)
        #: the lease holder named in the store, unless set before start; with it, both
        #: playback servers serve such streams from their owner (`relay.hls.upstream`);
        #: without it (SQLite: one node), they answer 404.
        self.owner_lookup: OwnerLookup | None = None
        self.owner_proxy: OwnerProxy | None = None
        #: What the owner proxy's requests cost and met (kept here: /metrics reads them,
        #: zero on a single node).
        self.upstream_counters = UpstreamCounters()
        #: This process's id among the nodes of its database (--node-id).
        self.node_id = settings.node_id or default_node_id()
        #: Its heartbeat, stream leases and takeovers (relay.cluster), while it runs.
        self.node: ClusterNode | None = None
        #: The stream-change notices to and from the other nodes (PostgreSQL), while it runs.
        self.notices: StreamNotices | None = None

    async def _owner_elsewhere(self, playback_id: str) -> str | None:
        """The playback URL of the node that holds `playback_id`'s live session, when that
        is another node (None: this one, or nobody)."""
        owner = await self.store.owner_of_playback_id(playback_id)
        if owner is None or owner.node_id == self.node_id:
            return None
        return owner.advertise_url

    def _stream_changed(self, stream_id: str, change: StreamChange,
                        stream: LiveStream | None = None) -> None:
        """An API change (committed): applied here at once, and announced to the other
        nodes (one of them may own the stream's live session)."""
        if self.registry is not None:
            self.registry.stream_changed(stream_id, change, stream)
        if self.notices is not None:
            self.notices.send(stream_id, change.value)

    @property
    def store(self) -> Store:
        assert self._store is not None, "start() first"
        return self._store

    async def start(self) -> None:
        """Open the store and start every listener; raise StartupError on any problem."""
        try:
            prepare_data_dir(self.settings.data_dir)
            ensure_file_limit(self.settings.rtmp_max_connections
                              + self.settings.http_max_connections + METRICS_MAX_CONNECTIONS
                              + RESERVED_FILES)
            self._store = await open_store(self.settings.resolved_database_url,
                                           node_timeout=self.settings.node_timeout)
            if self.settings.seed_token is not None:
                token = self.settings.seed_token
                if await self.store.ensure_access_token(token.id, token.secret):
                    log.info("access token %s set from RELAY_TOKEN_ID/RELAY_TOKEN_SECRET",
                             token.id)
            s = self.settings
            # Before recovery writes its events, so a configured endpoint hears of them;
            # its own tasks, so a slow receiver holds nothing else.
            self.webhooks = WebhookDeliverer(
                self.store, s.webhook_url, s.webhook_secret or "",
                limits=WebhookLimits(retention=s.webhook_retention))
            await self.webhooks.start()
            tls = load_tls(s)
            simulcast_tls = load_simulcast_tls(s)
            asset_files = AssetFiles(s.data_dir / "assets")
            def finalize(asset_id: str) -> Awaitable[RecordedMedia | None]:
                return _finalize_recording(asset_files, asset_id)

            ended = await self.store.recover_interrupted_sessions(finalize,
                                                                  node_id=self.node_id)
            if ended:
                log.info("ended %d live session(s) left open by the previous run", len(ended))
            # A worker of `relay serve --workers N` shares the public ports with the others
            # (SO_REUSEPORT: the kernel spreads new connections over them) but has metrics
            # of its own (port + its index: a scrape sees one worker) and an HTTP listener of
            # its own, which it advertises to the other nodes (`own`, `advertise_url`).
            worker = s.worker_index
            shared = worker is not None
            http = bind_tcp("http", "http", "http-port", s.host, s.http_port, reuse_port=shared)
            self.listeners = [http]
            metrics = bind_tcp("metrics", "http", "metrics-port", s.host,
                               s.metrics_port + worker if worker and s.metrics_port
                               else s.metrics_port)
            self.listeners.append(metrics)
            # Before the RTMP listeners: the HTTP servers' listeners come first, in the
            # order of self._servers (readiness_problems pairs them).
            https_tls = load_tls(s, alpn=["http/1.1"]) if s.https_port else None
            https = None
            if https_tls is not None:
                https = bind_tcp("https", "https", "https-port", s.host, s.https_port,
                                 reuse_port=shared)
                self.listeners.append(https)
            rtmp = bind_tcp("rtmp", "rtmp", "rtmp-port", s.host, s.rtmp_port, reuse_port=shared)
            self.listeners.append(rtmp)
            if tls is not None:
                self.listeners.append(bind_tcp("rtmps", "rtmps", "rtmps-port", s.host,
                                               s.rtmps_port, reuse_port=shared))
            own = None  # last in self.listeners: readiness_problems pairs the first ones
            if worker is not None:
                own = bind_tcp("worker", "http", "worker-http-port", s.host,
                               s.worker_http_port + worker if s.worker_http_port else 0)
                self.listeners.append(own)
            def session_started(session: LiveSession) -> None:
                packager = attach_packager(session, asset_files, part_target=s.part_target,
                                           counters=self.hls_counters, disk=self.disk,
                                           recording_max_backlog=s.recording_max_backlog,
                                           spools=self.spools)
                # Keyframes further apart than the packager's segments: a warning.
                session.warnings.segment_target = packager.segmenter.segment_target
                attach_simulcast(session, ssl_context=simulcast_tls, running=self.simulcasts,
                                 counters=self.simulcast_counters)

            self.node = ClusterNode(
                self.store, self.node_id,
                advertise_url(s, http.port if own is None else own.port, shared),
                held=lambda: self.registry.sessions if self.registry else {},
                on_lease_lost=lambda stream_id, session: self.registry.lease_lost(
                    stream_id, session) if self.registry else None,
                on_leased_elsewhere=lambda ids: self.registry.leased_elsewhere(
                    ids) if self.registry else None,
                finalize=finalize)
            self.registry = IngestRegistry(
                self.store, session_limit=s.max_session_duration,
                on_session_started=session_started, leases=self.node)
            # Before any listener admits: other nodes see this one (and its leases) live.
            await self.node.start()
            if not self.store.single_node:
                # LISTEN before the key cache is read: no change committed after that read
                # goes unheard (relay.cluster.notices).
                registry = self.registry
                self.notices = StreamNotices(self.store, self.node_id,
                                             on_changes=registry.changed_elsewhere,
                                             on_resync=registry.resync,
                                             check=registry.check_sessions)
                await self.notices.start()
            # The complete stream-key cache, before any listener admits: SRT's admission
            # answers from it alone (IngestRegistry.peek).
            keys = await self.registry.load_keys()
            log.info("stream-key cache: %d live stream(s)", keys)
            limits = RtmpLimits(max_connections=s.rtmp_max_connections,
                                max_connections_per_ip=s.rtmp_max_connections_per_ip,
                                idle_timeout=s.rtmp_idle_timeout,
                                max_message_size=s.rtmp_max_message_size,
                                log_interval=s.log_repeat_interval,
                                pre_publish_buffer_budget=s.rtmp_pre_publish_buffer_budget)
            # One slot table and one buffer budget for RTMP and RTMPS: the caps are per
            # process, not per port.
            slots: ConnectionSlots[RtmpConnection] = ConnectionSlots(
                limits.max_connections, limits.max_connections_per_ip)
            rtmp_budget = BufferBudget(limits.pre_publish_buffer_budget)
            for listener in self.listeners:
                if listener.name not in ("rtmp", "rtmps"):
                    continue
                server = RtmpServer(self.registry, limits=limits, counters=self.rtmp_counters,
                                    scheme="rtmps" if listener.name == "rtmps" else "rtmp",
                                    ssl_context=tls if listener.name == "rtmps" else None,
                                    slots=slots, budget=rtmp_budget, trusted=self.trusted)
                await server.start(listener.sock)
                self.rtmp_servers.append(server)
            if s.srt_port:
                await self._start_srt(s.host, s.srt_port, reuse_port=shared)
            self._collector = IngestCollector(self.registry, self.rtmp_counters,
                                              self.hls_counters, self._window_bytes,
                                              http=self.http_counters,
                                              held=self.held_requests,
                                              spools=self.spools,
                                              srt=self.srt_metrics,
                                              simulcast=SimulcastMetricsSource(
                                                  self.simulcast_counters,
                                                  lambda: list(self.simulcasts)),
                                              webhooks=self.webhooks.counters,
                                              upstream=self.upstream_counters,
                                              node=self.node, notices=self.notices)
            self.playback_access = PlaybackAccess(
                session_secret=session_secret(s.data_dir / SESSION_SECRET_FILE))
            await self.playback_access.load(self.store)
            api = create_api(self.store, self.readiness_problems,
                             on_stream_change=self._stream_changed,
                             asset_files=asset_files, playback_access=self.playback_access)
            registry = self.registry
            playback = PlaybackDirectory(
                self.store, lambda stream_id: live_packager(registry, stream_id), asset_files)
            # The API's first path segments: the lean playback server hands those over.
            api_prefixes = {path.split("/")[1] for route in api.routes
                            if isinstance(path := getattr(route, "path", None), str)
                            and not path.startswith("/{")}
            recorded = RecordedPlaylists()
            # After the API's routes, so /video/v1, /docs and the health checks come first
            # and other paths keep the API's 404 envelope; the image routes before
            # /{PLAYBACK_ID}/{name}, which would take their paths. One gate for both
            # playback servers: the same decisions, counts and caches.
            gate = PlaybackGate(self.playback_access, counters=self.hls_counters)
            if self.owner_lookup is None and not self.store.single_node:
                self.owner_lookup = self._owner_elsewhere
            proxy = self.owner_proxy = (
                OwnerProxy(self.owner_lookup,
                           UpstreamFetcher(counters=self.upstream_counters))
                if self.owner_lookup is not None else None)
            # Other nodes' addresses (relay.cluster.addresses): their proxied requests are
            # not held to one client's share (images' rate, --http-max-connections-per-ip).
            nodes = None if self.store.single_node else self.node.addresses.__contains__
            api.router.routes.extend([*image_routes(playback, pool=self.image_pool, gate=gate,
                                                   proxy=proxy, nodes=nodes),
                                      *playback_routes(playback, self.hls_counters,
                                                       holds=self.held_requests,
                                                       recorded=recorded, gate=gate,
                                                       proxy=proxy)])
            if s.playback_server == "lean":
                self.playback = PlaybackServer(playback, self.hls_counters,
                                               holds=self.held_requests, recorded=recorded,
                                               reserved=api_prefixes, gate=gate, proxy=proxy)
            http_limits = HttpLimits(
                max_connections=s.http_max_connections,
                max_connections_per_address=s.http_max_connections_per_ip,
                header_timeout=s.http_header_timeout, body_timeout=s.http_body_timeout,
                send_timeout=s.http_send_timeout)
            # HTTP and HTTPS count their connections together (one cap per process).
            table = ConnectionTable(http_limits.max_connections,
                                    http_limits.max_connections_per_address, self.http_counters,
                                    nodes=nodes, proxies=self.trusted)
            await self._serve_http(api, http, http_limits, self.playback, table=table,
                                   also=own)
            await self._serve_http(create_metrics_app(), metrics, dataclasses.replace(
                http_limits, max_connections=METRICS_MAX_CONNECTIONS,
                max_connections_per_address=min(METRICS_MAX_CONNECTIONS,
                                                http_limits.max_connections_per_address)))
            if https is not None:
                await self._serve_http(api, https, http_limits, self.playback, table=table,
                                       tls=https_tls)
        except BaseException:
            await self.stop()
            raise
        for listener in self.listeners:
            suffix = {"metrics": "/metrics", "rtmp": "/app", "rtmps": "/app"}.get(
                listener.name, "")
            log.info("%s listening on %s%s", listener.name,
                     listener.url(self.settings.host), suffix)
        if self.srt_listener is not None:
            host = self.settings.host
            log.info("srt listening on srt://%s:%d (udp)",
                     f"[{host}]" if ":" in host else host, self.srt_listener.port)

    async def _start_srt(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        """Bind the SRT listener (libsrt's thread starts with it); StartupError names what
        is missing or taken."""
        try:  # loading libsrt: only when SRT is on
            from relay.srt.listener import SrtListener
            from relay.srt.server import SrtIngestCounters, SrtIngestLimits, SrtServer
        except SrtUnavailable as exc:
            raise StartupError(f"{exc} (or turn SRT off with --srt-port 0)") from None
        assert self.registry is not None
        s = self.settings
        loop = asyncio.get_running_loop()
        admission = SrtAdmission(
            self.registry, SrtAdmissionLimits(max_connections=s.srt_max_connections,
                                              max_connections_per_ip=s.srt_max_connections_per_ip),
            defer=loop.call_soon_threadsafe)
        server = SrtServer(self.registry, admission,
                           limits=SrtIngestLimits(latency_ms=s.srt_latency,
                                                  idle_timeout=s.srt_idle_timeout,
                                                  log_interval=s.log_repeat_interval),
                           counters=SrtIngestCounters())
        listener = SrtListener(host, port, latency_ms=s.srt_latency, decide=admission.decide,
                               sink=server.take, loop=loop, reuse_port=reuse_port)
        try:
            listener.start()
        except OSError as exc:
            reason = ("already in use" if exc.errno == errno.EADDRINUSE
                      else exc.strerror or str(exc))
            raise StartupError(f"cannot listen for srt on {host}:{port} (udp): {reason}; "
                               f"choose another port with --srt-port, or 0 to turn SRT "
                               f"off") from None
        server.close_handle = listener.close_connection
        self.srt_server, self.srt_listener = server, listener
        self.srt_metrics = SrtMetricsSource(
            ingest=server.counters, listener=listener.counters, admission=admission.counters,
            connections=server.connections.values)

    async def _serve_http(self, app: ASGIApp, listener: Listener, limits: HttpLimits,
                          lean: PlaybackServer | None = None, *,
                          table: ConnectionTable | None = None,
                          tls: ssl.SSLContext | None = None,
                          also: Listener | None = None) -> None:
        # The protocol is pinned (not uvicorn's "auto"): the limits live in this h11
        # subclass; WebSocket upgrades are off (Relay serves none, and an upgraded
        # connection would leave the limits' table). With `lean`, each connection starts
        # on the lean playback protocol, which hands what it does not serve to the h11 one
        # (same table of connections). With `tls`, relay.https accepts (handshakes counted
        # in the table from accept) and hands connections to the same protocol.
        limited = limited_protocol(limits, self.http_counters, table)
        # The client a trusted proxy names in X-Forwarded-For, for the routes (uvicorn's own
        # proxy_headers, on by default for 127.0.0.1, is off: one rule for both servers).
        app = ForwardedClientMiddleware(app, limited.table.proxies)
        protocol: type[asyncio.Protocol] = limited
        if lean is not None:
            protocol = playback_protocol(limits, limited.table, lean, limited)
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS, server_header=False,
            http=protocol, ws="none", proxy_headers=False)
        server = _EmbeddedUvicorn(config)
        # `also`: a worker's own listener, served as the shared one (same app and limits).
        sockets = [] if tls else [listener.sock, *([also.sock] if also else [])]
        task = asyncio.create_task(server.serve(sockets=sockets),
                                   name=f"relay-{listener.name}")
        while not server.started:
            if task.done():
                task.result()  # re-raise why it stopped
                raise StartupError(f"the {listener.name} server stopped during start-up")
            await asyncio.sleep(0.01)
        self._servers.append((server, task))
        if tls is not None:
            loop = asyncio.get_running_loop()

            def create_protocol() -> asyncio.Protocol:  # as uvicorn's startup makes them
                return config.http_protocol_class(  # type: ignore[call-arg]
                    config=config, server_state=server.server_state,
                    app_state=server.lifespan.state, _loop=loop)

            self.https = TlsAcceptor(listener.sock, tls, limited.table, limits,
                                     self.http_counters, create_protocol)
            self.https.start()

    def _window_bytes(self) -> int:
        """Media bytes the live sessions' packagers hold in memory (a metric)."""
        registry = self.registry
        if registry is None:
            return 0
        held = 0
        for stream_id in list(registry.sessions):
            packager = live_packager(registry, stream_id)
            if packager is not None:
                held += packager.window_bytes()
        return held

    async def readiness_problems(self) -> list[str]:
        """The checks that fail, by name. /readyz is not authenticated: an exception's text
        (addresses, paths, the database URL) goes to the log, not into the answer."""
        problems = []
        try:
            await asyncio.wait_for(self.store.ping(), READINESS_STORE_TIMEOUT)
        except TimeoutError:
            problems.append(f"store: no answer within {READINESS_STORE_TIMEOUT:g}s")
        except Exception as exc:
            _READINESS_LOG.warning(
                "readiness-store", "readiness: the store is unreachable: %s",
                _without_secrets(_first_line(exc), self.settings.resolved_database_url))
            problems.append("store: unreachable")
        for (server, task), listener in zip(self._servers, self.listeners, strict=False):
            if task.done() or not server.started:
                problems.append(f"{listener.name} listener is down")
        if self.https is not None and not self.https.serving:
            problems.append("https listener is down")
        for rtmp in self.rtmp_servers:
            if not rtmp.serving:
                problems.append(f"{rtmp.scheme} listener is down")
        if self.srt_listener is not None and not self.srt_listener.serving:
            problems.append("srt listener is down")
        return problems

    async def stop(self) -> None:
        """Stop accepting, end live sessions (recordings completed), let in-flight HTTP
        requests finish, close the store. Safe to repeat."""
        for rtmp in self.rtmp_servers:
            await rtmp.close()
        self.rtmp_servers.clear()
        if self.srt_listener is not None:
            if self.srt_server is not None:
                self.srt_server.close_all("the server is shutting down")
            await self.srt_listener.close()  # joins libsrt's thread
            self.srt_listener = self.srt_server = None
            self.srt_metrics = None
        if self.registry is not None:
            live, began = len(self.registry.sessions), time.monotonic()
            # Every session ends at once: their store writes share transactions (the store's
            # group commit) and their recordings are finalized side by side in the disk pool.
            await self.registry.close()
            self.registry = None
            if live:
                log.info("ended %d live session(s) in %.1f s: recordings finalized, events "
                         "written", live, time.monotonic() - began)
        if self.node is not None:  # after the sessions' ends released their leases
            await self.node.stop()
            self.node = None
        if self.notices is not None:
            await self.notices.stop()
            self.notices = None
        # The sessions' ends stopped their simulcasts; their last status writes go in
        # before the store closes (a target gets at most STOP_GRACE_SECONDS to unpublish).
        await asyncio.gather(*(simulcast.stop() for simulcast in list(self.simulcasts)))
        await asyncio.to_thread(self.spools.close)
        self.disk.shutdown()
        if self.https is not None:  # before the servers: no new connection reaches them
            await self.https.close()
            self.https = None
        if self._collector is not None:
            self._collector.unregister()
            self._collector = None
        for server, _ in self._servers:
            server.stop()
        for _, task in self._servers:
            with contextlib.suppress(Exception):
                await task
        self._servers.clear()
        if self.playback is not None:
            self.playback.close()
        if self.owner_proxy is not None:
            await self.owner_proxy.aclose()
            self.owner_proxy = None
        await self.image_pool.aclose()  # after the requests that wait for it have ended
        for listener in self.listeners:
            listener.sock.close()
        # Last before the store: the sessions' final events are in the outbox, and what is
        # not delivered yet stays there for the next run.
        if self.webhooks is not None:
            await self.webhooks.stop()
            self.webhooks = None
        if self._store is not None:
            await self._store.close()
            self._store = None


def attach_packager(session: LiveSession, asset_files: AssetFiles, *,
                    part_target: float, counters: HlsCounters, disk: DiskPool = DISK,
                    recording_max_backlog: int = DEFAULT_RECORDING_MAX_BACKLOG,
                    spools: Spools | None = None) -> LivePackager:
    """Give a new live session its HLS packager, recording into the session's asset (and,
    with `spools`, spooling its live window's segments if the recording ends early)."""
    loop = asyncio.get_running_loop()
    writer: asyncio.Future[RecordingWriter] = loop.create_future()

    def asset_known(asset_id: str) -> None:
        if not writer.done():
            writer.set_result(RecordingWriter(asset_files.directory(asset_id)))

    label = f"stream {session.stream_id}"
    recording = RecordingQueue(writer, disk=disk, label=label, counters=counters,
                               max_backlog=recording_max_backlog)
    packager = LivePackager(
        session.stream.latency_mode, label=label,
        part_target=part_target, recording=recording,
        on_playable=session.mark_playable,
        on_fatal=lambda reason: loop.call_soon(session.end, reason),
        first_msn=int(session.started_at), counters=counters,
        spool=spools.session(session.stream_id) if spools is not None else None)
    session.asset_listeners.append(asset_known)
    # Behind a queue like every consumer: the hub never calls into the packager itself.
    session.attach_sink(DrainQueue(packager, max_bytes=PACKAGER_QUEUE_MAX_BYTES,
                                   max_frames=PACKAGER_QUEUE_MAX_FRAMES,
                                   drops=counters.queue_drops), reports_playable=True)
    session.recording_done = packager.finished_media
    session.attachments[HLS_ATTACHMENT] = packager
    packager.viewers = session.viewers
    return packager


HLS_ATTACHMENT = "hls"


def attach_simulcast(session: LiveSession, *, ssl_context: ssl.SSLContext | TargetTls | None,
                     running: set[SimulcastManager],
                     new_queue: Callable[[BatchClock], TargetQueue] = new_target_queue,
                     counters: SimulcastCounters | None = None,
                     ) -> SimulcastManager | None:
    """Give a new live session its simulcast when its stream has targets: one queue per
    target fed by the session, pushing from when the stream is active until it ends.
    `running` holds the manager until it has stopped (the server's stop awaits it)."""
    targets = session.stream.simulcast_targets
    if not targets:
        return None
    clock = new_batch_clock()  # the targets' wake-ups batched together
    queues = [(target, new_queue(clock)) for target in targets]
    manager = SimulcastManager(session.store, session.stream_id, queues,
                               ssl_context=ssl_context, on_stopped=running.discard,
                               counters=counters)
    # One sink for all the targets: each frame made ready to send once (simulcast.fanout).
    session.attach_sink(SimulcastFanOut([queue for _, queue in queues]))
    session.active_listeners.append(manager.start)
    session.end_listeners.append(manager.end)
    session.attachments[SIMULCAST_ATTACHMENT] = manager
    running.add(manager)
    return manager


SIMULCAST_ATTACHMENT = "simulcast"


def live_packager(registry: IngestRegistry, stream_id: str) -> LivePackager | None:
    session = registry.sessions.get(stream_id)
    if session is None:
        return None
    packager = session.attachments.get(HLS_ATTACHMENT)
    return packager if isinstance(packager, LivePackager) else None


async def _finalize_recording(asset_files: AssetFiles, asset_id: str) -> RecordedMedia | None:
    directory = asset_files.directory(asset_id)
    summary = await asyncio.to_thread(finalize, directory)
    if summary is None:
        return None
    log.info("completed the recording of asset %s interrupted by a crash (of this node's "
             "previous run, or of another node) (%d segments, %.1f s)", asset_id,
             summary.segments, summary.duration)
    variant = await asyncio.to_thread(read_variant, directory)
    tracks: list[JSONDict] = []
    if variant is not None:
        if variant.resolution is not None:
            width, height = variant.resolution
            video: JSONDict = {"type": "video", "max_width": width, "max_height": height,
                               "duration": summary.duration}
            if variant.frame_rate:
                video["max_frame_rate"] = variant.frame_rate
            tracks.append(video)
        if any(codec.startswith("mp4a") for codec in variant.codecs):
            tracks.append({"type": "audio", "duration": summary.duration})
    return RecordedMedia(duration=summary.duration, tracks=tuple(tracks),
                         started_at=summary.started_at)


def load_tls(settings: Settings, alpn: list[str] | None = None) -> ssl.SSLContext | None:
    """The RTMPS (or, with `alpn`, HTTPS) server context, or None when no certificate is
    configured."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(
            f"cannot load the RTMPS certificate {str(settings.tls_cert)!r} with key "
            f"{str(settings.tls_key)!r}: {exc}; check --tls-cert and --tls-key") from None
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def load_simulcast_tls(settings: Settings) -> TargetTls:
    """The client context of rtmps:// simulcast targets: the system's trusted CAs (with
    hostname checks), plus the bundle of --simulcast-ca-file when given; made on the first
    rtmps:// connection (relay.simulcast.tls), the bundle checked now."""
    if settings.simulcast_ca_file is not None:
        try:
            check_ca_file(settings.simulcast_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(
                f"cannot load the CA bundle {str(settings.simulcast_ca_file)!r}: {exc}; "
                "give --simulcast-ca-file a file of PEM CA certificates") from None
    return TargetTls(settings.simulcast_ca_file)


def session_secret(path: Path) -> bytes:
    """The playback session secret kept in the data dir (made on first start)."""
    try:
        return load_session_secret(path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StartupError(f"cannot read or make the playback session secret "
                           f"{str(path)!r}: {reason}; it must be a file of 32 bytes "
                           "readable by Relay (delete it to have a new one made)") from None


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data dir (mode 0700 when it is new) and its media dir, and prove they are
    writable. An existing data dir keeps the mode its owner gave it."""
    try:
        if not data_dir.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            data_dir.chmod(DATA_DIR_MODE)  # mkdir's mode is filtered by the umask
        (data_dir / "assets").mkdir(exist_ok=True)
        # A name of this process's own: nodes sharing a data dir start at the same moment.
        probe = data_dir / f".relay-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"data dir {str(data_dir)!r} is unusable ({exc.strerror or exc}); "
            "choose a writable directory with --data-dir or RELAY_DATA_DIR") from None


def redact_url(url: str) -> str:
    """A database URL as logs and errors may show it: with its password as ***. A URL that
    does not parse is not shown at all, since where its password is cannot be known."""
    try:
        return repr(make_url(url).render_as_string(hide_password=True))
    except ArgumentError:
        return "given with --database-url (not a valid URL)"


def _without_secrets(text: str, url: str) -> str:
    """`text` (an error's message) with the database URL and its password taken out."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "(details withheld: they may contain the URL)"
    text = text.replace(url, parsed.render_as_string(hide_password=True))
    password = parsed.password
    if password:
        for form in {str(password), quote_plus(str(password)), quote(str(password))}:
            text = text.replace(form, "***")
    return text


def _first_line(exc: BaseException) -> str:
    return (str(getattr(exc, "orig", None) or exc).splitlines() or [type(exc).__name__])[0]


async def open_store(url: str, *, node_timeout: float = DEFAULT_NODE_TIMEOUT) -> Store:
    """Open (and migrate) the store at `url`; StartupError, without the URL's password, when
    it cannot be. A SQLite database and its journal files are made readable by their owner
    only."""
    try:
        make_url(url)
    except ArgumentError:
        # Not shown: where its password is cannot be known.
        raise StartupError(
            "cannot open the database: the --database-url value is not a SQLAlchemy URL "
            "(dialect+driver://user:password@host/dbname, e.g. "
            "postgresql+asyncpg://relay:PASSWORD@db.example/relay)") from None
    shown = redact_url(url)
    sqlite_file = _sqlite_file(url)
    try:
        if sqlite_file is not None and not sqlite_file.exists():
            # Created empty (a valid empty database) with its mode, before SQLite opens it:
            # SQLite gives its -wal, -shm and -journal files the database file's mode.
            with contextlib.suppress(FileExistsError):  # another process was first
                os.close(os.open(sqlite_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                                 DATABASE_FILE_MODE))
        store = await Store.open(url, node_timeout=node_timeout)
    except SchemaTooNewError as exc:
        raise StartupError(str(exc)) from None
    except ImportError as exc:
        raise StartupError(
            f"cannot open the database {shown}: its driver {exc.name or ''} is not installed "
            "(for PostgreSQL: pip install 'relay-ingest[postgres]')") from None
    except (SQLAlchemyError, OSError) as exc:
        reason = _without_secrets(_first_line(exc), url)
        raise StartupError(f"cannot open the database {shown}: {reason}") from None
    if sqlite_file is not None:
        _restrict_sqlite_files(sqlite_file)
    return store


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for another database, memory, or a URI filename)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:" or \
            name.startswith("file:"):
        return None
    return Path(name)


def _restrict_sqlite_files(database: Path) -> None:
    # A database made before Relay set modes, or by hand, is tightened too.
    for path in (database, *(database.with_name(database.name + suffix)
                             for suffix in ("-wal", "-shm", "-journal"))):
        try:
            if path.exists() and path.stat().st_mode & 0o777 != DATABASE_FILE_MODE:
                path.chmod(DATABASE_FILE_MODE)
        except OSError as exc:
            log.warning("cannot make %s readable by its owner only (%s); chmod 600 it",
                        path, exc.strerror or exc)


def advertise_url(settings: Settings, port: int, worker: bool) -> str:
    """The URL other nodes fetch this node's playback at: --advertise-url, or the HTTP
    listener's. A worker's is its own plain-HTTP listener's (the shared port reaches any
    worker): at the host of --advertise-url when given (the name other machines know this
    one by), else as for the HTTP listener."""
    given = settings.advertise_url
    if given is None:
        return default_advertise_url(settings.host, port)
    if not worker:
        return given
    return default_advertise_url(urlsplit(given).hostname or settings.host, port)


def bind_tcp(name: str, scheme: str, flag: str, host: str, port: int, *,
             reuse_port: bool = False) -> Listener:
    """Bind a listening TCP socket now, turning the common failures into StartupError.
    `reuse_port`: shared with the other workers of `relay serve --workers N` (SO_REUSEPORT;
    off otherwise, so a second relay on the same port still fails to start)."""
    env = "RELAY_" + flag.upper().replace("-", "_")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen for {name} on {host!r}: {exc.strerror}; "
                           "check --host or RELAY_HOST") from None
    family, type_, proto, _, address = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        # Lets a restarted relay bind at once while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"cannot listen for {name} on {host}:{port}: the port is already in use; "
                f"stop the other program or choose another port with --{flag} or {env}"
            ) from None
        raise StartupError(
            f"cannot listen for {name} on {host}:{port}: {exc.strerror or exc}") from None
    return Listener(name, scheme, flag, sock)
