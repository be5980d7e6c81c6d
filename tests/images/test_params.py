"""The image routes' query parser: every field, its bounds, and the field named in errors."""

from __future__ import annotations

import pytest

from relay.images.params import (
    DEFAULT_ANIMATED_FPS,
    DEFAULT_ANIMATED_WIDTH,
    MAX_ANIMATED_FPS,
    MAX_ANIMATED_SIDE,
    MAX_THUMBNAIL_SIDE,
    FitMode,
    ImageFormat,
    ImageParamError,
    Transform,
    parse_animated,
    parse_storyboard,
    parse_thumbnail,
)


def q(**params: str) -> dict[str, list[str]]:
    return {name: [value] for name, value in params.items()}


def test_thumbnail_defaults_and_every_field() -> None:
    plain = parse_thumbnail("jpg", {})
    assert plain.format is ImageFormat.JPEG and plain.time is None
    assert plain.transform == Transform()
    full = parse_thumbnail("webp", q(time="5.5", width="640", height="360", rotate="270",
                                     fit_mode="pad", flip_v="true", flip_h="1", token="x"))
    assert full.format is ImageFormat.WEBP and full.time == 5.5
    assert full.transform == Transform(width=640, height=360, fit=FitMode.PAD, rotate=270,
                                       flip_v=True, flip_h=True)
    assert parse_thumbnail("png", q(flip_v="false")).transform.flip_v is False
    # Hashable: part of the cache key; equal requests are equal keys.
    assert hash(full) == hash(parse_thumbnail("webp", q(
        time="5.5", width="640", height="360", rotate="270", fit_mode="pad", flip_v="true",
        flip_h="1")))


@pytest.mark.parametrize(("extension", "params", "field"), [
    ("gif", {}, "format"),
    ("jpeg", {}, "format"),
    ("jpg", {"time": "abc"}, "time"),
    ("jpg", {"time": "-0.1"}, "time"),
    ("jpg", {"time": "nan"}, "time"),
    ("jpg", {"time": "inf"}, "time"),
    ("jpg", {"time": "1e9"}, "time"),
    ("jpg", {"width": "0"}, "width"),
    ("jpg", {"width": str(MAX_THUMBNAIL_SIDE + 1)}, "width"),
    ("jpg", {"width": "12.5"}, "width"),
    ("jpg", {"width": "-5"}, "width"),
    ("jpg", {"width": "\u0661\u0662"}, "width"),  # Arabic-Indic digits are not ours
    ("jpg", {"height": "1234567"}, "height"),
    ("jpg", {"rotate": "45"}, "rotate"),
    ("jpg", {"rotate": "-90"}, "rotate"),
    ("jpg", {"fit_mode": "Crop"}, "fit_mode"),
    ("jpg", {"flip_h": "yes"}, "flip_h"),
])
def test_bad_thumbnail_values_name_their_field(extension: str, params: dict[str, str],
                                               field: str) -> None:
    with pytest.raises(ImageParamError) as caught:
        parse_thumbnail(extension, q(**params))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_a_repeated_parameter_is_refused() -> None:
    with pytest.raises(ImageParamError, match=r"^width: given 2 times"):
        parse_thumbnail("jpg", {"width": ["10", "20"]})


def test_a_peer_value_is_cut_short_in_the_message() -> None:
    with pytest.raises(ImageParamError) as caught:
        parse_thumbnail("jpg", q(time="x" * 10_000))
    assert len(str(caught.value)) < 300


def test_animated_defaults_and_limits() -> None:
    plain = parse_animated("gif", {})
    assert (plain.start, plain.end, plain.fps) == (0.0, 5.0, DEFAULT_ANIMATED_FPS)
    assert plain.transform == Transform(width=DEFAULT_ANIMATED_WIDTH)
    tall = parse_animated("webp", q(start="3", end="13", height=str(MAX_ANIMATED_SIDE),
                                    fps=str(MAX_ANIMATED_FPS)))
    assert (tall.start, tall.end, tall.fps) == (3.0, 13.0, MAX_ANIMATED_FPS)
    assert tall.transform == Transform(height=MAX_ANIMATED_SIDE)
    assert tall.format is ImageFormat.WEBP
    assert parse_animated("gif", q(start="7")).end == 12.0


@pytest.mark.parametrize(("extension", "params", "field"), [
    ("png", {}, "format"),
    ("gif", {"end": "10.5"}, "end"),  # more than 10 s after start 0
    ("gif", {"start": "5", "end": "5"}, "end"),
    ("gif", {"start": "5", "end": "4"}, "end"),
    ("gif", {"width": str(MAX_ANIMATED_SIDE + 1)}, "width"),
    ("gif", {"height": "0"}, "height"),
    ("gif", {"fps": "0"}, "fps"),
    ("gif", {"fps": str(MAX_ANIMATED_FPS + 1)}, "fps"),
    ("gif", {"start": "soon"}, "start"),
])
def test_bad_animated_values_name_their_field(extension: str, params: dict[str, str],
                                              field: str) -> None:
    with pytest.raises(ImageParamError) as caught:
        parse_animated(extension, q(**params))
    assert caught.value.field == field


def test_storyboard() -> None:
    assert parse_storyboard("vtt", {})[1].format is ImageFormat.JPEG
    vtt, request = parse_storyboard("vtt", q(format="webp"))
    assert vtt and request.format is ImageFormat.WEBP
    sheet, request = parse_storyboard("png", {})
    assert not sheet and request.format is ImageFormat.PNG
    with pytest.raises(ImageParamError, match=r"^format: "):
        parse_storyboard("vtt", q(format="gif"))
    with pytest.raises(ImageParamError, match=r"^format: "):
        parse_storyboard("gif", {})
