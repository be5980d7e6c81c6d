"""The player page on a real Relay: the poster, the LIVE badge, the duration and the seek
bar's storyboard previews, in headless Chromium, for a live stream and for its asset.

`relay serve` as a subprocess, ffmpeg pushing `testsrc2` over RTMP with its frame number
burnt in (test_images.FRAME_CODE), 15 fps (the code counts to 1023 frames), a keyframe
every second. Once the live window (15 segments of 2 s) has slid off the stream's start,
hls.js's currentTime and the stream's media timeline differ, and while it is live the page's
poster is the thumbnail the route answered (by screenshot), the badge shows a latency, and a
hover over the seek bar at the paused video's own time previews the live storyboard's tile of
that time: its burnt-in frame number is the keyframe at or before the frame on screen, so the
page maps currentTime onto the stream's media timeline. After the push the asset's page shows
its duration and previews the asset storyboard's tiles. Screenshots go to the test's tmp dir.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page

from testkit.browser import launch_chromium
from testkit.encoders import ffmpeg_publish, finish, needs_ffmpeg
from tests.integration.helpers.images import FRAME_CODE, frame_number
from tests.integration.helpers.rtmp_ingest import (
    api,
    create_stream,
    get_stream,
    publish_url,
    start_relay,
    wait_status,
    wait_until,
)
from tests.integration.helpers.signed_playback import token_for
from tests.integration.player_images import (
    cue_at,
    hover_seek_bar,
    new_page,
    parse_storyboard,
    poster_before_play,
    spread,
    video_content,
)

pytestmark = [needs_ffmpeg]

FPS = 15
GOP = 15  # a keyframe a second: a storyboard tile a second shows the keyframe of its second
PUSHED = 55  # seconds; the burnt-in code counts to 1023 frames (68 s at 15 fps)
SLID = 4  # seconds the live window must have slid off the stream's start before the checks


def get(base: str, path: str, **params: str) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=60) as client:
        return client.get(path, params=params)


def sheet_of(base: str, pid: str, **params: str) -> Image.Image:
    response = get(base, f"/{pid}/storyboard.jpg", **params)
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content)).convert("RGB")


def wait_state(page: Page, state: str) -> None:
    page.wait_for_function(
        f"() => document.getElementById('status').dataset.state === {json.dumps(state)}"
        " && window.relayPlayer.video.readyState >= 2")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as launched:
        yield launched


def test_player_page_live_then_asset(browser: Browser, tmp_path: Path) -> None:
    relay = start_relay(tmp_path / "data")
    try:
        stream = create_stream(relay, reconnect_window=1)
        encoder = ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=PUSHED,
                                 size="320x240", rate=FPS, gop=GOP,
                                 extra=("-vf", FRAME_CODE))
        try:
            wait_status(relay, stream["id"], "active", 30)
            live_pid = stream["playback_ids"][0]["id"]
            asset_id = get_stream(relay, stream["id"])["active_asset_id"]
            with api(relay) as client:
                asset = client.get(f"/video/v1/assets/{asset_id}").json()["data"]
            asset_pid = asset["playback_ids"][0]["id"]
            def slid() -> bool:
                cues = parse_storyboard(get(relay.http_url, f"/{live_pid}/storyboard.vtt").text)
                return bool(cues) and cues[0].start >= SLID

            wait_until(slid, PUSHED, f"the live window {SLID} s past the stream's start")
            check_live(browser, relay.http_url, live_pid, tmp_path)
            code, err = finish(encoder)
            assert code == 0, err
        finally:
            if encoder.poll() is None:
                encoder.kill()
                finish(encoder)
        wait_status(relay, stream["id"], "idle", 30)
        check_asset(browser, relay.http_url, asset_pid, tmp_path)
    finally:
        assert relay.stop() == 0, relay.log


def check_live(browser: Browser, base: str, pid: str, out: Path) -> None:
    poster = poster_before_play(browser, f"{base}/player/{pid}", out, "live-poster")
    assert poster.status == 200
    assert spread(poster.shown) > 20, "the poster region is blank"
    assert poster.difference < 20, poster.difference
    assert frame_number(poster.poster) % GOP == 0  # the newest keyframe

    context, page, errors = new_page(browser)
    try:
        page.goto(f"{base}/player/{pid}")
        wait_state(page, "live")
        page.wait_for_function("() => document.getElementById('status').dataset.latency")
        badge = page.locator("#live")
        assert badge.is_visible()
        match = re.fullmatch(r"LIVE · (\d+\.\d\d) s", badge.inner_text())
        assert match is not None, badge.inner_text()
        assert 0.2 < float(match.group(1)) < 20, match.group(1)
        assert page.locator("#status").get_attribute("data-duration") == ""
        page.screenshot(path=str(out / "live.png"))

        # Pause, read the frame on screen, and hover the seek bar at the video's own time.
        page.evaluate("() => window.relayPlayer.video.pause()")
        page.wait_for_timeout(500)
        now, start, end = page.evaluate(
            "() => { const v = window.relayPlayer.video, s = v.seekable;"
            " return [v.currentTime, s.start(0), s.end(s.length - 1)]; }")
        assert start <= now <= end, (start, now, end)
        frame = video_content(page, (320, 240))
        frame.save(out / "live-paused-frame.png")
        on_screen = frame_number(frame)
        seen = hover_seek_bar(page, (now - start) / (end - start),
                              lambda: sheet_of(base, pid), out, "live-hover")
        assert seen.tile is not None, "no tile for the paused time"
        assert seen.difference < 12, seen.difference
        tile_frame = frame_number(seen.shown)
        print("live: paused at", now, "on screen", on_screen, "hovered", seen.at,
              "media time", seen.time, "preview", tile_frame)
        # The media timeline: frame n of the push is at n / FPS (the stream's first segment
        # starts with its first keyframe, frame 0). The page's offset from currentTime to it
        # is the one the paused frame shows, within two frames.
        assert abs((seen.time - seen.at) - (on_screen / FPS - now)) < 2.5 / FPS, (
            seen, now, on_screen)
        assert seen.time - seen.at > SLID - 1, (seen.time, seen.at)  # the mapping was needed
        # The window may have moved between reading it and hovering: the hovered time is
        # near the paused one, and the tile is the keyframe of the hovered second.
        assert abs(seen.at - now) < 4.5, (seen.at, now)  # two 2 s segments and slack
        assert tile_frame == int(seen.time + 1e-3) * FPS, (seen.time, tile_frame)
        assert errors == [], errors
    finally:
        context.close()


def check_asset(browser: Browser, base: str, pid: str, out: Path) -> None:
    poster = poster_before_play(browser, f"{base}/player/{pid}", out, "asset-poster")
    assert poster.status == 200
    assert spread(poster.shown) > 20, "the poster region is blank"
    assert poster.difference < 20, poster.difference
    middle = frame_number(poster.poster)
    assert middle % GOP == 0 and abs(middle - PUSHED * FPS / 2) <= GOP + FPS, middle

    cues = parse_storyboard(get(base, f"/{pid}/storyboard.vtt").text)
    sheet = sheet_of(base, pid)
    context, page, errors = new_page(browser)
    try:
        page.goto(f"{base}/player/{pid}")
        wait_state(page, "vod")
        page.wait_for_function("() => document.getElementById('status').dataset.duration")
        duration = float(page.locator("#status").get_attribute("data-duration") or "0")
        assert abs(duration - PUSHED) < 2, duration
        total = int(duration)
        assert page.locator("#time").inner_text().endswith(f" / {total // 60}:{total % 60:02}")
        assert not page.locator("#live").is_visible()
        for fraction in (0.25, 0.6):
            seen = hover_seek_bar(page, fraction, sheet, out, f"asset-hover-{fraction}")
            duration = float(page.locator("#status").get_attribute("data-duration") or "0")
            assert abs(seen.time - fraction * duration) < 0.1, (fraction, seen.time)
            cue = cue_at(cues, fraction * duration)
            assert cue is not None
            assert seen.tile == (cue.x, cue.y, cue.w, cue.h), (fraction, seen.tile, cue)
            assert seen.difference < 12, (fraction, seen.difference)
            shown = frame_number(seen.shown)
            assert shown == int(cue.start * FPS + 1e-6) // GOP * GOP, (cue, shown)
        assert errors == [], errors
    finally:
        context.close()


def test_signed_player_page_shows_images_with_their_tokens(browser: Browser,
                                                           tmp_path: Path) -> None:
    """A signed id's page: with `thumbnail_token` and `storyboard_token` (audiences t and s)
    the poster and the previews are there; with the playback token alone the page asks for
    no images (they would be refused)."""
    relay = start_relay(tmp_path / "data")
    try:
        with api(relay) as client:
            created = client.post("/system/v1/signing-keys")
            assert created.status_code == 201, created.text
            key = created.json()["data"]
        stream = create_stream(relay, playback_policies=["signed"], reconnect_window=1)
        pid = stream["playback_ids"][0]["id"]
        encoder = ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=25,
                                 size="320x240", rate=FPS, gop=GOP,
                                 extra=("-vf", FRAME_CODE))
        try:
            wait_status(relay, stream["id"], "active", 30)
            tokens = {aud: token_for(key, pid, aud=aud) for aud in ("v", "t", "s")}
            assert get(relay.http_url, f"/{pid}/thumbnail.jpg").status_code == 403
            wait_until(lambda: get(relay.http_url, f"/{pid}/storyboard.vtt", token=tokens["s"])
                       .text.count(" --> ") >= 6, 30, "a live storyboard of 6 s")
            page_url = (f"{relay.http_url}/player/{pid}?token={tokens['v']}"
                        f"&thumbnail_token={tokens['t']}&storyboard_token={tokens['s']}")

            poster = poster_before_play(browser, page_url, tmp_path, "signed-poster")
            assert poster.status == 200
            assert spread(poster.shown) > 20 and poster.difference < 20, poster.difference

            context, page, errors = new_page(browser)
            try:
                page.goto(page_url)
                wait_state(page, "live")
                seen = hover_seek_bar(page, 0.5,
                                      lambda: sheet_of(relay.http_url, pid, token=tokens["s"]),
                                      tmp_path, "signed-hover")
                assert seen.tile is not None and seen.difference < 12, seen
                assert frame_number(seen.shown) == int(seen.time + 1e-3) * FPS, seen.time
                assert errors == [], errors

                # The playback token alone: no poster, no storyboard request, no errors.
                requested: list[str] = []
                page.on("request", lambda request: requested.append(request.url))
                page.goto(f"{relay.http_url}/player/{pid}?token={tokens['v']}")
                wait_state(page, "live")
                assert page.locator("video").get_attribute("poster") is None
                bar = page.locator("#seek").bounding_box()
                assert bar is not None
                page.mouse.move(bar["x"] + bar["width"] / 2, bar["y"] + bar["height"] / 2)
                page.wait_for_timeout(500)
                assert page.locator("#preview").get_attribute("data-tile") == ""
                assert not [u for u in requested if "/thumbnail." in u or "/storyboard." in u]
                assert errors == [], errors
            finally:
                context.close()
            code, err = finish(encoder)
            assert code == 0, err
        finally:
            if encoder.poll() is None:
                encoder.kill()
                finish(encoder)
    finally:
        assert relay.stop() == 0, relay.log
