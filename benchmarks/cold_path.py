"""What a wake-up costs: Relay's per-read ingest path run back to back, and run after the
process slept as it does between an encoder's writes.

Usage: .venv/bin/python benchmarks/cold_path.py [--input FILE.flv] [--reads N] [--gaps MS,...]

A live ffmpeg push wakes the relay about 110 times a second, so between two reads the
process sleeps for about 9 ms, and its caches (and, on a virtual machine, the host's) serve
other work meanwhile. Hot loops (benchmarks/ingest_path.py) then understate the live cost:
`relay serve` spends 40-80 us of CPU per read where the same read costs a few microseconds
back to back. This measures that ratio on the machine at hand, with no server and no network:

- `read`: a publishing connection's session (`ServerSession(parse_media=True)`: chunk
  demuxing, FLV tags and timestamps natively) given one read, as ffmpeg's writes arrive
  (ingest_path's `--reads ffmpeg`), and each frame it yields given to a `PartSegmenter` (LOW
  mode), which cuts parts and segments: Python from the session's events to the segmenter's;
- `small`: a short Python function over a 64-item list, the control: little code and data.

Each path runs `--reads` times per gap, sleeping the gap before each call, and the median CPU
time (this thread's) per call is printed beside the back-to-back figure (gap 0). The ratio
is the price of a cold wake-up; a path whose code and data are small (native code, the
control) pays less of it. The suite's ingest goal is measured live, where this is part of
every read.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.ingest_path import (  # noqa: E402
    DEFAULT_CLIP,
    clip_tags,
    connection_bytes,
    publish,
)
from relay.hls.segmenter import PartSegmenter  # noqa: E402
from relay.media.units import MediaFrame  # noqa: E402
from relay.rtmp.session import MediaBatch, ServerSession  # noqa: E402

DEFAULT_GAPS_MS = (0.0, 1.0, 10.0)


class ReadPath:
    """The session and the segmenter of one publish, fed one read per call (looping over
    the clip, which starts with its decoder configurations and a keyframe)."""

    def __init__(self, preamble: bytes, reads: list[bytes]) -> None:
        self.preamble = preamble
        self.reads = reads
        self.frames = 0
        self._restart()

    def _restart(self) -> None:
        self.session = ServerSession(random_bytes=bytes, parse_media=True)
        publish(self.session, self.preamble)
        self.segmenter = PartSegmenter("low")
        self.next = 0

    def __call__(self) -> None:
        if self.next == len(self.reads):
            self._restart()
        session, segmenter = self.session, self.segmenter
        session.receive_data(self.reads[self.next])
        self.next += 1
        session.new_turn()
        now = time.time()
        while (event := session.next_event()) is not None:
            if isinstance(event, MediaBatch):
                for unit in event.units:
                    if isinstance(unit, MediaFrame):
                        segmenter.on_frame(unit, now)
                        self.frames += 1
                    else:
                        segmenter.on_track(unit)


def small(values: list[int] = list(range(64))) -> int:  # noqa: B006 (read only)
    total = 0
    for value in values:
        total += value
    return total


def per_call(path: Callable[[], object], gap: float, calls: int) -> float:
    """Median CPU seconds of one call of `path`, each after sleeping `gap` seconds."""
    times = []
    clock = time.thread_time
    for _ in range(calls):
        if gap:
            time.sleep(gap)
        began = clock()
        path()
        times.append(clock() - began)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--reads", type=int, default=1000, help="calls per path and gap")
    parser.add_argument("--gaps", default=",".join(f"{gap:g}" for gap in DEFAULT_GAPS_MS),
                        help="sleeps before each call, ms, comma-separated (0: back to back)")
    args = parser.parse_args()
    tags = clip_tags(args.input)
    if tags is None:
        return 2
    gaps = [float(gap) / 1000 for gap in args.gaps.split(",")]
    preamble, reads = connection_bytes(tags, "ffmpeg")
    paths: dict[str, Callable[[], object]] = {"read": ReadPath(preamble, reads),
                                              "small": small}
    print(f"{args.input.name}, {args.reads} calls per path and gap; median CPU us per call")
    print(f"{'path':6} " + " ".join(f"{f'gap {gap * 1000:g} ms':>12}" for gap in gaps)
          + "   cold / hot")
    for name, path in paths.items():
        path()  # imports and first allocations out of the way
        figures = [per_call(path, gap, args.reads) for gap in gaps]
        ratio = f"{figures[-1] / figures[0]:9.1f} x" if figures[0] > 0 else ""
        print(f"{name:6} " + " ".join(f"{figure * 1e6:12.2f}" for figure in figures)
              + f"   {ratio}")
    read_path = paths["read"]
    assert isinstance(read_path, ReadPath)
    print(f"read: {read_path.frames} frames given to the segmenter")
    return 0


if __name__ == "__main__":
    sys.exit(main())
