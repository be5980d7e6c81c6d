"""hls.js in headless Chromium plays Relay's player page, live (LL-HLS) and as VOD.

Real peers only: ffmpeg publishes to a `relay serve` subprocess, Debian's chromium (driven by
Playwright) opens `/player/{PLAYBACK_ID}` with the hls.js Relay ships. hls.js's reported
latency is recorded as a test property (`record_property`), not asserted tightly: this
machine is shared and noisy; `benchmarks/ll_hls_latency.py` measures it properly.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from testkit.browser import launch_chromium, open_player
from testkit.encoders import ffmpeg_publish, finish, needs_ffmpeg
from testkit.relay_process import RelayProcess
from tests.integration.helpers.hls_playback import Live, relay, wait_playable
from tests.integration.helpers.rtmp_ingest import (
    api,
    create_stream,
    get_stream,
    publish_url,
    wait_status,
)

pytestmark = needs_ffmpeg
__all__ = ["relay"]  # the fixture, shared with the other HLS end-to-end tests


def test_live_low_latency_and_then_vod_in_chromium(
        relay: RelayProcess, record_property: Callable[[str, object], None]) -> None:
    stream = create_stream(relay, latency_mode="low", reconnect_window=1)
    encoder = ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=24, gop=30)
    live = Live(stream, encoder)
    try:
        wait_playable(relay, live)
        asset_id = get_stream(relay, stream["id"])["active_asset_id"]
        with launch_chromium() as browser:
            seen = open_player(browser, f"{relay.http_url}/player/{live.playback_id}",
                               startup_timeout=15, sample_seconds=6)
            assert seen.started and seen.advanced, seen.summary()
            assert seen.decode_errors == (), seen.summary()
            assert seen.final_state == "live", seen.summary()
            latencies = [value for value in seen.latencies if value is not None]
            assert latencies, seen.summary()
            record_property("hls_js_latency_median_s", round(statistics.median(latencies), 3))
            record_property("hls_js_startup_s", seen.startup_seconds)
            print(f"hls.js latency: median {statistics.median(latencies):.3f} s, "
                  f"samples {[round(v, 3) for v in latencies]}")
            assert statistics.median(latencies) < 10, seen.summary()

            code, err = finish(encoder)
            assert code == 0, err
            wait_status(relay, stream["id"], "idle")
            with api(relay) as client:
                asset = client.get(f"/video/v1/assets/{asset_id}").json()["data"]
            vod = open_player(browser,
                              f"{relay.http_url}/player/{asset['playback_ids'][0]['id']}",
                              startup_timeout=15, sample_seconds=2)
            assert vod.started and vod.advanced, vod.summary()
            assert vod.decode_errors == () and vod.final_state == "vod", vod.summary()
    finally:
        encoder.kill()
        finish(encoder)
