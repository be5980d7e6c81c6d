"""Headless Chromium for player tests: Debian's /usr/bin/chromium driven by Playwright.

Playwright comes from PyPI; its own browser download is never used (no `playwright install`):
`launch_chromium()` starts the system binary. Usage:

    with launch_chromium() as browser:
        seen = open_player(browser, "http://127.0.0.1:PORT/player/ID")
        assert seen.started and seen.advanced and not seen.decode_errors

`open_player` works with any page that sets `window.relayPlayer = {hls, video}` before it
loads a source (Relay's player page does): an init script hooks that assignment, so every
hls.js ERROR event and every `error` event of the video element is recorded from the start.
Every wait is bounded; a page that never plays gives `started=False`, not a hang.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")

CHROMIUM_ARGS = (
    "--autoplay-policy=no-user-gesture-required",  # play() without a click
    "--mute-audio",
    "--disable-dev-shm-usage",  # small /dev/shm in containers
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-timer-throttling",  # sampling runs in page timers
)

# How long Chromium may take to start.
LAUNCH_TIMEOUT_S = 20.0

# hls.js error details that mean the media itself could not be parsed, remuxed or decoded,
# as opposed to stalls and network trouble (names from hls.js src/errors.ts, ErrorDetails).
DECODE_ERROR_DETAILS = frozenset({
    "bufferAddCodecError",
    "bufferIncompatibleCodecsError",
    "bufferAppendError",
    "bufferAppendingError",
    "fragParsingError",
    "fragDecryptError",
    "manifestIncompatibleCodecsError",
    "mediaSourceRequiresReset",
    "remuxAllocError",
})

# Runs before any page script. It wraps the relayPlayer assignment so listeners are on hls
# and video before the page calls loadSource, and keeps what they see in window.__relaySeen.
_OBSERVER_SCRIPT = """
(() => {
  const seen = { hlsErrors: [], videoErrors: [], waiting: 0 };
  window.__relaySeen = seen;
  let player;
  Object.defineProperty(window, "relayPlayer", {
    configurable: true,
    get() { return player; },
    set(value) {
      player = value;
      if (value && value.hls && typeof Hls !== "undefined") {
        value.hls.on(Hls.Events.ERROR, (_event, data) => {
          seen.hlsErrors.push({
            type: String(data.type), details: String(data.details), fatal: !!data.fatal,
            reason: data.reason ? String(data.reason)
                  : data.error ? String(data.error) : "",
          });
        });
      }
      if (value && value.video) {
        value.video.addEventListener("waiting", () => { seen.waiting += 1; });
        value.video.addEventListener("error", () => {
          const e = value.video.error;
          seen.videoErrors.push(e ? `code ${e.code}: ${e.message || ""}` : "unknown");
        });
      }
    },
  });
})();
"""

_SAMPLE_SCRIPT = """
() => {
  const p = window.relayPlayer;
  const status = document.querySelector("[data-state]");
  const latency = p && p.hls ? p.hls.latency : null;
  const target = p && p.hls ? p.hls.targetLatency : null;
  return {
    targetLatency: typeof target === "number" && isFinite(target) ? target : null,
    playbackRate: p && p.video ? p.video.playbackRate : null,
    currentTime: p && p.video ? p.video.currentTime : null,
    latency: typeof latency === "number" && isFinite(latency) ? latency : null,
    state: status ? status.dataset.state : null,
    shownLatency: status ? status.dataset.latency : null,
  };
}
"""

_STARTED_SCRIPT = """
() => {
  const v = window.relayPlayer && window.relayPlayer.video;
  return !!v && !v.paused && v.readyState >= 2 && v.currentTime > 0;
}
"""


@dataclass(frozen=True, slots=True)
class HlsError:
    """One hls.js ERROR event (type, details and fatal as hls.js reports them)."""

    type: str
    details: str
    fatal: bool
    reason: str = ""

    def __str__(self) -> str:
        fatal = " (fatal)" if self.fatal else ""
        reason = f": {self.reason}" if self.reason else ""
        return f"{self.type} {self.details}{fatal}{reason}"


@dataclass(frozen=True, slots=True)
class PlayerObservation:
    """What a headless viewer saw of one player page."""

    url: str
    started: bool
    startup_seconds: float | None  # from navigation to the first advancing frame
    current_times: tuple[float, ...]  # video.currentTime, one sample per interval
    # hls.latency at the same instants, as hls.js reports it (it means something for live
    # streams only); None on the native path.
    latencies: tuple[float | None, ...]
    states: tuple[str | None, ...]  # the page's data-state at the same instants
    shown_latencies: tuple[str | None, ...]  # the page's data-latency at the same instants
    hls_errors: tuple[HlsError, ...] = ()
    video_errors: tuple[str, ...] = ()  # video.error at each `error` event of the element
    console_errors: tuple[str, ...] = ()  # console.error lines and uncaught exceptions
    failed_requests: tuple[str, ...] = field(default=())  # "URL: reason"
    # hls.targetLatency and video.playbackRate at each sample (None on the native path or
    # while unknown), and how often the video element fired `waiting` (ran out of data).
    target_latencies: tuple[float | None, ...] = ()
    playback_rates: tuple[float | None, ...] = ()
    waiting_events: int = 0
    requests: int = 0  # HTTP requests the page made (hls.js's worker's included)

    @property
    def advanced(self) -> bool:
        """currentTime grew across the sampling window."""
        times = self.current_times
        return len(times) >= 2 and times[-1] > times[0]

    @property
    def stalls(self) -> int:
        """hls.js's bufferStalledError events: each raises its target latency by
        liveSyncOnStallIncrease (1 s by default) for a live stream."""
        return sum(1 for e in self.hls_errors if e.details == "bufferStalledError")

    @property
    def final_state(self) -> str | None:
        return self.states[-1] if self.states else None

    @property
    def decode_errors(self) -> tuple[str, ...]:
        """Errors that mean the media could not be decoded: fatal hls.js media errors,
        hls.js parse/append errors and any error of the video element."""
        bad = [str(e) for e in self.hls_errors
               if e.details in DECODE_ERROR_DETAILS or (e.fatal and e.type == "mediaError")]
        return (*bad, *self.video_errors)

    def summary(self) -> str:
        """One paragraph for assertion messages."""
        return (f"{self.url}: started={self.started} startup={self.startup_seconds} "
                f"times={self.current_times} latencies={self.latencies} "
                f"states={self.states} hls_errors={[str(e) for e in self.hls_errors]} "
                f"video_errors={self.video_errors} console={self.console_errors} "
                f"failed_requests={self.failed_requests}")


def chromium_args() -> list[str]:
    args = list(CHROMIUM_ARGS)
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    return args


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    """Start headless Chromium from /usr/bin/chromium; skip the test when it is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (make test installs Debian's chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=chromium_args(),
            timeout=LAUNCH_TIMEOUT_S * 1000)
        try:
            yield browser
        finally:
            browser.close()


def open_player(browser: Browser, url: str, *, startup_timeout: float = 10.0,
                sample_seconds: float = 2.0, sample_interval: float = 0.25) -> PlayerObservation:
    """Open `url` in a fresh context, wait up to `startup_timeout` s for playback to start,
    then sample currentTime and hls.latency every `sample_interval` s for `sample_seconds`.

    The page is closed before returning. When playback never starts, one sample is still
    taken so that the state and errors at the deadline are reported."""
    context = browser.new_context(viewport={"width": 640, "height": 400})
    console: list[str] = []
    failed: list[str] = []
    requested: list[str] = []
    try:
        context.add_init_script(_OBSERVER_SCRIPT)
        page = context.new_page()
        page.set_default_timeout(startup_timeout * 1000)

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                console.append(message.text)

        page.on("console", on_console)
        page.on("pageerror", lambda exc: console.append(f"uncaught: {exc}"))
        page.on("request", lambda request: requested.append(request.url))
        page.on("requestfailed",
                lambda request: failed.append(f"{request.url}: {request.failure}"))

        began = time.monotonic()
        page.goto(url, wait_until="domcontentloaded", timeout=startup_timeout * 1000)
        started = _wait_started(page, began + startup_timeout)
        startup = time.monotonic() - began if started else None

        samples = [_sample(page)]
        if started:
            deadline = time.monotonic() + sample_seconds
            while time.monotonic() < deadline:
                page.wait_for_timeout(sample_interval * 1000)
                samples.append(_sample(page))
        seen = page.evaluate("() => window.__relaySeen")
    finally:
        context.close()

    return PlayerObservation(
        url=url,
        started=started,
        startup_seconds=startup,
        current_times=tuple(float(s["currentTime"] or 0.0) for s in samples),
        latencies=tuple(s["latency"] for s in samples),
        states=tuple(s["state"] for s in samples),
        shown_latencies=tuple(s["shownLatency"] for s in samples),
        hls_errors=tuple(HlsError(**e) for e in seen["hlsErrors"]),
        video_errors=tuple(seen["videoErrors"]),
        console_errors=tuple(console),
        failed_requests=tuple(failed),
        target_latencies=tuple(s["targetLatency"] for s in samples),
        playback_rates=tuple(s["playbackRate"] for s in samples),
        waiting_events=int(seen["waiting"]),
        requests=len(requested),
    )


def _wait_started(page: Page, deadline: float) -> bool:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    try:
        page.wait_for_function(_STARTED_SCRIPT, timeout=remaining * 1000, polling=100)
    except Error:  # TimeoutError is a subclass
        return False
    return True


def _sample(page: Page) -> dict[str, Any]:
    sample: dict[str, Any] = page.evaluate(_SAMPLE_SCRIPT)
    return sample
