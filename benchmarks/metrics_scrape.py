"""Cost of a /metrics scrape with many live streams, and of the per-frame health counters.

Usage: .venv/bin/python benchmarks/metrics_scrape.py [--streams N] [--live N] [--viewers N]

Fills an IngestRegistry's key cache with N streams and gives `--live` of them a live session
(not started: no event loop, no store) whose health holds 6 s of 30 fps video and 43 fps
audio and whose viewers hold `--viewers` addresses; then times `generate_latest` over the
collector alone (median of 5) and `IngestHealth.record` per frame.
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit
from types import SimpleNamespace
from typing import cast

from prometheus_client import CollectorRegistry, generate_latest

from relay.ids import new_object_id, new_srt_passphrase, new_stream_key
from relay.metrics import IngestCollector
from relay.rtmp.server import RtmpCounters
from relay.store import Store
from relay.store.records import LiveStream
from relay.streams.health import IngestHealth
from relay.streams.hub import LiveSession
from relay.streams.registry import IngestRegistry


def live_registry(streams: int, live: int, viewers: int, now: float) -> IngestRegistry:
    """A registry with `streams` known streams, `live` of them with a live session whose
    health holds 6 s of 30 fps video and 43 fps audio and whose viewers hold `viewers`
    addresses (tests/benchmarks/test_metrics_scrape.py scrapes the same)."""
    store = cast(Store, object())  # nothing here reads the store
    registry = IngestRegistry(store)
    ids = [new_object_id() for _ in range(streams)]
    for stream_id in ids:
        registry._remember(stream_id, new_stream_key(), "idle", new_srt_passphrase())
    for stream_id in ids[:live]:
        stream = cast(LiveStream, SimpleNamespace(id=stream_id, reconnect_window=60.0,
                                                  audio_only=False))
        session = LiveSession(stream, store, session_limit=3600, on_ended=lambda _: None)
        for tick in range(6 * 30):
            session.health.record(now - 6 + tick / 30, 4000, True, tick % 30 == 0, tick * 33)
        for tick in range(6 * 43):
            session.health.record(now - 6 + tick / 43, 300, False, False, tick * 23)
        for viewer in range(viewers):
            session.viewers.seen(f"198.51.100.{viewer}", now)
        registry.sessions[stream_id] = session
    return registry


def scrape_registry(registry: IngestRegistry, now: float) -> CollectorRegistry:
    """A Prometheus registry holding the collector of `registry` alone (not the process
    collectors), its clock at `now`."""
    collector = IngestCollector(registry, RtmpCounters(), clock=lambda: now)
    collector.unregister()  # from the process-wide registry
    scraped = CollectorRegistry()
    scraped.register(collector)
    return scraped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--live", type=int, default=1_000)
    parser.add_argument("--viewers", type=int, default=20)
    args = parser.parse_args()

    now = time.monotonic()
    scraped = scrape_registry(live_registry(args.streams, args.live, args.viewers,
                                                     now), now)
    runs = [timeit.timeit(lambda: generate_latest(scraped), number=5) / 5
            for _ in range(5)]
    print(f"scrape: {statistics.median(runs) * 1e3:.1f} ms ({args.live:,} live streams, "
          f"{args.streams:,} streams, {args.viewers} viewers each)")

    health = IngestHealth()
    frames = 1_000_000
    seconds = timeit.timeit(lambda: health.record(now, 4000, True, False, 1000),
                            number=frames)
    print(f"IngestHealth.record: {seconds / frames * 1e9:.0f} ns per frame")


if __name__ == "__main__":
    main()
