"""What one simulcast target costs the pusher side, in process, without the suite's noise.

    .venv/bin/python benchmarks/simulcast_probe.py [--targets 4] [--seconds 8] [--repeats 3]

One process runs a paced 6 Mbit/s-like source (a 25 kB video frame every 33 ms with 48 kHz
AAC, fed as an ingest read loop would: the video frame, then the audio, half a frame apart)
into N target queues with the manager's bounds and batching (`TARGET_BATCH_*`), each
drained by Relay's `push()` to a stream name on an nginx-rtmp sink (the suite's `RtmpSink`).
It prints this process's CPU (user and system, `getrusage`) per second with 0 and with N
targets, alternating, and the median difference per target. What it leaves out: the RTMP
ingest and LL-HLS work of a real stream (the same with or without targets) and the suite's
comparison with nginx-rtmp's own `push`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.peers.rtmp import RtmpSink
from relay.media.units import (
    AudioConfig,
    Codec,
    MediaFrame,
    TrackKind,
    VideoConfig,
)
from relay.simulcast.fanout import SimulcastFanOut
from relay.simulcast.manager import (
    TARGET_BATCH_BYTES,
    TARGET_BATCH_DELAY,
    TARGET_QUEUE_MAX_BYTES,
    TARGET_QUEUE_MAX_FRAMES,
    new_batch_clock,
)
from relay.simulcast.pusher import parse_target_url, push
from relay.streams.queue import MediaQueue

VIDEO = VideoConfig(Codec.H264, bytes.fromhex("0164001fffe1001967640028acd940780227e5c05a80"
                                              "8080a0000003002000000781e30632c001000568eb"
                                              "ecb22c"), 1920, 1080, "avc1.64001f", 30.0)
AUDIO = AudioConfig(Codec.AAC, b"\x12\x10", 48000, 2, "mp4a.40.2")
VIDEO_BYTES = 25_000  # 6 Mbit/s at 30 fps
AUDIO_BYTES = 300
FRAME_SECONDS = 1 / 30
WARMUP_SECONDS = 2.0


def cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def one_run(sink: RtmpSink, targets: int, seconds: float) -> tuple[float, float]:
    """(user, system) CPU-seconds per second of this process with `targets` pushes."""
    clock = new_batch_clock()  # shared by the session's targets, as relay/app.py does
    queues = [MediaQueue(max_bytes=TARGET_QUEUE_MAX_BYTES, max_frames=TARGET_QUEUE_MAX_FRAMES,
                         batch_delay=TARGET_BATCH_DELAY, batch_bytes=TARGET_BATCH_BYTES,
                         clock=clock)
              for _ in range(targets)]
    fan_out = SimulcastFanOut(queues)  # the session's one sink for its targets, as in the app
    fan_out.on_track(VIDEO)
    fan_out.on_track(AUDIO)
    pushes = [asyncio.create_task(push(parse_target_url(sink.url(f"p{index}"), ""), queue,
                                       ssl_context=None, on_published=lambda: None))
              for index, queue in enumerate(queues)]
    video, audio = os.urandom(VIDEO_BYTES), os.urandom(AUDIO_BYTES)
    loop = asyncio.get_running_loop()
    start = loop.time()
    began: tuple[float, tuple[float, float]] | None = None
    index = 0
    while loop.time() - start < WARMUP_SECONDS + seconds:
        if began is None and loop.time() - start >= WARMUP_SECONDS:
            began = (time.monotonic(), cpu())
        dts = round(index * FRAME_SECONDS * 1000)
        frame = MediaFrame(TrackKind.VIDEO, dts, dts, index % 60 == 0, video)
        fan_out.on_frame(frame)
        await asyncio.sleep(FRAME_SECONDS / 2)
        # 48 kHz AAC: 1.5 frames per video frame.
        for offset in ((0, 21) if index % 2 == 0 else (0,)):
            sound = MediaFrame(TrackKind.AUDIO, dts + offset, dts + offset, True, audio)
            fan_out.on_frame(sound)
        index += 1
        await asyncio.sleep(max(0.0, start + index * FRAME_SECONDS - loop.time()))
    assert began is not None
    elapsed = time.monotonic() - began[0]
    user, system = cpu()
    fan_out.on_end()
    await asyncio.gather(*pushes)
    return (user - began[1][0]) / elapsed, (system - began[1][1]) / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sink = RtmpSink()
    sink.start(Path(tempfile.mkdtemp(prefix="simulcast-probe-")))
    try:
        per_target: list[float] = []
        for repeat in range(args.repeats):
            runs = {}
            for count in ((0, args.targets) if repeat % 2 == 0 else (args.targets, 0)):
                user, system = await one_run(sink, count, args.seconds)
                runs[count] = user + system
                print(f"run {repeat + 1}, {count} target(s): {(user + system) * 1000:.2f} ms "
                      f"CPU/s (user {user * 1000:.2f}, system {system * 1000:.2f})")
            per_target.append((runs[args.targets] - runs[0]) / args.targets)
        print(f"per target: median {statistics.median(per_target) * 1000:.3f} ms CPU/s "
              f"(runs: {', '.join(f'{value * 1000:.3f}' for value in per_target)})")
    finally:
        sink.stop()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
