"""`relay serve --workers N` (issue 19): refused on SQLite; on PostgreSQL two workers share
the RTMP, SRT and HTTP ports, each a node of the database; encoders published to the one
RTMP port land on both; every stream plays from the shared HTTP port and from each worker's
own listener (the non-owner fetches from the owner); a worker killed with SIGKILL is started
again as a new node and its streams are finished by the takeover rules; SIGTERM to the
supervisor stops every worker cleanly."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from relay.api.schemas import CreateLiveStreamRequest, new_live_stream
from relay.store import Store
from relay.store.records import Event
from testkit.encoders import ffmpeg_publish, needs_ffmpeg, srt_url
from testkit.postgres import PostgresCluster
from testkit.relay_process import RelayProcess
from tests.integration.helpers.nodes import in_store
from tests.integration.helpers.webhooks import wait_until

TOKEN = ("workers-test-token", "workers-test-secret-0123456789-abcdefghij")
NODE_TIMEOUT = 3.0
WINDOW = 2.0  # the streams' reconnect window
#: Publishers started one at a time until both workers own a stream: the kernel's hash
#: sends one to each worker with probability 1/2, so 12 leave 2**-11 of a spurious failure.
MAX_PUBLISHERS = 12
STARTED = re.compile(r"worker (\d+) started: pid (\d+), node (\S+)")


def test_workers_need_postgresql(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--workers", "2",
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "RELAY_DATABASE_URL"})
    assert done.returncode == 2, done.stderr
    assert "--workers 2 needs PostgreSQL" in done.stderr, done.stderr
    assert "--database-url" in done.stderr, done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was made


def live_nodes(url: str) -> dict[str, str]:
    return {n.node_id: n.advertise_url for n in in_store(url, "list_live_nodes")}


def owner(url: str, playback_id: str) -> str | None:
    found = in_store(url, "owner_of_playback_id", playback_id)
    return None if found is None else str(found.node_id)


def started_workers(relay: RelayProcess) -> dict[str, int]:
    """node id -> pid of each worker process the supervisor started, from its log."""
    return {m.group(3): int(m.group(2)) for line in list(relay.lines)
            if (m := STARTED.search(line))}


def plays(base: str, playback_id: str) -> bool:
    """The playlists of `playback_id` answer from `base` (a fresh connection each)."""
    top = httpx.get(f"{base}/{playback_id}.m3u8", timeout=10)
    if top.status_code != 200 or not top.text.startswith("#EXTM3U"):
        return False
    media_uri = next(line for line in top.text.splitlines() if line and line[0] != "#")
    media = httpx.get(urljoin(f"{base}/{playback_id}.m3u8", media_uri), timeout=10)
    return media.status_code == 200 and "#EXT-X-TARGETDURATION" in media.text


def stream_before_start(url: str) -> str:
    """A stream made in the store before the workers start (their key caches load it)."""
    async def run() -> str:
        store = await Store.open(url)
        try:
            spec = new_live_stream(CreateLiveStreamRequest(
                playback_policies=["public"], reconnect_window=WINDOW))
            return (await store.create_live_stream(spec)).id
        finally:
            await store.close()
    return asyncio.run(run())


def status(client: httpx.Client, stream_id: str) -> str:
    answer = client.get(f"/video/v1/live-streams/{stream_id}")
    assert answer.status_code == 200, answer.text
    return str(answer.json()["data"]["status"])


def has_status(client: httpx.Client, stream_id: str, wanted: str) -> bool:
    return status(client, stream_id) == wanted


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_ffmpeg
def test_two_workers_share_the_ports_and_restart(
        postgres: PostgresCluster, tmp_path: Path) -> None:
    url = postgres.create_database()
    srt_stream_id = stream_before_start(url)
    relay = RelayProcess(tmp_path / "data", token=TOKEN, extra_args=[
        "--database-url", url, "--workers", "2", "--node-id", "wk",
        "--node-timeout", str(NODE_TIMEOUT)]).start(timeout=120)
    encoders: list[subprocess.Popen[str]] = []
    client = httpx.Client(base_url=relay.http_url, auth=TOKEN, timeout=10)
    try:
        assert "relay" in relay.log and "ready: 2 workers" in relay.log, relay.log
        nodes = live_nodes(url)
        assert set(nodes) == {"wk-0", "wk-1"}, nodes
        # Each advertises its own listener, not the shared port.
        assert len(set(nodes.values())) == 2 and relay.http_url not in nodes.values(), nodes
        workers = started_workers(relay)

        streams: list[dict[str, Any]] = []
        owners: dict[str, str] = {}  # stream id -> node id
        while len(set(owners.values())) < 2:
            assert len(streams) < MAX_PUBLISHERS, owners
            created = client.post("/video/v1/live-streams", json={
                "playback_policies": ["public"], "latency_mode": "reduced",
                "reconnect_window": WINDOW})
            assert created.status_code == 201, created.text
            stream = created.json()["data"]
            streams.append(stream)
            encoders.append(ffmpeg_publish(f"{relay.urls['rtmp']}/{stream['stream_key']}",
                                           seconds=120, size="160x120", rate=15, gop=15))
            playback_id = stream["playback_ids"][0]["id"]
            wait_until(lambda: owner(url, playback_id) is not None, 60,  # noqa: B023
                       "the publish to be accepted by a worker")
            owners[stream["id"]] = str(owner(url, playback_id))
        assert set(owners.values()) == {"wk-0", "wk-1"}, owners
        # SRT on the shared UDP port: a caller's handshake and media reach one worker. (A
        # stream made before the start: SRT admission answers from each worker's key cache,
        # which a stream created through another worker does not reach yet.)
        srt_stream = client.get(f"/video/v1/live-streams/{srt_stream_id}").json()["data"]
        encoders.append(ffmpeg_publish(
            srt_url(relay.urls["srt"], srt_stream["stream_key"], srt_stream["srt_passphrase"]),
            seconds=120, size="160x120", rate=15, gop=15, muxer="mpegts"))
        srt_playback = srt_stream["playback_ids"][0]["id"]
        wait_until(lambda: owner(url, srt_playback) in ("wk-0", "wk-1"), 60,
                   "the SRT publish to be accepted by a worker")

        # The API, from whichever worker answers: every stream active.
        for stream in streams:
            wait_until(functools.partial(has_status, client, stream["id"], "active"), 60,
                       "the stream to be active")
        listed = client.get("/video/v1/live-streams", params={"limit": 100}).json()["data"]
        assert {s["id"] for s in streams} <= {s["id"] for s in listed}

        # Every stream plays from the shared port (a fresh connection reaches either worker,
        # several times) and from each worker's own listener: through the owner when that
        # worker does not own it.
        for stream in streams:
            playback_id = stream["playback_ids"][0]["id"]
            wait_until(lambda: plays(relay.http_url, playback_id), 60,  # noqa: B023
                       "the stream to play")
            for _ in range(4):
                assert plays(relay.http_url, playback_id), stream["id"]
            for advertised in nodes.values():
                assert plays(advertised, playback_id), (advertised, stream["id"])

        # SIGKILL worker 1: the supervisor starts it again as a new node, and its streams
        # are finished by another node once its lease and their reconnect window are over.
        victim = workers["wk-1"]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: "wk-1.1" in started_workers(relay), 30, "worker 1 restarted")
        wait_until(lambda: set(live_nodes(url)) == {"wk-0", "wk-1.1"}, 60,
                   "the new node alive and the killed one dead")
        orphaned = [s for s in streams if owners[s["id"]] == "wk-1"]
        for stream in orphaned:
            wait_until(functools.partial(has_status, client, stream["id"], "idle"), 90,
                       "the killed worker's stream to be finished")
        assert time.monotonic() - killed >= WINDOW
        events: list[Event] = in_store(url, "list_events")
        seen = Counter((e.type, e.object_id) for e in events)
        for stream in orphaned:
            assert seen["video.live_stream.idle", stream["id"]] == 1, seen
            assert seen["video.live_stream.active", stream["id"]] == 1, seen
        # The other worker's streams went on.
        for stream in streams:
            if owners[stream["id"]] == "wk-0":
                assert status(client, stream["id"]) == "active", stream["id"]
        # A finished stream's key publishes again, to whichever worker takes it.
        again = orphaned[0]
        encoders.append(ffmpeg_publish(f"{relay.urls['rtmp']}/{again['stream_key']}",
                                       seconds=120, size="160x120", rate=15, gop=15))
        wait_until(lambda: status(client, again["id"]) == "active", 60,
                   "the key to go live again")

        # SIGTERM to the supervisor: every worker stops cleanly, then it exits 0.
        pids = set(started_workers(relay).values()) - {victim}
        assert relay.stop(timeout=90) == 0, relay.log
        assert not [pid for pid in pids if pid_alive(pid)]
        assert relay.lines[-1].endswith("stopped"), relay.log
    except AssertionError as failed:
        raise AssertionError(f"{failed}\n--- relay:\n{relay.log}") from None
    finally:
        client.close()
        for encoder in encoders:
            if encoder.poll() is None:
                encoder.kill()
            encoder.communicate()
        relay.stop(signal.SIGKILL)


def test_a_worker_that_cannot_start_stops_the_service(postgres: PostgresCluster,
                                                      tmp_path: Path) -> None:
    url = postgres.create_database()
    # A program holding the RTMP port without SO_REUSEPORT: no worker can share it.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        done = subprocess.run(
            [sys.executable, "-m", "relay", "serve", "--workers", "2", "--host", "127.0.0.1",
             "--database-url", url, "--data-dir", str(tmp_path / "data"),
             "--rtmp-port", str(holder.getsockname()[1]), "--http-port", "0",
             "--metrics-port", "0", "--https-port", "0", "--srt-port", "0"],
            capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "the port is already in use" in done.stderr, done.stderr
    assert "cannot start: worker" in done.stderr, done.stderr
    assert "ready: 2 workers" not in done.stderr, done.stderr
