"""The playback and webhook families of /metrics during a real ffmpeg push to `relay serve`
in LL-HLS mode, with a local webhook receiver: the requests a player makes are counted by
kind and status, a blocking reload and the published parts land in their histograms, and
the lifecycle's webhooks in the deliveries, the latency histogram and the queue depth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit.encoders import ffmpeg_publish, finish, needs_ffmpeg
from testkit.relay_process import RelayProcess
from tests.integration.helpers.rtmp_ingest import TOKEN, create_stream, publish_url, wait_status
from tests.integration.helpers.webhooks import SECRET, Receiver, receiver, wait_until

pytestmark = needs_ffmpeg
__all__ = ["receiver"]  # a fixture

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def relay(tmp_path: Path, receiver: Receiver) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path / "data", token=TOKEN,
                           extra_args=["--webhook-url", receiver.url],
                           env={"RELAY_WEBHOOK_SECRET": SECRET}).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


def scrape(relay: RelayProcess) -> Samples:
    text = httpx.get(relay.urls["metrics"], timeout=10).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def requests(samples: Samples) -> dict[tuple[str, str], float]:
    return {(dict(labels)["kind"], dict(labels)["status"]): value
            for (name, labels), value in samples.items() if name == "relay_hls_requests_total"}


def test_playback_and_webhook_metrics_of_an_ffmpeg_push(relay: RelayProcess,
                                                        receiver: Receiver) -> None:
    stream = create_stream(relay, latency_mode="low")
    encoder = ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=10)
    try:
        wait_status(relay, stream["id"], "active")
        playback_id = stream["playback_ids"][0]["id"]
        with httpx.Client(base_url=relay.http_url, timeout=20) as player:
            assert player.get(f"/{playback_id}.m3u8").status_code == 200
            playlist = player.get(f"/{playback_id}/rendition.m3u8")
            assert playlist.status_code == 200
            # The preload hint names the next part: a blocking reload for it is held until
            # the part is published, then the part itself is served.
            hint = next(line for line in playlist.text.splitlines()
                        if line.startswith("#EXT-X-PRELOAD-HINT"))
            name = hint.split('URI="')[1].split('"')[0]
            msn, part = name.removesuffix(".m4s").split(".")
            held = player.get(f"/{playback_id}/rendition.m3u8",
                              params={"_HLS_msn": msn, "_HLS_part": part})
            assert held.status_code == 200 and f'URI="{name}"' in held.text
            assert player.get(f"/{playback_id}/{name}").status_code == 200
            assert player.get(f"/{playback_id}/999999.m4s").status_code == 404
            assert player.get("/player/" + playback_id).status_code == 200
        during = scrape(relay)
    finally:
        code, err = finish(encoder)
    assert code == 0, err

    assert requests(during) == {("multivariant", "200"): 1, ("media_playlist", "200"): 2,
                                ("part", "200"): 1, ("segment", "404"): 1,
                                ("player", "200"): 1}
    assert during["relay_hls_blocking_reload_wait_seconds_count", ()] == 1
    assert during["relay_hls_blocking_reload_wait_seconds_sum", ()] > 0
    published = during["relay_hls_part_publish_delay_seconds_count", ()]
    assert published > 0 and during["relay_hls_part_publish_delay_seconds_sum", ()] > 0

    # The lifecycle's events (created, connected, recording, active, ...) reach the
    # receiver; the deliverer's counts follow, and its backlog drains (counted each second).
    wait_until(lambda: len(receiver.events) >= 4, 30, "webhooks to arrive")

    def drained() -> bool:
        samples = scrape(relay)
        return (samples["relay_webhook_deliveries_total", (("result", "success"),)]
                >= len(receiver.events)
                and samples["relay_webhook_queue_depth", (("state", "waiting"),)] == 0)
    wait_until(drained, 30, "the webhook backlog to drain")
    after = scrape(relay)
    delivered = after["relay_webhook_deliveries_total", (("result", "success"),)]
    assert after["relay_webhook_delivery_latency_seconds_count", ()] == delivered
    assert after["relay_webhook_deliveries_total", (("result", "http_error"),)] == 0
