"""push() against real servers: nginx with its RTMP module (checked with ffprobe on what it
recorded) and `relay serve` itself over RTMP and RTMPS (a wrong key, a self-signed certificate).

The media is a real ffmpeg encode (libx264 + aac in FLV), read with the test FLV reader and
Relay's own tag parser, so the pusher sends what an encoder sent to Relay.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from relay.media.flv import parse_audio_tag, parse_video_tag
from relay.media.units import AudioConfig, MediaFrame, VideoConfig
from relay.simulcast.pusher import PushLimits, TargetAddress, TargetError, parse_target_url, push
from relay.streams.queue import MediaQueue
from testkit.peers import NginxRtmp
from testkit.relay_process import RelayProcess, free_tcp_port
from testkit.tls import self_signed
from tests.integration.helpers.rtmp_ingest import create_stream, get_stream, start_relay, wait_until
from tests.media.helpers.vectors import TAG_AUDIO, TAG_VIDEO, read_flv

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")

needs_ffmpeg = pytest.mark.skipif(FFMPEG is None or FFPROBE is None,
                                  reason="ffmpeg/ffprobe are not installed (make test)")
CLIP_SECONDS = 4
LIMITS = PushLimits(connect_timeout=10, publish_timeout=10, write_stall_timeout=10)

Unit = VideoConfig | AudioConfig | MediaFrame


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> list[Unit]:
    """4 s of libx264 (320x240, 30 fps, GOP 30) and AAC from ffmpeg, as media units."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    path = tmp_path_factory.mktemp("clip") / "clip.flv"
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
                    "-f", "lavfi", "-i", "sine=sample_rate=44100", "-t", str(CLIP_SECONDS),
                    "-c:v", "libx264", "-g", "30", "-c:a", "aac", "-f", "flv", str(path)],
                   check=True, capture_output=True)
    units: list[Unit] = []
    for tag in read_flv(path.read_bytes()):
        if tag.type == TAG_VIDEO:
            unit = parse_video_tag(tag.body, tag.timestamp)
        elif tag.type == TAG_AUDIO:
            unit = parse_audio_tag(tag.body, tag.timestamp)
        else:
            continue
        if isinstance(unit, VideoConfig | AudioConfig | MediaFrame):
            units.append(unit)
    return units


def queue_of(units: list[Unit], *, end: bool = True) -> MediaQueue:
    queue = MediaQueue()
    for unit in units:
        if isinstance(unit, MediaFrame):
            queue.on_frame(unit)
        else:
            queue.on_track(unit)
    if end:
        queue.on_end()
    return queue


def run_push(target: TargetAddress, queue: MediaQueue,
             ssl_context: ssl.SSLContext | None = None) -> int:
    calls: list[int] = []
    asyncio.run(push(target, queue, ssl_context=ssl_context,
                     on_published=lambda: calls.append(1), limits=LIMITS))
    return len(calls)


def ffprobe(path: Path) -> dict[str, Any]:
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-show_streams", "-show_format", "-of", "json",
                          str(path)], check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out))


# -- nginx-rtmp ------------------------------------------------------------------------

@pytest.mark.skipif(not NginxRtmp.available(),
                    reason="nginx with its RTMP module is not installed (make test)")
@needs_ffmpeg
def test_nginx_rtmp_receives_the_push(clip: list[Unit], tmp_path: Path) -> None:
    nginx = NginxRtmp(tmp_path / "nginx", free_tcp_port()).start()
    try:
        target = parse_target_url(nginx.url, "simulcast-test")
        assert run_push(target, queue_of(clip)) == 1
        log = nginx.prefix / "error.log"
        # nginx closes the recording when the publisher goes (its log says "disconnect").
        deadline = time.monotonic() + 10
        while not nginx.recordings() or "disconnect" not in log.read_text().split(
                "publish: name=")[-1]:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        probe = ffprobe(nginx.recordings()[-1])
    finally:
        nginx.stop()
    streams = {s["codec_type"]: s for s in probe["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240)
    assert streams["audio"]["codec_name"] == "aac"
    assert int(streams["audio"]["sample_rate"]) == 44100
    frames = [u for u in clip if isinstance(u, MediaFrame)]
    pushed = (max(f.dts for f in frames) - min(f.dts for f in frames)) / 1000
    assert abs(float(probe["format"]["duration"]) - pushed) < 0.2, (probe["format"], pushed)


# -- relay serve ---------------------------------------------------------------------------

@needs_ffmpeg
def test_push_to_relay_and_a_wrong_key_is_fatal(clip: list[Unit], tmp_path: Path) -> None:
    relay = start_relay(tmp_path / "data")
    try:
        stream = create_stream(relay)
        with pytest.raises(TargetError) as failure:
            run_push(parse_target_url(relay.urls["rtmp"], "not-the-key"), queue_of(clip))
        assert failure.value.severity == "fatal"
        assert "NetStream.Publish.BadName" in failure.value.reason
        assert "not-the-key" not in failure.value.reason
        assert run_push(parse_target_url(relay.urls["rtmp"], stream["stream_key"]),
                        queue_of(clip)) == 1
        received(relay, stream["id"])
    finally:
        assert relay.stop() == 0, relay.log


def received(relay: RelayProcess, stream_id: str) -> None:
    """Relay took the media: the stream has a recording. (Not "active": that waits for a
    playable segment, which a push faster than real time may end before.)"""
    wait_until(lambda: bool(get_stream(relay, stream_id)["recent_asset_ids"]), 20,
               "a recording of the pushed media")


@needs_ffmpeg
def test_rtmps_verifies_the_certificate(clip: list[Unit], tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, alt_name="IP:127.0.0.1")
    relay: RelayProcess = start_relay(tmp_path / "data", "--rtmps-port", "0",
                                      "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        stream = create_stream(relay)
        target = parse_target_url(relay.urls["rtmps"], stream["stream_key"])
        assert target.scheme == "rtmps"
        # The system's trust store does not know this certificate.
        with pytest.raises(TargetError) as failure:
            run_push(target, queue_of(clip))
        assert failure.value.severity == "fatal"
        assert "certificate verification failed" in failure.value.reason
        assert "self-signed" in failure.value.reason or "self signed" in failure.value.reason
        # Trusting it, the push goes through.
        trusting = ssl.create_default_context(cafile=str(cert))
        assert run_push(target, queue_of(clip), trusting) == 1
        received(relay, stream["id"])
    finally:
        assert relay.stop() == 0, relay.log
