"""The Prometheus endpoint, served on its own listener (`--metrics-port`).

Collectors read plain counters at scrape time; nothing is updated per packet. The registry
holds the process and runtime collectors, Relay's build info, the ingest counters, the live
streams by status with each live session's ingest health and viewers (relay.streams.health),
the HLS packaging and playback counters (requests by kind and status, the blocking-reload
and part-publish histograms), the SRT listener's counters and per-connection statistics
when SRT is on, the simulcast counters with a few series per target of each live session,
and the webhook deliverer's backlog, results and latency; with several nodes (issue 19), the
playback proxy's upstream counters (`relay_upstream_*`) and this node's leases, takeovers,
heartbeat failures and the live nodes it sees (`relay_node_*`).
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass
from typing import Final, Protocol, get_args

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Info, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay import __version__
from relay.histogram import BucketHistogram
from relay.hls.disk import STORED_READS, StoredReads
from relay.hls.holding import HeldRequests
from relay.hls.packager import HlsCounters
from relay.hls.spool import Spools
from relay.hls.upstream import UpstreamCounters
from relay.http_limits import HttpCounters
from relay.media.ts_units import COUNTERS as TS_UNIT_COUNTERS
from relay.rtmp.server import RtmpCounters
from relay.simulcast.counters import SimulcastCounters, TargetSnapshot
from relay.srt.admission import SrtAdmissionCounters
from relay.store.records import SimulcastTargetStatus
from relay.streams.lifecycle import State
from relay.streams.registry import IngestRegistry
from relay.webhooks.counters import BACKLOG_COUNT_INTERVAL, WebhookCounters

_build = Info("relay_build", "Relay version")
_build.info({"version": __version__})


class GcTimer:
    """The time the cyclic garbage collector takes (its pauses stall every session)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def install(self) -> None:
        gc.callbacks.append(self._callback)

    def remove(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


def histogram_family(name: str, documentation: str,
                     histogram: BucketHistogram) -> HistogramMetricFamily:
    """A plain histogram as a Prometheus histogram (`name`_bucket, _sum, _count)."""
    return HistogramMetricFamily(
        name, documentation, sum_value=histogram.sum,
        buckets=[("+Inf" if le == math.inf else repr(le), count)
                 for le, count in histogram.cumulative()])


def collect_hls_playback(hls: HlsCounters) -> Iterator[Metric]:
    """The playback requests by kind and status, and the LL-HLS timing histograms."""
    requests = CounterMetricFamily(
        "relay_hls_requests", "playback requests answered, by kind (multivariant, "
        "media_playlist, part, segment, init, player, static, other) and HTTP status",
        labels=["kind", "status"])
    for (kind, status), count in sorted(hls.requests.answered.items()):
        requests.add_metric([kind.value, str(status)], count)
    yield requests
    yield histogram_family(
        "relay_hls_blocking_reload_wait_seconds", "how long blocking playlist reloads "
        "(_HLS_msn, _HLS_part) were held until answered (200, or 503 at the hold timeout); "
        "those the playlist already satisfied are not counted", hls.reload_wait)
    yield histogram_family(
        "relay_hls_part_publish_delay_seconds", "from the arrival of a listed part's last "
        "frame to the part's listing in the live playlist (about one frame interval: a "
        "frame's duration is known when the next arrives)", hls.part_publish_delay)


def collect_webhooks(webhooks: WebhookCounters) -> Iterator[Metric]:
    """The webhook backlog, tries by result and delivery latency."""
    depth = GaugeMetricFamily(
        "relay_webhook_queue_depth", "webhook deliveries not made yet, by state (waiting: "
        "never tried; retrying: failed at least once, due again later), as the deliverer "
        f"counted them last: at most {BACKLOG_COUNT_INTERVAL:g} s ago", labels=["state"])
    depth.add_metric(["waiting"], webhooks.waiting)
    depth.add_metric(["retrying"], webhooks.retrying)
    yield depth
    results = CounterMetricFamily(
        "relay_webhook_deliveries", "webhook delivery tries by result (success: a 2xx; "
        "http_error: another status; timeout; connection_error: no answer), and "
        "failed_permanently: deliveries given up after the retry window",
        labels=["result"])
    for result, count in webhooks.results.items():
        results.add_metric([result], count)
    yield results
    yield histogram_family(
        "relay_webhook_delivery_latency_seconds", "from a webhook event's creation to its "
        "successful delivery (retries included)", webhooks.latency)


def collect_upstream(upstream: UpstreamCounters) -> Iterator[Metric]:
    """What fetching live streams' playback from the nodes that own them cost and met."""
    for name, documentation, value in (
            ("relay_upstream_requests", "requests this node sent to the nodes that own live "
             "streams (playback of a stream live on another node)", upstream.requests),
            ("relay_upstream_coalesced", "viewer requests that joined an identical request "
             "to an owner node already in flight", upstream.coalesced),
            ("relay_upstream_cache_hits", "viewer requests answered from the parts and "
             "segments kept from owner nodes", upstream.cache_hits),
            ("relay_upstream_received_bytes", "body bytes received from owner nodes (as "
             "sent: gzip playlists gzipped)", upstream.received_bytes)):
        yield CounterMetricFamily(name, documentation, value=value)
    errors = CounterMetricFamily(
        "relay_upstream_errors", "viewer requests for a stream live on another node "
        "answered with an error of this node's, by kind (unreachable: no connection, 503; "
        "timeout: no whole answer in time, 502; bad_answer: an unexpected status or body, "
        "502; busy: this node's bounds on requests to owners, 503)", labels=["kind"])
    for kind, value in (("unreachable", upstream.unreachable), ("timeout", upstream.timeouts),
                        ("bad_answer", upstream.bad_answers), ("busy", upstream.busy)):
        errors.add_metric([kind], value)
    yield errors


class NodeView(Protocol):
    """`relay.cluster.ClusterNode`, as the collector reads it."""

    @property
    def leases_held(self) -> int: ...
    @property
    def taken_over(self) -> int: ...
    @property
    def heartbeat_failures(self) -> int: ...
    @property
    def live_nodes(self) -> Sized: ...


def collect_node(node: NodeView) -> Iterator[Metric]:
    """This node among the nodes of its database."""
    yield GaugeMetricFamily("relay_node_leases_held", "streams whose lease this node holds "
                            "(its live sessions: publishing, or inside their reconnect "
                            "window)", value=node.leases_held)
    yield CounterMetricFamily("relay_node_takeovers", "live sessions of dead nodes this node "
                              "finished (after their reconnect window, or when their "
                              "encoder came back here)", value=node.taken_over)
    yield CounterMetricFamily("relay_node_heartbeat_failures", "heartbeats that failed (the "
                              "database unreachable or slow); other nodes count this one dead "
                              "after --node-timeout without one", value=node.heartbeat_failures)
    yield GaugeMetricFamily("relay_node_live_nodes", "live nodes on the database, this one "
                            "included, as the last good heartbeat saw them",
                            value=len(node.live_nodes))


class NoticesView(Protocol):
    """`relay.cluster.StreamNotices`, as the collector reads it."""

    @property
    def sent(self) -> int: ...
    @property
    def heard(self) -> int: ...
    @property
    def connections(self) -> int: ...


def collect_notices(notices: NoticesView | None) -> Iterator[Metric]:
    """The stream-change notices between nodes (PostgreSQL only: zero on SQLite)."""
    sent, heard, connections = ((notices.sent, notices.heard, notices.connections)
                                if notices is not None else (0, 0, 0))
    for name, documentation, value in (
            ("relay_node_notices_sent", "stream-change notices this node sent the other nodes "
             "(PostgreSQL NOTIFY after an API change)", sent),
            ("relay_node_notices_heard", "stream-change notices of other nodes this node heard",
             heard),
            ("relay_node_notice_connections", "times this node's connection listening for "
             "notices was established; more than 1: it dropped and was reconnected, and the "
             "node reloaded its stream keys", connections)):
        yield CounterMetricFamily(name, documentation, value=value)


# -- the SRT side, as the collector reads it -------------------------------------------
# relay.srt.listener and relay.srt.server load libsrt, which only a server with SRT on may
# need: these protocols name what the collector reads of their objects instead.

class SrtListenerCountersView(Protocol):
    """`relay.srt.listener.SrtCounters` (libsrt's thread writes them; ints read whole)."""

    @property
    def connections_open(self) -> int: ...
    @property
    def decide_errors(self) -> int: ...
    @property
    def bytes_received(self) -> int: ...
    @property
    def backlog_dropped_bytes(self) -> int: ...
    @property
    def batches(self) -> int: ...
    @property
    def arms(self) -> int: ...
    @property
    def idle_waits(self) -> int: ...
    @property
    def log_lines_suppressed(self) -> int: ...


class SrtIngestCountersView(Protocol):
    """`relay.srt.server.SrtIngestCounters`."""

    @property
    def connections_open(self) -> int: ...
    @property
    def connections_total(self) -> int: ...
    @property
    def publishes_refused(self) -> int: ...
    @property
    def media_timeouts(self) -> int: ...
    @property
    def idle_timeouts(self) -> int: ...
    @property
    def pending_overflows(self) -> int: ...
    @property
    def ingest_errors(self) -> int: ...
    @property
    def log_lines_suppressed(self) -> int: ...
    @property
    def ts_packets(self) -> int: ...
    @property
    def ts_resyncs(self) -> int: ...
    @property
    def ts_cc_errors(self) -> int: ...
    @property
    def pes_dropped(self) -> int: ...
    @property
    def media(self) -> Mapping[str, int]: ...


class SrtStatsView(Protocol):
    """`relay.srt.listener.SrtStats`: a connection's latest libsrt statistics."""

    @property
    def rtt_ms(self) -> float: ...
    @property
    def receive_rate_mbps(self) -> float: ...
    @property
    def packets_lost(self) -> int: ...
    @property
    def packets_retransmitted(self) -> int: ...
    @property
    def packets_dropped(self) -> int: ...
    @property
    def receive_buffer_ms(self) -> int: ...


class TsDemuxerCountsView(Protocol):
    """`relay._native.mpegts.TsDemuxer`'s counters."""

    @property
    def packets(self) -> int: ...
    @property
    def resyncs(self) -> int: ...
    @property
    def cc_errors(self) -> int: ...
    @property
    def pes_dropped(self) -> int: ...


class LiveStreamView(Protocol):
    @property
    def stream_id(self) -> str: ...


class SrtConnectionView(Protocol):
    """`relay.srt.server.SrtConnection`."""

    @property
    def live(self) -> LiveStreamView | None: ...
    @property
    def stats(self) -> SrtStatsView | None: ...
    @property
    def demux(self) -> TsDemuxerCountsView: ...
    @property
    def media(self) -> object: ...  # a TsMediaAssembler: its TS_UNIT_COUNTERS are read


@dataclass(frozen=True, slots=True)
class SrtMetricsSource:
    """Where the SRT side's numbers are, wired by the app when SRT is on."""

    ingest: SrtIngestCountersView  # the loop side's (SrtServer.counters)
    listener: SrtListenerCountersView  # the libsrt thread's (SrtListener.counters)
    admission: SrtAdmissionCounters  # the listen callback's (SrtAdmission.counters)
    #: The open connections (SrtServer.connections.values()), read at scrape time.
    connections: Callable[[], Iterable[SrtConnectionView]]


#: SRT frames not published, by reason: (label, `TsMediaAssembler` counter).
_SRT_FRAMES_NOT_PUBLISHED: Final = (
    ("before_keyframe", "skipped_frames"), ("discontinuity", "discontinuities"),
    ("malformed", "malformed"), ("unsupported", "unsupported_frames"),
    ("before_start", "early_frames"), ("empty", "empty_access_units"))


def _srt_media_counters(closed: Mapping[str, int],
                        connections: list[SrtConnectionView]) -> Iterator[Metric]:
    """The media assemblers' counters: those of ended connections, plus the open ones'."""
    media = dict.fromkeys(TS_UNIT_COUNTERS, 0)
    media.update(closed)
    for connection in connections:
        for name in TS_UNIT_COUNTERS:
            media[name] += getattr(connection.media, name)
    frames = CounterMetricFamily("relay_srt_frames", "audio and video frames published "
                                 "from SRT callers", labels=["kind"])
    frames.add_metric(["video"], media["video_frames"])
    frames.add_metric(["audio"], media["audio_frames"])
    yield frames
    dropped = CounterMetricFamily(
        "relay_srt_frames_not_published", "frames from SRT callers not published, by reason: "
        "before their track's configuration and keyframe (or a keyframe after a loss), "
        "lost data the demuxer flagged, invalid (bad Annex-B or parameter sets, over a size "
        "bound), an unsupported ADTS layout, timed before the stream's start, or empty once "
        "delimiters and parameter sets are out", labels=["reason"])
    for reason, name in _SRT_FRAMES_NOT_PUBLISHED:
        dropped.add_metric([reason], media[name])
    yield dropped
    for metric, documentation, name in (
            ("relay_srt_track_configs", "audio and video decoder configurations published "
             "from SRT callers", "configs"),
            ("relay_srt_ignored_streams", "elementary streams in SRT callers' programs that "
             "Relay does not carry", "ignored_streams"),
            ("relay_srt_ignored_pes", "PES packets of those streams", "ignored_pes"),
            ("relay_srt_audio_skipped_bytes", "bytes of SRT callers' audio skipped to find "
             "an ADTS header", "audio_skipped_bytes")):
        yield CounterMetricFamily(metric, documentation, value=media[name])


#: The per-connection gauges: (name, help, what of the connection's SrtStats).
_SRT_CONNECTION_GAUGES: tuple[tuple[str, str, Callable[[SrtStatsView], float]], ...] = (
    ("relay_srt_connection_rtt_ms", "round-trip time to the SRT caller, ms",
     lambda stats: stats.rtt_ms),
    ("relay_srt_connection_receive_rate_mbps", "receive rate of the last stats interval, "
     "Mbit/s", lambda stats: stats.receive_rate_mbps),
    ("relay_srt_connection_packets_lost", "packets the caller sent that never arrived, "
     "since the connection began", lambda stats: stats.packets_lost),
    ("relay_srt_connection_packets_retransmitted", "retransmitted packets received, since "
     "the connection began", lambda stats: stats.packets_retransmitted),
    ("relay_srt_connection_packets_dropped", "packets libsrt dropped as too late to play "
     "(raise the latency), since the connection began", lambda stats: stats.packets_dropped),
    ("relay_srt_connection_receive_buffer_ms", "media held in libsrt's receive buffer, ms",
     lambda stats: stats.receive_buffer_ms),
)


# -- simulcast ------------------------------------------------------------------------------

class SimulcastSessionView(Protocol):
    """`relay.simulcast.manager.SimulcastManager`: one live session's targets."""

    @property
    def stream_id(self) -> str: ...
    @property
    def ended(self) -> bool: ...
    def snapshot(self) -> list[TargetSnapshot]: ...


@dataclass(frozen=True, slots=True)
class SimulcastMetricsSource:
    """Where the simulcast numbers are, wired by the app."""

    counters: SimulcastCounters  # process-wide; stopped sessions' totals folded in
    #: The sessions' managers until they have stopped (RelayServer.simulcasts), read at
    #: scrape time.
    sessions: Callable[[], Iterable[SimulcastSessionView]]


_TARGET_STATUSES: tuple[SimulcastTargetStatus, ...] = get_args(SimulcastTargetStatus)
_TARGET_LABELS = ["live_stream_id", "simulcast_target_id"]
#: The per-target series other than the status: (name, help, what of the snapshot, counter).
_SIMULCAST_TARGET_SERIES: tuple[tuple[str, str, Callable[[TargetSnapshot], int], bool],
                                ...] = (
    ("relay_simulcast_target_attempts", "push attempts to the target in this session",
     lambda t: t.attempts, True),
    ("relay_simulcast_target_sent_bytes", "bytes written to the target in this session",
     lambda t: t.sent_bytes, True),
    ("relay_simulcast_target_sent_frames", "audio and video frames sent to the target in "
     "this session", lambda t: t.sent_frames, True),
    ("relay_simulcast_target_queued_bytes", "media bytes waiting in the target's queue",
     lambda t: t.queued_bytes, False),
    ("relay_simulcast_target_dropped_frames", "frames the target's full queue dropped "
     "(whole GOPs) in this session", lambda t: t.dropped_frames, True),
    ("relay_simulcast_target_dropped_bytes", "media bytes the target's full queue dropped "
     "in this session", lambda t: t.dropped_bytes, True),
    ("relay_simulcast_target_dropped_gops", "GOPs (runs up to the next keyframe) the "
     "target's full queue dropped in this session", lambda t: t.dropped_gops, True),
)


def collect_simulcast(source: SimulcastMetricsSource) -> Iterator[Metric]:
    """The process-wide simulcast counters and the series of each target of each session
    that has not stopped yet."""
    counters = source.counters
    # A stream's ending session may still be stopping when its next one starts, with the
    # same target ids: the live one names the series (one sample per label set, or
    # Prometheus refuses the scrape); both count in the totals.
    sessions = sorted(source.sessions(), key=lambda session: session.ended)
    snapshots = [(session.stream_id, session.snapshot()) for session in sessions]
    totals = {"sent_bytes": counters.sent_bytes, "sent_frames": counters.sent_frames,
              "dropped_frames": counters.dropped_frames,
              "dropped_bytes": counters.dropped_bytes, "dropped_gops": counters.dropped_gops}
    for _, targets in snapshots:
        for target in targets:
            for name in totals:
                totals[name] += getattr(target, name)
    yield CounterMetricFamily("relay_simulcast_attempts", "simulcast push attempts "
                              "(connections to targets tried)", value=counters.attempts)
    failures = CounterMetricFamily(
        "relay_simulcast_failures", "simulcast push attempts that failed, by severity "
        "(fatal: not retried; normal: retried with backoff)", labels=["severity"])
    failures.add_metric(["fatal"], counters.failures_fatal)
    failures.add_metric(["normal"], counters.failures_normal)
    yield failures
    for name, documentation in (
            ("sent_bytes", "bytes written to simulcast targets"),
            ("sent_frames", "audio and video frames sent to simulcast targets"),
            ("dropped_frames", "frames simulcast target queues dropped (whole GOPs): "
             "targets that could not keep up"),
            ("dropped_bytes", "media bytes simulcast target queues dropped"),
            ("dropped_gops", "GOPs simulcast target queues dropped")):
        yield CounterMetricFamily(f"relay_simulcast_{name}", documentation,
                                  value=totals[name])
    status = GaugeMetricFamily(
        "relay_simulcast_target_status", "1 for the status each simulcast target of a live "
        "session is in, 0 for the others", labels=[*_TARGET_LABELS, "status"])
    families = [(CounterMetricFamily if counter else GaugeMetricFamily)(
        name, documentation, labels=_TARGET_LABELS)
        for name, documentation, _, counter in _SIMULCAST_TARGET_SERIES]
    seen: set[tuple[str, str]] = set()
    for stream_id, targets in snapshots:
        for target in targets:
            labels = [stream_id, target.target_id]
            if (stream_id, target.target_id) in seen:
                continue
            seen.add((stream_id, target.target_id))
            for each in _TARGET_STATUSES:
                status.add_metric([*labels, each], 1 if target.status == each else 0)
            for family, (_, _, read, _) in zip(families, _SIMULCAST_TARGET_SERIES,
                                               strict=True):
                family.add_metric(labels, read(target))
    yield status
    yield from families


# -- per live stream ------------------------------------------------------------------------

_STREAM_LABELS = ["live_stream_id"]
#: The lifecycle states a session can be in while it exists (ENDED sessions are leaving).
_SESSION_STATES: tuple[State, ...] = tuple(state for state in State if state is not State.ENDED)


def collect_live_streams(registry: IngestRegistry, now: float) -> Iterator[Metric]:
    """The live streams by status and the series of each live session (publishing or in
    its reconnect window); a stream's series go when its session ends."""
    sessions = list(registry.sessions.values())
    by_state = dict.fromkeys(_SESSION_STATES, 0)
    for session in sessions:
        if session.state in by_state:
            by_state[session.state] += 1
    disabled, known = registry.key_counts()
    status = GaugeMetricFamily(
        "relay_live_streams", "live streams by status: the session's state for the streams "
        "with a live session (connected, recording, active, disconnected: in the reconnect "
        "window), idle for the other enabled ones, disabled", labels=["status"])
    for state, count in by_state.items():
        status.add_metric([state.value], count)
    status.add_metric(["idle"], max(known - disabled - len(sessions), 0))
    status.add_metric(["disabled"], disabled)
    yield status
    bitrate = GaugeMetricFamily(
        "relay_live_stream_ingest_bitrate_bps", "bits per second of audio and video frames "
        "received, averaged over the last few whole seconds", labels=_STREAM_LABELS)
    frame_rate = GaugeMetricFamily(
        "relay_live_stream_frame_rate", "video frames per second received, averaged over "
        "the last few whole seconds", labels=_STREAM_LABELS)
    keyframes = GaugeMetricFamily(
        "relay_live_stream_keyframe_interval_seconds", "media time between the last two "
        "video keyframes (the encoder's GOP; over the segment duration makes segments "
        "long)", labels=_STREAM_LABELS)
    drift = GaugeMetricFamily(
        "relay_live_stream_av_drift_ms", "the last audio timestamp minus the last video "
        "timestamp, ms (far from 0: the encoder's tracks are out of step)",
        labels=_STREAM_LABELS)
    reconnects = CounterMetricFamily(
        "relay_live_stream_reconnects", "encoder reconnects inside the reconnect window "
        "in this session", labels=_STREAM_LABELS)
    viewers = GaugeMetricFamily(
        "relay_live_stream_viewers", "distinct client addresses that requested the stream's "
        "HLS in the last 30 s", labels=_STREAM_LABELS)
    for session in sessions:
        labels = [session.stream_id]
        health = session.health
        bits, frames = health.rates(now)
        bitrate.add_metric(labels, bits)
        frame_rate.add_metric(labels, frames)
        if health.keyframe_interval is not None:
            keyframes.add_metric(labels, health.keyframe_interval)
        av_drift = health.drift_ms()
        if av_drift is not None:
            drift.add_metric(labels, av_drift)
        reconnects.add_metric(labels, session.reconnects)
        viewers.add_metric(labels, session.viewers.count(now))
    yield from (bitrate, frame_rate, keyframes, drift, reconnects, viewers)


class IngestCollector(Collector):
    """Reads the ingest counters at scrape time; registered while `relay serve` runs."""

    def __init__(self, registry: IngestRegistry, rtmp: RtmpCounters,
                 hls: HlsCounters | None = None,
                 window_bytes: Callable[[], int] = lambda: 0, *,
                 http: HttpCounters | None = None,
                 held: HeldRequests | None = None,
                 srt: SrtMetricsSource | None = None,
                 simulcast: SimulcastMetricsSource | None = None,
                 webhooks: WebhookCounters | None = None,
                 upstream: UpstreamCounters | None = None,
                 node: NodeView | None = None,
                 notices: NoticesView | None = None,
                 spools: Spools | None = None,
                 reads: StoredReads = STORED_READS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.spools = spools
        self.reads = reads
        self.clock = clock  # the sessions' clock: their health buckets are in its seconds
        self.srt = srt
        self.simulcast = simulcast
        self.webhooks = webhooks if webhooks is not None else WebhookCounters()
        self.upstream = upstream if upstream is not None else UpstreamCounters()
        self.node = node
        self.notices = notices
        self.rtmp = rtmp
        self.hls = hls if hls is not None else HlsCounters()
        self.http = http if http is not None else HttpCounters()
        self.held = held if held is not None else HeldRequests()
        self.window_bytes = window_bytes
        self.gc = GcTimer()
        self.gc.install()
        REGISTRY.register(self)

    def unregister(self) -> None:
        REGISTRY.unregister(self)
        self.gc.remove()

    def collect(self) -> Iterator[Metric]:
        rtmp, ingest = self.rtmp, self.registry.counters
        yield GaugeMetricFamily("relay_rtmp_open_connections", "RTMP(S) connections open now",
                                value=rtmp.connections_open)
        counters: tuple[tuple[str, str, int], ...] = (
            ("relay_rtmp_connections", "RTMP(S) connections accepted",
             rtmp.connections_total),
            ("relay_rtmp_connections_refused", "connections closed on accept: every slot "
             "taken (--rtmp-max-connections) and none could be evicted",
             rtmp.connections_refused),
            ("relay_rtmp_connections_refused_per_ip", "connections closed on accept: their "
             "address (IPv6: /64) held --rtmp-max-connections-per-ip already",
             rtmp.connections_refused_per_ip),
            ("relay_rtmp_connections_evicted", "connections not yet publishing closed to "
             "give their slot to an address holding fewer", rtmp.connections_evicted),
            ("relay_rtmp_tls_handshake_failures", "RTMPS connections whose TLS handshake "
             "failed or took too long", rtmp.tls_handshake_failures),
            ("relay_rtmp_proxy_headers_refused", "connections closed at their first byte: a "
             "PROXY header from a peer not in --trusted-proxy", rtmp.proxy_headers_refused),
            ("relay_rtmp_proxy_header_errors", "connections from a --trusted-proxy peer "
             "closed: no valid PROXY header within the handshake deadline",
             rtmp.proxy_header_errors),
            ("relay_rtmp_log_lines_suppressed", "log lines about peers held back by the "
             "per-cause limit (--log-repeat-interval)", rtmp.log_lines_suppressed),
            ("relay_rtmp_protocol_errors", "connections closed for breaking the protocol",
             rtmp.protocol_errors),
            ("relay_rtmp_handshake_timeouts", "connections closed for not publishing in time",
             rtmp.handshake_timeouts),
            ("relay_rtmp_idle_timeouts", "publishing connections closed for sending nothing",
             rtmp.idle_timeouts),
            ("relay_rtmp_received_bytes", "bytes received from encoders", rtmp.bytes_received),
            ("relay_rtmp_media_messages", "audio and video messages received",
             rtmp.media_messages),
            ("relay_rtmp_media_errors", "malformed audio or video messages dropped",
             rtmp.media_errors),
            ("relay_ingest_publishes_accepted", "publishes admitted",
             ingest.publishes_accepted),
            ("relay_ingest_publishes_refused", "publishes refused (bad key, disabled, live)",
             ingest.publishes_refused),
            ("relay_ingest_auth_failures", "publishes with an unknown stream key",
             self.registry.throttle.failures_total),
            ("relay_ingest_slowed_refusals", "unknown-key refusals answered after a delay",
             ingest.refusals_slowed),
            ("relay_ingest_unanswered_refusals", "unknown-key refusals closed without an "
             "answer: their address had too many slowed refusals waiting",
             ingest.refusals_unanswered),
            ("relay_ingest_reconnects", "publishers that resumed a session in its window",
             ingest.reconnects),
            ("relay_ingest_session_limit_disconnects", "sessions ended because they reached "
             "the session limit (--max-session-duration or the stream's "
             "max_continuous_duration)", ingest.session_limit_ends),
            ("relay_live_stream_warnings_suppressed", "ingest warnings not sent because "
             "their session had raised the most it may (MAX_WARNINGS_PER_SESSION)",
             ingest.warnings.suppressed),
        )
        hls = self.hls
        counters += (
            ("relay_hls_segments", "segments packaged", hls.segments),
            ("relay_hls_parts", "parts (and internal fragments) packaged", hls.parts),
            ("relay_hls_packaged_bytes", "media bytes packaged", hls.bytes_out),
            ("relay_hls_recording_dropped_segments",
             "segments left out of a recording: the disk fell behind or failed",
             hls.recording_dropped),
            ("relay_hls_packaging_failures", "sessions whose media could not be packaged "
             "(each was ended with the reason)", hls.failures),
            ("relay_hls_queue_dropped_frames", "frames the queues before the packagers "
             "dropped (whole GOPs; only a starved event loop fills them)",
             hls.queue_drops.frames),
            ("relay_hls_queue_dropped_gops", "GOPs the queues before the packagers dropped",
             hls.queue_drops.gops),
            ("relay_hls_packaging_errors", "packaging failures that were internal errors "
             "(bugs; logged with a traceback)", hls.packaging_errors),
            ("relay_hls_recordings_failed", "recordings a failed write (a full disk) ended "
             "before their session", hls.recordings_failed),
            ("relay_hls_recordings_behind", "recordings ended before their session because "
             "the disk fell too far behind (--recording-max-backlog)", hls.recordings_behind),
            ("relay_hls_recordings_stalled", "recordings closed without their hung disk write "
             "finishing", hls.recordings_stalled),
            ("relay_hls_segment_overruns",
             "segments longer than TARGETDURATION (encoder keyframes too far apart), "
             "counted when their session ends", hls.overruns),
            ("relay_hls_dropped_frames", "frames the packager could not place (before the "
             "first keyframe, no track), counted when their session ends",
             hls.frames_dropped),
            ("relay_hls_timestamps_clamped", "frame durations clamped to one tick because the "
             "encoder's timestamps went backward, counted when their session ends",
             hls.timestamps_clamped),
            ("relay_hls_timestamp_gaps", "encoder timestamp jumps beyond 5 s, each ending the "
             "segment and starting one after a discontinuity, counted when their session ends",
             hls.timestamp_gaps),
            ("relay_hls_part_overruns", "LL-HLS parts longer than PART-TARGET (a frame longer "
             "than the ones before it), counted when their session ends", hls.part_overruns),
            ("relay_hls_short_parts", "LL-HLS parts shorter than 85% of PART-TARGET that are "
             "neither independent nor their segment's last, counted when their session ends",
             hls.short_parts),
            ("relay_hls_program_date_time_resyncs", "times PROGRAM-DATE-TIME was re-anchored "
             "because frames arrived more than 0.5 s off the media clock, counted when their "
             "session ends", hls.pdt_resyncs),
            ("relay_hls_playlist_requests", "playlist requests served", hls.playlist_requests),
            ("relay_hls_media_requests", "init, segment and part requests",
             hls.media_requests),
            ("relay_hls_held_requests", "blocking reloads and hinted-part requests that waited",
             hls.held_requests),
            ("relay_hls_held_timeouts", "held requests answered 503", hls.held_timeouts),
            ("relay_hls_bad_requests", "playlist requests refused with 400", hls.bad_requests),
            ("relay_hls_not_found", "playback requests answered 404", hls.not_found),
            ("relay_hls_held_refused", "held requests refused 503 at the held-request caps "
             "(--hls-max-held-requests, --hls-max-held-requests-per-stream)",
             self.held.refused),
        )
        rtmp = self.rtmp
        counters += (
            ("relay_rtmp_write_pauses", "times a peer left our output unread past the "
             "write high-water mark (reading from it paused)", rtmp.write_pauses),
            ("relay_rtmp_write_stall_closes", "connections closed for leaving our output "
             "unread too long", rtmp.write_stall_closes),
            ("relay_rtmp_budget_closes", "connections closed because the connections that "
             "have not published held the whole --rtmp-pre-publish-buffer-budget",
             rtmp.budget_closes),
            ("relay_rtmp_turns_yielded", "reads holding more messages than one turn of the "
             "event loop may parse, finished over several turns", rtmp.turns_yielded),
        )
        http = self.http
        counters += (
            ("relay_http_refused_full", "HTTP connections refused: every connection busy",
             http.refused_full),
            ("relay_http_refused_per_ip", "HTTP connections refused: their address had its "
             "share (--http-max-connections-per-ip)", http.refused_per_address),
            ("relay_http_evicted", "HTTP connections waiting for a request closed to make "
             "room for a new one", http.evicted),
            ("relay_http_header_timeouts", "HTTP connections closed: request line and "
             "headers not complete in --http-header-timeout", http.header_timeouts),
            ("relay_http_body_timeouts", "HTTP connections closed: body not complete in "
             "--http-body-timeout", http.body_timeouts),
            ("relay_http_send_timeouts", "HTTP connections closed: response left unread for "
             "--http-send-timeout", http.send_timeouts),
            ("relay_http_tls_handshake_failures", "HTTPS connections closed: TLS handshake "
             "failed or not complete within 10 s of accept", http.tls_handshake_failures),
            ("relay_http_node_exemptions", "HTTP connections from another live node's "
             "address let past --http-max-connections-per-ip: their request carried the "
             "playback proxy's hop header", http.node_exemptions),
        )
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)
        warnings = CounterMetricFamily(
            "relay_live_stream_warnings", "video.live_stream.warning events raised (ingest "
            "problems the streamer can fix), by warning type", labels=["warning_type"])
        for kind, raised in ingest.warnings.raised.items():
            warnings.add_metric([kind.value], raised)
        yield warnings
        refused = CounterMetricFamily(
            "relay_playback_refused", "requests for signed playback ids refused with 403, by "
            "reason (missing_token, expired, wrong_audience, unknown_key, ...)",
            labels=["reason"])
        for reason, count in sorted(self.hls.playback_refused.items()):
            refused.add_metric([reason], count)
        yield refused
        yield GaugeMetricFamily("relay_hls_held_requests_now", "LL-HLS requests held now",
                                value=self.held.held)
        yield GaugeMetricFamily("relay_live_sessions", "live sessions (publishing or "
                                "inside their reconnect window)",
                                value=len(self.registry.sessions))
        yield CounterMetricFamily("relay_gc_seconds", "time spent in Python's cyclic "
                                  "garbage collector", value=self.gc.seconds)
        yield GaugeMetricFamily("relay_hls_live_window_bytes", "bytes of media held in memory "
                                "for the live playlists (segments, parts, init segments)",
                                value=self.window_bytes())
        yield CounterMetricFamily("relay_hls_stored_reads", "reads from disk of live-window "
                                  "segments and parts no longer held in memory (requests "
                                  "for the same bytes at once share one read)",
                                  value=self.reads.reads)
        yield CounterMetricFamily("relay_hls_stored_misses", "requests for stored live-window "
                                  "media whose file was gone or short (answered 404)",
                                  value=self.reads.failed)
        spools = self.spools
        yield CounterMetricFamily("relay_hls_spool_writes", "live-window segments written to "
                                  "the spool of a session whose recording ended early",
                                  value=spools.writes if spools is not None else 0)
        yield CounterMetricFamily("relay_hls_spool_failures", "spool writes that failed (the "
                                  "session's window then stays in memory)",
                                  value=spools.failures if spools is not None else 0)
        yield from collect_hls_playback(self.hls)
        yield from collect_webhooks(self.webhooks)
        yield from collect_upstream(self.upstream)
        if self.node is not None:
            yield from collect_node(self.node)
            yield from collect_notices(self.notices)
        yield from collect_live_streams(self.registry, self.clock())
        if self.srt is not None:
            yield from self._collect_srt(self.srt)
        if self.simulcast is not None:
            yield from collect_simulcast(self.simulcast)

    def _collect_srt(self, srt: SrtMetricsSource) -> Iterator[Metric]:
        ingest, listener, admission = srt.ingest, srt.listener, srt.admission
        connections = list(srt.connections())
        yield GaugeMetricFamily("relay_srt_open_connections", "SRT connections open now "
                                "(admitted, or waiting for the stream-key lookup)",
                                value=ingest.connections_open)
        yield GaugeMetricFamily("relay_srt_open_sockets", "SRT sockets libsrt holds open "
                                "for Relay now (connections, and closed ones libsrt has not "
                                "yet released)", value=listener.connections_open)
        # The demuxers' totals: those of ended connections, plus the open ones' so far.
        ts_packets, ts_resyncs = ingest.ts_packets, ingest.ts_resyncs
        ts_cc_errors, pes_dropped = ingest.ts_cc_errors, ingest.pes_dropped
        for connection in connections:
            demux = connection.demux
            ts_packets += demux.packets
            ts_resyncs += demux.resyncs
            ts_cc_errors += demux.cc_errors
            pes_dropped += demux.pes_dropped
        counters: tuple[tuple[str, str, int], ...] = (
            ("relay_srt_connections", "SRT connections accepted", ingest.connections_total),
            ("relay_srt_handshakes_accepted", "SRT handshakes the listen callback accepted "
             "(stream key and passphrase known, caps not reached)", admission.accepted),
            ("relay_srt_connections_over_capacity", "SRT connections closed on accept: "
             "handshakes decided together went over --srt-max-connections or "
             "--srt-max-connections-per-ip", admission.opened_over_capacity),
            ("relay_srt_decide_errors", "SRT handshakes refused with 1500 because the "
             "admission failed (bugs; logged)", listener.decide_errors),
            ("relay_srt_publishes_refused", "SRT callers the handshake let in and the "
             "registry refused (a second publisher on one key, a change since)",
             ingest.publishes_refused),
            ("relay_srt_media_timeouts", "SRT connections closed: no audio or video track "
             "in time after connecting", ingest.media_timeouts),
            ("relay_srt_idle_timeouts", "SRT connections closed for sending nothing for "
             "--srt-idle-timeout", ingest.idle_timeouts),
            ("relay_srt_pending_overflows", "SRT connections closed for sending too much "
             "before their stream key was looked up", ingest.pending_overflows),
            ("relay_srt_ingest_errors", "SRT connections closed for a stream that cannot be "
             "carried (a codec change mid-stream)", ingest.ingest_errors),
            ("relay_srt_received_bytes", "bytes received from SRT callers",
             listener.bytes_received),
            ("relay_srt_backlog_dropped_bytes", "bytes received from SRT callers and dropped "
             "because the event loop fell behind", listener.backlog_dropped_bytes),
            ("relay_srt_loop_wakeups", "batches of SRT events handed to the event loop",
             listener.batches),
            ("relay_srt_libsrt_starts", "times libsrt was started on the SRT port (at "
             "start-up, then by the first datagram after each release)", listener.arms),
            ("relay_srt_libsrt_releases", "times libsrt was released after the handshake "
             "linger with no SRT caller (its threads end; the port stays bound)",
             listener.idle_waits),
            ("relay_srt_log_lines_suppressed", "log lines about SRT callers held back by the "
             "per-cause limit (--log-repeat-interval)",
             ingest.log_lines_suppressed + listener.log_lines_suppressed),
            ("relay_srt_ts_packets", "MPEG-TS packets demuxed", ts_packets),
            ("relay_srt_ts_resyncs", "times the TS demuxer lost the 0x47 sync byte and "
             "searched for it", ts_resyncs),
            ("relay_srt_ts_cc_errors", "TS continuity-counter gaps (packets lost or "
             "repeated before Relay)", ts_cc_errors),
            ("relay_srt_pes_dropped", "PES packets dropped: over the size bound or "
             "malformed", pes_dropped),
        )
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)
        refused = CounterMetricFamily(
            "relay_srt_handshakes_refused", "SRT handshakes the listen callback refused, by "
            "reason (the caller logs the rejection code)", labels=["reason"])
        for reason, value in (("bad_streamid", admission.refused_bad_streamid),
                              ("unknown_key", admission.refused_unknown_key),
                              ("disabled", admission.refused_disabled),
                              ("live", admission.refused_live),
                              ("over_capacity", admission.refused_over_capacity),
                              ("throttled", admission.refused_throttled),
                              ("shutting_down", admission.refused_shutting_down),
                              ("internal", admission.refused_internal)):
            refused.add_metric([reason], value)
        yield refused
        yield from _srt_media_counters(ingest.media, connections)
        families = [GaugeMetricFamily(name, f"{documentation} (latest stats of each SRT "
                                      "connection publishing now)", labels=["live_stream_id"])
                    for name, documentation, _ in _SRT_CONNECTION_GAUGES]
        seen: set[str] = set()
        for connection in connections:
            live, stats = connection.live, connection.stats
            if live is None or stats is None or live.stream_id in seen:
                continue  # not publishing (yet), no stats yet, or a leaving duplicate
            seen.add(live.stream_id)
            for family, (_, _, read) in zip(families, _SRT_CONNECTION_GAUGES, strict=True):
                family.add_metric([live.stream_id], read(stats))
        yield from families


async def _metrics(_: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def create_metrics_app() -> Starlette:
    return Starlette(routes=[Route("/metrics", _metrics)])
