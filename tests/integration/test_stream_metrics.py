"""Per live stream metrics during a real ffmpeg RTMP push to `relay serve`, read from
/metrics with prometheus_client's parser.

How "what ffmpeg sends" is measured: from the same run, the relay's own
`relay_rtmp_received_bytes_total`, sampled 5 s apart while the stream is steady (ffmpeg in
CBR, so the rate does not depend on where the windows fall). Those bytes include RTMP chunk
and FLV tag headers the per-stream bitrate (frame data only) leaves out: a few percent at
this rate, well inside the 20 % allowed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit.encoders import ffmpeg_publish, finish, needs_ffmpeg
from testkit.relay_process import RelayProcess
from tests.integration.helpers.rtmp_ingest import (
    TOKEN,
    create_stream,
    publish_url,
    wait_status,
    wait_until,
)

pytestmark = needs_ffmpeg

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
PER_STREAM = ("relay_live_stream_ingest_bitrate_bps", "relay_live_stream_frame_rate",
              "relay_live_stream_keyframe_interval_seconds", "relay_live_stream_av_drift_ms",
              "relay_live_stream_reconnects_total", "relay_live_stream_viewers")
#: Constant bitrate video (x264's CBR mode, no scene-cut keyframes: the GOP is exactly -g).
CBR = ("-b:v", "800k", "-minrate", "800k", "-maxrate", "800k", "-bufsize", "400k",
       "-x264-params", "nal-hrd=cbr:scenecut=0")


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path / "data", token=TOKEN).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


def scrape(relay: RelayProcess) -> Samples:
    text = httpx.get(relay.urls["metrics"], timeout=10).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_per_stream_metrics_of_an_ffmpeg_push(relay: RelayProcess) -> None:
    stream = create_stream(relay, reconnect_window=1)
    labels = (("live_stream_id", stream["id"]),)
    encoder = ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=16,
                             rate=30, gop=30, extra=CBR)
    try:
        wait_status(relay, stream["id"], "active")
        # A player: the multivariant playlist, then the media playlist.
        playback_id = stream["playback_ids"][0]["id"]
        with httpx.Client(base_url=relay.http_url, timeout=10) as player:
            assert player.get(f"/{playback_id}.m3u8").status_code == 200
        time.sleep(6)  # past the start: a full rate window of steady media
        before = scrape(relay)
        started = time.monotonic()
        time.sleep(5)
        after = scrape(relay)
        elapsed = time.monotonic() - started
    finally:
        code, err = finish(encoder)
    assert code == 0, err

    received = (after["relay_rtmp_received_bytes_total", ()]
                - before["relay_rtmp_received_bytes_total", ()]) * 8 / elapsed
    bitrate = after["relay_live_stream_ingest_bitrate_bps", labels]
    assert received > 500_000  # the CBR settings took: 800k video + 64k audio
    assert abs(bitrate - received) <= 0.2 * received, (bitrate, received)
    assert after["relay_live_stream_frame_rate", labels] == pytest.approx(30, abs=1.5)
    assert after["relay_live_stream_keyframe_interval_seconds", labels] == pytest.approx(
        1.0, abs=0.05)
    # AAC and H.264 from one ffmpeg in step: within a frame or two of each other.
    assert abs(after["relay_live_stream_av_drift_ms", labels]) < 200
    assert after["relay_live_stream_reconnects_total", labels] == 0
    assert after["relay_live_stream_viewers", labels] == 1  # one address: 127.0.0.1
    assert after["relay_live_streams", (("status", "active"),)] == 1

    # The push ended: once the reconnect window is over, the stream's series are gone.
    wait_status(relay, stream["id"], "idle")
    wait_until(lambda: not [key for key in scrape(relay)
                            if key[0] in PER_STREAM and key[1] == labels],
               what="the stream's series to go")
    assert scrape(relay)["relay_live_streams", (("status", "idle"),)] == 1
