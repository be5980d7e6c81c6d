"""The player page in headless Chromium, playing a real ffmpeg HLS stream through hls.js.

A test-only HTTP server on 127.0.0.1 serves what Relay's routes will serve: the page at
/player/{ID}, the shipped hls.js at /static/{NAME} and an fMP4 HLS stream at /{ID}.m3u8 with
its init and media segments. The stream is 6 s of testsrc2 + sine from ffmpeg; the same
segments are also offered as a live EVENT playlist (no ENDLIST) to exercise the live path,
and with one segment replaced by junk to show that the harness does see decode errors.
Every id has the same images, made by ffmpeg from the same source: `/{ID}/thumbnail.jpg`
(the frame at 3 s) and a storyboard, `/{ID}/storyboard.vtt` naming 1 s tiles of
`storyboard.png` (the frames at 0, 1, ... 5 s, 3 by 2), as Relay's image routes answer.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from relay.hls.player import (
    STATIC_MEDIA_TYPES,
    _script_json,
    render_player_page,
    render_player_page_for,
    static_file,
)
from testkit.browser import launch_chromium, open_player
from testkit.encoders import FFMPEG, needs_ffmpeg
from tests.integration.player_images import (
    cue_at,
    decode,
    difference,
    hover_seek_bar,
    new_page,
    parse_storyboard,
    poster_before_play,
    spread,
)

VOD_ID = "vodPlaybackId0123456789"
LIVE_ID = "livePlaybackId0123456789"
BROKEN_ID = "brokenPlaybackId0123456789"  # the VOD with its second segment replaced by junk
STREAM_SECONDS = 6

MEDIA_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mp4": "video/mp4",
    ".m4s": "video/iso.segment",
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".vtt": "text/vtt; charset=utf-8",
}
IMAGES = ("thumbnail.jpg", "storyboard.vtt", "storyboard.png")
TILE = (256, 192)
SHEET_COLUMNS = 3


class _Handler(BaseHTTPRequestHandler):
    media_dir: Path  # set on the subclass made per server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("/player/"):
            body = render_player_page(path.removeprefix("/player/")).encode()
            self._send(body, "text/html; charset=utf-8")
        elif path.startswith("/static/"):
            name = path.removeprefix("/static/")
            found = static_file(name)
            if found is None:
                self.send_error(HTTPStatus.NOT_FOUND)
            else:
                self._send(found.read_bytes(), STATIC_MEDIA_TYPES[name])
        elif (image := re.fullmatch(r"/[A-Za-z0-9]+/([a-z.]+)", path)) is not None:
            if image.group(1) in IMAGES:
                file = self.media_dir / "images" / image.group(1)
                self._send(file.read_bytes(), MEDIA_TYPES[file.suffix])
            else:
                self.send_error(HTTPStatus.NOT_FOUND)
        else:
            name = path.removeprefix("/")
            file = self.media_dir / name
            if "/" in name or name.startswith(".") or not file.is_file():
                self.send_error(HTTPStatus.NOT_FOUND)
            else:
                self._send(file.read_bytes(), MEDIA_TYPES.get(file.suffix,
                                                              "application/octet-stream"))

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s of H.264 + AAC as a VOD fMP4 HLS stream, and the same segments as a live EVENT
    playlist that has not ended (what a player sees mid-broadcast)."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed (make test installs it)")
    out = tmp_path_factory.mktemp("hls")
    result = subprocess.run(
        [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error",
         "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
         "-t", str(STREAM_SECONDS),
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "30",
         "-c:a", "aac", "-b:a", "64k",
         "-f", "hls", "-hls_segment_type", "fmp4", "-hls_time", "1",
         "-hls_playlist_type", "vod", "-hls_fmp4_init_filename", "init.mp4",
         "-hls_segment_filename", "seg%d.m4s", f"{VOD_ID}.m3u8"],
        cwd=out, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    vod = (out / f"{VOD_ID}.m3u8").read_text()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in vod and "#EXT-X-ENDLIST" in vod, vod
    live = vod.replace("#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-PLAYLIST-TYPE:EVENT")
    (out / f"{LIVE_ID}.m3u8").write_text(live.replace("#EXT-X-ENDLIST\n", ""))
    (out / "junk.m4s").write_bytes(bytes(range(256)) * 80)
    (out / f"{BROKEN_ID}.m3u8").write_text(vod.replace("seg1.m4s", "junk.m4s"))
    images = out / "images"
    images.mkdir()
    source = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"]
    for args in (["-ss", "3", "-frames:v", "1", "thumbnail.jpg"],
                 ["-t", str(STREAM_SECONDS), "-vf",
                  f"select='eq(mod(n,30),0)',scale={TILE[0]}:{TILE[1]},"
                  f"tile={SHEET_COLUMNS}x{STREAM_SECONDS // SHEET_COLUMNS}",
                  "-frames:v", "1", "storyboard.png"]):
        result = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error",
                                 *source, *args], cwd=images, capture_output=True, text=True,
                                timeout=60, check=False)
        assert result.returncode == 0, result.stderr
    cues = []
    for k in range(STREAM_SECONDS):
        x, y = k % SHEET_COLUMNS * TILE[0], k // SHEET_COLUMNS * TILE[1]
        cues.append(f"00:00:{k:02}.000 --> 00:00:{k + 1:02}.000\n"
                    f"storyboard.png#xywh={x},{y},{TILE[0]},{TILE[1]}\n")
    (images / "storyboard.vtt").write_text("WEBVTT\n\n" + "\n".join(cues))
    return out


@pytest.fixture(scope="module")
def server_url(media_dir: Path) -> Iterator[str]:
    assert static_file("hls.min.js") is not None, (
        "relay/hls/static/hls.min.js is missing: run `make setup` to fetch hls.js")
    handler = type("Handler", (_Handler,), {"media_dir": media_dir})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="player-test-http",
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as launched:
        yield launched


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"
        self.urls += [value or "" for name, value in attrs if name in ("src", "href")]


def test_page_loads_only_shipped_hls_js_and_plays_the_playback_id() -> None:
    page = render_player_page(VOD_ID)
    links = _Links()
    links.feed(page)
    assert links.urls == ["data:,", "/static/hls.min.js"]  # icon: no /favicon.ico request
    assert f'var source = "/{VOD_ID}.m3u8";' in page
    assert "lowLatencyMode: true" in page
    assert "maxLiveSyncPlaybackRate: 1}" in page  # the page catches up itself (catchUp)
    # Nothing from elsewhere: no absolute URL, no CSS import; url( only where the script
    # shows a storyboard tile, from a sheet URL it checked is same-origin.
    assert "http:" not in page and "https:" not in page and "//" not in page.split("<script>")[0]
    assert "@import" not in page and page.count("url(") == 1
    assert 'url.origin !== location.origin' in page
    # The images of the same id: the poster, the storyboard.
    assert ('<video id="video" controls autoplay muted playsinline '
            f'poster="/{VOD_ID}/thumbnail.jpg">') in page
    assert f'var storyboard = "/{VOD_ID}/storyboard.vtt";' in page


def test_signed_page_asks_for_images_only_with_their_tokens() -> None:
    # Images of signed ids need tokens of their own (audiences t and s).
    page = render_player_page(VOD_ID, token="a.b-c_d")
    assert 'var source = "/' + VOD_ID + '.m3u8?token=a.b-c_d";' in page
    assert "poster=" not in page and 'var storyboard = "";' in page
    page = render_player_page_for(VOD_ID, {"token": "v", "thumbnail_token": 't"<b>',
                                           "storyboard_token": "s&x=</script>"})
    assert f'poster="/{VOD_ID}/thumbnail.jpg?token=t%22%3Cb%3E"' in page
    assert f'var storyboard = "/{VOD_ID}/storyboard.vtt?token=s%26x%3D%3C%2Fscript%3E";' in page
    page = render_player_page_for(VOD_ID, {"token": "v", "storyboard_token": "s"})
    assert "poster=" not in page and "storyboard.vtt?token=s" in page


def test_content_security_policy_names_the_inline_script_and_style() -> None:
    page = render_player_page('x"</script>')
    policy = html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"',
                                      page).group(1))  # type: ignore[union-attr]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    style = page.split("<style>", 1)[1].split("</style>", 1)[0]
    def sha(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"
    assert directives["script-src"] == f"'self' {sha(script)}"
    assert directives["style-src"] == sha(style)
    assert directives["img-src"] == "'self' data:"


@pytest.mark.parametrize("playback_id", [
    '</script><script>alert(1)</script>',
    '"><img src=x onerror=alert(1)>',
    "a'b\\c\u2028d&e/..%2f",
])
def test_page_escapes_hostile_playback_id(playback_id: str) -> None:
    page = render_player_page(playback_id)
    links = _Links()
    links.feed(page)
    assert links.urls == ["data:,", "/static/hls.min.js"]
    assert links.scripts == 2
    assert page.count("</script") == 2
    assert "<img" not in page
    # In HTML text the id is entity-escaped; in the script only its percent-encoded form
    # appears, as the playlist URL: one path segment, nothing more.
    assert f"<title>{html.escape(playback_id)} · Relay</title>" in page
    poster = page.split(' poster="', 1)[1].split('"', 1)[0]
    assert poster.endswith("/thumbnail.jpg")
    assert all(c.isalnum() or c in "%-._~/" for c in poster), poster
    assert poster.count("/") == 2
    script = page.split('<script>\n"use strict";', 1)[1]
    assert playback_id not in script and "\u2028" not in script
    source = script.split('var source = "', 1)[1].split('"', 1)[0]
    assert source.startswith("/") and source.endswith(".m3u8")
    assert all(c.isalnum() or c in "%-._~" for c in source[1:]), source


def test_script_strings_cannot_end_the_script_element() -> None:
    # render_player_page percent-encodes first; this is the second line of defence.
    value = "</script><!--<script>\u2028\u2029&amp;\"'\\"
    literal = _script_json(value)
    assert json.loads(literal) == value
    assert not any(c in literal for c in "<>&\u2028\u2029")

def test_static_file_resolves_only_shipped_names() -> None:
    for name in ("", ".", "..", "../player.py", "player.py", "static/hls.min.js",
                 "hls.min.js/", "./hls.min.js", "HLS.MIN.JS"):
        assert static_file(name) is None, name
    license_file = static_file("hls.js.LICENSE")
    assert license_file is not None, "run `make setup` to fetch hls.js"
    assert "Apache License" in license_file.read_text()


@needs_ffmpeg
def test_vod_plays_in_chromium(browser: Browser, server_url: str) -> None:
    seen = open_player(browser, f"{server_url}/player/{VOD_ID}")
    assert seen.started, seen.summary()
    assert seen.advanced, seen.summary()
    assert seen.current_times[-1] - seen.current_times[0] >= 1.0, seen.summary()
    assert seen.decode_errors == (), seen.summary()
    assert all(not e.fatal for e in seen.hls_errors), seen.summary()
    assert seen.console_errors == () and seen.failed_requests == (), seen.summary()
    assert set(seen.states) == {"vod"}, seen.summary()
    assert set(seen.shown_latencies) == {""}, seen.summary()
    assert set(seen.playback_rates) == {1}, seen.summary()  # no catch-up for an asset


@needs_ffmpeg
def test_live_playlist_shows_live_state_and_latency(browser: Browser, server_url: str) -> None:
    seen = open_player(browser, f"{server_url}/player/{LIVE_ID}", sample_seconds=1.5)
    assert seen.started, seen.summary()
    assert seen.advanced, seen.summary()
    assert seen.decode_errors == (), seen.summary()
    assert set(seen.states) == {"live"}, seen.summary()
    # hls.js starts 3 target durations (1 s each) behind the live edge of this playlist.
    latencies = [x for x in seen.latencies if x is not None]
    assert latencies and all(0.5 < x < STREAM_SECONDS + 5 for x in latencies), seen.summary()
    shown = [float(x) for x in seen.shown_latencies if x]
    assert shown and all(0.5 < x < STREAM_SECONDS + 5 for x in shown), seen.summary()


@needs_ffmpeg
def test_harness_reports_a_segment_that_does_not_decode(browser: Browser,
                                                         server_url: str) -> None:
    seen = open_player(browser, f"{server_url}/player/{BROKEN_ID}", sample_seconds=1.0)
    assert seen.started, seen.summary()  # the first segment is good
    assert any("fragParsingError" in e for e in seen.decode_errors), seen.summary()


@needs_ffmpeg
def test_vod_poster_before_play(browser: Browser, server_url: str, media_dir: Path,
                                tmp_path: Path) -> None:
    seen = poster_before_play(browser, f"{server_url}/player/{VOD_ID}", tmp_path)
    assert seen.status == 200
    assert seen.poster.tobytes() == decode(
        (media_dir / "images" / "thumbnail.jpg").read_bytes()).tobytes()
    assert spread(seen.shown) > 20, "the poster region is blank"
    assert seen.difference < 20, seen.difference


def _wait_state(page: Page, state: str) -> None:
    page.wait_for_function(
        f"() => document.getElementById('status').dataset.state === {json.dumps(state)}"
        " && window.relayPlayer.video.readyState >= 2")


@needs_ffmpeg
def test_vod_duration_and_hover_previews(browser: Browser, server_url: str, media_dir: Path,
                                         tmp_path: Path) -> None:
    sheet = decode((media_dir / "images" / "storyboard.png").read_bytes())
    cues = parse_storyboard((media_dir / "images" / "storyboard.vtt").read_text())
    assert len(cues) == STREAM_SECONDS
    context, page, errors = new_page(browser)
    try:
        page.goto(f"{server_url}/player/{VOD_ID}")
        _wait_state(page, "vod")
        page.wait_for_function("() => document.getElementById('status').dataset.duration")
        duration = float(page.locator("#status").get_attribute("data-duration") or "0")
        assert abs(duration - STREAM_SECONDS) < 0.2, duration
        assert page.locator("#time").inner_text().endswith(f" / 0:0{STREAM_SECONDS}")
        assert not page.locator("#live").is_visible()
        for fraction in (0.1, 0.45, 0.9):
            seen = hover_seek_bar(page, fraction, sheet, tmp_path, f"hover-{fraction}")
            # At the end of the stream hls.js sets the duration to what is buffered (the
            # longer of audio and video): the seek bar spans the duration of the moment.
            duration = float(page.locator("#status").get_attribute("data-duration") or "0")
            cue = cue_at(cues, fraction * duration)
            assert cue is not None
            assert abs(seen.time - fraction * duration) < 0.05, (fraction, seen.time)
            assert seen.at == seen.time  # an asset's storyboard is on currentTime's timeline
            assert seen.tile == (cue.x, cue.y, cue.w, cue.h), (fraction, seen.tile)
            assert seen.shown.size == TILE
            assert seen.difference < 12, (fraction, seen.difference)
            # The check tells the tiles apart: every other tile is further off.
            others = [difference(seen.shown, sheet.crop(c.box)) for c in cues if c != cue]
            assert min(others) > seen.difference + 3, (seen.difference, others)
        page.mouse.move(5, 5)
        assert not page.locator("#preview").is_visible()
        assert errors == [], errors
    finally:
        context.close()


@needs_ffmpeg
def test_live_badge_latency_and_hover_preview(browser: Browser, server_url: str,
                                              media_dir: Path, tmp_path: Path) -> None:
    sheet = decode((media_dir / "images" / "storyboard.png").read_bytes())
    cues = parse_storyboard((media_dir / "images" / "storyboard.vtt").read_text())
    context, page, errors = new_page(browser)
    try:
        page.goto(f"{server_url}/player/{LIVE_ID}")
        _wait_state(page, "live")
        page.wait_for_function("() => document.getElementById('status').dataset.latency")
        badge = page.locator("#live")
        assert badge.is_visible()
        match = re.fullmatch(r"LIVE · (\d+\.\d\d) s", badge.inner_text())
        assert match is not None, badge.inner_text()
        assert 0.5 < float(match.group(1)) < STREAM_SECONDS + 5, match.group(1)
        assert page.locator("#status").get_attribute("data-duration") == ""
        page.screenshot(path=str(tmp_path / "live.png"))
        start, end = page.evaluate("() => { const s = window.relayPlayer.video.seekable;"
                                   " return [s.start(0), s.end(s.length - 1)]; }")
        # The middle of a second, clear of tile boundaries (ffmpeg's first tfdt is within a
        # few frames of 0 here, so the media timeline is about currentTime).
        t = int((start + end) / 2) + 0.5
        seen = hover_seek_bar(page, (t - start) / (end - start), sheet, tmp_path, "hover-live")
        assert abs(seen.time - t) < 0.2, (t, seen.time)
        cue = cue_at(cues, seen.time)
        assert cue is not None and seen.tile == (cue.x, cue.y, cue.w, cue.h), seen.tile
        assert seen.difference < 12, seen.difference
        assert errors == [], errors
    finally:
        context.close()
