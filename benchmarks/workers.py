"""`relay serve --workers 2` against one worker: the most 600 kbit/s publishers kept real-time.

    .venv/bin/python benchmarks/workers.py [--steps 100,200,300] [--seconds 10]
                                           [--budget 900] [--json PATH]

Both runs use the same throwaway PostgreSQL cluster (testkit/postgres.py; --workers needs it),
a new database and a new `relay serve` for each step, with LL-HLS and recording on. Each step
publishes the suite's 600 kbit/s clip (640x360, 2 s GOP, AAC; benchmarks/media/, made by
`suite.prepare_media`) to that many new streams at once from `loadgen.py` (one process,
paced in real time, pre-muxed media) for `--seconds`, to the one RTMP port; a step passes
when every publish is accepted and no connection ends more than `loadgen.LAG_LIMIT` seconds
of media behind or closed. The steps alternate (one worker, then two, at each count) so both
see the machine's load of the same minutes; each worker count stops at its first failure.
The figure per worker count is the last step that passed; the ratio is two workers' over
one's (issue 19 aims at >= 1.8).

Nothing is pinned: on this two-core machine the load generator shares the cores with the
workers (and with PostgreSQL), so two workers cannot have two whole cores, and other work on
the machine moves the figures; treat one run with care. So each step also says where the
CPU went while the media ran (CPU-seconds per second: the relay's processes, the generator,
PostgreSQL, everything else, idle; `CpuShares`), and the summary turns one worker's limit
into the most two workers could reach on this machine with this generator on it (`explain`):
a ratio below 1.8 with a ceiling below 1.8 is the machine's, not the workers'. Bounded:
steps stop at the first failure and once `--budget` seconds have gone in all (the note then
says so).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import loadgen  # noqa: E402
from benchmarks.suite import machine_busy_seconds, prepare_media, tree_cpu_seconds  # noqa: E402
from testkit.postgres import PostgresCluster  # noqa: E402
from testkit.relay_process import RelayProcess  # noqa: E402

TOKEN = ("workers-bench", "workers-bench-secret-0123456789-abcdefgh")
DEFAULT_STEPS = (50, 100, 150, 200, 250, 300, 400, 500, 600, 800)
AIM_RATIO = 1.8
WORKER_COUNTS = (1, 2)
#: Streams created by one API request each, this many at a time.
CREATE_CONCURRENCY = 20
_METRICS = re.compile(r"metrics listening on (\S+)")
_OPEN = re.compile(r"^relay_rtmp_open_connections ([0-9.e+]+)$", re.MULTILINE)


@dataclass(slots=True)
class Step:
    publishers: int
    passed: bool
    behind: int = 0
    closed: int = 0
    worst_lag_s: float = 0.0
    late_ticks: int = 0
    per_worker_connections: list[int] = field(default_factory=list)
    #: CPU-seconds per second while the media ran, per party (see `CpuShares`).
    cpu: dict[str, float] = field(default_factory=dict)
    problem: str = ""


class CpuShares:
    """Where the machine's CPU goes while the media runs: the relay (the supervisor and its
    workers), the load generator (this process: its Python and the kernel's work for its
    sends, which on loopback includes much of the receiving side's TCP), PostgreSQL (the
    postmaster and its backends), everything else on the machine, and what stayed idle."""

    def __init__(self, relay_pid: int, postmaster_pid: int) -> None:
        self.pids = {"relay": relay_pid, "postgres": postmaster_pid}
        self._start: dict[str, float] = {}
        self.shares: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        busy, total = machine_busy_seconds()
        read = {name: tree_cpu_seconds(pid) for name, pid in self.pids.items()}
        read |= {"generator": usage.ru_utime + usage.ru_stime, "busy": busy, "total": total,
                 "wall": time.monotonic()}
        return read

    def phase(self, starting: bool) -> None:
        if starting:
            self._start = self._read()
            return
        end = self._read()
        spent = {name: end[name] - self._start[name] for name in end}
        wall = spent.pop("wall")
        busy, total = spent.pop("busy"), spent.pop("total")
        shares = {name: round(value / wall, 3) for name, value in spent.items()}
        shares["other"] = round(max(0.0, busy - sum(spent.values())) / wall, 3)
        shares["idle"] = round(max(0.0, total - busy) / wall, 3)
        self.shares = shares


async def create_streams(base: str, count: int) -> list[str]:
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, auth=TOKEN, timeout=60) as client:
        async def one() -> str:
            async with gate:
                answer = await client.post("/video/v1/live-streams", json={
                    "playback_policies": ["public"], "latency_mode": "standard",
                    "reconnect_window": 0,
                    "new_asset_settings": {"playback_policies": ["public"]}})
                answer.raise_for_status()
                return str(answer.json()["data"]["stream_key"])
        return list(await asyncio.gather(*(one() for _ in range(count))))


def open_per_worker(relay: RelayProcess) -> list[int]:
    """Open RTMP connections in each worker's metrics (a metrics port of its own each)."""
    counts = []
    for line in list(relay.lines):
        match = _METRICS.search(line)
        if match is None:
            continue
        text = httpx.get(match.group(1), timeout=30).text
        found = _OPEN.search(text)
        counts.append(int(float(found.group(1))) if found else 0)
    return counts


def run_step(cluster: PostgresCluster, workers: int, count: int, tags: list[loadgen.Tag],
             seconds: float, work: Path) -> Step:
    url = cluster.create_database()
    relay = RelayProcess(work / f"w{workers}-{count}", token=TOKEN, extra_args=[
        "--database-url", url, "--workers", str(workers), "--srt-port", "0",
        "--rtmp-max-connections", str(max(1000, 2 * count)),
        "--rtmp-max-connections-per-ip", str(2 * count)])
    relay.start(timeout=120)
    shares = CpuShares(relay.pid, cluster.postmaster_pid())
    try:
        keys = asyncio.run(create_streams(relay.http_url, count))
        host, port = relay.urls["rtmp"].removeprefix("rtmp://").split("/")[0].rsplit(":", 1)
        spread: list[int] = []

        def check() -> str:
            spread[:] = open_per_worker(relay)
            return ""

        try:
            report = asyncio.run(loadgen.run(host, int(port), keys, tags, seconds,
                                             check=check, media_phase=shares.phase))
        except (OSError, RuntimeError, TimeoutError) as exc:
            return Step(count, False, problem=str(exc)[:200])
        passed = (report.published == count and not report.behind and not report.closed)
        return Step(count, passed, report.behind, report.closed, report.worst_lag_s,
                    report.late_ticks, spread, shares.shares)
    finally:
        relay.stop(timeout=120)


def measure(cluster: PostgresCluster, steps: tuple[int, ...], tags: list[loadgen.Tag],
            seconds: float, deadline: float, work: Path) -> dict[int, dict[str, Any]]:
    """Each step for one worker then for two, while each still passes: both see the
    machine's load of the same minutes."""
    results: dict[int, dict[str, Any]] = {
        n: {"best": None, "note": "", "steps": []} for n in WORKER_COUNTS}
    going = set(WORKER_COUNTS)
    for count in steps:
        for workers in WORKER_COUNTS:
            if workers not in going:
                continue
            result = results[workers]
            if time.monotonic() > deadline:
                result["note"] = f"time budget spent before {count}"
                going.discard(workers)
                continue
            step = run_step(cluster, workers, count, tags, seconds, work)
            result["steps"].append(asdict(step))
            print(f"  --workers {workers}, {count} x 600 kbit/s: "
                  f"{'real-time' if step.passed else 'NOT real-time'} (behind {step.behind}, "
                  f"closed {step.closed}, worst lag {step.worst_lag_s} s, generator late "
                  f"ticks {step.late_ticks}, connections per worker "
                  f"{step.per_worker_connections}, CPU-s/s {step.cpu})"
                  f"{' ' + step.problem if step.problem else ''}",
                  flush=True)
            if step.passed:
                result["best"] = count
            else:
                going.discard(workers)
        if not going:
            break
    for workers in going:
        results[workers]["note"] = f"the last step ({steps[-1]}) passed: not the limit"
    return results


def best_step(result: dict[str, Any]) -> dict[str, Any] | None:
    return next((step for step in result["steps"] if step["publishers"] == result["best"]),
                None)


def explain(measured: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """What the CPU shares at each worker count's best step say: the relay's CPU per
    publisher (does a second worker cost more per publisher?), and the ratio this machine
    allows at most. At one worker's limit the relay fills about one core while the load
    generator, the kernel's loopback work charged to it, and PostgreSQL take their share of
    the other; with two workers all of them share the machine's cores, so the most two
    workers can carry is cores / (CPU-s/s per publisher of everything but the relay's idle),
    and the ceiling is that over one worker's figure."""
    cores = os.cpu_count() or 1
    explained: dict[str, Any] = {"cores": cores}
    for workers, result in measured.items():
        step = best_step(result)
        if step is None or not step["cpu"]:
            continue
        shares, count = step["cpu"], step["publishers"]
        explained[f"workers_{workers}_relay_ms_per_publisher_s"] = round(
            1000 * shares["relay"] / count, 3)
        print(f"  --workers {workers} at {count}: relay {shares['relay']}, generator "
              f"{shares['generator']}, PostgreSQL {shares['postgres']}, other "
              f"{shares['other']}, idle {shares['idle']} CPU-s/s; the relay spends "
              f"{1000 * shares['relay'] / count:.3f} ms of CPU per publisher-second")
    one = best_step(measured[1])
    limited = any(not step["passed"] for step in measured[1]["steps"])
    if one is not None and one["cpu"] and not limited:
        print("  no ceiling: one worker passed every step it ran, so its limit is unknown")
    elif one is not None and one["cpu"]:
        needed = sum(one["cpu"][name] for name in ("relay", "generator", "postgres"))
        explained["ceiling_ratio"] = round(cores / needed, 2) if needed else None
        print(f"  the most this {cores}-core machine allows two workers, with this generator "
              f"on it: {explained['ceiling_ratio']} x one worker (cores / the relay, generator "
              f"and PostgreSQL CPU-s/s at one worker's limit, {needed:.2f})")
    return explained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default=",".join(map(str, DEFAULT_STEPS)),
                        help="publisher counts tried in turn (comma-separated)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="seconds each step publishes for")
    parser.add_argument("--budget", type=float, default=900.0,
                        help="seconds after which each worker count tries no further step")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    steps = tuple(int(n) for n in args.steps.split(","))
    tags = loadgen.read_flv(prepare_media(10)["600kbps"])
    results: dict[str, Any] = {"command": " ".join(sys.argv), "machine": platform.node(),
                               "steps": steps, "seconds": args.seconds}
    cluster = PostgresCluster()
    cluster.start()
    try:
        with tempfile.TemporaryDirectory(prefix="relay-workers-bench-") as tmp:
            measured = measure(cluster, steps, tags, args.seconds,
                               time.monotonic() + args.budget, Path(tmp))
    finally:
        cluster.stop()
    for workers, result in measured.items():
        results[f"workers_{workers}"] = result
    one, two = measured[1]["best"], measured[2]["best"]
    ratio = round(two / one, 2) if one and two else None
    results["ratio"] = ratio
    results["aim_ratio"] = AIM_RATIO
    print(f"600 kbit/s publishers real-time: --workers 1: {one}, --workers 2: {two}, "
          f"ratio {ratio} (aim >= {AIM_RATIO})")
    results["cpu"] = explain(measured)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
