"""Image routes: thumbnails per second per core, live and recorded, and the event loop's
worst stall while 50 image requests run.

    .venv/bin/python benchmarks/images.py [--requests 60] [--concurrency 4] [--json PATH]

1. Live. `relay serve` runs as a subprocess; ffmpeg pushes testsrc2 1280x720 at 30 fps
   (libx264 ultrafast zerolatency, a 2 s GOP, AAC, `-re`) over RTMP in `low` latency mode.
   Once the stream is active, `--requests` live thumbnails (the newest keyframe, JPEG,
   each with another width so that none is served from the cache: every one is a decode)
   are asked `--concurrency` at a time. The server's CPU time (utime + stime of every
   thread, from /proc, and of its image worker processes) is read before and after; the
   CPU it spends on the stream alone is measured for as long just before and taken off.
   Thumbnails per second per core = requests / (server CPU seconds spent on them). Before
   it, `--concurrency` other thumbnails at once start the image worker processes, a cost
   paid once per relay (about half a second of CPU each).
2. Recorded. The same against the asset's playback id (the recording on disk of the same
   stream, read while it is still recording), at times spread over it.
3. Stall. In this process, on uvloop: the image routes (Starlette under uvicorn) on that
   recording's directory; a client in another process sends 50 requests at once for
   distinct images (46 thumbnails of several sizes and times, a storyboard and its WebVTT,
   two animated GIFs). A ticker on the server's loop sleeps 1 ms at a time and records how
   late it wakes: the worst lateness is the loop's worst stall (aim: under 20 ms) while the
   requests are parsed, decoded in the pool (a new pool: its worker processes start as
   the requests come) and answered. The ticker alone first gives the floor (what the
   machine does to a sleeping loop without any request), and the same requests answered at
   once without a decode (`AnsweringPool`) give the HTTP side's own share.
   The live push has ended by then: ffmpeg encoding 720p30 with libx264 stands in for a
   streamer's own machine and took a good part of a core here, which the loop then waited
   for (`runnable` below); and the loop runs with `relay serve`'s garbage-collector
   settings (`relay.cli.tune_gc`), as the relay's loop does.
   The client process is started, and ready, before the window opens (uvloop forks this
   process to spawn it: tens of milliseconds that are the benchmark's own), and the garbage
   of what ran before in this process is collected first (`gc_worst_ms` is the longest
   collection in the window).
   The worst stall is split by the loop thread's /proc/thread-self/schedstat: `on_cpu`
   (the loop's own work in that tick), `runnable` (waiting for a core the machine's other
   processes, or the image workers, had) and `blocked` (the rest: waiting for the GIL
   another thread of this process held, or a page fault); `worst_on_cpu_ms` is the most
   work the loop did in any one tick, the part of a stall the code, not the machine,
   decides. On a shared machine (other work, background fuzzers) the worst stall is mostly
   `runnable`: compare medians of several runs, and `worst_on_cpu_ms`.

Prints a table and writes JSON (default `benchmarks/results/images.json`). The machine is
shared (2 cores, other work): compare medians of several runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import httpx
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.cli import tune_gc  # noqa: E402
from relay.hls.packager import LivePackager  # noqa: E402
from relay.images.jobs import Rendered  # noqa: E402
from relay.images.pool import ClientRates, DecodePool  # noqa: E402
from relay.images.routes import image_routes  # noqa: E402
from relay.images.worker import ImageJob  # noqa: E402
from testkit.relay_process import RelayProcess  # noqa: E402

TOKEN = ("images-bench", "images-bench-secret-0123456789-abcdefghij")
STALL_AIM_MS = 20.0
STALL_REQUESTS = 50
TICK = 0.001


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`, of its children that ended (cutime +
    cstime) and of those still running (its image worker processes): proc(5), fields 14 to
    17, in ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    total = sum(int(value) for value in fields[11:15])
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            other = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended meanwhile (in cutime once reaped)
        if other[1] == str(pid):  # field 4, ppid
            total += int(other[11]) + int(other[12])
    return total / os.sysconf("SC_CLK_TCK")


def push(url: str, seconds: int) -> subprocess.Popen[str]:
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg is not None, "ffmpeg is needed"
    return subprocess.Popen(
        [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "60",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-f", "flv", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


async def fetch_all(base: str, paths: list[str], concurrency: int) -> list[float]:
    """Fetch `paths` `concurrency` at a time; each one's latency (all must be 200). Each
    request comes from its own loopback address (127.0.0.10, .11, ...), as from its own
    viewer: the per-client rate limit (5 new images a second) is not what is measured."""
    queue = list(reversed(list(enumerate(paths))))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            index, path = queue.pop()
            transport = httpx.AsyncHTTPTransport(local_address=f"127.0.0.{10 + index % 240}")
            async with httpx.AsyncClient(base_url=base, timeout=120,
                                         transport=transport) as client:
                began = time.perf_counter()
                response = await client.get(path)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")
            latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def rate(relay: RelayProcess, paths: list[str], concurrency: int) -> dict[str, float]:
    """Thumbnails per second per core: requests / server CPU seconds spent on them (less
    the stream's own CPU, measured over the same wall time just before)."""
    before = cpu_seconds(relay.pid)
    time.sleep(3.0)
    idle_rate = (cpu_seconds(relay.pid) - before) / 3.0
    before, began = cpu_seconds(relay.pid), time.perf_counter()
    latencies = asyncio.run(fetch_all(relay.http_url, paths, concurrency))
    wall = time.perf_counter() - began
    spent = cpu_seconds(relay.pid) - before - idle_rate * wall
    return {"requests": len(paths), "wall_s": round(wall, 3),
            "server_cpu_s": round(spent, 3), "stream_cpu_per_s": round(idle_rate, 3),
            "per_second": round(len(paths) / wall, 2),
            "per_second_per_core": round(len(paths) / spent, 2),
            "latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "latency_max_ms": round(max(latencies) * 1000, 1)}


class Recordings:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def resolve_signed(self, playback_id: str
                             ) -> tuple[LivePackager | Path | None, bool]:
        return (self.directory if playback_id == "rec" else None), False

    def live_elsewhere(self, playback_id: str) -> bool:
        return False  # one node


# Started, and ready, before the measured window opens: its start (uvloop forks this process
# to spawn it) is the benchmark's, not the requests'. It sends them when a line comes.
_CLIENT = """
import asyncio, sys, httpx
async def main():
    base, paths = sys.argv[1], sys.argv[2:]
    async with httpx.AsyncClient(base_url=base, timeout=300,
                                 limits=httpx.Limits(max_connections=100)) as client:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        responses = await asyncio.gather(*(client.get(path) for path in paths))
    bad = [(r.url.path, r.status_code) for r in responses if r.status_code != 200]
    sys.exit(f"statuses {bad}" if bad else 0)
asyncio.run(main())
"""


class AnsweringPool(DecodePool):
    """Answers every image at once with the same bytes, without a decode: the stall run
    with it measures what the HTTP side alone does to the loop."""

    async def run(self, key: Hashable, job: ImageJob) -> Rendered:
        self.counters.requests += 1
        return Rendered(b"\xff\xd8" + bytes(40_000), "image/jpeg")


def loop_thread_schedstat() -> tuple[Callable[[], tuple[float, float]], Callable[[], None]]:
    """A reader of the calling thread's schedstat (Linux: seconds on a core, seconds
    runnable but waiting for one; (0, 0) where there is none), and its closer."""
    try:
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    except OSError:
        return (lambda: (0.0, 0.0)), (lambda: None)

    def read() -> tuple[float, float]:
        fields = os.pread(fd, 128, 0).split()
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9
    return read, lambda: os.close(fd)


async def stall(directory: Path, duration: float, *,
                decode: bool = True) -> dict[str, float]:
    """The loop's lateness while STALL_REQUESTS distinct image requests run: the image
    routes served by uvicorn on this loop, the requests sent at once by a client in another
    process (so that only the server's work is on this loop). `decode=False` answers them
    without decoding (`AnsweringPool`)."""
    import socket

    import uvicorn
    from starlette.applications import Starlette

    pool = DecodePool() if decode else AnsweringPool()
    app = Starlette(routes=image_routes(Recordings(directory), pool=pool,
                                        rates=ClientRates(rate=1000, burst=1000)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
        await asyncio.sleep(0.01)
    schedstat, close_schedstat = loop_thread_schedstat()
    lateness: list[float] = []
    # Where each tick's time went, from the loop thread's schedstat: on a core, and waiting
    # for one (runnable); the rest it was blocked (the GIL held by another thread, a fault).
    on_cpu: list[float] = []
    runnable: list[float] = []
    running = True

    async def ticker() -> None:
        while running:
            began, (cpu, wait) = time.perf_counter(), schedstat()
            await asyncio.sleep(TICK)
            lateness.append(time.perf_counter() - began - TICK)
            cpu_after, wait_after = schedstat()
            on_cpu.append(cpu_after - cpu)
            runnable.append(wait_after - wait)

    paths = [f"/rec/thumbnail.jpg?time={duration * i / 46:.2f}&width={320 + 8 * i}"
             for i in range(46)]
    paths += ["/rec/storyboard.jpg", "/rec/storyboard.vtt",
              "/rec/animated.gif?start=1&end=3&width=320&fps=10",
              "/rec/animated.gif?start=4&end=6&width=320&fps=10"]
    assert len(paths) == STALL_REQUESTS
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLIENT, f"http://127.0.0.1:{port}", *paths,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert client.stdout is not None
    await client.stdout.readline()  # ready
    # The garbage of what ran before in this process (the rate runs' HTTP clients, whose
    # TLS contexts take tens of milliseconds to free) is not the requests' to collect.
    gc.collect()
    collections: list[float] = []  # seconds of each garbage collection in the window
    collecting: list[float] = []

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collecting.append(time.perf_counter())
        elif collecting:
            collections.append(time.perf_counter() - collecting.pop())

    gc.callbacks.append(timed)
    tick = asyncio.create_task(ticker())
    await asyncio.sleep(1.0)
    floor = max(lateness)
    collections.clear()
    lateness.clear()
    on_cpu.clear()
    runnable.clear()
    began = time.perf_counter()
    _, err = await client.communicate(b"go\n")
    wall = time.perf_counter() - began
    running = False
    await tick
    close_schedstat()
    gc.callbacks.remove(timed)
    server.should_exit = True
    await serving
    await pool.aclose()
    if client.returncode != 0:
        raise RuntimeError(f"stall run: {err.decode()[-500:]}")
    ordered = sorted(lateness)
    worst = lateness.index(ordered[-1])
    return {"requests": STALL_REQUESTS, "wall_s": round(wall, 3),
            "worst_stall_ms": round(ordered[-1] * 1000, 2),
            "worst_stall_on_cpu_ms": round(on_cpu[worst] * 1000, 2),
            "worst_stall_runnable_ms": round(runnable[worst] * 1000, 2),
            "worst_stall_blocked_ms": round(max(0.0, ordered[-1] + TICK - on_cpu[worst]
                                                - runnable[worst]) * 1000, 2),
            "worst_on_cpu_ms": round(max(on_cpu) * 1000, 2),
            "p99_stall_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 2),
            "floor_worst_ms": round(floor * 1000, 2), "ticks": len(ordered),
            "gc_worst_ms": round(max(collections, default=0.0) * 1000, 2),
            "workers": pool.workers, "decodes": pool.counters.decodes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/images.json")
    parser.add_argument("--stall-only", type=Path, metavar="RECORDING_DIR",
                        help="only the stall run, on this recording directory (e.g. made "
                             "by ffmpeg's hls muxer with fMP4 segments named N.m4s and "
                             "init-0.mp4; its first 6 s are asked)")
    args = parser.parse_args()
    if args.stall_only:
        tune_gc()
        print(json.dumps({"stall": uvloop.run(stall(args.stall_only, 6.0)),
                          "stall_http_only": uvloop.run(stall(args.stall_only, 6.0,
                                                              decode=False))}, indent=2))
        return 0
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_average": os.getloadavg()}}
    with tempfile.TemporaryDirectory() as tmp:
        relay = RelayProcess(Path(tmp) / "data", token=TOKEN).start()
        encoder: subprocess.Popen[str] | None = None
        try:
            api = httpx.Client(base_url=relay.http_url, auth=TOKEN, timeout=10)
            stream = api.post("/video/v1/live-streams", json={
                "playback_policies": ["public"], "latency_mode": "low",
                "new_asset_settings": {"playback_policies": ["public"]}}).json()["data"]
            encoder = push(f"{relay.urls['rtmp']}/{stream['stream_key']}", 120)
            deadline = time.monotonic() + 30
            while api.get(f"/video/v1/live-streams/{stream['id']}").json()["data"][
                    "status"] != "active":
                if time.monotonic() > deadline:
                    raise RuntimeError("the stream did not become active")
                time.sleep(0.2)
            time.sleep(8)  # a few segments in the window and the recording
            live_id = stream["playback_ids"][0]["id"]
            asset_id = api.get(f"/video/v1/live-streams/{stream['id']}").json()["data"][
                "active_asset_id"]
            asset_pid = api.get(f"/video/v1/assets/{asset_id}").json()["data"][
                "playback_ids"][0]["id"]
            n = args.requests
            # Warm: the image workers start (~0.5 s of CPU each, once per relay) with the
            # first images; `--concurrency` of them at once start as many as are used.
            asyncio.run(fetch_all(relay.http_url, [f"/{live_id}/thumbnail.jpg?width={100 + i}"
                                                   for i in range(args.concurrency)],
                                  args.concurrency))
            results["live"] = rate(relay, [f"/{live_id}/thumbnail.jpg?width={320 + 4 * i}"
                                           for i in range(n)], args.concurrency)
            results["recorded"] = rate(
                relay, [f"/{asset_pid}/thumbnail.jpg?time={6 * i / n:.3f}&width={320 + 4 * i}"
                        for i in range(n)], args.concurrency)
            recording = relay.data_dir / "assets" / asset_id
            # The encoder is the streamer's machine, not the relay's: it stops before the
            # stall window so that the loop does not wait for the cores it encodes on.
            encoder.kill()
            encoder.communicate()
            tune_gc()  # as `relay serve` does once it is up
            results["stall"] = uvloop.run(stall(recording, 6.0))
            results["stall_http_only"] = uvloop.run(stall(recording, 6.0, decode=False))
        finally:
            if encoder is not None and encoder.poll() is None:
                encoder.kill()
                encoder.communicate()
            relay.stop()
    print(json.dumps(results, indent=2))
    for name in ("live", "recorded"):
        r = results[name]
        print(f"{name:9s} {r['per_second_per_core']:7.1f} thumbnails/s/core "
              f"({r['per_second']:.1f}/s wall, p50 {r['latency_p50_ms']} ms)")
    s = results["stall"]
    h = results["stall_http_only"]
    print(f"stall     worst {s['worst_stall_ms']} ms (aim < {STALL_AIM_MS:g}), p99 "
          f"{s['p99_stall_ms']} ms, idle floor {s['floor_worst_ms']} ms; the same requests "
          f"answered without decoding: worst {h['worst_stall_ms']} ms, p99 "
          f"{h['p99_stall_ms']} ms")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
