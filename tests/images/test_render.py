"""Decoding, fitting and encoding, on media made in-process (no ffmpeg binary needed)."""

from __future__ import annotations

import io
import time

import av
import pytest
from PIL import Image

from relay.images.media import LiveReader, MediaGone, OutsideMedia, SegmentEntry, Timeline
from relay.images.params import (
    AnimatedRequest,
    FitMode,
    ImageFormat,
    ImageParamError,
    StoryboardRequest,
    ThumbnailRequest,
    Transform,
)
from relay.images.render import (
    MAX_OUTPUT_SIDE,
    STORYBOARD_COLUMNS,
    STORYBOARD_MAX_TILES,
    NoPicture,
    frame_durations,
    picture,
    plan_storyboard,
    render_animated,
    render_storyboard,
    render_storyboard_vtt,
    render_thumbnail,
)
from tests.images.media import fragmented_mp4, red_frame_number

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def quadrants(size: tuple[int, int] = (320, 240)) -> av.VideoFrame:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    image = Image.new("RGB", size)
    w, h = size
    for box, colour in (((0, 0, w // 2, h // 2), RED), ((w // 2, 0, w, h // 2), GREEN),
                        ((0, h // 2, w // 2, h), BLUE), ((w // 2, h // 2, w, h), WHITE)):
        image.paste(colour, box)
    return av.VideoFrame.from_image(image)


def corners(image: Image.Image) -> list[tuple[int, ...]]:
    w, h = image.size
    points = [(w // 8, h // 8), (w - 1 - w // 8, h // 8), (w // 8, h - 1 - h // 8),
              (w - 1 - w // 8, h - 1 - h // 8)]
    return [tuple(round(c / 64) * 64 for c in image.getpixel(p)) for p in points]  # type: ignore[union-attr]


def near(colour: tuple[int, int, int]) -> tuple[int, ...]:
    return tuple(round(c / 64) * 64 for c in colour)


def test_rotation_is_clockwise_and_flips_mirror() -> None:
    frame = quadrants()
    assert corners(picture(frame, Transform())) == [near(c) for c in (RED, GREEN, BLUE, WHITE)]
    turned = picture(frame, Transform(rotate=90))
    assert turned.size == (240, 320)
    # Clockwise: what was bottom-left (blue) comes to the top-left.
    assert corners(turned) == [near(c) for c in (BLUE, RED, WHITE, GREEN)]
    assert corners(picture(frame, Transform(rotate=270))) == [
        near(c) for c in (GREEN, WHITE, RED, BLUE)]
    assert corners(picture(frame, Transform(flip_h=True))) == [
        near(c) for c in (GREEN, RED, WHITE, BLUE)]
    assert corners(picture(frame, Transform(flip_v=True))) == [
        near(c) for c in (BLUE, WHITE, RED, GREEN)]


def test_pad_leaves_black_bars_and_crop_cuts_evenly() -> None:
    frame = quadrants()
    padded = picture(frame, Transform(width=200, height=200, fit=FitMode.PAD))
    assert padded.size == (200, 200)
    assert padded.getpixel((100, 10)) == (0, 0, 0) and padded.getpixel((100, 190)) == (0, 0, 0)
    cropped = picture(frame, Transform(width=100, height=200, fit=FitMode.CROP))
    assert cropped.size == (100, 200)
    # The centre column of the source: left half red/blue, right half green/white.
    assert near(cropped.getpixel((10, 10))) == near(RED)  # type: ignore[arg-type]
    assert near(cropped.getpixel((90, 190))) == near(WHITE)  # type: ignore[arg-type]


def test_crop_of_a_sliver_scales_only_what_shows() -> None:
    frame = av.VideoFrame.from_image(Image.new("RGB", (4000, 2), RED))
    began = time.perf_counter()
    image = picture(frame, Transform(width=1920, height=1920, fit=FitMode.CROP))
    assert image.size == (1920, 1920)
    # (Scaling the whole picture first would be 3.8 Gpx: minutes and gigabytes.)
    print(f"sliver crop took {time.perf_counter() - began:.3f} s")


def test_a_derived_side_over_the_limit_is_refused() -> None:
    frame = av.VideoFrame.from_image(Image.new("RGB", (2, 4000), RED))
    with pytest.raises(ImageParamError, match=f"^width: .*over {MAX_OUTPUT_SIDE} px"):
        picture(frame, Transform(width=1920))


def test_frame_durations_add_up_without_drift() -> None:
    assert frame_durations(3, 30, step_ms=10) == [30, 40, 30]
    assert sum(frame_durations(300, 30, step_ms=10)) == 10_000
    assert sum(frame_durations(150, 15, step_ms=10)) == 10_000
    assert frame_durations(4, 10, step_ms=10) == [100] * 4
    assert sum(frame_durations(7, 24, step_ms=1)) == round(7 * 1000 / 24)


def two_segments(gop: int = 30) -> tuple[Timeline, LiveReader]:
    """Frames 0..59 as 'init' = everything, in two timeline entries 0-1 s and 1-2 s whose
    bytes are the same file (so each entry's offsets run from 0)."""
    data = fragmented_mp4(frames=30, gop=gop)
    later = fragmented_mp4(frames=30, gop=gop)
    reader = LiveReader({"init": (b"",), "a": (data,), "b": (later,)})
    return Timeline((SegmentEntry(0.0, 1.0, "init", "a"),
                     SegmentEntry(1.0, 1.0, "init", "b")), live=True), reader


def decoded(rendered: bytes) -> Image.Image:
    return Image.open(io.BytesIO(rendered))


def test_thumbnail_is_the_keyframe_at_or_before_the_time() -> None:
    timeline, reader = two_segments(gop=10)  # keyframes at frames 0, 10, 20 of each
    for seconds, expected in ((0.0, 0), (0.5, 10), (0.99, 20), (1.0, 0), (1.35, 10)):
        done = render_thumbnail(timeline, reader,
                                ThumbnailRequest(ImageFormat.PNG, seconds, Transform()))
        assert red_frame_number(decoded(done.body)) == expected, seconds
    newest = render_thumbnail(timeline, reader,
                              ThumbnailRequest(ImageFormat.JPEG, None, Transform()))
    assert newest.media_type == "image/jpeg"
    assert red_frame_number(decoded(newest.body)) == 20  # the live default
    assert newest.keyframe_time == pytest.approx(1 + 20 / 30)
    with pytest.raises(OutsideMedia, match=r"^time: 2\.5 is outside the live window"):
        render_thumbnail(timeline, reader, ThumbnailRequest(ImageFormat.PNG, 2.5, Transform()))


def test_media_without_video_is_no_picture() -> None:
    reader = LiveReader({"init": (b"",), "a": (b"not an mp4 at all",)})
    timeline = Timeline((SegmentEntry(0.0, 1.0, "init", "a"),), live=False)
    with pytest.raises(NoPicture):
        render_thumbnail(timeline, reader, ThumbnailRequest(ImageFormat.PNG, 0.5, Transform()))
    with pytest.raises(MediaGone):
        render_thumbnail(Timeline((), live=True), reader,
                         ThumbnailRequest(ImageFormat.PNG, None, Transform()))


def test_animated_samples_the_latest_frame_at_each_time() -> None:
    timeline, reader = two_segments()
    done = render_animated(timeline, reader, AnimatedRequest(
        ImageFormat.GIF, 0.5, 1.5, 10, Transform(width=32)))
    gif = decoded(done.body)
    assert gif.size == (32, 24) and gif.n_frames == 10
    numbers = []
    for index in range(gif.n_frames):
        gif.seek(index)
        numbers.append(red_frame_number(gif))
        assert gif.info["duration"] == 100
    # GIF's palette blurs the red level by a step; the frames are 3 steps apart.
    expected = [15, 18, 21, 24, 27, 0, 3, 6, 9, 12]
    assert all(abs(got - want) <= 1 for got, want in zip(numbers, expected, strict=True)), \
        numbers
    # Past the media's end, the image ends with it.
    short = render_animated(timeline, reader, AnimatedRequest(
        ImageFormat.WEBP, 1.5, 5.0, 10, Transform(width=32)))
    webp = decoded(short.body)
    assert webp.format == "WEBP" and webp.size == (32, 24) and webp.n_frames == 5
    shown = []
    for index in range(webp.n_frames):
        webp.seek(index)
        webp.load()
        shown.append((webp.info["duration"], red_frame_number(webp)))
    assert shown == [(100, 15), (100, 18), (100, 21), (100, 24), (100, 27)], shown
    # 15 fps: 66.7 ms frames as whole milliseconds, adding up without drift.
    third = render_animated(timeline, reader, AnimatedRequest(
        ImageFormat.WEBP, 0.0, 1.0, 15, Transform(width=32)))
    webp = decoded(third.body)
    durations = []
    for index in range(webp.n_frames):
        webp.seek(index)
        webp.load()
        durations.append(webp.info["duration"])
    # (The last frame's length is libwebp_anim's: one frame interval, rounded down.)
    assert len(durations) == 15 and set(durations) <= {66, 67}
    assert abs(sum(durations) - 1000) <= 1, durations


def test_storyboard_plan_and_sheet() -> None:
    long = Timeline(tuple(SegmentEntry(float(i * 2), 2.0, "i", str(i)) for i in range(500)),
                    live=False)
    plan = plan_storyboard(long, (1280, 720))
    assert len(plan.tiles) == STORYBOARD_MAX_TILES and plan.columns == STORYBOARD_COLUMNS
    assert plan.tile_size == (256, 144)
    assert plan.sheet_size == (2560, 1440)
    assert plan.tiles[1].start == 10.0 and plan.tiles[-1].end == 1000.0
    live, reader = two_segments(gop=15)
    timeline = Timeline(live.entries, live=False)  # as an asset
    vtt = render_storyboard_vtt(timeline, reader, StoryboardRequest(ImageFormat.WEBP)).body
    assert vtt.decode() == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nstoryboard.webp#xywh=0,0,256,192\n\n"
        "00:00:01.000 --> 00:00:02.000\nstoryboard.webp#xywh=256,0,256,192\n")
    sheet = decoded(render_storyboard(timeline, reader,
                                      StoryboardRequest(ImageFormat.PNG)).body)
    assert sheet.size == (512, 192)
    assert red_frame_number(sheet.crop((0, 0, 256, 192))) == 0
    assert red_frame_number(sheet.crop((256, 0, 512, 192))) == 0


def test_a_live_storyboard_keeps_each_time_in_its_place() -> None:
    def window(start: float, end: float) -> Timeline:
        return Timeline((SegmentEntry(start, end - start, "i", "m"),), live=True)

    before = plan_storyboard(window(10.5, 40.5), (1280, 720))
    after = plan_storyboard(window(12.5, 42.7), (1280, 720))
    # Whole seconds inside the window, each tile at the place of its second (mod 100).
    assert [t.start for t in before.tiles] == [float(k) for k in range(11, 40)]
    assert [t.start for t in after.tiles] == [float(k) for k in range(13, 42)]
    assert before.sheet_size == after.sheet_size == (10 * 256, 10 * 144)
    places = {t.start: (t.x, t.y) for t in before.tiles}
    for tile in after.tiles:
        if tile.start in places:
            assert places[tile.start] == (tile.x, tile.y)
    assert places[11.0] == (256, 144) and places[39.0] == (9 * 256, 3 * 144)
    # A window longer than the sheet keeps its newest seconds.
    long = plan_storyboard(window(0.0, 250.0), (1280, 720))
    assert len(long.tiles) == STORYBOARD_MAX_TILES
    assert (long.tiles[0].start, long.tiles[-1].start) == (150.0, 249.0)
    assert len({(t.x, t.y) for t in long.tiles}) == STORYBOARD_MAX_TILES
