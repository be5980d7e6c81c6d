"""What test_metrics_srt.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from relay.metrics import IngestCollector
from relay.store import Store
from relay.streams.registry import IngestRegistry

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(collector: IngestCollector) -> Samples:
    """The collector's exposition text, parsed back: (name, labels) -> value."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.fixture
async def registry(store: Store) -> AsyncIterator[IngestRegistry]:
    running = IngestRegistry(store)
    yield running
    await running.close()
