"""SIGTERM with many live sessions: `relay serve` ends them all, finalizes every recording and
writes every event, and exits 0, in less time than Docker gives a container (10 s before
SIGKILL).

Sessions come from the benchmark load generator (`benchmarks/loadgen.py`, run as its own
process): one paced RTMP connection per stream, media muxed once for all. The CI run brings
up 300; the 2,000-session run is marked slow and runs when RELAY_SLOW_TESTS=1 (it takes a
minute or two and about 5,000 file descriptors):

    RELAY_SLOW_TESTS=1 /work/wt/run.sh pytest -s tests/integration/test_stop.py

The stop time is printed for the record; only the 2,000-session run asserts the 10 s budget,
which is what it is there to show (on a busy 2-core machine the figure varies).
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from relay.store import Store
from testkit.encoders import FFMPEG, needs_ffmpeg
from testkit.relay_process import RelayProcess
from tests.conftest import sqlite_url
from tests.integration.helpers.rtmp_ingest import TOKEN

pytestmark = needs_ffmpeg

ROOT = Path(__file__).parent.parent.parent

#: What Docker waits after SIGTERM before it sends SIGKILL (`docker stop`'s default).
DOCKER_STOP_SECONDS = 10.0

ENDED = re.compile(r"ended (\d+) live session\(s\) in ([0-9.]+) s")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cheap clip to publish thousands of times: 64x64 at 5 fps with a keyframe each
    second, 8 kHz mono AAC (12 messages a second, about 20 kbit/s)."""
    assert FFMPEG is not None
    path = tmp_path_factory.mktemp("clip") / "tiny.flv"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=64x64:rate=5", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=8000", "-t", "4", "-c:v", "libx264",
                    "-preset", "ultrafast", "-b:v", "10k", "-g", "5", "-keyint_min", "5",
                    "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "8k",
                    "-ac", "1", "-f", "flv", str(path)], check=True, timeout=120)
    return path


@dataclass
class Stopped:
    status: int  # the exit status
    seconds: float  # SIGTERM to exit, as the test saw it
    ended_in: float  # the relay's own figure: ending the sessions
    streams: list[dict[str, object]]


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))  # the relay inherits it


def active_count(client: httpx.Client) -> int:
    count, page = 0, 1
    while True:
        data = client.get("/video/v1/live-streams",
                          params={"status": "active", "limit": 100, "page": page}).json()["data"]
        count += len(data)
        if len(data) < 100:
            return count
        page += 1


def stop_with_live_sessions(data_dir: Path, clip: Path, count: int) -> Stopped:
    """Bring up `count` live sessions with recordings, SIGTERM the relay while they are all
    active and publishing, and report how it stopped."""
    raise_fd_limit(2 * count + 1000)
    relay = RelayProcess(data_dir, token=TOKEN, extra_args=[
        "--rtmp-max-connections", str(count + 100), "--rtmp-idle-timeout", "600",
        # Every publisher of the load generator comes from 127.0.0.1.
        "--rtmp-max-connections-per-ip", str(count + 100)]).start()
    publishers: subprocess.Popen[str] | None = None
    try:
        with httpx.Client(base_url=relay.http_url, auth=TOKEN, timeout=60) as client:
            streams = [client.post("/video/v1/live-streams", json={
                "playback_policies": ["public"], "latency_mode": "reduced",
                "new_asset_settings": {"playback_policies": ["public"]},
                "reconnect_window": 60}).json()["data"] for _ in range(count)]
            # The load generator in a process of its own, as the benchmarks run it, so that
            # this one only watches (and reads the relay's log as fast as it is written).
            publishers = subprocess.Popen(
                [sys.executable, "benchmarks/loadgen.py", f"{relay.urls['rtmp']}", str(clip),
                 *(str(s["stream_key"]) for s in streams), "--seconds", "600"],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            deadline = time.monotonic() + 300
            while (active := active_count(client)) < count:
                assert publishers.poll() is None, publishers.communicate()[0]
                assert time.monotonic() < deadline, f"{active} of {count} streams active"
                time.sleep(0.5)
        began = time.monotonic()
        status = relay.stop(timeout=120)
        seconds = time.monotonic() - began
    finally:
        if publishers is not None:
            publishers.kill()
            publishers.communicate()
        if relay._proc is not None and relay._proc.poll() is None:
            relay.stop(timeout=120)
    match = ENDED.search(relay.log)
    assert match is not None and int(match.group(1)) == count, relay.log[-3000:]
    return Stopped(status, seconds, float(match.group(2)), streams)


def assert_all_ended(data_dir: Path, stopped: Stopped) -> None:
    """Exit 0; every stream idle with its session's events; every asset ready, its
    recording finalized (ENDLIST) on disk, with its events."""
    assert stopped.status == 0
    by_object: dict[str, list[str]] = {}

    async def read() -> None:
        store = await Store.open(sqlite_url(data_dir / "relay.db"))
        try:
            for event in await store.list_events(limit=1_000_000):
                by_object.setdefault(event.object_id, []).append(event.type)
            for stream in stopped.streams:
                row = await store.get_live_stream(str(stream["id"]))
                assert row is not None and row.status == "idle", row
                assert row.active_asset_id is None and len(row.recent_asset_ids) == 1
                asset = await store.get_asset(row.recent_asset_ids[0])
                assert asset is not None and asset.status == "ready" and not asset.is_live
                assert asset.duration > 0 and len(asset.recording_times) == 1
                assert by_object[row.id] == [
                    "video.live_stream.created", "video.live_stream.connected",
                    "video.live_stream.recording", "video.live_stream.active",
                    "video.live_stream.disconnected", "video.live_stream.idle"], row.id
                assert by_object[asset.id] == [
                    "video.asset.created", "video.asset.live_stream_completed",
                    "video.asset.ready"], asset.id
                playlist = (data_dir / "assets" / asset.id / "rendition.m3u8").read_text()
                assert playlist.endswith("#EXT-X-ENDLIST\n"), asset.id
                assert "#EXT-X-PLAYLIST-TYPE:VOD" in playlist
        finally:
            await store.close()

    asyncio.run(read())


def test_sigterm_with_300_live_sessions_finalizes_everything(tmp_path: Path,
                                                             clip: Path) -> None:
    stopped = stop_with_live_sessions(tmp_path / "data", clip, 300)
    print(f"300 live sessions: SIGTERM to exit {stopped.seconds:.1f} s "
          f"(ending the sessions {stopped.ended_in:.1f} s)")
    assert_all_ended(tmp_path / "data", stopped)
    # A guard against a stop that hangs or goes back to one session after another (a few
    # seconds here; 6 s before the sessions shared transactions), not a benchmark.
    assert stopped.seconds < 3 * DOCKER_STOP_SECONDS


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("RELAY_SLOW_TESTS"),
                    reason="2,000 sessions take minutes; set RELAY_SLOW_TESTS=1")
@pytest.mark.timeout(1200)
def test_sigterm_with_2000_live_sessions_exits_within_dockers_budget(tmp_path: Path,
                                                                     clip: Path) -> None:
    stopped = stop_with_live_sessions(tmp_path / "data", clip, 2000)
    print(f"2,000 live sessions: SIGTERM to exit {stopped.seconds:.1f} s "
          f"(ending the sessions {stopped.ended_in:.1f} s)")
    assert_all_ended(tmp_path / "data", stopped)
    assert stopped.seconds < DOCKER_STOP_SECONDS
