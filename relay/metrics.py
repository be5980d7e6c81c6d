"""The Prometheus endpoint, served on its own listener (`--metrics-port`).

Collectors read plain counters at scrape time; nothing is updated per packet. The registry
holds the process and runtime collectors, Relay's build info, the ingest counters and the
HLS packaging and playback counters; webhook counters join it as that part lands.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay import __version__
from relay.hls.holding import HeldRequests
from relay.hls.packager import HlsCounters
from relay.http_limits import HttpCounters
from relay.rtmp.server import RtmpCounters
from relay.streams.registry import IngestRegistry

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


class IngestCollector(Collector):
    """Reads the ingest counters at scrape time; registered while `relay serve` runs."""

    def __init__(self, registry: IngestRegistry, rtmp: RtmpCounters,
                 hls: HlsCounters | None = None,
                 window_bytes: Callable[[], int] = lambda: 0, *,
                 http: HttpCounters | None = None,
                 held: HeldRequests | None = None) -> None:
        self.registry = registry
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
        )
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)
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


async def _metrics(_: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def create_metrics_app() -> Starlette:
    return Starlette(routes=[Route("/metrics", _metrics)])
