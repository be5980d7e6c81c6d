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
import errno
import logging
import socket
import ssl
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp

from relay.api import create_api
from relay.config import Settings
from relay.hls.disk import DISK, DiskPool
from relay.hls.model import LatencyMode
from relay.hls.packager import (
    DEFAULT_RECORDING_MAX_BACKLOG,
    HlsCounters,
    LivePackager,
    RecordingQueue,
)
from relay.hls.recording import RecordingWriter, finalize, read_variant
from relay.hls.routes import PlaybackDirectory, playback_routes
from relay.metrics import IngestCollector, create_metrics_app
from relay.rtmp.server import RtmpCounters, RtmpLimits, RtmpServer
from relay.store import SchemaTooNewError, Store
from relay.store.asset_files import AssetFiles
from relay.store.records import JSONDict, RecordedMedia
from relay.streams.hub import LiveSession
from relay.streams.registry import IngestRegistry

log = logging.getLogger("relay")

# How long in-flight HTTP requests may take to finish once shutdown starts.
GRACEFUL_SHUTDOWN_SECONDS = 5
#: How often the HTTP servers do their housekeeping (the Date header is per second).
TICK_SECONDS = 1.0


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
        self.registry: IngestRegistry | None = None
        self.rtmp_servers: list[RtmpServer] = []
        self.rtmp_counters = RtmpCounters()
        self.hls_counters = HlsCounters()
        self._collector: IngestCollector | None = None
        #: The recordings' disk threads (--disk-threads).
        self.disk = DiskPool(settings.disk_threads)

    @property
    def store(self) -> Store:
        assert self._store is not None, "start() first"
        return self._store

    async def start(self) -> None:
        """Open the store and start every listener; raise StartupError on any problem."""
        try:
            prepare_data_dir(self.settings.data_dir)
            self._store = await open_store(self.settings.resolved_database_url)
            if self.settings.seed_token is not None:
                token = self.settings.seed_token
                if await self.store.ensure_access_token(token.id, token.secret):
                    log.info("access token %s set from RELAY_TOKEN_ID/RELAY_TOKEN_SECRET",
                             token.id)
            s = self.settings
            tls = load_tls(s)
            asset_files = AssetFiles(s.data_dir / "assets")
            ended = await self.store.recover_interrupted_sessions(
                lambda asset_id: _finalize_recording(asset_files, asset_id))
            if ended:
                log.info("ended %d live session(s) left open by the previous run", len(ended))
            http = bind_tcp("http", "http", "http-port", s.host, s.http_port)
            self.listeners = [http]
            metrics = bind_tcp("metrics", "http", "metrics-port", s.host, s.metrics_port)
            self.listeners.append(metrics)
            rtmp = bind_tcp("rtmp", "rtmp", "rtmp-port", s.host, s.rtmp_port)
            self.listeners.append(rtmp)
            if tls is not None:
                self.listeners.append(
                    bind_tcp("rtmps", "rtmps", "rtmps-port", s.host, s.rtmps_port))
            self.registry = IngestRegistry(
                self.store, session_limit=s.max_session_duration,
                on_session_started=lambda session: attach_packager(
                    session, asset_files, part_target=s.part_target,
                    counters=self.hls_counters, disk=self.disk,
                    recording_max_backlog=s.recording_max_backlog))
            limits = RtmpLimits(max_connections=s.rtmp_max_connections,
                                idle_timeout=s.rtmp_idle_timeout,
                                max_message_size=s.rtmp_max_message_size)
            for listener in self.listeners[2:]:
                server = RtmpServer(self.registry, limits=limits, counters=self.rtmp_counters,
                                    scheme="rtmps" if listener.name == "rtmps" else "rtmp",
                                    ssl_context=tls if listener.name == "rtmps" else None)
                await server.start(listener.sock)
                self.rtmp_servers.append(server)
            self._collector = IngestCollector(self.registry, self.rtmp_counters,
                                              self.hls_counters, self._window_bytes)
            api = create_api(self.store, self.readiness_problems,
                             on_stream_change=self.registry.stream_changed,
                             asset_files=asset_files)
            registry = self.registry
            playback = PlaybackDirectory(
                self.store, lambda stream_id: live_packager(registry, stream_id), asset_files)
            # After the API's routes, so /video/v1, /docs and the health checks come first
            # and other paths keep the API's 404 envelope.
            api.router.routes.extend(playback_routes(playback, self.hls_counters))
            await self._serve_http(api, http)
            await self._serve_http(create_metrics_app(), metrics)
        except BaseException:
            await self.stop()
            raise
        for listener in self.listeners:
            suffix = {"metrics": "/metrics", "rtmp": "/app", "rtmps": "/app"}.get(
                listener.name, "")
            log.info("%s listening on %s%s", listener.name,
                     listener.url(self.settings.host), suffix)

    async def _serve_http(self, app: ASGIApp, listener: Listener) -> None:
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS, server_header=False)
        server = _EmbeddedUvicorn(config)
        task = asyncio.create_task(server.serve(sockets=[listener.sock]),
                                   name=f"relay-{listener.name}")
        while not server.started:
            if task.done():
                task.result()  # re-raise why it stopped
                raise StartupError(f"the {listener.name} server stopped during start-up")
            await asyncio.sleep(0.01)
        self._servers.append((server, task))

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
        problems = []
        try:
            await self.store.ping()
        except (SQLAlchemyError, OSError) as exc:
            problems.append(f"store unreachable: {exc}")
        for (server, task), listener in zip(self._servers, self.listeners, strict=False):
            if task.done() or not server.started:
                problems.append(f"{listener.name} listener is down")
        for rtmp in self.rtmp_servers:
            if not rtmp.serving:
                problems.append(f"{rtmp.scheme} listener is down")
        return problems

    async def stop(self) -> None:
        """Stop accepting, end live sessions (recordings completed), let in-flight HTTP
        requests finish, close the store. Safe to repeat."""
        for rtmp in self.rtmp_servers:
            await rtmp.close()
        self.rtmp_servers.clear()
        if self.registry is not None:
            live, began = len(self.registry.sessions), time.monotonic()
            # Every session ends at once: their store writes share transactions (the store's
            # group commit) and their recordings are finalized side by side in the disk pool.
            await self.registry.close()
            self.registry = None
            if live:
                log.info("ended %d live session(s) in %.1f s: recordings finalized, events "
                         "written", live, time.monotonic() - began)
        self.disk.shutdown()
        if self._collector is not None:
            self._collector.unregister()
            self._collector = None
        for server, _ in self._servers:
            server.stop()
        for _, task in self._servers:
            with contextlib.suppress(Exception):
                await task
        self._servers.clear()
        for listener in self.listeners:
            listener.sock.close()
        if self._store is not None:
            await self._store.close()
            self._store = None


def attach_packager(session: LiveSession, asset_files: AssetFiles, *,
                    part_target: float, counters: HlsCounters, disk: DiskPool = DISK,
                    recording_max_backlog: int = DEFAULT_RECORDING_MAX_BACKLOG,
                    ) -> LivePackager:
    """Give a new live session its HLS packager, recording into the session's asset."""
    loop = asyncio.get_running_loop()
    writer: asyncio.Future[RecordingWriter] = loop.create_future()

    def asset_known(asset_id: str) -> None:
        if not writer.done():
            writer.set_result(RecordingWriter(asset_files.directory(asset_id)))

    label = f"stream {session.stream_id}"
    recording = RecordingQueue(writer, disk=disk, label=label, counters=counters,
                               max_backlog=recording_max_backlog)
    packager = LivePackager(
        LatencyMode(session.stream.latency_mode), label=label,
        part_target=part_target, recording=recording,
        on_playable=session.mark_playable,
        on_fatal=lambda reason: loop.call_soon(session.end, reason),
        first_msn=int(session.started_at), counters=counters)
    session.asset_listeners.append(asset_known)
    session.attach_sink(packager, reports_playable=True)
    session.recording_done = packager.finished_media
    session.attachments[HLS_ATTACHMENT] = packager
    return packager


HLS_ATTACHMENT = "hls"


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
    log.info("completed the recording of asset %s interrupted by the previous run "
             "(%d segments, %.1f s)", asset_id, summary.segments, summary.duration)
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


def load_tls(settings: Settings) -> ssl.SSLContext | None:
    """The RTMPS server context, or None when no certificate is configured."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(
            f"cannot load the RTMPS certificate {str(settings.tls_cert)!r} with key "
            f"{str(settings.tls_key)!r}: {exc}; check --tls-cert and --tls-key") from None
    return context


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data dir and its media dir, and prove they are writable."""
    try:
        (data_dir / "assets").mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".relay-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"data dir {str(data_dir)!r} is unusable ({exc.strerror or exc}); "
            "choose a writable directory with --data-dir or RELAY_DATA_DIR") from None


async def open_store(url: str) -> Store:
    try:
        return await Store.open(url)
    except SchemaTooNewError as exc:
        raise StartupError(str(exc)) from None
    except (SQLAlchemyError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise StartupError(f"cannot open the database {url!r}: {reason}") from None


def bind_tcp(name: str, scheme: str, flag: str, host: str, port: int) -> Listener:
    """Bind a listening TCP socket now, turning the common failures into StartupError."""
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
