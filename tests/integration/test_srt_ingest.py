"""Encoders push SRT to `relay serve`; the API, the events and the HLS output show the session.

Real peers only: the relay runs as a subprocess on free ports; ffmpeg (Debian's package, built
with libsrt) pushes H.264 + AAC in MPEG-TS in caller mode with the stream's passphrase, the way
Mux documents SRT ingest; `srt-live-transmit` (Debian's srt-tools) is a second client that
knows nothing about media: it carries a TS file ffmpeg wrote; ffprobe decodes what Relay serves.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit.encoders import FFMPEG, ffmpeg_publish, finish, needs_ffmpeg, srt_url
from testkit.relay_process import RelayProcess, free_udp_port
from tests.integration.helpers.rtmp_ingest import (
    TOKEN,
    api,
    create_stream,
    events,
    get_stream,
    wait_status,
    wait_until,
)

SRT_LIVE_TRANSMIT = shutil.which("srt-live-transmit")
FFPROBE = shutil.which("ffprobe")

pytestmark = [needs_ffmpeg,
              pytest.mark.skipif(FFPROBE is None, reason="ffprobe is not installed")]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def relay(data_dir: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(data_dir, token=TOKEN).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


def push(relay: RelayProcess, stream: dict[str, Any], seconds: float, *,
         passphrase: str | None = "", key: str | None = None,
         access_control: bool = False) -> subprocess.Popen[str]:
    """ffmpeg pushing `seconds` over SRT; `passphrase=""` means the stream's own."""
    phrase = stream["srt_passphrase"] if passphrase == "" else passphrase
    url = srt_url(relay.urls["srt"], key or stream["stream_key"], phrase,
                  access_control=access_control)
    return ffmpeg_publish(url, seconds, muxer="mpegts")


def probe(url: str) -> dict[str, Any]:
    assert FFPROBE is not None
    result = subprocess.run(
        [FFPROBE, "-v", "error", "-show_streams", "-show_format", "-of", "json", url],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def codecs(info: dict[str, Any]) -> set[str]:
    return {s["codec_name"] for s in info["streams"]}


def test_ffmpeg_publishes_over_srt_plays_and_records(relay: RelayProcess,
                                                     data_dir: Path) -> None:
    stream = create_stream(relay, reconnect_window=1)
    encoder = push(relay, stream, seconds=6)
    wait_status(relay, stream["id"], "active", timeout=30)
    live = get_stream(relay, stream["id"])
    assert live["active_ingest_protocol"] == "srt"
    asset_id = live["active_asset_id"]
    playback_id = stream["playback_ids"][0]["id"]
    info = probe(f"{relay.http_url}/{playback_id}.m3u8")
    assert codecs(info) == {"h264", "aac"}, info
    video = next(s for s in info["streams"] if s["codec_name"] == "h264")
    assert (video["width"], video["height"]) == (320, 240)
    code, err = finish(encoder)
    assert code == 0, err
    wait_status(relay, stream["id"], "idle", timeout=30)
    with api(relay) as client:
        asset = client.get(f"/video/v1/assets/{asset_id}").json()["data"]
    assert asset["status"] == "ready" and asset["ingest_type"] == "live_srt", asset
    assert 4 <= asset["duration"] <= 8, asset
    recorded = probe(f"{relay.http_url}/{asset['playback_ids'][0]['id']}.m3u8")
    assert codecs(recorded) == {"h264", "aac"}
    assert 4 <= float(recorded["format"]["duration"]) <= 8, recorded["format"]
    assert events(data_dir, stream["id"])[:5] == [
        "video.live_stream.created", "video.live_stream.connected", "video.asset.created",
        "video.live_stream.recording", "video.live_stream.active"]


def test_access_control_streamid_is_accepted(relay: RelayProcess) -> None:
    stream = create_stream(relay)
    encoder = push(relay, stream, seconds=30, access_control=True)
    try:
        wait_status(relay, stream["id"], "active", timeout=30)
    finally:
        encoder.kill()
        finish(encoder)


@pytest.mark.parametrize("case", ["wrong-passphrase", "no-passphrase", "unknown-key"])
def test_refused_callers_fail(relay: RelayProcess, case: str) -> None:
    stream = create_stream(relay)
    if case == "wrong-passphrase":
        encoder = push(relay, stream, seconds=5, passphrase="not-the-passphrase-0123456789")
    elif case == "no-passphrase":
        encoder = push(relay, stream, seconds=5, passphrase=None)
    else:
        encoder = push(relay, stream, seconds=5, key="no-such-key-0123456789abcdef")
    code, err = finish(encoder)
    assert code != 0, err
    assert get_stream(relay, stream["id"])["status"] == "idle"
    if case == "unknown-key":
        # The rejection reason travels in the SRT handshake; ffmpeg reports it.
        assert "reject" in err.lower(), err


def test_disabled_stream_and_second_publisher_are_refused(relay: RelayProcess) -> None:
    stream = create_stream(relay)
    first = push(relay, stream, seconds=60)
    try:
        wait_status(relay, stream["id"], "active", timeout=30)
        second = push(relay, stream, seconds=5)
        code, err = finish(second)
        assert code != 0, err
        assert get_stream(relay, stream["id"])["status"] == "active"
        with api(relay) as client:
            response = client.put(f"/video/v1/live-streams/{stream['id']}/disable")
            assert response.status_code == 200, response.text
        # Disabling ends the session: the first encoder loses its connection.
        code, err = finish(first, timeout=30)
        wait_status(relay, stream["id"], "disabled", timeout=30)
        third = push(relay, stream, seconds=5)
        code, err = finish(third)
        assert code != 0, err
    finally:
        if first.poll() is None:
            first.kill()
            finish(first)


def test_reconnect_inside_the_window_keeps_the_asset(relay: RelayProcess,
                                                     data_dir: Path) -> None:
    stream = create_stream(relay, reconnect_window=30)
    first = push(relay, stream, seconds=4)
    wait_status(relay, stream["id"], "active", timeout=30)
    asset_id = get_stream(relay, stream["id"])["active_asset_id"]
    assert finish(first)[0] == 0
    second = push(relay, stream, seconds=4)
    wait_until(lambda: "video.live_stream.connected"
               in events(data_dir, stream["id"])[5:], 30, "the second connection")
    assert finish(second)[0] == 0
    live = get_stream(relay, stream["id"])
    assert live["active_asset_id"] == asset_id, live
    with api(relay) as client:
        response = client.put(f"/video/v1/live-streams/{stream['id']}/complete")
        assert response.status_code == 200, response.text
    wait_status(relay, stream["id"], "idle", timeout=30)
    with api(relay) as client:
        asset = client.get(f"/video/v1/assets/{asset_id}").json()["data"]
    assert asset["status"] == "ready" and len(asset["recording_times"]) == 2, asset
    assert events(data_dir, stream["id"]).count("video.asset.created") == 1


@pytest.mark.skipif(SRT_LIVE_TRANSMIT is None, reason="srt-live-transmit is not installed")
def test_srt_live_transmit_carries_a_ts_file(relay: RelayProcess, tmp_path: Path) -> None:
    """A client that is not an encoder: srt-live-transmit sends TS that ffmpeg wrote to a file,
    paced by ffmpeg reading it in real time (`-re ... -c copy -f mpegts -` into its stdin)."""
    assert FFMPEG is not None and SRT_LIVE_TRANSMIT is not None
    source = tmp_path / "source.ts"
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i",
         "sine=frequency=440:sample_rate=48000", "-t", "6", "-c:v", "libx264",
         "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac",
         "-f", "mpegts", str(source)], check=True, timeout=60)
    stream = create_stream(relay)
    host_port = relay.urls["srt"].removeprefix("srt://")
    target = (f"srt://{host_port}?streamid={stream['stream_key']}"
              f"&passphrase={stream['srt_passphrase']}")
    pacer = subprocess.Popen(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(source),
         "-c", "copy", "-f", "mpegts", "-"], stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL)
    sender = subprocess.Popen([SRT_LIVE_TRANSMIT, "-q", "file://con", target],
                              stdin=pacer.stdout, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    assert pacer.stdout is not None
    pacer.stdout.close()
    try:
        wait_status(relay, stream["id"], "active", timeout=30)
        assert get_stream(relay, stream["id"])["active_ingest_protocol"] == "srt"
    finally:
        pacer.kill()
        pacer.wait(30)
        sender.kill()
        sender.communicate(timeout=30)


def test_relay_names_the_srt_listener(relay: RelayProcess) -> None:
    assert relay.urls["srt"].startswith("srt://127.0.0.1:")
    assert any("libsrt" in line for line in relay.lines), relay.log
    with httpx.Client(base_url=relay.http_url) as client:
        assert client.get("/readyz").status_code == 200


def srt_samples(relay: RelayProcess) -> dict[tuple[str, str], float]:
    """/metrics' relay_srt_* samples: (name, live_stream_id label or "") -> value."""
    text = httpx.get(relay.urls["metrics"], timeout=10).text
    return {(sample.name, sample.labels.get("live_stream_id", "")): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name.startswith("relay_srt_")}


def test_metrics_show_the_srt_publisher(relay: RelayProcess) -> None:
    """While ffmpeg publishes, /metrics has the SRT counters and the connection's libsrt
    statistics under its stream's id; once it has left, the per-connection gauges go."""
    stream = create_stream(relay)
    encoder = push(relay, stream, seconds=30)
    try:
        wait_status(relay, stream["id"], "active", timeout=30)
        rate = ("relay_srt_connection_receive_rate_mbps", stream["id"])
        # libsrt's stats come every second (SrtLimits.stats_interval); the rate is the
        # last interval's, so wait for an interval that saw the stream's packets.
        wait_until(lambda: srt_samples(relay).get(rate, 0) > 0, 30,
                   "a positive receive rate for the stream")
        samples = srt_samples(relay)
        for gauge in ("rtt_ms", "packets_lost", "packets_retransmitted", "packets_dropped",
                      "receive_buffer_ms"):
            assert (f"relay_srt_connection_{gauge}", stream["id"]) in samples, samples
        assert samples[("relay_srt_open_connections", "")] == 1
        assert samples[("relay_srt_connections_total", "")] >= 1
        assert samples[("relay_srt_handshakes_accepted_total", "")] >= 1
        assert samples[("relay_srt_received_bytes_total", "")] > 0
        assert samples[("relay_srt_ts_packets_total", "")] > 0
    finally:
        encoder.kill()
        finish(encoder)
    wait_until(lambda: srt_samples(relay)[("relay_srt_open_connections", "")] == 0, 30,
               "the connection's end")
    samples = srt_samples(relay)
    assert not any(stream_id for _, stream_id in samples), samples
    assert samples[("relay_srt_ts_packets_total", "")] > 0  # kept after the connection
    text = httpx.get(relay.urls["metrics"], timeout=10).text
    frames = {sample.labels["kind"]: sample.value
              for family in text_string_to_metric_families(text) for sample in family.samples
              if sample.name == "relay_srt_frames_total"}
    assert frames["video"] > 0 and frames["audio"] > 0, frames  # the media assembler's too


GST_LAUNCH = shutil.which("gst-launch-1.0")


@pytest.mark.skipif(GST_LAUNCH is None, reason="GStreamer is not installed (make test does)")
def test_gstreamer_srtsink_publishes(relay: RelayProcess) -> None:
    """A third, independent encoder: GStreamer's x264enc + voaacenc, its own MPEG-TS muxer
    (mpegtsmux) and its own SRT element (srtsink, libsrt's GnuTLS build)."""
    assert GST_LAUNCH is not None
    stream = create_stream(relay)
    host_port = relay.urls["srt"].removeprefix("srt://")
    pipeline = (
        "videotestsrc is-live=true num-buffers=600 "
        "! video/x-raw,width=320,height=240,framerate=30/1 "
        "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 "
        "! h264parse ! queue ! mpegtsmux name=mux alignment=7 "
        f"! srtsink uri=srt://{host_port} streamid={stream['stream_key']} "
        f"passphrase={stream['srt_passphrase']} pbkeylen=16 "
        "audiotestsrc is-live=true ! audio/x-raw,rate=48000,channels=2 "
        "! audioconvert ! voaacenc ! aacparse ! queue ! mux.")
    sender = subprocess.Popen([GST_LAUNCH, "-q", "-e", *pipeline.split()],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_status(relay, stream["id"], "active", timeout=40)
        playback_id = stream["playback_ids"][0]["id"]
        assert codecs(probe(f"{relay.http_url}/{playback_id}.m3u8")) == {"h264", "aac"}
    finally:
        sender.kill()
        sender.communicate(timeout=30)


def serve_without_libsrt(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`relay serve` in a Python where the compiled libsrt binding cannot be imported, as on
    a machine without libsrt1.5-openssl (None in sys.modules makes an import fail)."""
    code = ("import sys; sys.modules['relay.srt._libsrt'] = None; "
            "from relay.cli import main; sys.exit(main(sys.argv[1:]))")
    return subprocess.run(
        [sys.executable, "-c", code, "serve", "--host", "127.0.0.1", "--http-port", "0",
         "--metrics-port", "0", "--rtmp-port", "0", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=60, check=False)


def test_without_libsrt_serve_names_the_package(data_dir: Path) -> None:
    result = serve_without_libsrt(data_dir, "--srt-port", str(free_udp_port()))
    assert result.returncode == 1, result.stderr
    assert "libsrt1.5-openssl" in result.stderr and "--srt-port 0" in result.stderr


def test_without_libsrt_serve_runs_with_srt_off(data_dir: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.modules['relay.srt._libsrt'] = None; "
         "from relay.cli import main; sys.exit(main(sys.argv[1:]))", "serve", "--host",
         "127.0.0.1", "--http-port", "0", "--metrics-port", "0", "--rtmp-port", "0",
         "--srt-port", "0", "--data-dir", str(data_dir)],
        stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "ready" in line or "cannot start" in line:
            break
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 0, "".join(lines)
    assert not any("srt listening" in line for line in lines)


def test_taken_srt_port_is_one_clear_line(data_dir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = str(taken.getsockname()[1])
        result = subprocess.run(
            [sys.executable, "-m", "relay", "serve", "--host", "127.0.0.1", "--http-port",
             "0", "--metrics-port", "0", "--rtmp-port", "0", "--srt-port", port,
             "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60,
            check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    assert "--srt-port" in errors[0] and port in errors[0], errors


def test_hevc_over_srt_plays(relay: RelayProcess) -> None:
    """HEVC (stream type 0x24) from libx265: the hvcC Relay builds from the in-band VPS, SPS
    and PPS must be one ffprobe decodes the HLS output with."""
    assert FFMPEG is not None
    stream = create_stream(relay)
    url = srt_url(relay.urls["srt"], stream["stream_key"], stream["srt_passphrase"])
    encoder = subprocess.Popen(
        [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi",
         "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i",
         "sine=frequency=440:sample_rate=48000", "-t", "30", "-c:v", "libx265",
         "-preset", "ultrafast", "-x265-params", "keyint=30:log-level=error",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "mpegts", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_status(relay, stream["id"], "active", timeout=40)
        info = probe(f"{relay.http_url}/{stream['playback_ids'][0]['id']}.m3u8")
        assert codecs(info) == {"hevc", "aac"}, info
    finally:
        encoder.kill()
        finish(encoder)


def test_session_limit_disconnects_the_srt_caller(data_dir: Path) -> None:
    """The session limit (12 hours by default) ends an SRT session as it ends an RTMP one:
    Relay closes the caller's connection, and ffmpeg fails on its next write."""
    relay = RelayProcess(data_dir, token=TOKEN,
                         extra_args=["--max-session-duration", "3"]).start()
    try:
        stream = create_stream(relay)
        code, _ = finish(push(relay, stream, seconds=60), timeout=40)
        assert code != 0
        assert "session reached its limit of 3s" in relay.log
        wait_status(relay, stream["id"], "idle", timeout=30)
    finally:
        assert relay.stop() == 0
