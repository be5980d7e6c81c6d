"""Query parameters of the image routes, parsed into frozen requests.

Mux's names and meanings (image.mux.com): `time`, `width`, `height`, `rotate`, `fit_mode`,
`flip_v`, `flip_h` for thumbnails; `start`, `end`, `width`, `height`, `fps` for animated
images; `format` for the storyboard's WebVTT. Parameters not named here (`token`, a cache
buster) are ignored, as Mux does. A bad value raises `ImageParamError` naming the field, the
value (cut short) and the allowed range; the route answers it with the Mux 400 envelope.

Every parsed request is hashable: it is part of the cache key of the image it asks for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from relay.logs import peer_text

#: Largest width or height of a thumbnail or a storyboard tile, in pixels (Mux serves up
#: to the source's size; 1920 covers a 1080p source and bounds a decode's output memory).
MAX_THUMBNAIL_SIDE: Final = 1920
#: Largest width or height of an animated image (Mux's limit).
MAX_ANIMATED_SIDE: Final = 640
#: Longest animated image, seconds (Mux's limit on end - start).
MAX_ANIMATED_SECONDS: Final = 10.0
#: Highest frame rate of an animated image (Mux's limit).
MAX_ANIMATED_FPS: Final = 30
#: Mux's defaults for animated images: 320 px wide, 15 fps, 5 s from `start`.
DEFAULT_ANIMATED_WIDTH: Final = 320
DEFAULT_ANIMATED_FPS: Final = 15
DEFAULT_ANIMATED_SECONDS: Final = 5.0
#: Latest `time`/`start` accepted at all (a day): what lies past the media is refused later,
#: against the media itself, with its real length.
MAX_TIME: Final = 86_400.0


class ImageFormat(StrEnum):
    JPEG = "jpg"
    PNG = "png"
    WEBP = "webp"
    GIF = "gif"

    @property
    def media_type(self) -> str:
        return _MEDIA_TYPES[self]


_MEDIA_TYPES: Final = {ImageFormat.JPEG: "image/jpeg", ImageFormat.PNG: "image/png",
                       ImageFormat.WEBP: "image/webp", ImageFormat.GIF: "image/gif"}

THUMBNAIL_FORMATS: Final = (ImageFormat.JPEG, ImageFormat.PNG, ImageFormat.WEBP)
ANIMATED_FORMATS: Final = (ImageFormat.GIF, ImageFormat.WEBP)
STORYBOARD_FORMATS: Final = THUMBNAIL_FORMATS


class FitMode(StrEnum):
    PRESERVE = "preserve"  # fit inside width x height, keep the aspect ratio (Mux's default)
    STRETCH = "stretch"  # exactly width x height
    CROP = "crop"  # fill width x height, cut the overflow evenly
    SMARTCROP = "smartcrop"  # Mux crops around the subject; Relay crops the centre (CROP)
    PAD = "pad"  # fit inside, then black bars up to width x height


class ImageParamError(ValueError):
    """A bad query parameter: `field` is its name, `message` starts with it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Transform:
    """What is done to a picture: scale to `width`/`height` (None: from the other, or the
    source's), `fit`, then flips and a clockwise rotation (applied to the source first, so
    `width`/`height` are the output's)."""

    width: int | None = None
    height: int | None = None
    fit: FitMode = FitMode.PRESERVE
    rotate: int = 0
    flip_v: bool = False
    flip_h: bool = False


@dataclass(frozen=True, slots=True)
class ThumbnailRequest:
    format: ImageFormat
    time: float | None  # None: the middle of an asset, the newest keyframe of a live stream
    transform: Transform


@dataclass(frozen=True, slots=True)
class AnimatedRequest:
    format: ImageFormat
    start: float
    end: float
    fps: int
    transform: Transform  # width/height only (Mux's animated images take no other)


@dataclass(frozen=True, slots=True)
class StoryboardRequest:
    format: ImageFormat  # the sheet's; the WebVTT names a sheet in this format


class _Query:
    """Single values of a query: a repeated known parameter is ambiguous, so refused."""

    def __init__(self, query: Mapping[str, Sequence[str]]) -> None:
        self._query = query

    def get(self, name: str) -> str | None:
        values = self._query.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise ImageParamError(name, f"given {len(values)} times; give it once")
        return values[0]

    def number(self, name: str, *, low: float, high: float) -> float | None:
        raw = self.get(name)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise ImageParamError(name, f"'{peer_text(raw)}' is not a number of seconds "
                                        f"(e.g. 2.5)") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise ImageParamError(name, f"{peer_text(raw)} is outside {low:g}..{high:g}")
        return value

    def integer(self, name: str, *, low: int, high: int) -> int | None:
        raw = self.get(name)
        if raw is None:
            return None
        if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
            raise ImageParamError(name, f"'{peer_text(raw)}' is not a whole number "
                                        f"{low}..{high}")
        value = int(raw)
        if not low <= value <= high:
            raise ImageParamError(name, f"{value} is outside {low}..{high}")
        return value

    def flag(self, name: str) -> bool:
        raw = self.get(name)
        if raw is None:
            return False
        lowered = raw.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise ImageParamError(name, f"'{peer_text(raw)}' is not true or false")

    def choice(self, name: str, allowed: Sequence[str]) -> str | None:
        raw = self.get(name)
        if raw is None:
            return None
        if raw not in allowed:
            raise ImageParamError(name, f"'{peer_text(raw)}' is not one of "
                                        f"{', '.join(allowed)}")
        return raw


def _format(extension: str, allowed: Sequence[ImageFormat]) -> ImageFormat:
    for candidate in allowed:
        if candidate.value == extension:
            return candidate
    raise ImageParamError("format", f"'{peer_text(extension)}' is not one of "
                                    f"{', '.join(f.value for f in allowed)}")


def _size(query: _Query, limit: int) -> tuple[int | None, int | None]:
    return (query.integer("width", low=1, high=limit),
            query.integer("height", low=1, high=limit))


def parse_thumbnail(extension: str, query: Mapping[str, Sequence[str]]) -> ThumbnailRequest:
    """`thumbnail.{extension}?{query}`; ImageParamError names the first bad field."""
    fmt = _format(extension, THUMBNAIL_FORMATS)
    q = _Query(query)
    time = q.number("time", low=0.0, high=MAX_TIME)
    width, height = _size(q, MAX_THUMBNAIL_SIDE)
    rotate = q.choice("rotate", ("0", "90", "180", "270"))
    fit = q.choice("fit_mode", tuple(FitMode))
    return ThumbnailRequest(fmt, time, Transform(
        width=width, height=height, fit=FitMode(fit) if fit else FitMode.PRESERVE,
        rotate=int(rotate or 0), flip_v=q.flag("flip_v"), flip_h=q.flag("flip_h")))


def parse_animated(extension: str, query: Mapping[str, Sequence[str]]) -> AnimatedRequest:
    """`animated.{extension}?{query}`; ImageParamError names the first bad field."""
    fmt = _format(extension, ANIMATED_FORMATS)
    q = _Query(query)
    start = q.number("start", low=0.0, high=MAX_TIME) or 0.0
    end = q.number("end", low=0.0, high=MAX_TIME + MAX_ANIMATED_SECONDS)
    if end is None:
        end = start + DEFAULT_ANIMATED_SECONDS
    elif end <= start:
        raise ImageParamError("end", f"{end:g} is not after start ({start:g})")
    elif end - start > MAX_ANIMATED_SECONDS + 1e-9:
        raise ImageParamError("end", f"{end:g} is {end - start:g} s after start; at most "
                                     f"{MAX_ANIMATED_SECONDS:g} s")
    width, height = _size(q, MAX_ANIMATED_SIDE)
    if width is None and height is None:
        width = DEFAULT_ANIMATED_WIDTH
    fps = q.integer("fps", low=1, high=MAX_ANIMATED_FPS) or DEFAULT_ANIMATED_FPS
    return AnimatedRequest(fmt, start, end, fps, Transform(width=width, height=height))


def parse_storyboard(extension: str,
                     query: Mapping[str, Sequence[str]]) -> tuple[bool, StoryboardRequest]:
    """`storyboard.{extension}`: (whether the WebVTT is asked, the request). The WebVTT's
    `format` names the sheet's format (jpg by default)."""
    q = _Query(query)
    if extension == "vtt":
        fmt = q.choice("format", tuple(f.value for f in STORYBOARD_FORMATS))
        return True, StoryboardRequest(ImageFormat(fmt) if fmt else ImageFormat.JPEG)
    return False, StoryboardRequest(_format(extension, STORYBOARD_FORMATS))
