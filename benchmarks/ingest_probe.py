"""Where Relay's ingest CPU goes: one `relay serve`, its idle cost, then N streams.

    .venv/bin/python benchmarks/ingest_probe.py [--streams 4] [--seconds 20]
        [--feeder ffmpeg|loadgen] [--clip 6mbps|600kbps] [--pin] [--media-seconds 20]

Prints the relay's CPU-seconds per second while idle, then per stream-second (user and
system apart, from /proc/PID/stat) and the garbage collector's share (from the relay's
`relay_gc_seconds_total`) while N publishers push one of the suite's clips (720p 6 Mbit/s by
default; LL-HLS `low`, recording on), and its resident memory (VmRSS) idle and at the end of
the run beside `relay_hls_live_window_bytes`. `--pin` puts the relay on CPU 0 and the publishers on
the others, as the suite's scale scenario does. `--feeder ffmpeg` is the suite's publisher
(`-re -c copy`: ffmpeg writes each RTMP chunk as it goes, so the relay wakes about 100 times
a second per stream); `--feeder loadgen` sends the same media from `loadgen.py`, which
writes what fell due every 50 ms to all connections at once (about 20 larger reads a second
per stream, and one process instead of N). The difference between the two is the cost of the
wake-ups.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import loadgen, suite  # noqa: E402
from benchmarks.peers.rtmp import RelayServer  # noqa: E402


def user_system(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / suite.CLOCK_TICKS, int(fields[12]) / suite.CLOCK_TICKS


def gc_seconds(server: RelayServer) -> float:
    assert server.process is not None
    for line in httpx.get(server.process.urls["metrics"], timeout=15).text.splitlines():
        if line.startswith("relay_gc_seconds_total "):
            return float(line.split()[1])
    raise RuntimeError("the relay's /metrics has no relay_gc_seconds_total")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--feeder", choices=("ffmpeg", "loadgen"), default="ffmpeg")
    parser.add_argument("--clip", choices=("6mbps", "600kbps"), default="6mbps")
    parser.add_argument("--pin", action="store_true", help="relay on CPU 0, publishers apart")
    parser.add_argument("--media-seconds", type=int, default=20, help="length of the clip")
    args = parser.parse_args()
    media = suite.prepare_media(args.media_seconds)[args.clip]
    cores = os.sched_getaffinity(0)
    server = RelayServer()
    with tempfile.TemporaryDirectory(prefix="relay-probe-") as work:
        server.start(Path(work))
        try:
            if args.pin and len(cores) > 1:
                os.sched_setaffinity(server.pid, {min(cores)})
                os.sched_setaffinity(0, cores - {min(cores)})
            time.sleep(2)
            before = sum(user_system(server.pid))
            time.sleep(5)
            print(f"idle: {(sum(user_system(server.pid)) - before) / 5:.4f} CPU-s per s")
            measured: dict[str, float] = {"idle_rss": suite.rss_kib(server.pid) / 1024}

            def measure() -> None:
                time.sleep(5)  # warm-up: the first segments, the playlists
                user, system = user_system(server.pid)
                collector = gc_seconds(server)
                began = time.monotonic()
                time.sleep(args.seconds)
                elapsed = time.monotonic() - began
                now_user, now_system = user_system(server.pid)
                measured["user"] = (now_user - user) / elapsed / args.streams
                measured["system"] = (now_system - system) / elapsed / args.streams
                measured["gc"] = (gc_seconds(server) - collector) / elapsed
                measured["rss"] = suite.rss_kib(server.pid) / 1024
                measured["window"] = (server.window_bytes() or 0) / 2**20

            if args.feeder == "ffmpeg":
                with suite.publishers(server.publish_urls(args.streams), media):
                    measure()
            else:
                host, port = server.rtmp_address()
                keys = server.stream_keys(args.streams)
                probe = threading.Thread(target=measure)
                probe.start()
                asyncio.run(loadgen.run(host, port, keys, loadgen.read_flv(media),
                                        args.seconds + 6))
                probe.join()
        finally:
            os.sched_setaffinity(0, cores)
            server.stop()
    total = measured["user"] + measured["system"]
    print(f"{args.streams} x {args.clip} from {args.feeder}: {total:.5f} CPU-s per stream-s "
          f"(user {measured['user']:.5f}, system {measured['system']:.5f}); garbage "
          f"collector {measured['gc']:.4f} CPU-s per s")
    print(f"RSS: idle {measured['idle_rss']:.1f} MiB, at the end {measured['rss']:.1f} MiB "
          f"({(measured['rss'] - measured['idle_rss']) / args.streams:.1f} MiB per stream); "
          f"live window {measured['window']:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
