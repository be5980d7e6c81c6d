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
   /proc/PID/stat and RSS from /proc/PID/status; median of the repeats, peers alternating;
   SRT ingest cost: 1 and 4 publishers (`ffmpeg -re -stream_loop -1 -c copy -f mpegts` of
   the same clip to `srt://`, encrypted) into Relay (LL-HLS and recording on) and into one
   `srt-live-transmit` listener per stream (srt-tools; TS to stdout on /dev/null): CPU-seconds
   per stream-second of the receiving process(es) and their RSS, reported beside Relay's own
   RTMP figure from the same run;
3. memory per idle RTMP connection (handshaken, then silent);
4. latency: part advertised after frame arrival (p50/p99) and hls.js latency in Chromium
   (`ll_hls_latency.py`);
5. scale: the most 600 kbps publishers a server keeps real-time on one core, stepping up the
   count; publishers come from `loadgen.py` (one process, paced, pre-muxed media) on the
   other core;
6. LL-HLS viewers: the most simulated viewers (`viewers.py`: blocking reloads and part
   fetches, as hls.js does) of one `low` 6 Mbps stream that Relay serves on one core with
   p99 part delivery under PART-TARGET;
7. simulcast: CPU per extra 6 Mbps target: one publisher (the 6 Mbps clip, `-c copy`) into
   Relay with 0, 1, 2 (full: 0, 1, 4, 16) simulcast targets, and into an nginx-rtmp whose
   application has as many `push` lines, all to one nginx-rtmp sink; the fan-out server's
   CPU-seconds (its threads' run time, /proc/PID/task/TID/schedstat) per target-second
   beyond its own 0-target run. One target costs less than either server's run-to-run
   spread at 0 targets on this machine, so the full run's 16 targets are the figure that
   resolves the per-target cost; 1 and 4 show the small fan-outs users mostly run.

Each goal row says pass, miss, or "not measured" with the reason.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import ll_hls_latency, loadgen  # noqa: E402
from benchmarks import viewers as viewer_sim  # noqa: E402
from benchmarks.peers.fan_out import FanOut, NginxFanOut, RelayFanOut  # noqa: E402
from benchmarks.peers.processes import terminate  # noqa: E402
from benchmarks.peers.rtmp import (  # noqa: E402
    NGINX,
    PYRTMP_PYTHON,
    NginxServer,
    PyrtmpServer,
    RelayServer,
    RtmpSink,
    Server,
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


PROFILES = {
    "full": Profile("full", 20, (1, 4, 16), 3, 5.0, 20.0, 1000, 5.0, 20.0, True,
                    (100, 200, 400, 800, 1000, 1200, 1400, 1600, 2000, 3000), 20.0,
                    (25, 50, 100, 200, 300, 400, 600, 800), 10.0, srt_publishers=(1, 4),
                    simulcast_targets=(0, 1, 4, 16)),
    "quick": Profile("quick", 10, (1, 4), 3, 3.0, 8.0, 500, 1.0, 10.0, True,
                     (50, 100, 200), 10.0, (25, 50, 100), 5.0, srt_publishers=(1, 4),
                     simulcast_targets=(0, 1, 2)),
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
    rows = []
    for count in profile.publishers:
        samples: dict[str, list[float]] = {}
        rss: dict[str, list[float]] = {}
        beyond: list[float] = []  # relay: MB per stream beyond its live window
        problems: dict[str, str] = {}
        for repeat in range(profile.repeats):
            order = peers if repeat % 2 == 0 else list(reversed(peers))
            for make in order:
                server = make()
                server.start(work / f"{server.name}-{count}-{repeat}")
                try:
                    urls = server.publish_urls(count)
                    idle = rss_kib(server.pid)
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
                            beyond.append(((memory - idle) * 1024 - window) / count / 1e6)
                        problem = server.check_output(count)
                        if alive < count:
                            problem = f"{count - alive} publisher(s) dropped; {problem}"
                finally:
                    server.stop()
                samples.setdefault(server.name, []).append(used / (count * elapsed))
                rss.setdefault(server.name, []).append(memory / 1024)
                if problem:
                    problems[server.name] = problem.strip("; ")
                log(f"  ingest {count} x 6 Mbps, {server.name}, run {repeat + 1}: "
                    f"{used / (count * elapsed):.5f} CPU-s per stream-s, "
                    f"RSS {memory / 1024:.1f} MiB{' (' + problem + ')' if problem else ''}")
        relay = statistics.median(samples["relay"])
        nginx = statistics.median(samples["nginx-rtmp"]) if "nginx-rtmp" in samples else None
        row = Row("ingest cost", f"{count} x 6 Mbps, LL-HLS on", "CPU-s / stream-s", relay,
                  {name: statistics.median(v) for name, v in samples.items() if name != "relay"},
                  goal="relay <= 1.0 x nginx-rtmp (hls on)")
        if nginx is None:
            row.verdict = "not measured: nginx-rtmp missing"
        else:
            row.verdict = "pass" if relay <= nginx else "miss"
            row.note = f"ratio {relay / nginx:.2f}"
        if problems:
            row.note += "; " + "; ".join(f"{k}: {v}" for k, v in problems.items())
        rows.append(row)
        rows.append(Row("ingest memory", f"{count} x 6 Mbps", "RSS MiB",
                        statistics.median(rss["relay"]),
                        {n: statistics.median(v) for n, v in rss.items() if n != "relay"}))
        if beyond:
            per_stream = statistics.median(beyond)
            rows.append(Row(
                "memory", f"per active 6 Mbps stream beyond its live window, {count} streams",
                "MB", round(per_stream, 2), goal="<= 2 MB",
                verdict="pass" if per_stream <= 2 else "miss",
                note=f"RSS growth less the live windows' media, after {profile.warmup:g} + "
                     f"{profile.window:g} s"))
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
                     if r.scenario == "ingest cost" and r.case == case), None)
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
    part = asyncio.run(ll_hls_latency.part_delay(profile.latency_seconds, work))
    log(f"  part advertised: p50 {part['p50_ms']} ms, p99 {part['p99_ms']} ms")
    rows = [Row("latency", "part advertised after frame arrival, p50", "ms", part["p50_ms"]),
            Row("latency", "part advertised after frame arrival, p99", "ms", part["p99_ms"],
                goal=f"<= {part['aim_p99_ms']} ms", verdict="pass" if part["pass"] else "miss")]
    if profile.browser:
        js = ll_hls_latency.hls_js_latency(profile.latency_seconds, work)
        log(f"  hls.js latency: median {js['median_s']} s")
        rows.append(Row("latency", "hls.js latency in Chromium, median", "s", js["median_s"],
                        goal=f"<= {js['aim_s']} s", verdict="pass" if js["pass"] else "miss"))
    else:
        rows.append(Row("latency", "hls.js latency in Chromium", "s", goal="<= 1.5 s",
                        verdict=f"not measured: {profile.name} run skips the browser"))
    return rows


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
    note = "; ".join(f"{k} {v}" for k, v in notes.items())
    if relay is not None and relay >= 2000:
        verdict = "pass"
    elif relay == profile.scale_steps[-1]:
        verdict = f"not judged: the {profile.name} run stops at {relay}"
    else:
        verdict = "miss"
    return [Row("scale", "600 kbps publishers real-time on one core (steps "
                f"{','.join(map(str, profile.scale_steps))})", "publishers", relay, best,
                goal=">= 2000", verdict=verdict, note=note)]


def viewers(profile: Profile, media: Path, work: Path, log: Callable[[str], None]) -> list[Row]:
    """The most simulated LL-HLS viewers (`viewers.py`) of one `low` stream that one Relay
    process (on CPU 0) serves with p99 part delivery under PART-TARGET; the paced publisher
    and the viewers run in this process, on the other core."""
    cores = os.sched_getaffinity(0)
    server = RelayServer()
    server.start(work / "viewers")
    reports: list[viewer_sim.ViewerReport] = []
    problem = ""
    try:
        if len(cores) > 1:
            os.sched_setaffinity(server.pid, {min(cores)})
            os.sched_setaffinity(0, cores - {min(cores)})
        key = server.stream_keys(1)[0]
        assert server.process is not None
        playback_id = server.streams[0]["playback_ids"][0]["id"]
        cpu = [cpu_seconds(server.pid), time.monotonic()]

        def report(result: viewer_sim.ViewerReport) -> None:
            used, now = cpu_seconds(server.pid), time.monotonic()
            relay_cpu = (used - cpu[0]) / (now - cpu[1])
            cpu[:] = [used, now]
            log(f"  viewers {result.viewers}: part delivery p50 {result.p50_ms} ms, p99 "
                f"{result.p99_ms} ms, max {result.max_ms} ms ({result.parts} parts); "
                f"{result.requests_per_s} requests/s, {result.mbit_per_s} Mbit/s; errors "
                f"{result.errors}{' (' + result.first_error + ')' if result.errors else ''}; "
                f"CPU relay {relay_cpu:.2f}, client {result.client_cpu}")

        reports = asyncio.run(viewer_sim.measure(
            server.rtmp_address(), key, server.process.http_url, playback_id,
            loadgen.read_flv(media), profile.viewer_steps, warmup=2.0,
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
    if problem:
        note = problem
    elif late is not None:
        note = (f"at {late.viewers}: p99 {late.p99_ms} ms, {late.errors} errors"
                + (f", client CPU {late.client_cpu}" if late.client_cpu > 0.9 else ""))
    else:
        note = f"the {profile.name} run stops at {best}"
    return [Row("viewers", "LL-HLS viewers of one 6 Mbps stream on one core, p99 part "
                f"delivery <= PART-TARGET (steps {','.join(map(str, profile.viewer_steps))})",
                "viewers", best, goal="report (no goal yet)",
                verdict="not measured" if problem else "measured", note=note)]


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
