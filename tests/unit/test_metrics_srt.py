"""The SRT side of /metrics: what the collector makes of the SRT counters and of each open
connection's latest statistics, read from stand-in counters at scrape time, and that
relay.metrics itself never loads libsrt."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from relay.media.ts_units import COUNTERS, TsMediaAssembler
from relay.metrics import IngestCollector, SrtMetricsSource
from relay.rtmp.server import RtmpCounters
from relay.srt.admission import SrtAdmissionCounters
from relay.srt.listener import SrtCounters, SrtStats
from relay.srt.server import SrtIngestCounters
from relay.streams.registry import IngestRegistry
from tests.unit.helpers.metrics_srt import registry, scrape

__all__ = ["registry"]  # fixtures, defined in tests.unit.helpers.metrics_srt

pytestmark = pytest.mark.anyio


@dataclass
class FakeLive:
    stream_id: str


@dataclass
class FakeDemux:
    packets: int = 0
    resyncs: int = 0
    cc_errors: int = 0
    pes_dropped: int = 0


@dataclass
class FakeConnection:
    live: FakeLive | None
    stats: SrtStats | None
    demux: FakeDemux
    media: TsMediaAssembler = field(default_factory=TsMediaAssembler)


def stats(rtt_ms: float, rate: float, lost: int, retransmitted: int, dropped: int,
          buffer_ms: int) -> SrtStats:
    return SrtStats(rtt_ms=rtt_ms, receive_rate_mbps=rate, latency_ms=120,
                    packets_received=1000, packets_lost=lost,
                    packets_retransmitted=retransmitted, packets_dropped=dropped,
                    packets_undecrypted=0, bytes_received=1_316_000,
                    receive_buffer_ms=buffer_ms, receive_buffer_bytes=20_000,
                    backlog_dropped_bytes=0)


def collector_of(registry: IngestRegistry, srt: SrtMetricsSource | None) -> IngestCollector:
    collector = IngestCollector(registry, RtmpCounters(), srt=srt)
    collector.unregister()  # from the process-wide registry: scrape() uses its own
    return collector


async def test_srt_counters_and_connection_gauges(registry: IngestRegistry) -> None:
    ingest = SrtIngestCounters(
        connections_open=2, connections_total=7, publishes_refused=1, bytes_received=5000,
        media_timeouts=2, idle_timeouts=3, pending_overflows=4, ingest_errors=5,
        log_lines_suppressed=6, ts_packets=1000, ts_resyncs=1, ts_cc_errors=2, pes_dropped=3)
    listener = SrtCounters(connections_open=3, connections_total=8, callers_rejected=9,
                           decide_errors=1, bytes_received=6000, backlog_dropped_bytes=188,
                           batches=40, arms=5, idle_waits=4, log_lines_suppressed=4)
    admission = SrtAdmissionCounters(accepted=8, refused_bad_streamid=1,
                                     refused_unknown_key=2, refused_disabled=3,
                                     refused_live=4, refused_over_capacity=5,
                                     refused_throttled=6, refused_shutting_down=7,
                                     refused_internal=8, opened=7, opened_over_capacity=1)
    connections = [
        FakeConnection(FakeLive("stream-a"), stats(12.5, 6.25, 3, 2, 1, 118),
                       FakeDemux(packets=500, resyncs=1, cc_errors=2, pes_dropped=3)),
        # Admitted, no stats reported yet: counts, no gauges.
        FakeConnection(FakeLive("stream-b"), None, FakeDemux(packets=20)),
        # Its stream key is being looked up: no stream id to name it by.
        FakeConnection(None, stats(1.0, 1.0, 0, 0, 0, 0), FakeDemux(packets=7)),
    ]
    source = SrtMetricsSource(ingest=ingest, listener=listener, admission=admission,
                              connections=lambda: connections)
    samples = scrape(collector_of(registry, source))

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("relay_srt_open_connections") == 2
    assert value("relay_srt_open_sockets") == 3
    assert value("relay_srt_connections_total") == 7
    assert value("relay_srt_handshakes_accepted_total") == 8
    assert value("relay_srt_connections_over_capacity_total") == 1
    assert value("relay_srt_decide_errors_total") == 1
    assert value("relay_srt_publishes_refused_total") == 1
    assert value("relay_srt_media_timeouts_total") == 2
    assert value("relay_srt_idle_timeouts_total") == 3
    assert value("relay_srt_pending_overflows_total") == 4
    assert value("relay_srt_ingest_errors_total") == 5
    assert value("relay_srt_received_bytes_total") == 6000
    assert value("relay_srt_backlog_dropped_bytes_total") == 188
    assert value("relay_srt_loop_wakeups_total") == 40
    assert value("relay_srt_libsrt_starts_total") == 5
    assert value("relay_srt_libsrt_releases_total") == 4
    assert value("relay_srt_log_lines_suppressed_total") == 6 + 4
    # Ended connections' demuxer totals plus the open ones' so far.
    assert value("relay_srt_ts_packets_total") == 1000 + 500 + 20 + 7
    assert value("relay_srt_ts_resyncs_total") == 1 + 1
    assert value("relay_srt_ts_cc_errors_total") == 2 + 2
    assert value("relay_srt_pes_dropped_total") == 3 + 3
    # The media assemblers' counters: none counted anywhere yet.
    assert value("relay_srt_frames_total", kind="video") == 0
    assert value("relay_srt_frames_not_published_total", reason="malformed") == 0
    refused = {"bad_streamid": 1, "unknown_key": 2, "disabled": 3, "live": 4,
               "over_capacity": 5, "throttled": 6, "shutting_down": 7, "internal": 8}
    for reason, count in refused.items():
        assert value("relay_srt_handshakes_refused_total", reason=reason) == count
    assert value("relay_srt_connection_rtt_ms", live_stream_id="stream-a") == 12.5
    assert value("relay_srt_connection_receive_rate_mbps", live_stream_id="stream-a") == 6.25
    assert value("relay_srt_connection_packets_lost", live_stream_id="stream-a") == 3
    assert value("relay_srt_connection_packets_retransmitted",
                 live_stream_id="stream-a") == 2
    assert value("relay_srt_connection_packets_dropped", live_stream_id="stream-a") == 1
    assert value("relay_srt_connection_receive_buffer_ms", live_stream_id="stream-a") == 118
    per_connection = {labels for name, labels in samples
                      if name.startswith("relay_srt_connection_")}
    assert per_connection == {(("live_stream_id", "stream-a"),)}


async def test_scrapes_read_the_counters_as_they_are_now(registry: IngestRegistry) -> None:
    ingest, connections = SrtIngestCounters(), [FakeConnection(
        FakeLive("s"), stats(5.0, 1.0, 0, 0, 0, 100), FakeDemux(packets=1))]
    source = SrtMetricsSource(ingest=ingest, listener=SrtCounters(),
                              admission=SrtAdmissionCounters(),
                              connections=lambda: connections)
    collector = collector_of(registry, source)
    assert scrape(collector)[("relay_srt_ts_packets_total", ())] == 1
    ingest.ts_packets, connections[0].stats = 10, stats(7.0, 2.0, 0, 0, 0, 90)
    connections[0].demux.packets = 4
    samples = scrape(collector)
    assert samples[("relay_srt_ts_packets_total", ())] == 14
    assert samples[("relay_srt_connection_rtt_ms", (("live_stream_id", "s"),))] == 7.0
    connections.clear()  # the connection ended (its demuxer counts were folded in)
    samples = scrape(collector)
    assert not any(name.startswith("relay_srt_connection_") for name, _ in samples)


async def test_one_stream_id_is_one_label_set(registry: IngestRegistry) -> None:
    """Two connections naming one stream (a leaving one, its successor) must not give two
    samples with one label set: Prometheus would reject the whole scrape."""
    connections = [FakeConnection(FakeLive("s"), stats(1.0, 1.0, 0, 0, 0, 0), FakeDemux()),
                   FakeConnection(FakeLive("s"), stats(2.0, 2.0, 0, 0, 0, 0), FakeDemux())]
    source = SrtMetricsSource(ingest=SrtIngestCounters(), listener=SrtCounters(),
                              admission=SrtAdmissionCounters(),
                              connections=lambda: connections)
    samples = scrape(collector_of(registry, source))
    assert samples[("relay_srt_connection_rtt_ms", (("live_stream_id", "s"),))] == 1.0


async def test_without_srt_there_are_no_srt_metrics(registry: IngestRegistry) -> None:
    samples = scrape(collector_of(registry, None))
    assert not any(name.startswith("relay_srt_") for name, _ in samples)
    assert ("relay_rtmp_open_connections", ()) in samples


def test_the_metrics_module_does_not_load_libsrt() -> None:
    """A server with SRT off must start without libsrt: importing relay.metrics must load
    neither the binding nor the modules that import it."""
    code = ("import sys; sys.modules['relay.srt._libsrt'] = None; import relay.metrics; "
            "loaded = sorted(m for m in sys.modules if m.startswith('relay.srt')); "
            "print(loaded)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "relay.srt.listener" not in result.stdout and "relay.srt.server" not in result.stdout
    assert "relay.srt.binding" not in result.stdout, result.stdout


async def test_srt_media_counters_of_ended_and_open_connections(
        registry: IngestRegistry) -> None:
    """Every `TsMediaAssembler` counter is on /metrics: the ended connections' totals plus
    each open connection's so far."""
    ingest = SrtIngestCounters()
    for index, name in enumerate(COUNTERS):
        ingest.media[name] = 100 * (index + 1)
    open_media = TsMediaAssembler()
    for index, name in enumerate(COUNTERS):
        setattr(open_media, name, index + 1)
    connections = [FakeConnection(FakeLive("stream-a"), None, FakeDemux(), open_media),
                   FakeConnection(None, None, FakeDemux())]
    source = SrtMetricsSource(ingest=ingest, listener=SrtCounters(),
                              admission=SrtAdmissionCounters(),
                              connections=lambda: connections)
    samples = scrape(collector_of(registry, source))
    expected = {name: 101 * (index + 1) for index, name in enumerate(COUNTERS)}
    exported = {
        "video_frames": ("relay_srt_frames_total", (("kind", "video"),)),
        "audio_frames": ("relay_srt_frames_total", (("kind", "audio"),)),
        "configs": ("relay_srt_track_configs_total", ()),
        "ignored_streams": ("relay_srt_ignored_streams_total", ()),
        "ignored_pes": ("relay_srt_ignored_pes_total", ()),
        "audio_skipped_bytes": ("relay_srt_audio_skipped_bytes_total", ()),
        **{name: ("relay_srt_frames_not_published_total", (("reason", reason),))
           for reason, name in (("before_keyframe", "skipped_frames"),
                                ("discontinuity", "discontinuities"),
                                ("malformed", "malformed"),
                                ("unsupported", "unsupported_frames"),
                                ("before_start", "early_frames"),
                                ("empty", "empty_access_units"))},
    }
    assert set(exported) == set(COUNTERS)
    for name, key in exported.items():
        assert samples[key] == expected[name], name
