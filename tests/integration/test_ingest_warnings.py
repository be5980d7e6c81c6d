"""`video.live_stream.warning` from real ffmpeg pushes to `relay serve`, delivered signed to a
receiver started here: a keyframe interval of 10 s on 2 s segments, and video without
audio (`-an`), each get their warning; a push with the keyframe interval equal to the
segment gets none (checked once its stream's last event, `idle`, has arrived: events of one
object arrive in order, so a warning would have come before it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit.encoders import ffmpeg_publish, finish, needs_ffmpeg
from testkit.relay_process import RelayProcess
from tests.integration.helpers.rtmp_ingest import TOKEN, create_stream, publish_url
from tests.integration.helpers.webhooks import SECRET, Receiver, wait_until

pytestmark = needs_ffmpeg

#: No scene-cut keyframes: the GOP is exactly -g.
FIXED_GOP = ("-sc_threshold", "0")


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    made = Receiver()
    try:
        yield made
    finally:
        made.close()


def of(receiver: Receiver, stream_id: str) -> list[dict[str, Any]]:
    firsts: dict[str, dict[str, Any]] = {}
    for event in receiver.events:  # at least once: keep one of each id
        if event["object"]["id"] == stream_id:
            firsts.setdefault(event["id"], event)
    return list(firsts.values())


def test_warnings_of_real_ffmpeg_pushes(tmp_path: Path, hooks: Receiver) -> None:
    receiver = hooks
    with RelayProcess(tmp_path / "data", token=TOKEN,
                      extra_args=["--webhook-url", receiver.url],
                      env={"RELAY_WEBHOOK_SECRET": SECRET}) as relay:
        # `reduced`: 2 s segments (relay.hls.segmenter.SEGMENT_TARGETS); 30 fps.
        long_gop, no_audio, healthy = (create_stream(relay, reconnect_window=1)
                                       for _ in range(3))
        encoders = [
            ffmpeg_publish(publish_url(relay, long_gop["stream_key"]), seconds=12, gop=300,
                           extra=FIXED_GOP),
            ffmpeg_publish(publish_url(relay, no_audio["stream_key"]), seconds=10, gop=60,
                           extra=(*FIXED_GOP, "-an")),
            ffmpeg_publish(publish_url(relay, healthy["stream_key"]), seconds=10, gop=60,
                           extra=FIXED_GOP),
        ]
        for encoder in encoders:
            code, err = finish(encoder)
            assert code == 0, err
        for stream in (long_gop, no_audio, healthy):
            wait_until(lambda s=stream: "video.live_stream.idle" in  # type: ignore[misc]
                       {e["type"] for e in of(receiver, s["id"])}, 60,
                       f"stream {stream['id']} to go idle")
        metrics = httpx.get(relay.urls["metrics"], timeout=10).text
        assert relay.stop() == 0, relay.log

    assert receiver.bad_signatures == 0  # every delivery signed like every event
    warned: dict[str, list[str]] = {}
    for stream in (long_gop, no_audio, healthy):
        events = of(receiver, stream["id"])
        types = [e["type"] for e in events]
        warnings = [e for e in events if e["type"] == "video.live_stream.warning"]
        warned[stream["id"]] = [e["data"]["warning"]["type"] for e in warnings]
        for event in warnings:
            assert event["object"] == {"type": "live_stream", "id": stream["id"]}
            assert event["data"]["id"] == stream["id"]
            assert event["data"]["stream_key"] == stream["stream_key"]
            assert set(event["data"]["warning"]) == {"type", "message"}
            # After the stream became active, before it was disconnected.
            assert (types.index("video.live_stream.recording") < types.index(event["type"])
                    < types.index("video.live_stream.disconnected"))
    assert warned[long_gop["id"]] == ["keyframe_interval"], warned
    assert warned[no_audio["id"]] == ["missing_audio"], warned
    assert warned[healthy["id"]] == [], warned
    [gop_warning] = [e for e in of(receiver, long_gop["id"])
                     if e["type"] == "video.live_stream.warning"]
    message = gop_warning["data"]["warning"]["message"]
    assert "2 s segments" in message and "-g 60 at 30 fps" in message, message

    raised = {sample.labels["warning_type"]: sample.value
              for family in text_string_to_metric_families(metrics)
              for sample in family.samples if sample.name == "relay_live_stream_warnings_total"}
    assert raised["keyframe_interval"] == 1 and raised["missing_audio"] == 1, raised
    assert raised["timestamp_jump"] == raised["av_drift"] == raised["missing_video"] == 0
