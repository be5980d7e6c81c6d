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


_STARTED = ("() => { const v = window.relayPlayer && window.relayPlayer.video;"
            " return !!v && !v.paused && v.readyState >= 2 && v.currentTime > 0; }")
# Seconds buffered ahead of the playhead (the range that holds it).
_AHEAD = ("(() => { const v = window.relayPlayer.video, b = v.buffered;"
          " for (let i = 0; i < b.length; i++) {"
          " if (b.start(i) <= v.currentTime + 0.1 && v.currentTime < b.end(i))"
          " return b.end(i) - v.currentTime; } return 0; })()")


def test_player_catches_up_after_falling_behind_and_leaves_a_viewers_rate(
        relay: RelayProcess) -> None:
    """The page's own catch-up (relay/hls/player.py, catchUp): behind hls.js's target
    latency with buffer to spare it plays faster, then returns to 1; a rate the viewer set
    stays as it is (hls.js's own controller, switched off by the page, would reset it to 1 or
    its catch-up rate at the next timeupdate)."""
    stream = create_stream(relay, latency_mode="low", reconnect_window=1)
    encoder = ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=60, gop=30)
    live = Live(stream, encoder)
    try:
        wait_playable(relay, live)
        with launch_chromium() as browser:
            context = browser.new_context()
            try:
                page = context.new_page()
                page.set_default_timeout(30_000)
                page.goto(f"{relay.http_url}/player/{live.playback_id}")
                page.wait_for_function(_STARTED, polling=100)
                assert page.evaluate("() => window.relayPlayer.hls.config"
                                     ".maxLiveSyncPlaybackRate") == 1
                # Fall behind: paused, the live edge moves on and hls.js keeps buffering.
                # 1.5 s ahead is past the margin over the target (0.9 s at PART-TARGET 0.3)
                # and inside target + TARGETDURATION, where the page catches up.
                page.evaluate("() => window.relayPlayer.video.pause()")
                page.wait_for_function(f"() => {_AHEAD} > 1.5", polling=100)
                page.evaluate("() => window.relayPlayer.video.play()")
                page.wait_for_function("() => window.relayPlayer.video.playbackRate > 1",
                                       polling="raf")
                page.wait_for_function("() => window.relayPlayer.video.playbackRate === 1",
                                       polling=100)
                # A viewer's rate: left alone over several timeupdates (about 4 a second).
                page.evaluate("""() => {
                    const v = window.relayPlayer.video;
                    window.__updates = 0;
                    v.addEventListener("timeupdate", () => { window.__updates += 1; });
                    v.playbackRate = 0.75;
                }""")
                page.wait_for_function("() => window.__updates >= 8", polling=100)
                assert page.evaluate("() => window.relayPlayer.video.playbackRate") == 0.75
            finally:
                context.close()
    finally:
        encoder.kill()
        finish(encoder)
