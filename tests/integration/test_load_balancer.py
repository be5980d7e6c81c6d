"""The README's load balancer (deploy/nginx/relay-balancer.conf: nginx's `stream` module for
RTMP, RTMPS and SRT, its `http` module for playback and the API) in front of two `relay serve`
nodes on one PostgreSQL and one data dir: the API, two RTMP encoders, an RTMPS and an SRT
encoder reach the balancer's one address, the encoders land on both nodes, and every stream
plays through the balancer whichever node each request reaches."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from testkit.encoders import ffmpeg_publish, needs_ffmpeg, srt_url
from testkit.peers import NginxBalancer
from testkit.postgres import PostgresCluster
from testkit.relay_process import RelayProcess, free_tcp_port, free_udp_port
from testkit.tls import self_signed
from tests.integration.helpers.webhooks import wait_until

TOKEN = ("balancer-test-token", "balancer-test-secret-0123456789-abcdefgh")
FFPROBE = shutil.which("ffprobe")

pytestmark = pytest.mark.skipif(not NginxBalancer.available(),
                                reason="nginx with its stream module is not installed "
                                       "(make test)")


def node(url: str, data_dir: Path, name: str, cert: tuple[Path, Path]) -> RelayProcess:
    return RelayProcess(data_dir, token=TOKEN, extra_args=[
        "--database-url", url, "--node-id", name, "--trusted-proxy", "127.0.0.1/32",
        "--rtmps-port", "0", "--tls-cert", str(cert[0]), "--tls-key", str(cert[1])])


def addresses(relay: RelayProcess) -> dict[str, str]:
    """host:port of each listener the balancer forwards to."""
    def netloc(url: str) -> str:
        return urlsplit(url).netloc
    return {"rtmp": netloc(relay.urls["rtmp"]), "rtmps": netloc(relay.urls["rtmps"]),
            "http": netloc(relay.http_url), "srt": netloc(relay.urls["srt"])}


def ffprobe(url: str) -> list[str]:
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-rw_timeout", "10000000",
                          "-show_streams", "-of", "json", url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return sorted(s["codec_name"] for s in json.loads(out.stdout)["streams"])


@needs_ffmpeg
def test_two_nodes_behind_the_readme_balancer(postgres: PostgresCluster,
                                              tmp_path: Path) -> None:
    url = postgres.create_database()
    shared = tmp_path / "shared"
    cert = self_signed(tmp_path)
    a = node(url, shared, "node-a", cert).start()
    b = node(url, shared, "node-b", cert).start()
    ports = {"rtmp": free_tcp_port(), "rtmps": free_tcp_port(), "http": free_tcp_port(),
             "srt": free_udp_port()}
    balancer = NginxBalancer(tmp_path / "nginx", [addresses(a), addresses(b)], ports).start()
    front = f"http://127.0.0.1:{ports['http']}"
    encoders: list[subprocess.Popen[str]] = []
    try:
        with httpx.Client(base_url=front, auth=TOKEN, timeout=10) as api:
            streams: list[dict[str, Any]] = []
            for _ in range(4):
                created = api.post("/video/v1/live-streams", json={
                    "playback_policies": ["public"], "latency_mode": "low"})
                assert created.status_code == 201, created.text
                streams.append(created.json()["data"])

            # Two RTMP encoders through the balancer (least_conn: one per node), one RTMPS
            # (TLS passing through nginx), one SRT.
            publish = [f"rtmp://127.0.0.1:{ports['rtmp']}/app",
                       f"rtmp://127.0.0.1:{ports['rtmp']}/app",
                       f"rtmps://127.0.0.1:{ports['rtmps']}/app"]
            for base, stream in zip(publish, streams, strict=False):
                encoders.append(ffmpeg_publish(f"{base}/{stream['stream_key']}",
                                               seconds=120))
                wait_until(lambda s=stream: api.get(f"/video/v1/live-streams/{s['id']}")
                           .json()["data"]["status"] == "active", 60,
                           f"the stream pushed to {base} through the balancer to be active")
            srt = streams[3]
            encoders.append(ffmpeg_publish(
                srt_url(f"srt://127.0.0.1:{ports['srt']}", srt["stream_key"],
                        srt["srt_passphrase"]), seconds=120, muxer="mpegts"))
            wait_until(lambda: api.get(f"/video/v1/live-streams/{srt['id']}")
                       .json()["data"]["status"] == "active", 60,
                       "the SRT stream through the balancer to be active")

        # The two RTMP encoders are on different nodes.
        owners = {("node-a" if f"stream {s['id']}: rtmp connected" in a.log else "node-b")
                  for s in streams[:2]}
        assert owners == {"node-a", "node-b"}, (a.log, b.log)

        # Every stream plays through the balancer; its requests alternate between the
        # nodes, so the non-owner serves each one half the time (through the owner).
        for stream in streams:
            playback_id = stream["playback_ids"][0]["id"]
            assert ffprobe(f"{front}/{playback_id}.m3u8") == ["aac", "h264"]
            with httpx.Client(base_url=front, timeout=10) as viewer:
                for _ in range(4):
                    playlist = viewer.get(f"/{playback_id}/rendition.m3u8")
                    assert playlist.status_code == 200, playlist.text
                    assert "#EXT-X-PART:" in playlist.text
    except AssertionError as failed:
        raise AssertionError(f"{failed}\n--- nginx:\n{balancer.error_log}\n--- node A:\n"
                             f"{a.log}\n--- node B:\n{b.log}") from None
    finally:
        for encoder in encoders:
            if encoder.poll() is None:
                encoder.kill()
            encoder.communicate()
        balancer.kill()
        b.stop()
        a.stop()
