"""Thumbnails, animated images and storyboards end to end, against a known source.

Real peers: `relay serve` as a subprocess (`RelayProcess`), real ffmpeg publishing
`testsrc2` over RTMP with its frame number burnt in as a binary code: ten 32x32 boxes along
the top of the 320x240 picture, box k white when bit k of the frame number is set (ffmpeg's
`drawbox` with a timeline `enable` expression on `n`, so no font is needed and the number is
read back from pixels exactly, through H.264, scaling and JPEG/GIF). 30 fps, a keyframe
every 48 frames (1.6 s), so frame 150 (t=5 s) is not a keyframe and the keyframe at or before
it is frame 144; segments (2 s target) are cut at every other keyframe, so that keyframe is
in the middle of a segment.

One push per module; the live checks run while it is on, the asset checks after it ended.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from PIL import Image, ImageChops, ImageStat

from testkit.encoders import ffmpeg_publish, finish, needs_ffmpeg
from testkit.relay_process import RelayProcess
from tests.integration.helpers.images import FRAME_CODE, frame_number, image
from tests.integration.helpers.rtmp_ingest import (
    api,
    create_stream,
    get_stream,
    publish_url,
    start_relay,
    wait_status,
    wait_until,
)

pytestmark = [needs_ffmpeg]

FPS = 30
GOP = 48
PUSHED = 12


def keyframe_at_or_before(frame: int) -> int:
    return frame // GOP * GOP


@dataclass
class Pushed:
    relay: RelayProcess
    live_pid: str
    asset_pid: str
    live: dict[str, httpx.Response] = field(default_factory=dict)
    live_numbers: list[tuple[float, int]] = field(default_factory=list)  # (sent, shown)


#: How many 429s `get` waits out: the module makes well under a hundred new images, at most
#: 20 at once and 5 a second after that.
RATE_LIMIT_RETRIES = 30


def get(relay: RelayProcess, path: str, **params: str) -> httpx.Response:
    """GET as a well-behaved client does: a 429 (the per-client image rate, which the tests
    of one module together pass) is retried after its Retry-After, a bounded number of
    times."""
    with httpx.Client(base_url=relay.http_url, timeout=60) as client:
        for _ in range(RATE_LIMIT_RETRIES):
            response = client.get(path, params=params)
            if response.status_code != 429:
                return response
            time.sleep(float(response.headers["retry-after"]))
        return response


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    relay = start_relay(tmp_path_factory.mktemp("images") / "data")
    try:
        stream = create_stream(relay, latency_mode="low", reconnect_window=1)
        started = time.monotonic()
        encoder = ffmpeg_publish(publish_url(relay, stream["stream_key"]), seconds=PUSHED,
                                 size="320x240", rate=FPS, gop=GOP,
                                 extra=("-vf", FRAME_CODE))
        try:
            wait_status(relay, stream["id"], "active", 30)
            live_pid = stream["playback_ids"][0]["id"]
            asset_id = get_stream(relay, stream["id"])["active_asset_id"]
            with api(relay) as client:
                asset = client.get(f"/video/v1/assets/{asset_id}").json()["data"]
            result = Pushed(relay, live_pid, asset["playback_ids"][0]["id"])
            wait_until(lambda: get(relay, f"/{live_pid}/thumbnail.png").status_code == 200,
                       10, "a live thumbnail")
            # The newest keyframe, sampled while the stream runs: compared with the frame
            # the encoder (real time, -re) is sending then. (The first image above waited
            # for the relay's image workers to start: seconds on a busy machine.)
            while time.monotonic() - started < 8.0:
                sent = (time.monotonic() - started) * FPS
                shown = frame_number(image(get(relay, f"/{live_pid}/thumbnail.png")))
                result.live_numbers.append((sent, shown))
                time.sleep(0.5)
            result.live["time5"] = get(relay, f"/{live_pid}/thumbnail.png", time="5")
            result.live["vtt"] = get(relay, f"/{live_pid}/storyboard.vtt")
            result.live["sheet"] = get(relay, f"/{live_pid}/storyboard.png")
            result.live["future"] = get(relay, f"/{live_pid}/thumbnail.jpg", time="600")
            code, err = finish(encoder)
            assert code == 0, err
        finally:
            if encoder.poll() is None:
                encoder.kill()
                finish(encoder)
        wait_status(relay, stream["id"], "idle", 30)
        yield result
    finally:
        assert relay.stop() == 0, relay.log


# -- live ------------------------------------------------------------------------------------

def test_live_thumbnail_is_the_newest_keyframe(pushed: Pushed) -> None:
    print("live (frames sent, keyframe shown):", pushed.live_numbers)
    assert len(pushed.live_numbers) >= 4
    shown = [number for _, number in pushed.live_numbers]
    assert all(number % GOP == 0 for number in shown), shown
    assert shown == sorted(shown) and shown[-1] > shown[0], shown
    for sent, number in pushed.live_numbers:
        # Never a frame the encoder has not sent; at most one GOP plus the pipeline's delay
        # (ffmpeg starting, RTMP, the part being cut: `sent` counts from before ffmpeg
        # started, so it runs ahead) behind.
        assert number <= sent + 2, (sent, number)
        assert sent - number <= GOP + 3 * FPS, (sent, number)


def test_live_time_and_window(pushed: Pushed) -> None:
    assert frame_number(image(pushed.live["time5"])) == keyframe_at_or_before(150)
    future = pushed.live["future"]
    assert future.status_code == 400, future.text
    assert future.json()["error"]["messages"][0].startswith("time: 600 is outside")
    check_storyboard(pushed.live["vtt"], pushed.live["sheet"], live=True)


# -- the asset -------------------------------------------------------------------------------

def test_thumbnail_at_time_5_is_the_keyframe_at_or_before_frame_150(pushed: Pushed) -> None:
    for fmt in ("jpg", "png", "webp"):
        response = get(pushed.relay, f"/{pushed.asset_pid}/thumbnail.{fmt}", time="5")
        assert response.headers["content-type"] == {
            "jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}[fmt]
        picture = image(response)
        assert picture.format == {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt]
        assert picture.size == (320, 240)
        assert frame_number(picture) == 144
    # Other times: the keyframe at or before each, wherever it falls in its segment.
    for seconds in (0, 1.5, 1.7, 3.3, 9.9):
        shown = frame_number(image(get(pushed.relay, f"/{pushed.asset_pid}/thumbnail.png",
                                       time=str(seconds))))
        assert shown == keyframe_at_or_before(int(seconds * FPS)), (seconds, shown)
    # No time: the middle of the asset (Mux's default).
    middle = frame_number(image(get(pushed.relay, f"/{pushed.asset_pid}/thumbnail.png")))
    assert middle == keyframe_at_or_before(PUSHED * FPS // 2), middle


def difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel, 0..255."""
    assert a.size == b.size, (a.size, b.size)
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"),
                                                    b.convert("RGB"))).mean) / 3


def test_sizes_and_fit_modes_by_pixels(pushed: Pushed) -> None:
    def thumb(**params: str) -> Image.Image:
        return image(get(pushed.relay, f"/{pushed.asset_pid}/thumbnail.png", time="5",
                         **params))

    source = thumb()
    assert source.size == (320, 240)
    resample = Image.Resampling.BOX
    # One side: the other follows the aspect ratio (4:3).
    assert thumb(width="160").size == (160, 120)
    assert thumb(height="60").size == (80, 60)
    # Both sides, each fit mode, against the source transformed here with Pillow.
    expected = {
        "preserve": source.resize((200, 150), resample),
        "stretch": source.resize((200, 200), resample),
        "crop": source.resize((267, 200), resample).crop((34, 0, 234, 200)),
        "smartcrop": source.resize((267, 200), resample).crop((34, 0, 234, 200)),
    }
    padded = Image.new("RGB", (200, 200))
    padded.paste(source.resize((200, 150), resample), (0, 25))
    expected["pad"] = padded
    for mode, want in expected.items():
        got = thumb(width="200", height="200", fit_mode=mode)
        assert got.size == want.size, (mode, got.size)
        assert difference(got, want) < 6, (mode, difference(got, want))
    # The checks can tell the modes apart.
    assert difference(expected["stretch"], expected["crop"]) > 15
    assert difference(expected["pad"], expected["crop"]) > 15
    # Rotation (clockwise) and flips.
    turned = thumb(rotate="90")
    assert turned.size == (240, 320)
    assert difference(turned, source.transpose(Image.Transpose.ROTATE_270)) < 3
    assert difference(thumb(rotate="180"), source.transpose(Image.Transpose.ROTATE_180)) < 3
    assert difference(thumb(flip_h="true"),
                      source.transpose(Image.Transpose.FLIP_LEFT_RIGHT)) < 3
    assert difference(thumb(flip_v="true"),
                      source.transpose(Image.Transpose.FLIP_TOP_BOTTOM)) < 3
    # Rotated, then fitted: width/height are the output's.
    assert thumb(rotate="270", width="120").size == (120, 160)


def test_bad_parameters_name_the_field(pushed: Pushed) -> None:
    base = f"/{pushed.asset_pid}"
    cases = [
        ("thumbnail.jpg", {"time": "abc"}, "time"),
        ("thumbnail.jpg", {"time": "-1"}, "time"),
        ("thumbnail.jpg", {"time": "500"}, "time"),  # past the media's end
        ("thumbnail.jpg", {"width": "0"}, "width"),
        ("thumbnail.jpg", {"height": "99999"}, "height"),
        ("thumbnail.jpg", {"rotate": "45"}, "rotate"),
        ("thumbnail.jpg", {"fit_mode": "zoom"}, "fit_mode"),
        ("thumbnail.jpg", {"flip_v": "yes"}, "flip_v"),
        ("thumbnail.gif", {}, "format"),
        ("animated.gif", {"start": "1", "end": "12"}, "end"),
        ("animated.gif", {"width": "641"}, "width"),
        ("animated.gif", {"fps": "31"}, "fps"),
        ("animated.gif", {"start": "300"}, "start"),
    ]
    for name, params, field_name in cases:
        response = get(pushed.relay, f"{base}/{name}", **params)
        assert response.status_code == 400, (name, params, response.text)
        body = response.json()["error"]
        assert body["type"] == "invalid_parameters"
        assert body["messages"][0].startswith(f"{field_name}: "), (params, body)
    for path in ("/nosuchplaybackid/thumbnail.jpg", "/nosuchplaybackid/animated.gif",
                 "/nosuchplaybackid/storyboard.vtt", "/bad%2Fid/thumbnail.jpg"):
        response = get(pushed.relay, path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["type"] == "not_found"


def test_animated_gif_frames_and_timing(pushed: Pushed) -> None:
    response = get(pushed.relay, f"/{pushed.asset_pid}/animated.gif", start="2", end="4",
                   fps="10")
    gif = image(response)
    assert response.headers["content-type"] == "image/gif"
    assert gif.format == "GIF" and gif.size == (320, 240)  # Mux's default width, 320
    assert gif.n_frames == 20
    durations, numbers = [], []
    for index in range(gif.n_frames):
        gif.seek(index)
        durations.append(gif.info["duration"])
        numbers.append(frame_number(gif))
    assert durations == [100] * 20, durations
    # Each GIF frame is the latest source frame at or before its time: 60, 63, ..., 117.
    assert numbers == [60 + 3 * index for index in range(20)], numbers
    # 15 fps (Mux's default) of 0.4 s: 6 frames, 70/60 ms in turn (GIF counts 1/100 s).
    small = image(get(pushed.relay, f"/{pushed.asset_pid}/animated.gif", start="1",
                      end="1.4", width="160"))
    assert small.size == (160, 120) and small.n_frames == 6
    shown = []
    for index in range(small.n_frames):
        small.seek(index)
        shown.append(small.info["duration"])
    assert sum(shown) == 400 and set(shown) <= {60, 70}, shown
    webp = image(get(pushed.relay, f"/{pushed.asset_pid}/animated.webp", start="0", end="1",
                     fps="5"))
    assert webp.format == "WEBP" and webp.n_frames == 5


def check_storyboard(vtt: httpx.Response, sheet_response: httpx.Response, *,
                     live: bool) -> None:
    assert vtt.status_code == 200, vtt.text
    assert vtt.headers["content-type"].startswith("text/vtt")
    text = vtt.text
    assert text.startswith("WEBVTT\n\n"), text
    cues = re.findall(r"(\d\d):(\d\d):(\d\d)\.(\d\d\d) --> (\d\d):(\d\d):(\d\d)\.(\d\d\d)\n"
                      r"storyboard\.(\w+)#xywh=(\d+),(\d+),(\d+),(\d+)\n", text)
    assert len(cues) == text.count(" --> ") and cues, text
    sheet = image(sheet_response)
    ends = []
    tiles = set()
    for cue in cues:
        h0, m0, s0, ms0, h1, m1, s1, ms1 = map(int, cue[:8])
        start = h0 * 3600 + m0 * 60 + s0 + ms0 / 1000
        end = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000
        assert end > start
        if ends:
            assert abs(start - ends[-1]) < 0.002, text  # contiguous
        ends.append(end)
        x, y, w, h = map(int, cue[9:])
        assert (w, h) == (256, 192)
        assert x + w <= sheet.width and y + h <= sheet.height, (cue, sheet.size)
        tiles.add((x, y))
        tile = sheet.crop((x, y, x + w, y + h))
        number = frame_number(tile)
        # The tile shows the keyframe at or before its cue's start.
        assert number % GOP == 0 and number <= start * FPS + 1, (start, number)
        if not live:
            assert number == keyframe_at_or_before(int(start * FPS + 1e-6)), (start, number)
        if live:  # each whole second of the window in the place of its number (mod 100)
            assert start == int(start) and end == start + 1, text
            place = int(start) % 100
            assert (x, y) == (place % 10 * 256, place // 10 * 192), (start, x, y)
    assert len(tiles) == len(cues)
    if live:  # places fixed by time: a sheet of 10 x 10
        assert sheet.size == (10 * 256, 10 * 192), sheet.size
        return
    # The sheet is exactly the grid of tiles the WebVTT names.
    columns = len({x for x, _ in tiles})
    assert sheet.size == (columns * 256, -(-len(cues) // columns) * 192), sheet.size


def test_storyboard_vtt_tiles_match_the_sheet(pushed: Pushed) -> None:
    vtt = get(pushed.relay, f"/{pushed.asset_pid}/storyboard.vtt")
    assert "storyboard.jpg#xywh=" in vtt.text
    sheet = get(pushed.relay, f"/{pushed.asset_pid}/storyboard.jpg")
    assert sheet.headers["content-type"] == "image/jpeg"
    check_storyboard(vtt, sheet, live=False)
    assert vtt.text.count(" --> ") >= PUSHED - 2  # a tile a second
    webp = get(pushed.relay, f"/{pushed.asset_pid}/storyboard.vtt", format="webp")
    assert "storyboard.webp#xywh=" in webp.text
