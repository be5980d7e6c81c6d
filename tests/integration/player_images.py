"""Checks of the player page's images in headless Chromium: the poster and the seek bar's
storyboard previews, by screenshots compared with the images the server answers.

Screenshots are compared by the mean absolute difference per channel (0..255), never pixel by
pixel: Chromium scales, and JPEG decoders differ in rounding. Every screenshot is saved
under the directory the caller gives (a test's tmp_path).
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops, ImageStat
from playwright.sync_api import Browser, BrowserContext, Page

VIEWPORT = {"width": 800, "height": 600}

# How long a screenshot may take to show what is expected (an image still loading).
SETTLE_SECONDS = 5.0

_CUE = re.compile(r"(?:(\d+):)?(\d\d):(\d\d)\.(\d\d\d) --> (?:(\d+):)?(\d\d):(\d\d)\.(\d\d\d)"
                  r"[^\n]*\n([^\n#]+)#xywh=(\d+),(\d+),(\d+),(\d+)")


@dataclass(frozen=True, slots=True)
class Cue:
    start: float
    end: float
    name: str  # the sheet's URL as the WebVTT gives it, without the fragment
    x: int
    y: int
    w: int
    h: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.x + self.w, self.y + self.h)


def parse_storyboard(text: str) -> list[Cue]:
    """The cues of a storyboard WebVTT (`URL#xywh=x,y,w,h` payloads)."""
    cues = []
    for m in _CUE.finditer(text):
        h0, m0, s0, ms0, h1, m1, s1, ms1 = (int(v or 0) for v in m.groups()[:8])
        cues.append(Cue(h0 * 3600 + m0 * 60 + s0 + ms0 / 1000,
                        h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, m.group(9),
                        *(int(v) for v in m.groups()[9:])))
    return cues


def cue_at(cues: list[Cue], t: float) -> Cue | None:
    return next((c for c in cues if c.start <= t + 1e-3 and t < c.end), None)


def difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel, 0..255 (`b` is resized to `a`'s size)."""
    b = b.convert("RGB").resize(a.size, Image.Resampling.BOX)
    return float(sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b)).mean) / 3)


def spread(image: Image.Image) -> float:
    """The mean standard deviation per channel: about 0 for a blank region."""
    return float(sum(ImageStat.Stat(image.convert("RGB")).stddev) / 3)


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def new_page(browser: Browser) -> tuple[BrowserContext, Page, list[str]]:
    """A fresh context and page; the list collects console errors and uncaught exceptions."""
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    return context, page, errors


def video_content(page: Page, natural: tuple[int, int]) -> Image.Image:
    """A screenshot of what the <video> element shows (a poster or a frame of `natural`
    size, fitted inside the element as object-fit: contain does), without the letterbox."""
    box = page.locator("video").bounding_box()
    assert box is not None
    scale = min(box["width"] / natural[0], box["height"] / natural[1])
    width, height = natural[0] * scale, natural[1] * scale
    left = box["x"] + (box["width"] - width) / 2
    top = box["y"] + (box["height"] - height) / 2
    shot = decode(page.screenshot(clip={"x": left, "y": top, "width": width,
                                        "height": height}))
    return shot.resize((round(width), round(height)))  # device pixels == CSS pixels here


def top_band(image: Image.Image) -> Image.Image:
    """Rows 5 % to 40 %: clear of the native controls (bottom) and the play button (centre)."""
    return image.crop((0, int(image.height * 0.05), image.width, int(image.height * 0.40)))


@dataclass(frozen=True, slots=True)
class PosterSeen:
    status: int
    poster: Image.Image  # the image the poster request answered
    shown: Image.Image  # the screenshot of the video element's content box
    difference: float  # of their top bands (see top_band)


def poster_before_play(browser: Browser, url: str, out: Path,
                       name: str = "poster") -> PosterSeen:
    """Open `url` with every playlist request refused, so playback never starts and the
    poster stays; screenshot it once it is painted (or after SETTLE_SECONDS)."""
    context, page, _ = new_page(browser)
    try:
        page.route("**/*.m3u8*", lambda route: route.abort())
        with page.expect_response(lambda r: "/thumbnail." in r.url) as answered:
            page.goto(url, wait_until="domcontentloaded")
        response = answered.value
        poster = decode(response.body())
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            shown = video_content(page, poster.size)
            diff = difference(top_band(shown), top_band(poster))
            if diff < 20 or time.monotonic() > deadline:
                break
            page.wait_for_timeout(200)
        shown.save(out / f"{name}-before-play.png")
        page.screenshot(path=str(out / f"{name}-page.png"))
        return PosterSeen(response.status, poster, shown, diff)
    finally:
        context.close()


@dataclass(frozen=True, slots=True)
class PreviewSeen:
    time: float  # the preview's data-time (on the storyboard's timeline)
    at: float  # its data-at (the same time as currentTime)
    tile: tuple[int, int, int, int] | None  # its data-tile
    shown: Image.Image  # a screenshot of the preview box
    difference: float  # from `expected` (inf when no tile was shown)


def hover_seek_bar(page: Page, fraction: float,
                   expected_sheet: Image.Image | Callable[[], Image.Image],
                   out: Path, name: str) -> PreviewSeen:
    """Move the mouse over the seek bar at `fraction` of its width and screenshot the preview
    until it matches its own tile of `expected_sheet` (the sheet as the server answers it;
    a callable is asked again at each try, for a live sheet that changes), or
    SETTLE_SECONDS pass."""
    bar = page.locator("#seek").bounding_box()
    assert bar is not None
    page.mouse.move(bar["x"] + 1, bar["y"] + bar["height"] / 2)
    page.mouse.move(bar["x"] + fraction * bar["width"], bar["y"] + bar["height"] / 2)
    preview = page.locator("#preview")
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        tile_text = preview.get_attribute("data-tile") or ""
        tile = tuple(int(v) for v in tile_text.split(",")) if tile_text else None
        box = preview.bounding_box()
        assert box is not None, "no preview on hover"
        w, h = (tile[2], tile[3]) if tile is not None else (box["width"], box["height"])
        # The box can sit at a fractional position: the clip is its tile's size, rounded in.
        shown = decode(page.screenshot(clip={"x": round(box["x"]), "y": round(box["y"]),
                                             "width": w, "height": h}))
        diff = float("inf")
        if tile is not None:
            x, y = tile[0], tile[1]
            sheet = expected_sheet if isinstance(expected_sheet, Image.Image) else (
                expected_sheet())
            diff = difference(shown, sheet.crop((x, y, x + w, y + h)))
        if diff < 12 or time.monotonic() > deadline:
            break
        page.wait_for_timeout(200)
        # A move re-reads the storyboard once the first one has loaded.
        page.mouse.move(bar["x"] + fraction * bar["width"] + 0.5,
                        bar["y"] + bar["height"] / 2)
    shown.save(out / f"{name}.png")
    page.screenshot(path=str(out / f"{name}-page.png"))
    seen_time = float(preview.get_attribute("data-time") or "nan")
    seen_at = float(preview.get_attribute("data-at") or "nan")
    return PreviewSeen(seen_time, seen_at, tile, shown, diff)  # type: ignore[arg-type]
