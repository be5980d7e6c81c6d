"""ffmpeg publishes to `relay serve` over RTMP and RTMPS; the API shows the lifecycle.

Real peers only: the relay runs as a subprocess on free ports, ffmpeg (Debian's package) is
the encoder, httpx plays the application. Events are read from the store's outbox, which is
what the webhook deliverer will send.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.store import Store
from testkit.encoders import ffmpeg_publish, finish, needs_ffmpeg
from testkit.relay_process import RelayProcess
from tests.conftest import sqlite_url

pytestmark = needs_ffmpeg

TOKEN = ("ingest-test", "ingest-test-secret-0123456789-abcdefghij")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def start_relay(data_dir: Path, *extra: str) -> RelayProcess:
    return RelayProcess(data_dir, token=TOKEN, extra_args=list(extra)).start()


@pytest.fixture
def relay(data_dir: Path) -> Iterator[RelayProcess]:
    process = start_relay(data_dir)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


def api(relay: RelayProcess) -> httpx.Client:
    return httpx.Client(base_url=relay.http_url, auth=TOKEN, timeout=10)


def create_stream(relay: RelayProcess, **body: Any) -> dict[str, Any]:
    """A stream with 2 s segments (`reduced`) unless `body` says otherwise: a stream becomes
    active with its first playable segment, so short pushes still get there."""
    with api(relay) as client:
        response = client.post("/video/v1/live-streams",
                               json={"playback_policies": ["public"],
                                     "new_asset_settings": {"playback_policies": ["public"]},
                                     "latency_mode": "reduced", **body})
        assert response.status_code == 201, response.text
        return dict(response.json()["data"])


def get_stream(relay: RelayProcess, stream_id: str) -> dict[str, Any]:
    with api(relay) as client:
        response = client.get(f"/video/v1/live-streams/{stream_id}")
        assert response.status_code == 200, (response.status_code, response.text)
        return dict(response.json()["data"])


def wait_until(check: Callable[[], bool], timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def wait_status(relay: RelayProcess, stream_id: str, status: str, timeout: float = 20) -> None:
    wait_until(lambda: get_stream(relay, stream_id)["status"] == status, timeout,
               f"status {status}")


def events(data_dir: Path, stream_id: str) -> list[str]:
    async def read() -> list[str]:
        store = await Store.open(sqlite_url(data_dir / "relay.db"))
        try:
            found = await store.list_events(limit=1000)
        finally:
            await store.close()
        return [e.type for e in found
                if e.object_id == stream_id or e.data.get("live_stream_id") == stream_id]
    return asyncio.run(read())


def publish_url(relay: RelayProcess, key: str, scheme: str = "rtmp") -> str:
    return f"{relay.urls[scheme]}/{key}"


def test_publish_lifecycle_and_events(relay: RelayProcess, data_dir: Path) -> None:
    stream = create_stream(relay, reconnect_window=1)
    encoder = ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=4)
    wait_status(relay, stream["id"], "active")
    live = get_stream(relay, stream["id"])
    assert live["active_ingest_protocol"] == "rtmp"
    asset_id = live["active_asset_id"]
    code, err = finish(encoder)
    assert code == 0, err
    wait_status(relay, stream["id"], "idle")
    idle = get_stream(relay, stream["id"])
    assert "active_asset_id" not in idle and "active_ingest_protocol" not in idle
    assert idle["recent_asset_ids"] == [asset_id]
    with api(relay) as client:
        asset = client.get(f"/video/v1/assets/{asset_id}").json()["data"]
    assert asset["status"] == "ready" and asset["is_live"] is False
    assert asset["ingest_type"] == "live_rtmp"
    assert 2.5 <= asset["duration"] <= 6, asset
    assert events(data_dir, stream["id"]) == [
        "video.live_stream.created", "video.live_stream.connected", "video.asset.created",
        "video.live_stream.recording", "video.live_stream.active",
        "video.live_stream.disconnected", "video.live_stream.idle",
        "video.asset.live_stream_completed", "video.asset.ready"]
    assert "rtmp" in relay.log and "connected from 127.0.0.1" in relay.log


def test_wrong_key_fails_and_is_counted(relay: RelayProcess) -> None:
    code, err = finish(ffmpeg_publish(publish_url(relay, "not-a-stream-key"), seconds=2),
                       timeout=30)
    assert code != 0
    assert "unknown stream key" in err, err
    metrics = httpx.get(relay.urls["metrics"]).text
    assert "relay_ingest_auth_failures_total 1.0" in metrics
    assert "publish refused: unknown stream key" in relay.log


def test_second_publisher_refused_then_disable_disconnects(relay: RelayProcess) -> None:
    stream = create_stream(relay)
    url = publish_url(relay, stream["stream_key"])
    first = ffmpeg_publish(url, seconds=60)
    try:
        wait_status(relay, stream["id"], "active")
        code, err = finish(ffmpeg_publish(url, seconds=5), timeout=30)
        assert code != 0 and "already has a publisher" in err, err
        assert first.poll() is None, "the first publisher must go on"
        with api(relay) as client:
            assert client.put(f"/video/v1/live-streams/{stream['id']}/disable").status_code \
                == 200
        code, err = finish(first, timeout=15)
        assert code != 0
        assert get_stream(relay, stream["id"])["status"] == "disabled"
        # A disabled stream refuses new publishes.
        code, err = finish(ffmpeg_publish(url, seconds=2), timeout=30)
        assert code != 0 and "disabled" in err, err
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()


def test_reconnect_inside_the_window_keeps_the_asset(relay: RelayProcess,
                                                     data_dir: Path) -> None:
    stream = create_stream(relay, reconnect_window=30)
    url = publish_url(relay, stream["stream_key"])
    # 4 s each: the stream is active once a segment (2 s) of the connection is playable.
    code, err = finish(ffmpeg_publish(url, seconds=4))
    assert code == 0, err
    first_asset = get_stream(relay, stream["id"])["active_asset_id"]
    code, err = finish(ffmpeg_publish(url, seconds=4))
    assert code == 0, err
    live = get_stream(relay, stream["id"])
    assert live["active_asset_id"] == first_asset and live["status"] == "active"
    with api(relay) as client:
        assert client.put(f"/video/v1/live-streams/{stream['id']}/complete").status_code == 200
    wait_status(relay, stream["id"], "idle")
    with api(relay) as client:
        asset = client.get(f"/video/v1/assets/{first_asset}").json()["data"]
    assert len(asset["recording_times"]) == 2 and asset["status"] == "ready"
    assert events(data_dir, stream["id"]).count("video.asset.created") == 1


def test_session_limit_disconnects(data_dir: Path) -> None:
    relay = start_relay(data_dir, "--max-session-duration", "3")
    try:
        stream = create_stream(relay)
        started = time.monotonic()
        code, _ = finish(ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=60),
                         timeout=30)
        assert code != 0 and time.monotonic() - started < 20
        assert "session reached its limit of 3s" in relay.log
        wait_status(relay, stream["id"], "idle")
    finally:
        assert relay.stop() == 0


def test_rtmps_publish_with_a_self_signed_certificate(data_dir: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    relay = start_relay(data_dir, "--rtmps-port", "0", "--tls-cert", str(cert),
                        "--tls-key", str(key))
    try:
        assert relay.urls["rtmps"].startswith("rtmps://")
        stream = create_stream(relay)
        encoder = ffmpeg_publish(publish_url(relay, stream["stream_key"], "rtmps"), seconds=3)
        wait_status(relay, stream["id"], "active")
        code, err = finish(encoder)
        assert code == 0, err
    finally:
        assert relay.stop() == 0
