"""Relay against nginx-rtmp, pyrtmp and srt-live-transmit, side by side: one table, one JSON.

    .venv/bin/python benchmarks/suite.py [--quick | --smoke] [--only NAME[,NAME]] [--json PATH]

`make bench` runs the full suite and `make bench-quick` the quick one; both install the peers
first (nginx with Debian's RTMP module, pyrtmp in a venv of its own under .make/). `--smoke`
is the seconds-long run that `make test` does so the suite cannot rot: it uses whichever
peers are installed and says which are missing. `--only` runs the named scenarios alone
(parsers, ingest, srt, memory, latency, scale, viewers, simulcast).

Scenarios (see benchmarks/README.md for method and history):
1. parsers: the native chunk demuxer (and pyrtmp's) on captured and synthetic chunk streams,
   the fMP4 writer on 720p-sized samples;
2. ingest cost: 1, 4, 16 publishers (`ffmpeg -re -stream_loop -1 -c copy` of a 720p30
   6 Mbps H.264+AAC file with a 2 s GOP) into Relay with LL-HLS and recording on, nginx-rtmp
   with `hls on`, and pyrtmp (ingest only): server CPU-seconds per stream-second from
   /proc/PID/stat and RSS from /proc/PID/status; median of the repeats, peers alternating.
   Goal (issue 16): relay <= 0.9 x nginx-rtmp at every count.
   The same runs give resident memory: idle (VmRSS of the freshly started server once it
   has settled, read before the suite's first API call, which creates the streams, and
   before any publisher; goal <= 80 MB for Relay) and per active stream ((RSS at N streams
   - that idle RSS) / N after the warm-up and window; goal <= 8 MB, MB = 10^6 bytes), with
   Relay's live windows (`relay_hls_live_window_bytes`) and the API calls' share as notes;
   SRT ingest cost: 1 and 4 publishers (`ffmpeg -re -stream_loop -1 -c copy -f mpegts` of
   the same clip to `srt://`, encrypted) into Relay (LL-HLS and recording on) and into one
   `srt-live-transmit` listener per stream (srt-tools; TS to stdout on /dev/null): CPU-seconds
   per stream-second of the receiving process(es) and their RSS, reported beside Relay's own
   RTMP figure from the same run;
3. memory per idle RTMP connection (handshaken, then silent);
4. latency (`ll_hls_latency.py`), at Relay's default PART-TARGET 0.3 s and at 0.2 s: part
   advertised after frame arrival (p99 <= PART-TARGET + 50 ms at each); hls.js latency in
   Chromium (goal <= 1.0 s at 0.2 s; 0.3 s reported beside it) and the relay's CPU per
   stream over the same hls.js window (utime + stime of its pid; goal: at 0.2 s no more
   than 1.10 x its 0.3 s figure, the hls.js runs alternating between the targets);
5. scale: the most 600 kbps publishers a server keeps real-time on one core, stepping up the
   count; publishers come from `loadgen.py` (one process, paced, pre-muxed media) on the
   other core. Goal: relay >= 2,500 and never fewer than nginx-rtmp in the same run;
6. LL-HLS viewers: the most simulated viewers (`viewers.py`: blocking reloads and part
   fetches, as hls.js does) of one `low` 6 Mbps stream that Relay serves on one core with
   p99 part delivery under PART-TARGET. Goal: >= 1,000. Beside it, requests per
   CPU-second: the relay's (all its viewers' requests at its best step per CPU-second of
   the relay over that step) and nginx's serving the same parts as static files (8 parts
   fetched from the relay, 100 keep-alive connections; nginx pinned to the relay's core);
7. simulcast: CPU per extra 6 Mbps target: one publisher (the 6 Mbps clip, `-c copy`) into
   Relay with 0, 1, 2 (full: 0, 1, 4, 16) simulcast targets, and into an nginx-rtmp whose
   application has as many `push` lines, all to one nginx-rtmp sink; the fan-out server's
   CPU-seconds (its threads' run time, /proc/PID/task/TID/schedstat) per target-second
   beyond its own 0-target run. One target costs less than either server's run-to-run
   spread at 0 targets on this machine, so the full run's 16 targets are the figure that
   resolves the per-target cost; 1 and 4 show the small fan-outs users mostly run.

Each goal row says pass, miss with the distance to the goal, or "not measured" / "not
judged" with the reason (a quick run's steps may stop short of a goal).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import ll_hls_latency, loadgen  # noqa: E402
from benchmarks import viewers as viewer_sim  # noqa: E402
from benchmarks.peers.fan_out import FanOut, NginxFanOut, RelayFanOut  # noqa: E402
from benchmarks.peers.processes import free_port, terminate, wait_port  # noqa: E402
from benchmarks.peers.rtmp import (  # noqa: E402
    NGINX,
    PYRTMP_PYTHON,
    NginxServer,
    PyrtmpServer,
    RelayServer,
    RtmpSink,
    Server,
    start_nginx,
)
from benchmarks.peers.srt import (  # noqa: E402
    RelaySrt,
    SrtLiveTransmitPeer,
    SrtReceiver,
    srt_live_transmit,
)
from relay.hls import fmp4  # noqa: E402
from relay.media.units import AudioConfig, Codec, VideoConfig  # noqa: E402

MEDIA_DIR = ROOT / "benchmarks" / "media"
RESULTS_DIR = ROOT / "benchmarks" / "results"
VECTOR = ROOT / "tests" / "vectors" / "rtmp" / "ffmpeg_publish_320x240.bin"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MB = 1e6  # the goals' megabyte: 10^6 bytes

# Issue 16's goals ("Done when"), each judged by one kind of row below.
#: Ingest: Relay's CPU-s per stream-second at most this times nginx-rtmp's (`hls on`).
INGEST_RATIO_GOAL = 0.9
#: Memory: resident MB per active 6 Mbit/s stream (RSS at N streams less the idle RSS, / N).
STREAM_MEMORY_GOAL_MB = 8.0
#: Memory: resident MB of a freshly started `relay serve`, settled, before any API call.
IDLE_MEMORY_GOAL_MB = 80.0
#: Scale: 600 kbit/s publishers real-time on one core (and never fewer than nginx-rtmp).
SCALE_GOAL = 2500
#: Viewers: LL-HLS viewers of one 6 Mbit/s stream on one core, p99 part delivery in time.
VIEWERS_GOAL = 1000
#: Latency: the part target (s) at which hls.js's latency is judged ...
LOW_PART_TARGET = 0.2
#: ... against this (s) ...
HLS_JS_GOAL_S = 1.0
#: ... with the relay's CPU per stream at most this times its figure at Relay's default
#: part target (ll_hls_latency.PART_TARGET), both measured in the same run.
PART_TARGET_CPU_RATIO_GOAL = 1.10

#: The idle RSS is read once VmRSS moved less than IDLE_RSS_STEADY_KIB over
#: IDLE_RSS_STEADY_S (polled every IDLE_RSS_POLL_S), at most IDLE_RSS_WAIT_S after
#: `relay serve` logged ready.
IDLE_RSS_STEADY_KIB = 64
IDLE_RSS_STEADY_S = 0.5
IDLE_RSS_POLL_S = 0.1
IDLE_RSS_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    media_seconds: int  # length of the prepared clips (looped by the publishers)
    publishers: tuple[int, ...]
    repeats: int
    warmup: float
    window: float
    idle_connections: int
    parser_seconds: float
    latency_seconds: float
    browser: bool
    scale_steps: tuple[int, ...]  # publisher counts tried in turn until one is not real-time
    scale_seconds: float
    viewer_steps: tuple[int, ...]  # viewer counts tried in turn until parts are late
    viewer_seconds: float
    srt_publishers: tuple[int, ...]  # SRT ingest cost: stream counts
    simulcast_targets: tuple[int, ...] = (0, 1, 2)  # simulcast fan-out: target counts
    latency_repeats: int = 1  # hls.js runs per part target, in ABBA order
    part_cost_repeats: int = 1  # pinned part-cost runs per part target, in ABBA order


PROFILES = {
    "full": Profile("full", 20, (1, 4, 16), 3, 5.0, 20.0, 1000, 5.0, 20.0, True,
                    (100, 200, 400, 800, 1000, 1200, 1600, 2000, 2500, 3000), 20.0,
                    (25, 50, 100, 200, 300, 400, 600, 800, 1000, 1200), 10.0,
                    srt_publishers=(1, 4), simulcast_targets=(0, 1, 4, 16),
                    latency_repeats=2, part_cost_repeats=4),
    "quick": Profile("quick", 10, (1, 4), 3, 3.0, 8.0, 500, 1.0, 10.0, True,
                     (50, 100, 200), 10.0, (25, 50, 100), 5.0, srt_publishers=(1, 4),
                     simulcast_targets=(0, 1, 2), part_cost_repeats=2),
    "smoke": Profile("smoke", 4, (1,), 1, 1.5, 2.0, 20, 0.05, 4.0, False, (5,), 3.0,
                     (3,), 2.0, srt_publishers=(1,), simulcast_targets=(0, 1, 2)),
}


@dataclass(slots=True)
class Row:
    scenario: str
    case: str
    unit: str
    relay: float | None = None
    peers: dict[str, float | None] = field(default_factory=dict)
    goal: str = ""
    verdict: str = ""  # pass, miss, not measured: why
    note: str = ""


# -- machine and media ------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info = ll_hls_latency.machine()
    info["ffmpeg"] = _first_line([shutil.which("ffmpeg") or "ffmpeg", "-version"])
    info["nginx"] = _first_line([str(NGINX), "-v"]) if NGINX.exists() else None
    program = srt_live_transmit()
    info["srt-live-transmit"] = _first_line([program, "-version"]) if program else None
    return info


def _first_line(args: list[str]) -> str | None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else None


def prepare_media(seconds: int) -> dict[str, Path]:
    """The test clips, made once with ffmpeg and kept under benchmarks/media/ (ignored)."""
    MEDIA_DIR.mkdir(parents=True, exist_ok=True)
    clips = {"6mbps": (6000, 1280, 720), "600kbps": (600, 640, 360)}
    paths = {}
    for name, (kbps, width, height) in clips.items():
        path = MEDIA_DIR / f"{name}-{seconds}s.flv"
        if not path.exists():
            partial = path.with_suffix(".part.flv")
            subprocess.run(
                ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                 f"testsrc2=size={width}x{height}:rate=30", "-f", "lavfi", "-i",
                 "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
                 "-c:v", "libx264", "-preset", "veryfast", "-b:v", f"{kbps}k",
                 "-maxrate", f"{kbps}k", "-bufsize", f"{kbps * 2}k", "-g", "60",
                 "-keyint_min", "60", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
                 "-c:a", "aac", "-b:a", "128k" if kbps > 1000 else "64k",
                 "-f", "flv", str(partial)], check=True, timeout=600)
            partial.rename(path)
        paths[name] = path
    return paths


# -- measuring processes (the peers themselves are in benchmarks/peers/) -------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from the kernel's accounting."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and of every live descendant (a supervisor and
    its workers, a postmaster and its backends). A descendant that exited is not counted:
    read it while the tree is whole."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # it exited while the table was read
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))  # ppid
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            total += cpu_seconds(current)
        except OSError:
            continue
        todo.extend(children.get(current, ()))
    return total


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU-seconds of every core since boot, from the first line of /proc/stat
    (proc(5)): busy is everything but idle and iowait."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(ticks[:8])  # guest time is already inside user and nice
    return (total - ticks[3] - ticks[4]) / CLOCK_TICKS, total / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def settled_rss_kib(pid: int) -> int:
    """VmRSS (KiB) once it has moved less than IDLE_RSS_STEADY_KIB over IDLE_RSS_STEADY_S,
    or the last reading IDLE_RSS_WAIT_S after the call (a server just started)."""
    began = time.monotonic()
    readings = [(began, rss_kib(pid))]
    while time.monotonic() - began < IDLE_RSS_WAIT_S:
        time.sleep(IDLE_RSS_POLL_S)
        now = time.monotonic()
        readings.append((now, rss_kib(pid)))
        recent = [kib for at, kib in readings if at >= now - IDLE_RSS_STEADY_S]
        if (now - began >= IDLE_RSS_STEADY_S
                and max(recent) - min(recent) < IDLE_RSS_STEADY_KIB):
            break
    return readings[-1][1]


def judge(value: float | None, goal: float, *, at_most: bool, unit: str = "",
          digits: int = 2) -> tuple[str, str]:
    """(verdict, distance): "pass" or "miss" against `goal`, and for a miss how far off,
    in the row's unit (a pass says nothing more)."""
    if value is None:
        return "miss", "nothing measured"
    if (value <= goal) if at_most else (value >= goal):
        return "pass", ""
    gap = f"{abs(value - goal):,.{digits}f}{unit}"
    return "miss", f"{gap} {'over' if at_most else 'short of'} the goal"


def libsrt_thread_seconds(pid: int) -> float:
    """Run time (s) of the process's live libsrt threads (libsrt names them "SRT:RcvQ:w1",
    "SRT:TsbPd", ...), from the scheduler's nanosecond accounting (/proc/PID/task/TID/
    schedstat), which sees what tick sampling would miss in threads this light."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().startswith("SRT:"):
                total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
    return total / 1e9


@contextmanager
def publishers(urls: list[str], media: Path,
               muxer: str = "flv") -> Iterator[list[subprocess.Popen[bytes]]]:
    """ffmpeg pushing the clip in a loop, in real time, without re-encoding: `flv` for RTMP,
    `mpegts` for SRT (ffmpeg's TS muxer inserts h264_mp4toannexb and ADTS headers itself)."""
    started = [subprocess.Popen(
        ["ffmpeg", "-v", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i", str(media),
         "-c", "copy", "-f", muxer, url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for url in urls]
    try:
        yield started
    finally:
        for process in started:
            terminate(process)


# -- scenarios ----------------------------------------------------------------------------------


def available_peers(log: Callable[[str], None]) -> list[type[Server]]:
    peers: list[type[Server]] = [RelayServer]
    for peer in (NginxServer, PyrtmpServer):
        why = peer.available()
        if why:
            log(f"  {peer.name}: skipped, {why}")
        else:
            peers.append(peer)
    return peers


def ingest_cost(profile: Profile, media: Path, work: Path, peers: list[type[Server]],
                log: Callable[[str], None]) -> list[Row]:
    """CPU per 6 Mbit/s stream pushed by ffmpeg, and resident memory: idle (each server's
    RSS after start-up, settled, before the suite's first API call and before any
    publisher) and per active stream ((RSS at N streams - idle RSS) / N)."""
    rows = []
    idle_all: dict[str, list[float]] = {}  # MB, every start of the server
    for count in profile.publishers:
        samples: dict[str, list[float]] = {}
        rss: dict[str, list[float]] = {}
        per_stream: dict[str, list[float]] = {}  # MB per stream beyond the idle RSS
        windows: list[float] = []  # relay: MB per stream its live windows hold
        api: list[float] = []  # relay: MB the API calls (creating the streams) added
        problems: dict[str, str] = {}
        for repeat in range(profile.repeats):
            order = peers if repeat % 2 == 0 else list(reversed(peers))
            for make in order:
                server = make()
                server.start(work / f"{server.name}-{count}-{repeat}")
                try:
                    idle = settled_rss_kib(server.pid)  # before any API call
                    urls = server.publish_urls(count)  # Relay: creates the streams
                    created = rss_kib(server.pid)
                    with publishers(urls, media) as running:
                        time.sleep(profile.warmup)
                        before = cpu_seconds(server.pid)
                        began = time.monotonic()
                        time.sleep(profile.window)
                        used = cpu_seconds(server.pid) - before
                        elapsed = time.monotonic() - began
                        alive = sum(p.poll() is None for p in running)
                        memory = rss_kib(server.pid)
                        window = server.window_bytes()
                        if window is not None:
                            windows.append(window / count / MB)
                        problem = server.check_output(count)
                        if alive < count:
                            problem = f"{count - alive} publisher(s) dropped; {problem}"
                finally:
                    server.stop()
                samples.setdefault(server.name, []).append(used / (count * elapsed))
                rss.setdefault(server.name, []).append(memory / 1024)
                idle_all.setdefault(server.name, []).append(idle * 1024 / MB)
                per_stream.setdefault(server.name, []).append(
                    (memory - idle) * 1024 / count / MB)
                if server.name == "relay":
                    api.append((created - idle) * 1024 / MB)
                if problem:
                    problems[server.name] = problem.strip("; ")
                log(f"  ingest {count} x 6 Mbps, {server.name}, run {repeat + 1}: "
                    f"{used / (count * elapsed):.5f} CPU-s per stream-s, "
                    f"RSS {memory / 1024:.1f} MiB (idle {idle / 1024:.1f} MiB)"
                    f"{' (' + problem + ')' if problem else ''}")
        relay = statistics.median(samples["relay"])
        nginx = statistics.median(samples["nginx-rtmp"]) if "nginx-rtmp" in samples else None
        row = Row("ingest cost", f"{count} x 6 Mbps pushed by ffmpeg, LL-HLS + recording on",
                  "CPU-s / stream-s", relay,
                  {name: statistics.median(v) for name, v in samples.items() if name != "relay"},
                  goal=f"relay <= {INGEST_RATIO_GOAL:g} x nginx-rtmp (hls on)")
        if nginx is None:
            row.verdict = "not measured: nginx-rtmp missing"
        else:
            ratio = relay / nginx
            row.verdict, distance = judge(ratio, INGEST_RATIO_GOAL, at_most=True, unit=" x")
            row.note = "; ".join(filter(None, [f"ratio {ratio:.2f}", distance]))
        if problems:
            row.note = "; ".join(filter(None, [row.note, *(f"{k}: {v}"
                                                          for k, v in problems.items())]))
        rows.append(row)
        rows.append(Row("ingest memory", f"{count} x 6 Mbps", "RSS MiB",
                        statistics.median(rss["relay"]),
                        {n: statistics.median(v) for n, v in rss.items() if n != "relay"}))
        relay_mb = statistics.median(per_stream["relay"])
        verdict, distance = judge(relay_mb, STREAM_MEMORY_GOAL_MB, at_most=True, unit=" MB")
        notes = [distance, f"(RSS after {profile.warmup:g} + {profile.window:g} s of "
                 f"publishing - the idle RSS read before the API calls) / {count}"]
        if windows:
            window_mb = statistics.median(windows)
            notes.append(f"live windows {window_mb:.2f} MB per stream "
                         f"(relay_hls_live_window_bytes), {relay_mb - window_mb:.2f} MB beyond")
        if api:
            notes.append(f"creating the streams through the API added "
                         f"{statistics.median(api):.2f} MB in all before any publisher")
        rows.append(Row(
            "memory", f"resident per active 6 Mbps stream, {count} stream(s)", "MB",
            round(relay_mb, 2),
            {n: round(statistics.median(v), 2) for n, v in per_stream.items() if n != "relay"},
            goal=f"<= {STREAM_MEMORY_GOAL_MB:g} MB", verdict=verdict,
            note="; ".join(filter(None, notes))))
    relay_idle = statistics.median(idle_all["relay"])
    verdict, distance = judge(relay_idle, IDLE_MEMORY_GOAL_MB, at_most=True, unit=" MB")
    rows.append(Row(
        "memory", "idle: `relay serve` with the suite's options, settled, no stream", "MB",
        round(relay_idle, 1),
        {n: round(statistics.median(v), 1) for n, v in idle_all.items() if n != "relay"},
        goal=f"<= {IDLE_MEMORY_GOAL_MB:g} MB", verdict=verdict,
        note="; ".join(filter(None, [
            distance, f"VmRSS read at each ingest run's start, once it moved less than "
            f"{IDLE_RSS_STEADY_KIB} KiB over {IDLE_RSS_STEADY_S:g} s (at most "
            f"{IDLE_RSS_WAIT_S:g} s) after `relay serve` logged ready: before the suite's "
            f"first API call and before any publisher; median of "
            f"{len(idle_all['relay'])} starts"]))))
    return rows


def srt_ingest_cost(profile: Profile, media: Path, work: Path, log: Callable[[str], None],
                    rtmp_rows: list[Row] | None = None) -> list[Row]:
    """CPU per 6 Mbps SRT stream of Relay (LL-HLS and recording on) against srt-live-transmit
    receiving the same publishers in the same run (issue 13); Relay's RTMP figure for the same
    count, when `rtmp_rows` has it, goes in the note."""
    receivers: list[type[SrtReceiver]] = [RelaySrt]
    missing = SrtLiveTransmitPeer.available()
    if missing:
        log(f"  srt-live-transmit: skipped, {missing}")
    else:
        receivers.append(SrtLiveTransmitPeer)
    clip_mbps = media.stat().st_size * 8 / profile.media_seconds / 1e6
    rows = []
    for count in profile.srt_publishers:
        samples: dict[str, list[float]] = {}
        libsrt: dict[str, list[float]] = {}  # the part in libsrt's own threads
        rss: dict[str, list[float]] = {}
        problems: dict[str, str] = {}
        for repeat in range(profile.repeats):
            order = receivers if repeat % 2 == 0 else list(reversed(receivers))
            for make in order:
                receiver = make()
                try:
                    urls = receiver.start(work / f"srt-{receiver.name}-{count}-{repeat}", count)
                    with publishers(urls, media, muxer="mpegts") as running:
                        time.sleep(profile.warmup)
                        before = sum(cpu_seconds(pid) for pid in receiver.pids)
                        threads = sum(libsrt_thread_seconds(pid) for pid in receiver.pids)
                        wrote = receiver.written()
                        began = time.monotonic()
                        time.sleep(profile.window)
                        used = sum(cpu_seconds(pid) for pid in receiver.pids) - before
                        threads = sum(libsrt_thread_seconds(pid)
                                      for pid in receiver.pids) - threads
                        elapsed = time.monotonic() - began
                        after = receiver.written()
                        memory = sum(rss_kib(pid) for pid in receiver.pids)
                        alive = sum(p.poll() is None for p in running)
                        found = [f"{count - alive} publisher(s) dropped"] if alive < count else []
                        found.append(receiver.check_output(count))
                        delivered = ""
                        if wrote is not None and after is not None:
                            mbps = (after - wrote) * 8 / elapsed / count / 1e6
                            delivered = f", wrote {mbps:.2f} Mbit/s per stream"
                            if mbps < clip_mbps / 2:
                                found.append(f"wrote {mbps:.2f} Mbit/s per stream of a "
                                             f"{clip_mbps:.2f} Mbit/s clip")
                        problem = "; ".join(text for text in found if text)
                finally:
                    receiver.stop()
                per_stream = used / (count * elapsed)
                samples.setdefault(receiver.name, []).append(per_stream)
                libsrt.setdefault(receiver.name, []).append(threads / (count * elapsed))
                rss.setdefault(receiver.name, []).append(memory / 1024)
                if problem:
                    problems[receiver.name] = problem
                log(f"  SRT ingest {count} x 6 Mbps, {receiver.name}, run {repeat + 1}: "
                    f"{per_stream:.5f} CPU-s per stream-s (libsrt's threads "
                    f"{threads / (count * elapsed):.5f}), RSS {memory / 1024:.1f} MiB"
                    f"{delivered}{' (' + problem + ')' if problem else ''}")
        case = f"{count} x 6 Mbps, LL-HLS on"
        relay = statistics.median(samples["relay"])
        peer = (statistics.median(samples[SrtLiveTransmitPeer.name])
                if SrtLiveTransmitPeer.name in samples else None)
        row = Row("SRT ingest cost", case, "CPU-s / stream-s", relay,
                  {SrtLiveTransmitPeer.name: peer}, goal="report (no goal yet)")
        notes = []
        if peer is None:
            row.verdict = f"not measured: {missing}"
        else:
            row.verdict = "reported" if not problems else "problem"
            notes.append(f"ratio {relay / peer:.2f} x srt-live-transmit" if peer > 0 else
                         "srt-live-transmit used no CPU tick in the window")
        rtmp = next((r.relay for r in rtmp_rows or ()
                     if r.scenario == "ingest cost" and r.case.startswith(f"{count} x ")),
                    None)
        notes.append("in libsrt's threads: " + ", ".join(
            f"{name} {statistics.median(values):.5f}" for name, values in libsrt.items()))
        if rtmp:
            notes.append(f"relay over RTMP in this run {rtmp:.5f}, SRT {relay / rtmp:.2f} x RTMP")
        notes += [f"{k}: {v}" for k, v in problems.items()]
        row.note = "; ".join(notes)
        rows.append(row)
        rows.append(Row("SRT ingest memory", f"{count} x 6 Mbps", "RSS MiB",
                        statistics.median(rss["relay"]),
                        {SrtLiveTransmitPeer.name: statistics.median(rss[SrtLiveTransmitPeer.name])
                         if SrtLiveTransmitPeer.name in rss else None},
                        note="srt-live-transmit: the sum over its processes, one per stream"))
    return rows


async def _idle_connections(host: str, port: int, count: int) -> list[asyncio.StreamWriter]:
    """Open `count` connections that complete the RTMP handshake, then stay silent."""
    writers = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"\x03" + bytes(1536))
        s0s1s2 = await asyncio.wait_for(reader.readexactly(1 + 1536 + 1536), 5)
        writer.write(s0s1s2[1:1537])  # C2 echoes S1
        await writer.drain()
        writers.append(writer)
    return writers


async def _idle_rss(host: str, port: int, count: int, pid: int) -> int:
    """RSS (KiB) of `pid` while `count` handshaken connections sit idle on it."""
    writers = await _idle_connections(host, port, count)
    await asyncio.sleep(0.5)
    after = rss_kib(pid)
    for writer in writers:
        writer.close()
    return after


def idle_memory(profile: Profile, work: Path, peers: list[type[Server]],
                log: Callable[[str], None]) -> list[Row]:
    results: dict[str, float] = {}
    for make in peers:
        server = make()
        server.start(work / f"idle-{server.name}")
        try:
            time.sleep(0.5)
            before = rss_kib(server.pid)
            host, port = server.rtmp_address()
            after = asyncio.run(_idle_rss(host, port, profile.idle_connections, server.pid))
        finally:
            server.stop()
        results[server.name] = (after - before) / profile.idle_connections
        log(f"  idle connections, {server.name}: {results[server.name]:.1f} KiB each "
            f"({profile.idle_connections} connections)")
    relay = results.pop("relay")
    return [Row("memory", f"per idle RTMP connection ({profile.idle_connections})", "KiB",
                relay, dict(results), goal="<= 32 KiB",
                verdict="pass" if relay <= 32 else "miss")]


def parsers(profile: Profile, log: Callable[[str], None]) -> list[Row]:
    rows = []
    python = sys.executable
    for name, args in (("synthetic ffmpeg-like stream", []),
                       ("captured ffmpeg publish 320x240",
                        ["--input", str(VECTOR), "--with-handshake"])):
        out = subprocess.run([python, str(ROOT / "benchmarks" / "chunk_demux.py"), "--seconds",
                              str(profile.parser_seconds), *args], capture_output=True,
                             text=True, check=True, timeout=300).stdout
        relay = _mb_s(r"demux: median ([\d,.]+) MB/s", out)
        peers: dict[str, float | None] = {}
        if PYRTMP_PYTHON.exists() and args:
            peer = subprocess.run([str(PYRTMP_PYTHON),
                                   str(ROOT / "benchmarks" / "pyrtmp_chunks.py"),
                                   "--seconds", str(profile.parser_seconds), *args],
                                  capture_output=True, text=True, check=True,
                                  timeout=300).stdout
            peers["pyrtmp"] = _mb_s(r"pyrtmp demux: median ([\d,.]+) MB/s", peer)
        log(f"  chunk demux, {name}: {relay:,.0f} MB/s")
        rows.append(Row("parsers", f"RTMP chunk demux, {name}", "MB/s", relay, peers,
                        goal=">= 1000 MB/s", verdict="pass" if relay >= 1000 else "miss"))
    rate = fmp4_rate(profile.parser_seconds)
    log(f"  fMP4 writer: {rate:,.0f} MB/s")
    rows.append(Row("parsers", "fMP4 media fragment writer, 720p-sized part", "MB/s", rate))
    out = subprocess.run([python, str(ROOT / "benchmarks" / "ts_demux.py"), "--seconds",
                          str(profile.parser_seconds)], capture_output=True, text=True,
                         check=True, timeout=900).stdout
    relay = _mb_s(r"demux \(1316-byte feeds\): median ([\d,.]+) MB/s", out)
    log(f"  TS demux, 6 Mbit/s 720p H.264 + AAC, 1316-byte feeds: {relay:,.0f} MB/s")
    rows.append(Row("parsers", "MPEG-TS demux, ffmpeg 6 Mbit/s 720p H.264 + AAC, 1316-byte feeds",
                    "MB/s", relay, goal=">= 1000 MB/s",
                    verdict="pass" if relay >= 1000 else "miss"))
    return rows


def _mb_s(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"no figure in: {text}")
    return float(match.group(1).replace(",", ""))


def fmp4_rate(seconds: float) -> float:
    """MB/s of fragments written for a 0.3 s part of 720p video (9 frames) plus audio."""
    video = [fmp4.Sample(duration=3000, keyframe=i == 0, composition_offset=0,
                         data=bytes(90_000 if i == 0 else 25_000)) for i in range(9)]
    audio = [fmp4.Sample(duration=1024, keyframe=True, composition_offset=0, data=bytes(380))
             for _ in range(14)]
    runs = (fmp4.TrackRun(track_id=1, base_media_decode_time=0, samples=tuple(video)),
            fmp4.TrackRun(track_id=2, base_media_decode_time=0, samples=tuple(audio)))
    fmp4.init_segment([VideoConfig(Codec.H264, b"\x01d\x00\x1f\xff\xe1\x00\x00\x01\x00\x00",
                                   1280, 720, "avc1.64001f", 30.0),
                       AudioConfig(Codec.AAC, b"\x11\x90", 48000, 2, "mp4a.40.2")])
    rates: list[float] = []
    deadline = time.perf_counter() + max(seconds, 0.05)
    while len(rates) < 5 or time.perf_counter() < deadline:
        began = time.perf_counter()
        written = 0
        for sequence in range(1, 201):
            written += len(fmp4.media_fragment(sequence, runs))
        rates.append(written / (time.perf_counter() - began) / 1e6)
    return statistics.median(rates)


def latency(profile: Profile, work: Path, log: Callable[[str], None]) -> list[Row]:
    """`ll_hls_latency.py` at Relay's default part target and at LOW_PART_TARGET: the
    part-advertise delay (p99 judged against PART-TARGET + 50 ms at each); the relay's CPU
    per stream with a player-like client on a core of its own (`part_cost`), whose ratio
    between the two targets is judged; hls.js's latency (judged at LOW_PART_TARGET) with the
    relay's CPU over the hls.js window reported beside it. Runs at the two targets alternate
    (default, low, low, default, ...) so drift on the machine falls on both."""
    targets = (ll_hls_latency.PART_TARGET, LOW_PART_TARGET)
    default, low = targets
    rows = []
    for target in targets:
        part = asyncio.run(ll_hls_latency.part_delay(profile.latency_seconds, work, target))
        log(f"  part advertised at PART-TARGET {target:g} s: p50 {part['p50_ms']} ms, "
            f"p99 {part['p99_ms']} ms")
        aim = part["aim_p99_ms"]
        verdict, distance = judge(part["p99_ms"], aim, at_most=True, unit=" ms", digits=1)
        rows.append(Row("latency", f"part advertised after frame arrival, p99, PART-TARGET "
                        f"{target:g} s", "ms", part["p99_ms"], goal=f"<= {aim} ms",
                        verdict=verdict, note="; ".join(filter(None, [
                            distance, f"p50 {part['p50_ms']} ms, max {part['max_ms']} ms, "
                            f"{part['frames']} frames"]))))
    rows += _part_cost_rows(profile, work, log)
    if not profile.browser:
        why = f"not measured: the {profile.name} run skips the browser"
        return [*rows,
                Row("latency", f"hls.js latency in Chromium, PART-TARGET {low:g} s",
                    "s", goal=f"<= {HLS_JS_GOAL_S:g} s", verdict=why)]
    runs: dict[float, list[dict[str, Any]]] = {target: [] for target in targets}
    for repeat in range(profile.latency_repeats):
        for target in targets if repeat % 2 == 0 else tuple(reversed(targets)):
            js = ll_hls_latency.hls_js_latency(profile.latency_seconds, work, target)
            runs[target].append(js)
            log(f"  hls.js at PART-TARGET {target:g} s, run {repeat + 1}: median "
                f"{js['median_s']} s; relay {js['relay_cpu_per_s']} CPU-s per s")
    median = {target: statistics.median(js["median_s"] for js in found)
              for target, found in runs.items()}
    cpu = {target: [js["relay_cpu_per_s"] for js in found
                    if js["relay_cpu_per_s"] is not None] for target, found in runs.items()}
    cpu_median = {target: statistics.median(values) if values else None
                  for target, values in cpu.items()}
    each = f"median of {profile.latency_repeats} run(s) of {profile.latency_seconds:g} s"
    verdict, distance = judge(median[low], HLS_JS_GOAL_S, at_most=True, unit=" s", digits=3)
    rows += [
        Row("latency", f"hls.js latency in Chromium, median, PART-TARGET {default:g} s", "s",
            median[default], note=f"reported beside {low:g} s; {each}"),
        Row("latency", f"hls.js latency in Chromium, median, PART-TARGET {low:g} s", "s",
            median[low], goal=f"<= {HLS_JS_GOAL_S:g} s", verdict=verdict,
            note="; ".join(filter(None, [distance, each])))]
    base, lowered = cpu_median[default], cpu_median[low]
    ratio = f"ratio {lowered / base:.2f}; " if base and lowered is not None else ""
    rows.append(Row(
        "latency", f"relay CPU per stream during hls.js, PART-TARGET {low:g} s "
        f"(against {default:g} s)", "CPU-s / stream-s", lowered,
        note=f"{ratio}at {default:g} s: {'-' if base is None else f'{base:.5f}'}; "
             f"utime + stime of the relay's pid over the hls.js sampling window, one "
             f"320x240 stream (ffmpeg) and one player, with Chromium and the encoder on the "
             f"same two cores (not judged: see the pinned row); {each}"))
    return rows


def _part_cost_rows(profile: Profile, work: Path, log: Callable[[str], None]) -> list[Row]:
    """The relay's CPU per stream at LOW_PART_TARGET against Relay's default, from
    `ll_hls_latency.part_cost` (the relay alone on CPU 0; a paced publisher and a client
    that does what hls.js does on the other cores); judged on the ratio of the medians."""
    targets = (ll_hls_latency.PART_TARGET, LOW_PART_TARGET)
    default, low = targets
    case = (f"relay CPU per stream with a player-like client, PART-TARGET {low:g} s against "
            f"{default:g} s, relay pinned to one core")
    goal = f"<= {PART_TARGET_CPU_RATIO_GOAL:.2f} x"
    cores = os.sched_getaffinity(0)
    if len(cores) < 2 or 0 not in cores:
        return [Row("latency", case, "CPU-s / stream-s", goal=goal,
                    verdict="not measured: needs CPU 0 and another core")]
    cpu: dict[float, list[float]] = {target: [] for target in targets}
    for repeat in range(profile.part_cost_repeats):
        for target in targets if repeat % 2 == 0 else tuple(reversed(targets)):
            cost = asyncio.run(ll_hls_latency.part_cost(profile.latency_seconds, work, target))
            cpu[target].append(cost["relay_cpu_per_s"])
            log(f"  relay CPU with a player-like client at PART-TARGET {target:g} s, run "
                f"{repeat + 1}: {cost['relay_cpu_per_s']} CPU-s per s ("
                f"{cost['parts_fetched']} parts fetched)")
    base, lowered = statistics.median(cpu[default]), statistics.median(cpu[low])
    each = (f"median of {profile.part_cost_repeats} run(s) of {profile.latency_seconds:g} s "
            f"(at {default:g} s: {', '.join(f'{v:.4f}' for v in cpu[default])}; at "
            f"{low:g} s: {', '.join(f'{v:.4f}' for v in cpu[low])})")
    how = ("utime + stime of the relay's pid; the relay alone on CPU 0, the 320x240 clip "
           "published in real time and one client (blocking reload for each next part, "
           "each listed part fetched on a second connection) on the others")
    if not base:
        return [Row("latency", case, "CPU-s / stream-s", lowered, goal=goal,
                    verdict="not measured: no CPU reading at the default part target",
                    note=f"{how}; {each}")]
    ratio = lowered / base
    verdict, distance = judge(ratio, PART_TARGET_CPU_RATIO_GOAL, at_most=True, unit=" x")
    return [Row("latency", case, "CPU-s / stream-s", lowered, goal=goal, verdict=verdict,
                note="; ".join(filter(None, [f"ratio {ratio:.2f}", distance,
                                             f"at {default:g} s: {base:.5f}", how, each])))]


def scale(profile: Profile, media: Path, work: Path, peers: list[type[Server]],
          log: Callable[[str], None]) -> list[Row]:
    """The most 600 kbps publishers each server keeps real-time on one core (CPU 0), driven
    by the load generator on another (CPU 1)."""
    tags = loadgen.read_flv(media)
    cores = os.sched_getaffinity(0)
    best: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for make in peers:
        if make is PyrtmpServer:
            continue  # far below the others; its cost is measured by the ingest rows
        name = make.name
        best[name] = None
        for count in profile.scale_steps:
            server = make()
            server.start(work / f"scale-{name}-{count}")
            try:
                if len(cores) > 1:
                    os.sched_setaffinity(server.pid, {min(cores)})
                    os.sched_setaffinity(0, cores - {min(cores)})
                host, port = server.rtmp_address()
                keys = server.stream_keys(count)
                report = asyncio.run(loadgen.run(
                    host, port, keys, tags, profile.scale_seconds,
                    check=functools.partial(server.check_output, count)))
            except (OSError, RuntimeError, TimeoutError) as exc:
                notes[name] = f"{count}: {exc}"
                log(f"  scale {name} {count}: failed: {exc}")
                break
            finally:
                os.sched_setaffinity(0, cores)
                server.stop()
            log(f"  scale {name} {count} x 600 kbps: behind {report.behind}, closed "
                f"{report.closed}, worst lag {report.worst_lag_s} s, generator late ticks "
                f"{report.late_ticks}, {report.sent_mbps} Mbit/s each"
                f"{'; ' + report.output_problem if report.output_problem else ''}")
            if report.behind or report.closed or report.output_problem:
                notes[name] = (f"at {count}: {report.behind} behind, {report.closed} closed, "
                               f"worst lag {report.worst_lag_s} s {report.output_problem}")
                break
            best[name] = count
    relay = best.pop("relay")
    steps = profile.scale_steps
    nginx = best.get("nginx-rtmp")
    verdict, found = scale_verdict(
        int(relay or 0), None if "nginx-rtmp" not in best else int(nginx or 0), steps,
        profile.name)
    found += [f"{k} {v}" for k, v in notes.items()]
    return [Row("scale", "600 kbps publishers real-time on one core (steps "
                f"{','.join(map(str, steps))})", "publishers", relay, best,
                goal=f">= {SCALE_GOAL:,} and >= nginx-rtmp (same run)", verdict=verdict,
                note="; ".join(found))]


def scale_verdict(kept: int, nginx: int | None, steps: tuple[int, ...],
                  profile_name: str) -> tuple[str, list[str]]:
    """Issue 16's scale goal for `kept` (publishers Relay kept real-time, 0 when not even
    the first step): >= SCALE_GOAL, and never fewer than nginx-rtmp's `nginx` in the same
    run (None: nginx-rtmp was not measured). (verdict, notes with the distance)."""
    found: list[str] = []
    if kept >= SCALE_GOAL:
        verdict = "pass"
    elif kept == steps[-1]:
        verdict = f"not judged: the {profile_name} run stops at {kept:,}"
    else:
        verdict = "miss"
        found.append(f"{SCALE_GOAL - kept:,} short of {SCALE_GOAL:,}")
    if nginx is None:
        found.append("never fewer than nginx-rtmp: not measured, nginx-rtmp missing")
        verdict = "not measured: nginx-rtmp missing" if verdict == "pass" else verdict
    elif kept < nginx:
        verdict = "miss"
        found.append(f"{nginx - kept:,} fewer than nginx-rtmp's {nginx:,} in this run")
    return verdict, found


def viewers_verdict(best: int | None, late: bool, steps: tuple[int, ...],
                    profile_name: str) -> tuple[str, list[str]]:
    """Issue 16's viewers goal for `best` (the most viewers served on time, None: not even
    the first step), `late` when a step was late. (verdict, notes with the distance)."""
    if (best or 0) >= VIEWERS_GOAL:
        return "pass", []
    if not late:  # every step on time, the last one below the goal
        return f"not judged: the {profile_name} run stops at {steps[-1]:,}", []
    return "miss", [f"{VIEWERS_GOAL - (best or 0):,} short of {VIEWERS_GOAL:,}"]


def viewers(profile: Profile, media: Path, work: Path, log: Callable[[str], None]) -> list[Row]:
    """The most simulated LL-HLS viewers (`viewers.py`) of one `low` stream that one Relay
    process (on CPU 0) serves with p99 part delivery under PART-TARGET; the paced publisher
    and the viewers run in this process, on the other core."""
    cores = os.sched_getaffinity(0)
    server = RelayServer()
    server.start(work / "viewers")
    reports: list[viewer_sim.ViewerReport] = []
    relay_rate: dict[int, float | None] = {}  # viewers -> requests per relay CPU-second
    part_files: list[Path] = []  # parts fetched from the relay, for nginx to serve
    problem = ""
    try:
        if len(cores) > 1:
            os.sched_setaffinity(server.pid, {min(cores)})
            os.sched_setaffinity(0, cores - {min(cores)})
        key = server.stream_keys(1)[0]
        assert server.process is not None
        playback_id = server.streams[0]["playback_ids"][0]["id"]
        cpu = [cpu_seconds(server.pid), time.monotonic(), _run_delay(server.pid)]
        http_url = server.process.http_url

        def report(result: viewer_sim.ViewerReport) -> None:
            used, now, waited = cpu_seconds(server.pid), time.monotonic(), _run_delay(server.pid)
            relay_cpu = (used - cpu[0]) / (now - cpu[1])
            relay_wait = (waited - cpu[2]) / (now - cpu[1])
            cpu[:] = [used, now, waited]
            rate = relay_rate[result.viewers] = (result.requests_per_s / relay_cpu
                                                 if relay_cpu > 0 else None)
            if not part_files:  # between steps: the feed's pacing has the warm-up to recover
                part_files.extend(_save_parts(http_url, playback_id, work / "viewer-parts"))
            log(f"  viewers {result.viewers}: part delivery p50 {result.p50_ms} ms, p99 "
                f"{result.p99_ms} ms (segments' first parts {result.p99_first_part_ms} ms), "
                f"max {result.max_ms} ms ({result.parts} parts); "
                f"{result.requests_per_s} requests/s, {result.mbit_per_s} Mbit/s; errors "
                f"{result.errors}{' (' + result.first_error + ')' if result.errors else ''}; "
                f"CPU relay {relay_cpu:.2f} (its main thread waited for a CPU "
                f"{relay_wait:.3f} s/s{f'; {rate:,.0f} requests per CPU-second' if rate else ''}"
                f"), client {result.client_cpu} (waited for a CPU "
                f"{result.client_wait} s/s; publisher's latest tick {result.feed_late_max_ms} "
                f"ms late)")

        reports = viewer_sim.run_loop(viewer_sim.measure(
            server.rtmp_address(), key, server.process.http_url, playback_id,
            media, profile.viewer_steps, warmup=2.0,
            seconds=profile.viewer_seconds, report=report))
    except (OSError, viewer_sim.ViewerError, TimeoutError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
        log(f"  viewers: failed: {problem}")
    finally:
        os.sched_setaffinity(0, cores)
        server.stop()
    passed = [r.viewers for r in reports if r.on_time]
    best = max(passed) if passed else None
    late = next((r for r in reports if not r.on_time), None)
    steps = profile.viewer_steps
    notes: list[str] = []
    if problem:
        verdict = "not measured"
        notes.append(problem)
    else:
        verdict, notes = viewers_verdict(best, late is not None, steps, profile.name)
    if late is not None:
        notes.append(f"at {late.viewers:,}: p99 {late.p99_ms} ms, {late.errors} errors"
                     + (f", client CPU {late.client_cpu}" if late.client_cpu > 0.9 else ""))
    rows = [Row("viewers", "LL-HLS viewers of one 6 Mbps stream on one core, p99 part "
                f"delivery <= PART-TARGET (steps {','.join(map(str, steps))})",
                "viewers", best, goal=f">= {VIEWERS_GOAL:,}", verdict=verdict,
                note="; ".join(notes))]
    if part_files:
        rows.append(_parts_per_cpu_second(
            profile, work, best, None if best is None else relay_rate.get(best), part_files,
            log))
    return rows


def _run_delay(pid: int) -> float:
    """Seconds the main thread of `pid` has waited on a run queue (/proc/PID/schedstat): a
    step whose relay or client waited long shared its core with other processes."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


#: Parts fetched from the relay during the viewers scenario for nginx to serve as files.
NGINX_PARTS = 8
#: Keep-alive connections that ask nginx for those parts, one request at a time each.
NGINX_PART_CONNECTIONS = 100


def _save_parts(http_url: str, playback_id: str, folder: Path) -> list[Path]:
    """The last NGINX_PARTS parts the relay's playlist lists, written to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    with httpx.Client(base_url=http_url, timeout=15) as client:
        playlist = client.get(f"/{playback_id}/rendition.m3u8")
        playlist.raise_for_status()
        listed, _ = viewer_sim.listed_parts(playlist.text)
        saved = []
        for part in listed[-NGINX_PARTS:]:
            answer = client.get(f"/{playback_id}/{part.uri}")
            answer.raise_for_status()
            path = folder / Path(part.uri).name
            path.write_bytes(answer.content)
            saved.append(path)
    return saved


async def _fetch_files(port: int, names: list[str], connections: int, warmup: float,
                       seconds: float, pid: int) -> tuple[int, float]:
    """(requests answered, the server's CPU-seconds) over `seconds` after `warmup`, with
    `connections` keep-alive connections each asking for `names` in turn."""
    opened = [await viewer_sim.Connection.open("127.0.0.1", port) for _ in range(connections)]
    counting = asyncio.Event()
    stop = asyncio.Event()
    done = [0]

    async def ask(connection: viewer_sim.Connection, offset: int) -> None:
        index = offset
        while not stop.is_set():
            await connection.get(f"/{names[index % len(names)]}")
            index += 1
            if counting.is_set() and not stop.is_set():
                done[0] += 1

    tasks = [asyncio.create_task(ask(c, i)) for i, c in enumerate(opened)]
    try:
        await asyncio.sleep(warmup)
        counting.set()
        before = cpu_seconds(pid)
        await asyncio.sleep(seconds)
        stop.set()
        used = cpu_seconds(pid) - before
        for task in tasks:
            if task.done() and task.exception() is not None:
                raise RuntimeError(f"a request to nginx failed: {task.exception()}")
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for connection in opened:
            connection.close()
    return done[0], used


def _parts_per_cpu_second(profile: Profile, work: Path, viewers: int | None,
                          relay_rate: float | None, files: list[Path],
                          log: Callable[[str], None]) -> Row:
    """Issue 16's comparison for the viewers goal: requests per CPU-second, Relay (its
    viewers' blocking reloads and parts at its best step) beside nginx serving the same
    parts as static files (pinned to the relay's core, NGINX_PART_CONNECTIONS keep-alive
    connections from this process on the other core)."""
    case = "requests per CPU-second: relay's viewers; nginx serving the same parts as files"
    missing = NginxServer.available()
    if missing:
        return Row("viewers", case, "requests / CPU-s", relay_rate,
                   verdict=f"not measured: {missing}")
    cores = os.sched_getaffinity(0)
    port = free_port()
    prefix = work / "nginx-parts"
    process = start_nginx(prefix, f"    listen 127.0.0.1:{free_port()};", f"""
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    root {files[0].parent};
    types {{ video/mp4 m4s; }}
  }}
}}""", connections=NGINX_PART_CONNECTIONS + 64)
    problem = ""
    try:
        wait_port(port, process)
        if len(cores) > 1:
            os.sched_setaffinity(process.pid, {min(cores)})
            os.sched_setaffinity(0, cores - {min(cores)})
        answered, used = asyncio.run(_fetch_files(
            port, [path.name for path in files], NGINX_PART_CONNECTIONS, 1.0,
            profile.viewer_seconds, process.pid))
    except (OSError, RuntimeError, viewer_sim.ViewerError, asyncio.IncompleteReadError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
        answered, used = 0, 0.0
    finally:
        os.sched_setaffinity(0, cores)
        terminate(process)
    nginx = answered / used if used > 0 else None
    log(f"  nginx serving {len(files)} parts as files: {answered} requests in "
        f"{profile.viewer_seconds:g} s, {used:.2f} CPU-s"
        + (f" ({problem})" if problem else ""))
    relay = ("relay: no step on time" if viewers is None else
             f"relay: all requests (blocking reloads and parts) per CPU-second of the relay "
             f"over its {viewers:,}-viewer step (connect, warm-up, window)")
    notes = [f"{relay}; nginx: "
             f"{NGINX_PART_CONNECTIONS} keep-alive connections asking for {len(files)} of "
             f"the relay's parts as static files, nginx pinned to the relay's core",
             *([problem] if problem else []),
             *(["nginx used no CPU tick in the window"] if not problem and not used else [])]
    return Row("viewers", case, "requests / CPU-s", relay_rate, {"nginx-rtmp": nginx},
               goal="report", verdict="not measured" if problem else "reported",
               note="; ".join(notes))


# -- simulcast fan-out ------------------------------------------------------------------------

#: How long a fan-out server may take until every target receives (s): Relay's targets start
#: when the stream is active (its first segment, one 2 s GOP of the clip), then connect.
SIMULCAST_READY_TIMEOUT = 20.0
#: A target that received less than this share of the clip's rate over the window is a
#: problem of the run, not a figure.
SIMULCAST_MIN_DELIVERY = 0.5


def run_seconds(pid: int) -> float:
    """Run time (s) of all the process's live threads, from the scheduler's nanosecond
    accounting (/proc/PID/task/TID/schedstat): a fan-out target costs nginx-rtmp a tick or
    two of /proc/PID/stat's 10 ms a second, too coarse to subtract from."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
    return total / 1e9


def _until_received(sink: RtmpSink, names: list[str], timeout: float) -> str:
    """Wait until the sink receives every one of `names`; "" or what is missing."""
    deadline = time.monotonic() + timeout
    first: dict[str, int] = {}
    while True:
        now = sink.bytes_in()
        first = {name: first.get(name, now[name]) for name in names if name in now}
        if all(name in now and now[name] > first[name] for name in names):
            return ""
        if time.monotonic() > deadline:
            missing = [name for name in names if name not in now]
            return (f"{len(missing)} of {len(names)} target(s) not receiving after "
                    f"{timeout:g} s")
        time.sleep(0.25)


def simulcast(profile: Profile, media: Path, work: Path,
              log: Callable[[str], None]) -> list[Row]:
    """CPU per extra 6 Mbps simulcast target (issue 14): the fan-out server's CPU-seconds
    per second with N targets, less its own with none, per target; Relay against nginx-rtmp's
    `push` in the same run, both pushing to one nginx-rtmp sink."""
    missing = NginxServer.available()
    if missing:
        log(f"  simulcast: skipped, {missing}")
        return [Row("simulcast", "CPU per extra 6 Mbps target", "CPU-s / target-s",
                    goal="relay <= nginx-rtmp per target",
                    verdict=f"not measured: {missing} (it is the targets' server too)")]
    clip_mbps = media.stat().st_size * 8 / profile.media_seconds / 1e6
    servers: list[type[FanOut]] = [RelayFanOut, NginxFanOut]
    cpu: dict[tuple[str, int], list[float]] = {}  # (server, targets) -> CPU-s per s
    delivered: dict[tuple[str, int], list[float]] = {}  # Mbit/s per target, the lowest
    problems: dict[str, str] = {}
    for repeat in range(profile.repeats):
        for count in profile.simulcast_targets:
            order = servers if (repeat + count) % 2 == 0 else list(reversed(servers))
            for make in order:
                server, sink = make(), RtmpSink()
                run_dir = work / f"simulcast-{server.name}-{count}-{repeat}"
                names = [f"t{index}" for index in range(count)]
                problem = ""
                try:
                    sink.start(run_dir)
                    url = server.start(run_dir, [sink.url(name) for name in names])
                    with publishers([url], media) as running:
                        problem = _until_received(sink, names, SIMULCAST_READY_TIMEOUT)
                        time.sleep(profile.warmup)
                        received = sink.bytes_in()
                        before = run_seconds(server.pid)
                        began = time.monotonic()
                        time.sleep(profile.window)
                        used = run_seconds(server.pid) - before
                        elapsed = time.monotonic() - began
                        after = sink.bytes_in()
                        if running[0].poll() is not None:
                            problem = f"the publisher dropped; {problem}"
                finally:
                    server.stop()
                    sink.stop()
                rates = [(after.get(n, 0) - received.get(n, 0)) * 8 / elapsed / 1e6
                         for n in names]
                slowest = min(rates, default=clip_mbps)
                if slowest < clip_mbps * SIMULCAST_MIN_DELIVERY:
                    problem += (f"; a target received {slowest:.2f} Mbit/s of a "
                                f"{clip_mbps:.2f} Mbit/s clip")
                problem = problem.strip("; ")
                if problem:
                    problems[f"{server.name} {count}"] = problem
                cpu.setdefault((server.name, count), []).append(used / elapsed)
                if names:
                    delivered.setdefault((server.name, count), []).append(slowest)
                log(f"  simulcast {count} target(s), {server.name}, run {repeat + 1}: "
                    f"{used / elapsed:.4f} CPU-s per s"
                    + (f", slowest target {slowest:.2f} Mbit/s" if names else "")
                    + (f" ({problem})" if problem else ""))
    median = {key: statistics.median(values) for key, values in cpu.items()}
    rows = []
    fits = {name: marginal_cost(cpu, name) for name in ("relay", "nginx-rtmp")}
    relay_fit, nginx_fit = fits["relay"], fits["nginx-rtmp"]
    if relay_fit is not None and nginx_fit is not None:
        counts = sorted(count for count in profile.simulcast_targets if count > 0)
        row = Row("simulcast", f"CPU per extra 6 Mbps target, marginal ({counts[0]}..{counts[-1]} "
                  "targets, least squares over every run)", "CPU-s / target-s",
                  relay_fit.slope, {"nginx-rtmp": nginx_fit.slope},
                  goal="relay <= nginx-rtmp per target")
        found = [f"{key}: {text}" for key, text in problems.items() if not key.endswith(" 0")]
        row.verdict = "problem" if found else (
            "pass" if relay_fit.slope <= nginx_fit.slope else "miss")
        notes = [f"ratio {relay_fit.slope / nginx_fit.slope:.2f}" if nginx_fit.slope > 0
                 else "nginx-rtmp: no CPU per target"]
        if relay_fit.error is not None and nginx_fit.error is not None:
            difference = relay_fit.slope - nginx_fit.slope
            spread = math.hypot(relay_fit.error, nginx_fit.error)
            notes.append(f"standard error relay {relay_fit.error:.5f}, nginx-rtmp "
                         f"{nginx_fit.error:.5f}")
            if spread > 0:
                notes.append(f"difference {difference:+.5f} is "
                             f"{abs(difference) / spread:.1f} standard errors")
        row.note = "; ".join([*notes, *found])
        rows.append(row)
        fixed = {name: fit.intercept - median[(name, 0)] for name, fit in
                 (("relay", relay_fit), ("nginx-rtmp", nginx_fit))}
        rows.append(Row(
            "simulcast", "CPU of fanning out at all: the fitted line at 0 targets less the "
            "0-target runs' median", "CPU-s / s", fixed["relay"],
            {"nginx-rtmp": fixed["nginx-rtmp"]},
            note="0-target runs relay " + ", ".join(f"{v:.4f}" for v in cpu[("relay", 0)])
                 + ", nginx-rtmp " + ", ".join(f"{v:.4f}" for v in cpu[("nginx-rtmp", 0)])
                 + " CPU-s/s"))
    for count in profile.simulcast_targets:
        if count == 0:
            continue
        per_target = {name: (median[(name, count)] - median[(name, 0)]) / count
                      for name in ("relay", "nginx-rtmp")}
        relay, nginx = per_target["relay"], per_target["nginx-rtmp"]
        row = Row("simulcast", f"CPU per extra 6 Mbps target, {count} target(s) against 0",
                  "CPU-s / target-s", relay, {"nginx-rtmp": nginx})
        found = [f"{key}: {text}" for key, text in problems.items()
                 if key.endswith(f" {count}") or key.endswith(" 0")]
        notes = [f"ratio {relay / nginx:.2f}" if nginx > 0 else "nginx-rtmp: no CPU beyond 0",
                 "runs relay " + ", ".join(f"{v:.4f}" for v in cpu[("relay", count)])
                 + ", nginx-rtmp " + ", ".join(f"{v:.4f}" for v in cpu[("nginx-rtmp", count)])
                 + " CPU-s/s",
                 f"at 0 targets relay {median[('relay', 0)]:.4f}, nginx-rtmp "
                 f"{median[('nginx-rtmp', 0)]:.4f} CPU-s/s",
                 "slowest target " + ", ".join(
                     f"{name} {statistics.median(delivered[(name, count)]):.2f}"
                     for name in ("relay", "nginx-rtmp")) + " Mbit/s", *found]
        row.note = "; ".join(notes)
        rows.append(row)
    return rows


@dataclass
class Fit:
    """A least-squares line through (targets, CPU-s per s) and its slope's standard error."""
    slope: float
    intercept: float
    error: float | None  # None from a line through two points


def marginal_cost(cpu: dict[tuple[str, int], list[float]], name: str) -> Fit | None:
    """What each extra target costs `name`: the slope of a line fitted to every run with at
    least one target. One target against none mixes the fan-out's fixed cost (turning it on
    at all) with the per-target one, and its difference is smaller than the server's own
    run-to-run spread at 0 targets; every run at every count narrows the slope instead."""
    points = [(count, value) for (server, count), values in cpu.items()
              if server == name and count > 0 for value in values]
    if len({count for count, _ in points}) < 2:
        return None
    xs, ys = [float(count) for count, _ in points], [value for _, value in points]
    slope, intercept = statistics.linear_regression(xs, ys)
    mean = statistics.fmean(xs)
    spread = sum((x - mean) ** 2 for x in xs)
    residual = sum((value - (intercept + slope * count)) ** 2 for count, value in points)
    error = math.sqrt(residual / (len(points) - 2) / spread) if len(points) > 2 else None
    return Fit(slope, intercept, error)


# -- output -----------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    peers = sorted({name for row in rows for name in row.peers})
    header = ["scenario", "case", "unit", "relay", *peers, "goal", "result"]
    lines = [header]
    for row in rows:
        lines.append([row.scenario, row.case, row.unit, _fmt(row.relay),
                      *[_fmt(row.peers.get(p)) for p in peers], row.goal,
                      (row.verdict + (f" ({row.note})" if row.note else "")).strip()])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
                   .rstrip())
        if index == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.5f}"


#: Scenario names for --only, in the order a run takes them.
SCENARIOS = ("parsers", "ingest", "srt", "memory", "latency", "scale", "viewers",
             "simulcast")


def _scenario_names(text: str) -> tuple[str, ...]:
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = names - set(SCENARIOS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(sorted(unknown)) or '(none given)'}: "
            f"choose from {', '.join(SCENARIOS)}")
    return tuple(name for name in SCENARIOS if name in names)


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected counts like 100,200, got {text!r}")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a few minutes")
    mode.add_argument("--smoke", action="store_true", help="seconds; no goals are judged")
    parser.add_argument("--only", type=_scenario_names, default=SCENARIOS,
                        metavar="NAME[,NAME]",
                        help=f"run only these scenarios, of: {', '.join(SCENARIOS)}")
    parser.add_argument("--json", type=Path, help="where to write the results (default: "
                        "results/suite-PROFILE.json, or suite-PROFILE-only-NAMES.json "
                        "with --only)")
    parser.add_argument("--viewer-steps", type=_counts, metavar="N[,N]",
                        help="the viewers scenario's steps instead of the profile's (to "
                        "compare servers at one load: RELAY_PLAYBACK_SERVER=asgi|lean)")
    args = parser.parse_args()
    profile = PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.viewer_steps:
        profile = dataclasses.replace(profile, viewer_steps=args.viewer_steps)
    only: tuple[str, ...] = args.only
    suffix = "" if only == SCENARIOS else "-only-" + "-".join(only)
    target = args.json or RESULTS_DIR / f"suite-{profile.name}{suffix}.json"

    def log(line: str) -> None:
        print(line, flush=True)

    began = time.monotonic()
    log(f"Relay benchmark suite, {profile.name} run")
    peers = available_peers(log)
    media = prepare_media(profile.media_seconds)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        work = Path(tmp)
        if "parsers" in only:
            log("parsers")
            rows += parsers(profile, log)
        if "ingest" in only:
            log("ingest cost")
            rows += ingest_cost(profile, media["6mbps"], work, peers, log)
        if "srt" in only:
            log("SRT ingest cost")
            rows += srt_ingest_cost(profile, media["6mbps"], work, log, rtmp_rows=rows)
        if "memory" in only:
            log("memory")
            rows += idle_memory(profile, work, peers, log)
        if "latency" in only:
            log("latency")
            rows += latency(profile, work, log)
        if "scale" in only:
            log("scale")
            rows += scale(profile, media["600kbps"], work, peers, log)
        if "viewers" in only:
            log("viewers")
            rows += viewers(profile, media["6mbps"], work, log)
        if "simulcast" in only:
            log("simulcast fan-out")
            rows += simulcast(profile, media["6mbps"], work, log)
    if profile.name == "smoke":
        for row in rows:
            if row.verdict in ("pass", "miss"):
                row.verdict = "(smoke: not judged)"
    print()
    print(table(rows))
    result = {"suite": profile.name, "date": time.strftime("%Y-%m-%d"), "machine": machine(),
              "profile": asdict(profile), "scenarios": list(only),
              "seconds": round(time.monotonic() - began, 1),
              "rows": [asdict(row) for row in rows]}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {target} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
