"""What test_metrics_live_streams.py shares with other test modules: kept here so no test
module imports another."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from relay.metrics import IngestCollector
from relay.rtmp.server import RtmpCounters
from relay.streams.registry import IngestRegistry

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(collector: IngestCollector) -> tuple[Samples, dict[str, str]]:
    """(name, labels) -> value, and each family's help text."""
    registry = CollectorRegistry()
    registry.register(collector)
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in families for sample in family.samples}
    return samples, {family.name: family.documentation for family in families}


def collector_of(registry: IngestRegistry, now: float) -> IngestCollector:
    collector = IngestCollector(registry, RtmpCounters(), clock=lambda: now)
    collector.unregister()  # from the process-wide registry: scrape() uses its own
    return collector
