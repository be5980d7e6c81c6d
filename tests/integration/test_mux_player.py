"""The official Mux Player (`@mux/mux-player`, pinned in the Makefile) plays from Relay over
HTTPS through `custom-domain`, as a page embedding it would after pointing it at Relay.

`<mux-player playback-id="ID" custom-domain="relay.test">` requests
`https://stream.relay.test/ID.m3u8?...` and `https://image.relay.test/ID/thumbnail.webp?...`
with query parameters of its own. Headless Chromium maps both names to the `relay serve`
subprocess's HTTPS port (`--host-resolver-rules`, port included), which has a certificate made
here for those names (Playwright's `ignore_https_errors` accepts it: it is self-signed). The
page itself is served by Playwright's router from an origin of its own, so every request to
Relay is cross-origin, as on a real site. Checked: playback starts and currentTime advances,
for a live low-latency stream (public, and signed with `playback-token`), and for the
recorded asset; the poster image request is answered 200; on the asset, hovering the seek bar
fetches the storyboard sheet (the preview); a signed id without tokens gets 403s; Mux's own
query parameters are ignored on playlists and images.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from testkit.browser import CHROMIUM, LAUNCH_TIMEOUT_S, chromium_args
from testkit.encoders import ffmpeg_publish, finish, needs_ffmpeg
from testkit.relay_process import RelayProcess, free_tcp_port
from tests.integration.helpers.hls_playback import SIZE
from tests.integration.helpers.rtmp_ingest import (
    TOKEN,
    api,
    create_stream,
    get_stream,
    publish_url,
    wait_status,
    wait_until,
)
from tests.integration.helpers.signed_playback import token_for

MUX_PLAYER = Path(__file__).resolve().parents[2] / ".make" / "mux-player" / "mux-player.js"
DOMAIN = "relay.test"
PAGE = "https://app.example/"  # the embedding site: answered by Playwright, never resolved

pytestmark = [needs_ffmpeg,
              pytest.mark.skipif(shutil.which("openssl") is None,
                                 reason="openssl is not installed")]

# Observed in the page: the element's own media state (Mux Player forwards the video's).
_STATE_SCRIPT = """
() => {
  const p = document.querySelector("mux-player");
  return p ? {currentTime: p.currentTime, paused: p.paused, readyState: p.readyState,
              error: p.error ? String(p.error.message || p.error.code) : null}
           : null;
}
"""


def certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the names Mux Player asks for."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={DOMAIN}", "-addext",
                    f"subjectAltName=DNS:stream.{DOMAIN},DNS:image.{DOMAIN},IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    if not MUX_PLAYER.exists():
        pytest.skip(f"{MUX_PLAYER} is missing (make test fetches @mux/mux-player)")
    cert, key = certificate(tmp_path)
    process = RelayProcess(tmp_path / "data", token=TOKEN, extra_args=[
        "--https-port", str(free_tcp_port()), "--rtmps-port", "0",
        "--tls-cert", str(cert), "--tls-key", str(key)]).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


@dataclass
class Seen:
    """What one Mux Player page did."""

    started: bool
    times: list[float]
    responses: list[tuple[str, int]] = field(default_factory=list)  # (URL, status)
    failed: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    @property
    def advanced(self) -> bool:
        return len(self.times) >= 2 and self.times[-1] > self.times[0]

    def status_of(self, host: str, path_part: str) -> list[int]:
        return [status for url, status in self.responses
                if url.startswith(f"https://{host}.{DOMAIN}") and path_part in url]

    def summary(self) -> str:
        return (f"started={self.started} times={self.times} responses={self.responses} "
                f"failed={self.failed} console={self.console}")


def launch(port: int) -> Any:
    playwright = sync_playwright().start()
    rules = (f"MAP stream.{DOMAIN} 127.0.0.1:{port}, MAP image.{DOMAIN} 127.0.0.1:{port}")
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, timeout=LAUNCH_TIMEOUT_S * 1000,
        # Chromium's Local Network Access checks refuse a public site's requests to a
        # loopback address: Relay is on 127.0.0.1 here only because it is a test.
        args=[*chromium_args(), f"--host-resolver-rules={rules}",
              "--disable-features=LocalNetworkAccessChecks,"
              "PrivateNetworkAccessRespectPreflightResults"])
    return playwright, browser


def page_html(playback_id: str, tokens: dict[str, str]) -> str:
    attributes = "".join(f' {name}="{value}"' for name, value in tokens.items())
    return (f'<!doctype html><html><body><script src="{PAGE}mux-player.js"></script>'
            f'<mux-player playback-id="{playback_id}" custom-domain="{DOMAIN}" '
            f'disable-tracking muted autoplay{attributes} style="width: 640px; '
            f'display: block"></mux-player></body></html>')


def play(browser: Browser, playback_id: str, *, tokens: dict[str, str] | None = None,
         startup_timeout: float = 25.0, sample_seconds: float = 3.0,
         hover: bool = False) -> Seen:
    """Open a page embedding Mux Player for `playback_id`; wait for playback, sample; with
    `hover`, move the pointer along the seek bar (the storyboard's previews)."""
    context = browser.new_context(ignore_https_errors=True)
    html = page_html(playback_id, tokens or {})
    seen = Seen(started=False, times=[])

    def serve_page(route: Route) -> None:
        if route.request.url.endswith("/mux-player.js"):
            route.fulfill(body=MUX_PLAYER.read_bytes(), content_type="text/javascript")
        else:
            route.fulfill(body=html, content_type="text/html")

    try:
        context.route(f"{PAGE}**", serve_page)
        page: Page = context.new_page()
        page.on("response", lambda r: seen.responses.append((r.url, r.status)))
        page.on("requestfailed", lambda r: seen.failed.append(f"{r.url}: {r.failure}"))
        page.on("console", lambda m: seen.console.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: seen.console.append(f"uncaught: {exc}"))
        page.goto(PAGE, wait_until="domcontentloaded")
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            state = page.evaluate(_STATE_SCRIPT)
            if state and not state["paused"] and state["currentTime"] > 0:
                seen.started = True
                break
            page.wait_for_timeout(200)
        if seen.started:
            end = time.monotonic() + sample_seconds
            while time.monotonic() < end:
                seen.times.append(float(page.evaluate(_STATE_SCRIPT)["currentTime"]))
                page.wait_for_timeout(500)
        if hover and seen.started:
            # Playwright's CSS locators pierce the open shadow roots of Mux Player's theme.
            bar = page.locator("media-time-range").first
            box = bar.bounding_box()
            assert box is not None, "no seek bar"
            for fraction in (0.2, 0.5, 0.8):
                page.mouse.move(box["x"] + box["width"] * fraction,
                                box["y"] + box["height"] / 2, steps=5)
                page.wait_for_timeout(300)
            end = time.monotonic() + 5
            while time.monotonic() < end and not seen.status_of("image", "/storyboard.webp"):
                page.wait_for_timeout(200)
        # The poster is requested once the element is set up; give it a moment.
        wait_until_quiet = time.monotonic() + 5
        while time.monotonic() < wait_until_quiet and not seen.status_of("image", "thumbnail"):
            page.wait_for_timeout(200)
    finally:
        context.close()
    return seen


def https_port(relay: RelayProcess) -> int:
    return int(relay.urls["https"].rsplit(":", 1)[1])


# Query parameters Mux Player (and Mux's URL builders) add that Relay does not use.
MUX_QUERY = {"redundant_streams": "true", "max_resolution": "720p", "min_resolution": "480p",
             "rendition_order": "desc", "program_start_time": "1700000000",
             "program_end_time": "1700000600", "asset_start_time": "0",
             "default_subtitles_lang": "en", "roku_trick_play": "true"}


def mux_parameters(relay: RelayProcess, playback_id: str) -> None:
    """Parameters Relay does not use are ignored on the HTTPS listener, by either host
    name; bad values of those it does use are still 400s."""
    with httpx.Client(base_url=relay.urls["https"], verify=False, timeout=10) as tls:
        stream = {"Host": f"stream.{DOMAIN}"}
        image = {"Host": f"image.{DOMAIN}"}
        for path in (f"/{playback_id}.m3u8", f"/{playback_id}/rendition.m3u8"):
            answer = tls.get(path, params=MUX_QUERY, headers=stream)
            assert answer.status_code == 200, (path, answer.status_code, answer.text)
        bad = tls.get(f"/{playback_id}/rendition.m3u8", params={**MUX_QUERY, "_HLS_msn": "x"},
                      headers=stream)
        assert bad.status_code == 400, bad.text
        for name in ("thumbnail.webp", "thumbnail.jpg", "storyboard.vtt"):
            answer = tls.get(f"/{playback_id}/{name}",
                             params={**MUX_QUERY, "program_time": "5", "format": "webp"}
                             if name == "storyboard.vtt" else
                             {**MUX_QUERY, "program_time": "5", "width": "160"},
                             headers=image)
            assert answer.status_code == 200, (name, answer.status_code, answer.text)
        bad = tls.get(f"/{playback_id}/thumbnail.webp", params={**MUX_QUERY, "width": "wide"},
                      headers=image)
        assert bad.status_code == 400 and "width" in bad.text, bad.text


def test_mux_player_plays_live_public_and_signed_and_the_recording(
        relay: RelayProcess) -> None:
    with api(relay) as client:
        created = client.post("/system/v1/signing-keys")
        assert created.status_code == 201, created.text
        key = created.json()["data"]
    stream = create_stream(relay, playback_policies=["public", "signed"], latency_mode="low",
                           reconnect_window=1)
    by_policy = {p["policy"]: p["id"] for p in stream["playback_ids"]}
    encoder = ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=45, size=SIZE,
                             gop=30)
    playwright, browser = launch(https_port(relay))
    try:
        wait_status(relay, stream["id"], "active", 30)
        with httpx.Client(base_url=relay.http_url, timeout=10) as plain:
            wait_until(lambda: plain.get(f"/{by_policy['public']}.m3u8").status_code == 200,
                       15, "the public playlist")
        asset_id = get_stream(relay, stream["id"])["active_asset_id"]

        public = play(browser, by_policy["public"])
        assert public.started and public.advanced, public.summary()
        assert public.status_of("stream", f"/{by_policy['public']}.m3u8") == [200], \
            public.summary()
        assert 200 in public.status_of("image", "/thumbnail."), public.summary()

        mux_parameters(relay, by_policy["public"])

        signed_id = by_policy["signed"]
        tokens = {"playback-token": token_for(key, signed_id),
                  "thumbnail-token": token_for(key, signed_id, aud="t"),
                  "storyboard-token": token_for(key, signed_id, aud="s")}
        signed = play(browser, signed_id, tokens=tokens)
        assert signed.started and signed.advanced, signed.summary()
        assert 200 in signed.status_of("image", "/thumbnail."), signed.summary()
        # Without a token the same page gets 403s, not a picture.
        refused = play(browser, signed_id, startup_timeout=5)
        assert not refused.started, refused.summary()
        assert refused.status_of("stream", f"/{signed_id}.m3u8") == [403], refused.summary()

        code, err = finish(encoder)
        assert code == 0, err
        wait_status(relay, stream["id"], "idle")
        with api(relay) as client:
            def asset() -> dict[str, Any]:
                return dict(client.get(f"/video/v1/assets/{asset_id}").json()["data"])
            wait_until(lambda: asset()["status"] == "ready", 20, "the asset ready")
            recorded_id = asset()["playback_ids"][0]["id"]
        recorded = play(browser, recorded_id, hover=True)
        assert recorded.started and recorded.advanced, recorded.summary()
        assert 200 in recorded.status_of("image", "/thumbnail."), recorded.summary()
        # On demand, Mux Player loads the storyboard for its seek-bar previews.
        assert 200 in recorded.status_of("image", "/storyboard.vtt"), recorded.summary()
        # Hovering the seek bar shows a preview: the sheet the WebVTT names is fetched.
        assert 200 in recorded.status_of("image", "/storyboard.webp"), recorded.summary()
    finally:
        browser.close()
        playwright.stop()
        encoder.kill()
        finish(encoder)
