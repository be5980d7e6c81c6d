"""A /metrics scrape with 1,000 live streams, built as benchmarks/metrics_scrape.py builds
it: complete and parseable. Its time is the benchmark's figure, not asserted here."""

from __future__ import annotations

import time

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.metrics_scrape import live_registry, scrape_registry

LIVE = 1_000
PER_STREAM = {"relay_live_stream_ingest_bitrate_bps", "relay_live_stream_frame_rate",
              "relay_live_stream_keyframe_interval_seconds", "relay_live_stream_av_drift_ms",
              "relay_live_stream_reconnects", "relay_live_stream_viewers"}


def test_a_scrape_of_1000_live_streams_is_complete_and_parseable() -> None:
    now = time.monotonic()
    registry = live_registry(streams=3_000, live=LIVE, viewers=3, now=now)
    text = generate_latest(scrape_registry(registry, now)).decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    live_ids = set(registry.sessions)
    assert len(live_ids) == LIVE
    for name in PER_STREAM:
        samples = families[name].samples
        assert len(samples) == LIVE, name
        assert {sample.labels["live_stream_id"] for sample in samples} == live_ids, name
    by_id = {sample.labels["live_stream_id"]: sample.value
             for sample in families["relay_live_stream_viewers"].samples}
    assert set(by_id.values()) == {3.0}
    frame_rates = [s.value for s in families["relay_live_stream_frame_rate"].samples]
    assert all(25 <= rate <= 35 for rate in frame_rates)  # 6 s of 30 fps recorded
    statuses = {s.labels["status"]: s.value for s in families["relay_live_streams"].samples}
    # Sessions made but not started are `connected`; the other 2,000 streams idle.
    assert sum(statuses.values()) == 3_000 and statuses["idle"] == 2_000
    # Every family of the collector came through, not only the per stream ones.
    assert {"relay_hls_requests", "relay_webhook_queue_depth",
            "relay_hls_part_publish_delay_seconds", "relay_rtmp_connections"} <= set(families)
