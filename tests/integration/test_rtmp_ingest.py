"""ffmpeg publishes to `relay serve` over RTMP and RTMPS; the API shows the lifecycle.

Real peers only: the relay runs as a subprocess on free ports, ffmpeg (Debian's package) is
the encoder, httpx plays the application. Events are read from the store's outbox, which is
what the webhook deliverer will send.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from testkit.encoders import ffmpeg_publish, finish, needs_ffmpeg
from testkit.relay_process import RelayProcess
from testkit.tls import self_signed
from tests.integration.helpers.rtmp_ingest import (
    api,
    create_stream,
    data_dir,
    events,
    get_stream,
    publish_url,
    relay,
    start_relay,
    wait_status,
)

__all__ = ["data_dir", "relay"]  # fixtures, defined in tests.integration.helpers.rtmp_ingest

pytestmark = needs_ffmpeg


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
    cert, key = self_signed(tmp_path)
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
