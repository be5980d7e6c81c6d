"""Python calls per read on a publishing RTMP connection's path, from the socket's bytes to the
packager's `on_frame`: `RtmpConnection` (get_buffer, buffer_updated), `ServerSession`,
`LiveSession.publish_units` (health, warnings, lifecycle) and the packager's `DrainQueue`,
whose consumer here only counts frames (the packager's own work is not measured).

Usage: .venv/bin/python benchmarks/ingest_calls.py [--input FILE.flv] [--runs 7]

The clip's audio and video tags are muxed and cut into reads as ffmpeg writes them
(`ingest_path.py --reads ffmpeg`: each message's first chunk header alone, then the rest),
after a connect and a publish that a real `IngestRegistry` on a SQLite store admits. Each
read is its own turn of a uvloop event loop (an `asyncio.sleep(0)` after it), so the
DrainQueue's callback runs between reads as it does live. Prints:

- Python function calls and C calls per read and per media message, counted with
  `sys.setprofile` over one replay, less those of the same loop replaying nothing (the
  harness's own: the sleep and the coroutine's resumption);
- CPU microseconds per read (median of `--runs` replays, `time.process_time`), harness
  included. Hot: every read follows the last in a tight loop, where live reads come 10 ms
  apart and run with cold caches, so live costs more per call (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import cast

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.ingest_path import (  # noqa: E402
    DEFAULT_CLIP,
    clip_tags,
    connection_bytes,
)
from relay.media.units import MediaFrame, TrackConfig  # noqa: E402
from relay.rtmp.server import RtmpConnection, RtmpCounters, RtmpLimits, RtmpServer  # noqa: E402
from relay.store import NewLiveStream, Store  # noqa: E402
from relay.streams.hub import LiveSession  # noqa: E402
from relay.streams.queue import DrainQueue  # noqa: E402
from relay.streams.registry import IngestRegistry  # noqa: E402


class CountingConsumer:
    """The packager's place behind its DrainQueue: counts frames, does nothing else."""

    def __init__(self) -> None:
        self.frames = 0

    def on_track(self, config: TrackConfig) -> None:
        pass

    def on_frame(self, frame: MediaFrame) -> None:
        self.frames += 1

    def on_discontinuity(self) -> None:
        pass

    def on_end(self) -> None:
        pass


class LoopbackTransport:
    """What RtmpConnection asks of its transport; writes go nowhere."""

    def set_write_buffer_limits(self, high: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def feed(connection: RtmpConnection, data: bytes) -> None:
    """`data` into the connection as asyncio's BufferedProtocol reads hand it over."""
    while data:
        view = connection.get_buffer(len(data))
        taken = min(len(view), len(data))
        view[:taken] = data[:taken]
        connection.buffer_updated(taken)
        data = data[taken:]


class Counts:
    def __init__(self) -> None:
        self.python = 0
        self.c = 0

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            self.python += 1
        elif event == "c_call":
            self.c += 1


async def replay(store: Store, tags: list[tuple[int, int, bytes]], *, count: bool,
                 empty: bool = False) -> tuple[float, Counts, int, int]:
    """One publish replayed: (CPU seconds, calls, reads, frames the consumer got)."""
    stream = await store.create_live_stream(NewLiveStream(
        latency_mode="low", reconnect_window=60.0, max_continuous_duration=43200,
        audio_only=False, use_slate_for_standard_latency=False, test=False,
        new_asset_settings={"playback_policies": ["public"]},
        playback_policies=("public",)), [])
    preamble, reads = connection_bytes(tags, "ffmpeg", stream_key=stream.stream_key)
    consumer = CountingConsumer()

    def started(session: LiveSession) -> None:
        session.attach_sink(DrainQueue(consumer), reports_playable=True)

    registry = IngestRegistry(store, on_session_started=started)
    connection = RtmpConnection(RtmpServer(registry, limits=RtmpLimits(),
                                           counters=RtmpCounters()))
    connection.connection_made(cast(asyncio.Transport, LoopbackTransport()))
    feed(connection, preamble)
    for _ in range(500):  # the admission: a store lookup
        await asyncio.sleep(0.002)
        if connection.live is not None:
            break
    if connection.live is None:
        raise RuntimeError("the publish was not admitted")
    counts = Counts()
    if count:
        sys.setprofile(counts)
    start = time.process_time()
    for read in reads:
        if not empty:
            feed(connection, read)
        await asyncio.sleep(0)
    spent = time.process_time() - start
    sys.setprofile(None)
    connection.close("the replay is over")
    await registry.close()
    return spent, counts, len(reads), consumer.frames


async def measure(tags: list[tuple[int, int, bytes]], runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="relay-ingest-calls-") as work:
        store = await Store.open(f"sqlite+aiosqlite:///{Path(work) / 'relay.db'}")
        try:
            _, counted, reads, frames = await replay(store, tags, count=True)
            _, harness, _, _ = await replay(store, tags, count=True, empty=True)
            times = [(await replay(store, tags, count=False))[0] for _ in range(runs)]
        finally:
            await store.close()
    python = (counted.python - harness.python - reads) / reads  # feed() itself: one a read
    c_calls = (counted.c - harness.c) / reads - 4  # feed()'s len() and min()
    print(f"{len(tags)} media messages in {reads} reads, {frames} frames to the consumer")
    print(f"  Python calls per read {python:.2f}, per message {python * reads / len(tags):.2f}"
          f"; C calls per read {c_calls:.2f} (feed() and the loop's own taken off)")
    print(f"  CPU {statistics.median(times) * 1e6 / reads:.2f} us per read, harness "
          f"included (median of {runs}; min {min(times) * 1e6 / reads:.2f}, "
          f"max {max(times) * 1e6 / reads:.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    tags = clip_tags(args.input)
    if tags is None:
        return 2
    uvloop.run(measure(tags, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
