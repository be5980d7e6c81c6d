"""/metrics exports what the queues before the HLS packagers dropped (whole GOPs, counted
into the shared `HlsCounters` at each drop), read at scrape time."""

from __future__ import annotations

import asyncio

import pytest

from relay.hls.packager import (
    PACKAGER_QUEUE_MAX_BYTES,
    PACKAGER_QUEUE_MAX_FRAMES,
    HlsCounters,
)
from relay.metrics import IngestCollector
from relay.rtmp.server import RtmpCounters
from relay.store import Store
from relay.streams.queue import DrainQueue
from relay.streams.registry import IngestRegistry
from tests.streams.helpers.drain_queue import Recorder
from tests.streams.helpers.queue import VIDEO_CONFIG, video
from tests.unit.helpers.metrics_srt import scrape

pytestmark = pytest.mark.anyio


def test_the_packager_queue_bounds_are_generous() -> None:
    # One event-loop iteration's media: far below these at any real bitrate.
    assert PACKAGER_QUEUE_MAX_BYTES == 32 * 1024 * 1024
    assert PACKAGER_QUEUE_MAX_FRAMES == 8192


async def test_packager_queue_drops_are_exported(store: Store) -> None:
    registry = IngestRegistry(store)
    counters = HlsCounters()
    collector = IngestCollector(registry, RtmpCounters(), counters)
    collector.unregister()
    queues = [DrainQueue(Recorder(), max_bytes=250, max_frames=100,
                         drops=counters.queue_drops) for _ in range(2)]
    for queue in queues:  # a starved loop: the drain never runs in between
        queue.on_track(VIDEO_CONFIG)
        for dts in range(0, 300, 100):  # three GOPs of one 100-byte keyframe
            queue.on_frame(video(dts, True))
    await asyncio.sleep(0)
    samples = scrape(collector)
    assert samples[("relay_hls_queue_dropped_frames_total", ())] == 2
    assert samples[("relay_hls_queue_dropped_gops_total", ())] == 2
    await registry.close()
