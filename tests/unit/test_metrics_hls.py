"""The playback requests by kind and status and the LL-HLS histograms, as /metrics writes
them, parsed back with prometheus_client."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from relay.hls.disk import StoredReads
from relay.hls.packager import HlsCounters
from relay.hls.request_counts import RequestKind
from relay.hls.spool import Spools
from relay.metrics import IngestCollector
from relay.rtmp.server import RtmpCounters
from relay.store import Store
from relay.streams.registry import IngestRegistry

pytestmark = pytest.mark.anyio


def scrape(store: Store, hls: HlsCounters) -> dict[str, Metric]:
    """The families the collector writes for `hls`, parsed back."""
    collector = IngestCollector(IngestRegistry(store), RtmpCounters(), hls)
    collector.unregister()
    registry = CollectorRegistry()
    registry.register(collector)
    return {family.name: family for family in
            text_string_to_metric_families(generate_latest(registry).decode())}


async def test_requests_and_histograms_are_exported(store: Store) -> None:
    hls = HlsCounters()
    hls.requests.count(RequestKind.PART, 200)
    hls.requests.count(RequestKind.PART, 200)
    hls.requests.count(RequestKind.MULTIVARIANT, 404)
    for seconds in (0.004, 0.25, 0.3, 100.0):
        hls.reload_wait.observe(seconds)
    hls.part_publish_delay.observe(0.033)
    families = scrape(store, hls)
    requests = families["relay_hls_requests"]
    assert requests.type == "counter" and "kind" in requests.documentation
    assert {(s.labels["kind"], s.labels["status"]): s.value for s in requests.samples} == {
        ("part", "200"): 2.0, ("multivariant", "404"): 1.0}
    wait = families["relay_hls_blocking_reload_wait_seconds"]
    assert wait.type == "histogram"
    values = {(s.name, s.labels.get("le")): s.value for s in wait.samples}
    prefix = "relay_hls_blocking_reload_wait_seconds"
    assert values[(f"{prefix}_bucket", "0.005")] == 1
    assert values[(f"{prefix}_bucket", "0.3")] == 3
    assert values[(f"{prefix}_bucket", "30.0")] == 3
    assert values[(f"{prefix}_bucket", "+Inf")] == 4
    assert values[(f"{prefix}_count", None)] == 4
    assert values[(f"{prefix}_sum", None)] == pytest.approx(100.554)
    delay = families["relay_hls_part_publish_delay_seconds"]
    assert {(s.name, s.labels.get("le")): s.value for s in delay.samples}[
        ("relay_hls_part_publish_delay_seconds_bucket", "0.035")] == 1


async def test_the_encoders_faults_are_exported(store: Store) -> None:
    hls = HlsCounters(overruns=1, frames_dropped=2, timestamps_clamped=3, timestamp_gaps=4,
                      part_overruns=5, short_parts=6, pdt_resyncs=7)
    families = scrape(store, hls)
    exported = {name: families[name].samples[0].value for name in (
        "relay_hls_segment_overruns", "relay_hls_dropped_frames", "relay_hls_timestamps_clamped",
        "relay_hls_timestamp_gaps", "relay_hls_part_overruns", "relay_hls_short_parts",
        "relay_hls_program_date_time_resyncs")}
    assert list(exported.values()) == [1, 2, 3, 4, 5, 6, 7]
    assert all(families[name].type == "counter" for name in exported)


async def test_stored_reads_and_spool_writes_are_exported(store: Store, tmp_path: Path) -> None:
    reads = StoredReads(threads=1)
    reads.reads, reads.failed = 7, 2
    spools = Spools(tmp_path / "spool")
    spools.writes, spools.failures = 5, 1
    collector = IngestCollector(IngestRegistry(store), RtmpCounters(), spools=spools,
                                reads=reads)
    collector.unregister()
    registry = CollectorRegistry()
    registry.register(collector)
    families = {family.name: family for family in
                text_string_to_metric_families(generate_latest(registry).decode())}
    assert {name: (families[name].type, families[name].samples[0].value) for name in (
        "relay_hls_stored_reads", "relay_hls_stored_misses", "relay_hls_spool_writes",
        "relay_hls_spool_failures")} == {
        "relay_hls_stored_reads": ("counter", 7.0), "relay_hls_stored_misses": ("counter", 2.0),
        "relay_hls_spool_writes": ("counter", 5.0), "relay_hls_spool_failures": ("counter", 1.0)}
