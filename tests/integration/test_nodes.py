"""Two `relay serve` nodes on one PostgreSQL and one data dir (issue 19, "Nodes"): a key live
on node B plays from node A (through B) and is refused on node A as a second publisher is
(RTMP and SRT); after B is killed with SIGKILL, A finishes B's session once the reconnect
window has passed (stream idle, recording completed from the shared data dir and playing
from A), and each lifecycle event exists once."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urljoin

import httpx

from relay.store.records import Event, NodeRef
from testkit.encoders import ffmpeg_publish, finish, needs_ffmpeg, srt_url
from testkit.postgres import PostgresCluster
from testkit.relay_process import RelayProcess
from tests.integration.helpers import nodes
from tests.integration.helpers.nodes import api, in_store, stop_encoder, stream_of
from tests.integration.helpers.webhooks import wait_until

NODE_TIMEOUT = 3.0  # --node-timeout of both nodes: B is dead 3 s after its last heartbeat
WINDOW = 2.0  # the stream's reconnect window


def node(url: str, data_dir: Path, name: str) -> RelayProcess:
    return nodes.node(url, data_dir, name, NODE_TIMEOUT)


def metric(relay: RelayProcess, series: str) -> float:
    """One series' value on `relay`'s /metrics (`series`: the name, with its labels)."""
    text = httpx.get(relay.urls["metrics"], timeout=10).text
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert found is not None, (series, text)
    return float(found.group(1))


def ffprobe_codecs(url: str) -> list[str]:
    ffprobe = shutil.which("ffprobe")
    assert ffprobe is not None
    out = subprocess.run([ffprobe, "-v", "error", "-show_streams", "-of", "json", url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return sorted(s["codec_name"] for s in json.loads(out.stdout)["streams"])


def play_through(node: RelayProcess, owner: RelayProcess, playback_id: str) -> int:
    """Read `playback_id`'s playlists and newest media from `node`, which does not own the
    stream; check each against `owner`'s answer; return how many media files were read."""
    with httpx.Client(timeout=10) as via, httpx.Client(timeout=10) as direct:
        def both(path: str) -> httpx.Response:
            got = via.get(f"{node.http_url}{path}")
            if got.status_code == 200:
                assert got.content == direct.get(f"{owner.http_url}{path}").content, path
            return got

        top_path = f"/{playback_id}.m3u8"
        top = both(top_path)
        assert top.status_code == 200 and top.text.startswith("#EXTM3U"), top.text
        media_path = urljoin(top_path, next(
            line for line in top.text.splitlines() if line and not line.startswith("#")))
        media = via.get(f"{node.http_url}{media_path}")
        assert media.status_code == 200 and "#EXT-X-TARGETDURATION" in media.text, media.text
        uris = [line for line in media.text.splitlines() if line and not line.startswith("#")]
        uris += re.findall(r'URI="([^"]+)"', media.text)
        read = 0
        for uri in uris[-3:]:
            got = both(urljoin(media_path, uri))
            # 404: it slid out of the window between the two reads.
            assert got.status_code in (200, 404), (uri, got.status_code, got.text[:200])
            read += got.status_code == 200
        return read


@needs_ffmpeg
def test_a_dead_nodes_stream_is_finished_by_a_live_node_once(
        postgres: PostgresCluster, tmp_path: Path) -> None:
    url = postgres.create_database()
    shared = tmp_path / "shared"  # both nodes' --data-dir: the recordings are on it
    a = node(url, shared, "node-a").start()
    b = node(url, shared, "node-b").start()
    encoder = None
    try:
        with api(a) as client:
            created = client.post("/video/v1/live-streams", json={
                "playback_policies": ["public"], "latency_mode": "reduced",
                "reconnect_window": WINDOW,
                "new_asset_settings": {"playback_policies": ["public"]}})
            assert created.status_code == 201, created.text
        stream = created.json()["data"]
        key, playback_id = stream["stream_key"], stream["playback_ids"][0]["id"]
        live = {n.node_id for n in in_store(url, "list_live_nodes")}
        assert live == {"node-a", "node-b"}

        encoder = ffmpeg_publish(f"{b.urls['rtmp']}/{key}", seconds=120)
        wait_until(lambda: stream_of(a, stream["id"])["status"] == "active", 60,
                   "the stream published to B to be active on A's API")
        # B owns it, reached at the URL it advertises (its HTTP listener by default).
        assert in_store(url, "owner_of_playback_id", playback_id) == \
            NodeRef("node-b", b.http_url)

        # A plays it: the playlists and media come from B, byte for byte.
        played = play_through(a, b, playback_id)
        assert played >= 1, played
        # And its thumbnail, which B draws.
        with httpx.Client(timeout=20) as client:
            thumbnail = client.get(f"{a.http_url}/{playback_id}/thumbnail.jpg")
        assert thumbnail.status_code == 200, thumbnail.text
        assert thumbnail.headers["content-type"] == "image/jpeg"
        # What the nodes' /metrics say of it: A asked B (playlists, media, the thumbnail);
        # B holds the lease; each sees both nodes.
        assert metric(a, "relay_upstream_requests_total") >= played + 3
        assert metric(a, "relay_upstream_received_bytes_total") > len(thumbnail.content)
        assert metric(a, 'relay_upstream_errors_total{kind="unreachable"}') == 0
        assert metric(b, "relay_upstream_requests_total") == 0
        assert (metric(a, "relay_node_leases_held"), metric(b, "relay_node_leases_held")) \
            == (0, 1)
        wait_until(lambda: metric(a, "relay_node_live_nodes") == 2 == metric(
            b, "relay_node_live_nodes"), 10, "each node to see both")

        # The same key on A while B holds it: refused as a second publisher.
        second = ffmpeg_publish(f"{a.urls['rtmp']}/{key}", seconds=5)
        code, err = finish(second)
        assert code != 0, err
        assert "live stream already has a publisher" in a.log, a.log
        # Over SRT: refused in the handshake, as a second publisher there is (A's heartbeat
        # has long learnt that B holds the stream).
        second = ffmpeg_publish(srt_url(a.urls["srt"], key, stream["srt_passphrase"]),
                                seconds=5, muxer="mpegts")
        code, err = finish(second)
        assert code != 0, err
        metrics = httpx.get(a.urls["metrics"], timeout=10).text
        refused = re.search(r'^relay_srt_handshakes_refused_total\{reason="live"\} (\S+)$',
                            metrics, re.MULTILINE)
        assert refused is not None and float(refused.group(1)) >= 1, metrics
        assert stream_of(a, stream["id"])["status"] == "active"
        asset_id = stream_of(a, stream["id"])["active_asset_id"]
        # Some media reaches the shared data dir before B goes.
        playlist = shared / "assets" / asset_id / "rendition.m3u8"
        wait_until(lambda: playlist.is_file() and "#EXTINF" in playlist.read_text(), 30,
                   "a recorded segment")

        assert b.stop(signal.SIGKILL) == -signal.SIGKILL
        killed = time.monotonic()
        stop_encoder(encoder)
        wait_until(lambda: stream_of(a, stream["id"])["status"] == "idle", 60,
                   "A to finish the dead node's session")
        # Not before B's lease had expired and the reconnect window had passed after it.
        assert time.monotonic() - killed >= WINDOW
        assert "finished 1 live session(s) of dead node(s)" in a.log, a.log
        assert metric(a, "relay_node_takeovers_total") == 1
        wait_until(lambda: metric(a, "relay_node_live_nodes") == 1, 10,
                   "A to count B dead")
        with api(a) as client:
            asset = client.get(f"/video/v1/assets/{asset_id}").json()["data"]
        assert asset["status"] == "ready" and asset["is_live"] is False, asset
        assert asset["duration"] > 0, asset
        # The recording B wrote to the shared data dir plays from A.
        assert ffprobe_codecs(f"{a.http_url}/{asset['playback_ids'][0]['id']}.m3u8") == \
            ["aac", "h264"]
        assert in_store(url, "owner_of_playback_id", playback_id) is None

        events: list[Event] = in_store(url, "list_events", )
        seen = Counter((e.type, e.object_id) for e in events)
        for kind in ("created", "connected", "recording", "active", "idle"):
            assert seen[f"video.live_stream.{kind}", stream["id"]] == 1, (kind, seen)
        for kind in ("created", "live_stream_completed", "ready"):
            assert seen[f"video.asset.{kind}", asset_id] == 1, (kind, seen)

        # The key is free again: A takes a new publish of it.
        encoder = ffmpeg_publish(f"{a.urls['rtmp']}/{key}", seconds=120)
        wait_until(lambda: stream_of(a, stream["id"])["status"] == "active", 60,
                   "the stream to go live again, on A")
        assert in_store(url, "owner_of_playback_id", playback_id) == \
            NodeRef("node-a", a.http_url)
    except AssertionError as failed:
        raise AssertionError(f"{failed}\n--- node A:\n{a.log}\n--- node B:\n{b.log}") from None
    finally:
        if encoder is not None:
            stop_encoder(encoder)
        b.stop(signal.SIGKILL)
        assert a.stop() == 0, a.log
