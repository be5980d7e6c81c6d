"""The webhook families of /metrics, from the deliverer's counters."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from relay.metrics import IngestCollector
from relay.rtmp.server import RtmpCounters
from relay.store import Store
from relay.streams.registry import IngestRegistry
from relay.webhooks.counters import DELIVERY_RESULTS, WebhookCounters

pytestmark = pytest.mark.anyio


async def test_webhook_families(store: Store) -> None:
    counters = WebhookCounters(waiting=7, retrying=2)
    counters.results["timeout"] += 3
    counters.latency.observe(0.2)
    collector = IngestCollector(IngestRegistry(store), RtmpCounters(), webhooks=counters)
    collector.unregister()
    registry = CollectorRegistry()
    registry.register(collector)
    families = {family.name: family for family in
                text_string_to_metric_families(generate_latest(registry).decode())}
    depth = families["relay_webhook_queue_depth"]
    assert depth.type == "gauge" and "1 s ago" in depth.documentation
    assert {s.labels["state"]: s.value for s in depth.samples} == {"waiting": 7, "retrying": 2}
    results = {s.labels["result"]: s.value
               for s in families["relay_webhook_deliveries"].samples}
    assert results == {result: (3 if result == "timeout" else 0)
                       for result in DELIVERY_RESULTS}
    latency = {(s.name, s.labels.get("le")): s.value
               for s in families["relay_webhook_delivery_latency_seconds"].samples}
    assert latency[("relay_webhook_delivery_latency_seconds_bucket", "0.1")] == 0
    assert latency[("relay_webhook_delivery_latency_seconds_bucket", "0.25")] == 1
    assert latency[("relay_webhook_delivery_latency_seconds_count", None)] == 1
