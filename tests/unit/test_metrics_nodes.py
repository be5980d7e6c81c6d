"""The `relay_upstream_*` and `relay_node_*` families of /metrics (issue 19): read at scrape
time from the playback proxy's `UpstreamCounters` and from `ClusterNode`, whose heartbeat
counts its failures and the live nodes it sees."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from relay.cluster import ClusterNode
from relay.hls.upstream import UpstreamCounters
from relay.metrics import IngestCollector, NodeView, NoticesView
from relay.rtmp.server import RtmpCounters
from relay.store import Store
from relay.streams.registry import IngestRegistry
from tests.conftest import sqlite_url

pytestmark = pytest.mark.anyio


def scrape(collector: IngestCollector) -> dict[str, Metric]:
    collector.unregister()
    registry = CollectorRegistry()
    registry.register(collector)
    return {family.name: family for family in
            text_string_to_metric_families(generate_latest(registry).decode())}


def value(families: dict[str, Metric], name: str, **labels: str) -> float:
    [sample] = [s for s in families[name].samples
                if s.labels == labels and not s.name.endswith("_created")]
    return sample.value


class FakeNode:
    leases_held = 3
    taken_over = 2
    heartbeat_failures = 5
    live_nodes = ("a", "b", "c", "d")


async def test_upstream_and_node_families(store: Store) -> None:
    upstream = UpstreamCounters(requests=11, coalesced=7, cache_hits=4, unreachable=1,
                                timeouts=2, bad_answers=3, busy=9, received_bytes=12345)
    node: NodeView = FakeNode()
    families = scrape(IngestCollector(IngestRegistry(store), RtmpCounters(),
                                      upstream=upstream, node=node))
    for name, expected in (("relay_upstream_requests", 11), ("relay_upstream_coalesced", 7),
                           ("relay_upstream_cache_hits", 4),
                           ("relay_upstream_received_bytes", 12345),
                           ("relay_node_takeovers", 2), ("relay_node_heartbeat_failures", 5)):
        assert families[name].type == "counter", name
        assert families[name].documentation, name
        assert value(families, name) == expected, name
    errors = {s.labels["kind"]: s.value for s in families["relay_upstream_errors"].samples
              if s.name.endswith("_total")}
    assert errors == {"unreachable": 1, "timeout": 2, "bad_answer": 3, "busy": 9}
    assert families["relay_node_leases_held"].type == "gauge"
    assert value(families, "relay_node_leases_held") == 3
    assert value(families, "relay_node_live_nodes") == 4


class FakeNotices:
    sent = 6
    heard = 9
    connections = 2


async def test_the_notice_families_read_the_notices_or_zero(store: Store) -> None:
    node: NodeView = FakeNode()
    notices: NoticesView = FakeNotices()
    families = scrape(IngestCollector(IngestRegistry(store), RtmpCounters(), node=node,
                                      notices=notices))
    for name, expected in (("relay_node_notices_sent", 6), ("relay_node_notices_heard", 9),
                           ("relay_node_notice_connections", 2)):
        assert families[name].type == "counter", name
        assert value(families, name) == expected, name
    # SQLite: no notices, the families read zero.
    families = scrape(IngestCollector(IngestRegistry(store), RtmpCounters(), node=node))
    assert value(families, "relay_node_notices_sent") == 0
    assert value(families, "relay_node_notice_connections") == 0


async def test_without_a_node_the_upstream_families_are_zero(store: Store) -> None:
    families = scrape(IngestCollector(IngestRegistry(store), RtmpCounters()))
    assert value(families, "relay_upstream_requests") == 0
    assert "relay_node_leases_held" not in families


async def eventually(check: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not reached: {what}")


async def test_the_heartbeat_counts_live_nodes_and_its_failures(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "relay.db")
    store = await Store.open(url, node_timeout=0.3)  # a beat every 0.1 s
    other = await Store.open(url, node_timeout=0.3)
    held = {"stream1": object(), "stream2": object()}
    node = ClusterNode(store, "node-a", "http://a.internal:8080", held=lambda: held,
                       on_lease_lost=lambda *_: None)
    try:
        await other.register_node("node-b", "http://b.internal:8080")
        await node.start()
        assert node.leases_held == 2
        await eventually(lambda: {n.node_id for n in node.live_nodes} == {"node-a", "node-b"},
                         "both nodes seen")
        # node-b stays silent: after the node timeout only node-a is live.
        await eventually(lambda: [n.node_id for n in node.live_nodes] == ["node-a"],
                         "node-b counted dead")
        assert node.heartbeat_failures == 0

        async def broken(*_: object) -> list[str]:
            raise ConnectionError("the database is gone")

        store.node_heartbeat = broken  # type: ignore[method-assign]
        await eventually(lambda: node.heartbeat_failures >= 2, "failed beats counted")
        families = scrape(IngestCollector(IngestRegistry(store), RtmpCounters(), node=node))
        assert value(families, "relay_node_heartbeat_failures") >= 2
        assert value(families, "relay_node_live_nodes") == 1
        assert value(families, "relay_node_leases_held") == 2
    finally:
        await node.stop()
        await other.close()
        await store.close()
