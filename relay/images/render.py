"""Cutting pictures out of fMP4 with PyAV and encoding them (Pillow; animated WebP with
FFmpeg's libwebp_anim): blocking, pure.

Everything here runs in a worker process of `relay.images.pool` (`relay.images.worker`),
never in the relay's (its routes name the jobs of `relay.images.jobs`), and touches no
shared state: a job gets a `Timeline`, a `MediaReader` and a parsed request, and returns
the encoded bytes. FFmpeg's demuxer and H.264/HEVC decoders run in-process (PyAV): one
segment at a time is demuxed from memory (its init segment + its bytes, the two files a
player would fetch), and only the packets a picture needs are decoded:

- a thumbnail decodes one keyframe: the last at or before the asked time (ISO/IEC 14496-12
  `trun` sample flags say which samples are sync samples; PyAV reports them as
  `Packet.is_keyframe`), so no frame before it is needed;
- a storyboard decodes one keyframe per tile, each segment demuxed once;
- an animated image decodes every frame of the segments it spans, keeping only the frames
  it samples (at most `fps` x 10 s of them, already scaled).

Times: a segment's pictures are placed on the timeline by their presentation time minus the
segment's earliest one (its first keyframe, which starts each segment), plus the segment's
start from the playlist. Pixels are taken as square (the sample aspect ratio is ignored;
the encoders Relay sees send 1:1).

Each decoder runs with one thread: the pool's workers are the parallelism, and FFmpeg's
frame threads would delay the one frame a thumbnail needs.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from types import TracebackType
from typing import Any, Final

import av
from PIL import Image

from relay.images.geometry import layout, oriented
from relay.images.jobs import Rendered
from relay.images.media import MediaGone, MediaReader, SegmentEntry, Timeline
from relay.images.params import (
    MAX_THUMBNAIL_SIDE,
    AnimatedRequest,
    FitMode,
    ImageFormat,
    ImageParamError,
    StoryboardRequest,
    ThumbnailRequest,
    Transform,
)

JPEG_QUALITY: Final = 85
WEBP_QUALITY: Final = 80
PNG_COMPRESS_LEVEL: Final = 6  # zlib's default: the next levels cost far more for little

#: Storyboards: tiles this wide (the height follows the source's aspect ratio), at least
#: this many seconds apart, at most this many tiles, in rows of this many.
STORYBOARD_TILE_WIDTH: Final = 256
STORYBOARD_MIN_INTERVAL: Final = 1.0
STORYBOARD_MAX_TILES: Final = 100
STORYBOARD_COLUMNS: Final = 10

#: Largest side of any image made: the side that follows a source's aspect ratio when only
#: the other is given (the given ones are bounded by the parser).
MAX_OUTPUT_SIDE: Final = 2 * MAX_THUMBNAIL_SIDE

_BLACK: Final = (0, 0, 0)
# PIL's ROTATE_* turn counter-clockwise; Mux's `rotate` turns clockwise.
_CLOCKWISE: Final = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180,
                     270: Image.Transpose.ROTATE_90}


class NoPicture(MediaGone):
    """The media has no video track (an audio-only stream) or no decodable keyframe."""


# -- one segment -------------------------------------------------------------------------------

class SegmentPictures:
    """One fMP4 segment, demuxed from memory; a context manager (closes the container)."""

    def __init__(self, init: bytes, media: bytes) -> None:
        try:
            container: Any = av.open(io.BytesIO(init + media), format="mp4")
        except av.FFmpegError as exc:
            raise NoPicture(f"the segment cannot be read: {exc}") from None
        self._container = container
        try:
            videos = container.streams.video
            if not videos:
                raise NoPicture("the media has no video track")
            stream: Any = videos[0]
            self._context: Any = stream.codec_context
            self._context.thread_count = 1
            self.packets: list[Any] = [packet for packet in container.demux(stream)
                                       if packet.size and packet.pts is not None]
        except BaseException:
            self._container.close()
            raise
        if not self.packets:
            self.close()
            raise NoPicture("the segment has no video samples")
        self._time_base: Fraction = stream.time_base
        self._base: int = min(packet.pts for packet in self.packets)

    def __enter__(self) -> SegmentPictures:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    @property
    def coded_size(self) -> tuple[int, int] | None:
        """The picture size the decoder configuration (avcC/hvcC) gives, if it gives one."""
        width, height = self._context.width, self._context.height
        return (int(width), int(height)) if width and height else None

    def offset(self, pts: int) -> float:
        """Seconds from the segment's first picture."""
        return float((pts - self._base) * self._time_base)

    def keyframe_at(self, offset: float | None) -> Any:
        """The last keyframe packet at or before `offset` (None: the last of all)."""
        keyframes = [packet for packet in self.packets if packet.is_keyframe]
        if not keyframes:
            raise NoPicture("the segment has no keyframe")
        if offset is None:
            return max(keyframes, key=lambda packet: packet.pts)
        before = [packet for packet in keyframes if self.offset(packet.pts) <= offset + 1e-6]
        if not before:  # the segment starts with one; a tolerance of a frame at most
            return min(keyframes, key=lambda packet: packet.pts)
        return max(before, key=lambda packet: packet.pts)

    def decode_keyframes(self, packets: list[Any]) -> dict[int, Any]:
        """The pictures of these keyframe packets, by pts (each decodes on its own)."""
        frames: list[Any] = []
        for packet in sorted(packets, key=lambda packet: packet.dts):
            frames += self._context.decode(packet)
        frames += self._context.decode(None)
        self._context.flush_buffers()
        return {frame.pts: frame for frame in frames if frame.pts is not None}

    def frames(self) -> Iterator[tuple[float, Any]]:
        """Every picture in presentation order, with its offset."""
        for packet in self.packets:
            for frame in self._context.decode(packet):
                if frame.pts is not None:
                    yield self.offset(frame.pts), frame
        for frame in self._context.decode(None):
            if frame.pts is not None:
                yield self.offset(frame.pts), frame
        self._context.flush_buffers()


def open_segment(reader: MediaReader, entry: SegmentEntry) -> SegmentPictures:
    return SegmentPictures(reader.read(entry.init), reader.read(entry.media))


# -- pictures -------------------------------------------------------------------------------

def picture(frame: Any, transform: Transform) -> Image.Image:
    """A decoded frame scaled, fitted, flipped and rotated as `transform` says."""
    source = (int(frame.width), int(frame.height))
    rotate = transform.rotate
    placed = layout(oriented(source, rotate), transform.width, transform.height,
                    transform.fit)
    if max(placed.canvas) > MAX_OUTPUT_SIDE:
        # Only one side was given and the source is a sliver: the other follows its ratio.
        given = "width" if transform.width is not None else "height"
        raise ImageParamError(given, f"the source ({source[0]}x{source[1]}) would make the "
                                     f"image {placed.canvas[0]}x{placed.canvas[1]}, over "
                                     f"{MAX_OUTPUT_SIDE} px; give both width and height")
    x, y = placed.offset
    if x < 0 or y < 0:
        # Crop: the scaled picture may be far larger than the canvas (a 4000x2 source
        # filling 1920x1920 would be 3.8 Gpx), so only the part that shows is scaled.
        image = _turned(frame.to_image(), transform)
        scale_x, scale_y = placed.scaled[0] / image.width, placed.scaled[1] / image.height
        box = (-x / scale_x, -y / scale_y, (placed.canvas[0] - x) / scale_x,
               (placed.canvas[1] - y) / scale_y)
        return image.resize(placed.canvas, Image.Resampling.BICUBIC, box=box,
                            reducing_gap=2.0)
    width, height = oriented(placed.scaled, rotate)  # scaled before it is turned
    image = _turned(frame.reformat(width=width, height=height, format="rgb24",
                                   interpolation="AREA").to_image(), transform)
    if placed.fills:
        return image
    canvas = Image.new("RGB", placed.canvas, _BLACK)
    canvas.paste(image, placed.offset)
    return canvas


def _turned(image: Image.Image, transform: Transform) -> Image.Image:
    """Flipped, then turned clockwise."""
    if transform.flip_h:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if transform.flip_v:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if transform.rotate:
        image = image.transpose(_CLOCKWISE[transform.rotate])
    return image


def encode(image: Image.Image, fmt: ImageFormat) -> bytes:
    out = io.BytesIO()
    if fmt is ImageFormat.JPEG:
        image.save(out, format="JPEG", quality=JPEG_QUALITY)
    elif fmt is ImageFormat.PNG:
        image.save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif fmt is ImageFormat.WEBP:
        image.save(out, format="WEBP", quality=WEBP_QUALITY)
    else:
        image.save(out, format="GIF")
    return out.getvalue()


# -- thumbnails -------------------------------------------------------------------------------

def render_thumbnail(timeline: Timeline, reader: MediaReader,
                     request: ThumbnailRequest) -> Rendered:
    """The keyframe at or before `request.time` (default: the newest keyframe of a live
    window, the middle of a recording); OutsideMedia for a time the media lacks."""
    if not timeline.entries:
        raise MediaGone("no media")
    offset: float | None
    if request.time is not None:
        timeline.check("time", request.time)
        entry = timeline.at(request.time)
        offset = request.time - entry.start
    elif timeline.live:
        entry, offset = timeline.entries[-1], None
    else:
        middle = (timeline.start + timeline.end) / 2
        entry = timeline.at(middle)
        offset = middle - entry.start
    with open_segment(reader, entry) as segment:
        packet = segment.keyframe_at(offset)
        frame = segment.decode_keyframes([packet]).get(packet.pts)
        if frame is None:
            raise NoPicture("the keyframe did not decode")
        at = entry.start + segment.offset(packet.pts)
        image = picture(frame, request.transform)
    return Rendered(encode(image, request.format), request.format.media_type, at)


# -- animated images -------------------------------------------------------------------------

def frame_durations(count: int, fps: int, *, step_ms: int) -> list[int]:
    """Display times of `count` frames at `fps`, in milliseconds rounded to `step_ms` (GIF
    counts hundredths of a second) so that they add up without drift."""
    def at(index: int) -> int:
        return round(index * 1000 / fps / step_ms) * step_ms
    return [at(index + 1) - at(index) for index in range(count)]


class GifFrames:
    """An animated GIF's frames, kept (palette images, a byte a pixel) until it is written
    by Pillow, which needs them all."""

    def __init__(self, fps: int) -> None:
        self._fps = fps
        self._frames: list[Image.Image] = []

    def add(self, image: Image.Image) -> Image.Image:
        # Quantized here, with the fast octree: Pillow's default (median cut, in the GIF
        # writer) takes 7x longer and holds the GIL throughout, which the event loop feels
        # (benchmarks/images.py); a P image is also a third the memory of an RGB one.
        quantized = image.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
        self._frames.append(quantized)
        return quantized

    def again(self, image: Image.Image) -> None:
        self._frames.append(image)

    def finish(self) -> bytes:
        out = io.BytesIO()
        frames = self._frames
        frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:],
                       duration=frame_durations(len(frames), self._fps, step_ms=10), loop=0)
        return out.getvalue()


class WebpFrames:
    """An animated WebP encoded frame by frame as the frames come (FFmpeg's libwebp_anim
    through PyAV): only compressed frames are held, however long the image."""

    def __init__(self, fps: int) -> None:
        self._fps = fps
        self._out = io.BytesIO()
        # The webp muxer's `loop`: 0 plays forever, as Mux's do.
        self._container: Any = av.open(self._out, "w", format="webp", options={"loop": "0"})
        self._stream: Any = None
        self._count = 0

    def add(self, image: Image.Image) -> Image.Image:
        self.again(image)
        return image

    def again(self, image: Image.Image) -> None:
        if self._stream is None:
            self._stream = self._container.add_stream("libwebp_anim", rate=self._fps)
            self._stream.width, self._stream.height = image.size
            self._stream.pix_fmt = "yuv420p"
            self._stream.time_base = Fraction(1, 1000)
            self._stream.codec_context.time_base = Fraction(1, 1000)
            self._stream.options = {"quality": str(WEBP_QUALITY)}
        from_image: Any = av.VideoFrame.from_image  # untyped in PyAV's stubs
        frame = from_image(image).reformat(format="yuv420p")
        frame.pts = round(self._count * 1000 / self._fps)  # milliseconds, without drift
        frame.time_base = Fraction(1, 1000)
        self._count += 1
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def finish(self) -> bytes:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._out.getvalue()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._container.close()


def render_animated(timeline: Timeline, reader: MediaReader,
                    request: AnimatedRequest) -> Rendered:
    """`fps` pictures a second from `start` to `end` (cut at the media's end), each the
    latest frame at or before its time."""
    if not timeline.entries:
        raise MediaGone("no media")
    timeline.check("start", request.start)
    end = min(request.end, timeline.end)
    count = max(1, math.ceil((end - request.start) * request.fps - 1e-6))
    times = [request.start + index / request.fps for index in range(count)]
    sink: GifFrames | WebpFrames = (GifFrames(request.fps) if request.format is ImageFormat.GIF
                                    else WebpFrames(request.fps))
    made = 0
    held: tuple[Any, Image.Image | None] | None = None  # the latest frame, converted lazily

    def emit() -> None:
        nonlocal held, made
        assert held is not None
        frame, image = held
        if image is None:
            held = (frame, sink.add(picture(frame, request.transform)))
        else:
            sink.again(image)  # the same picture again (a source slower than `fps`)
        made += 1

    try:
        for entry in timeline.entries:
            if entry.start + entry.duration <= request.start - 1e-6 and entry is not \
                    timeline.entries[-1]:
                continue
            if entry.start > end + 1e-6 or made >= count:
                break
            with open_segment(reader, entry) as segment:
                for offset, frame in segment.frames():
                    at = entry.start + offset
                    while made < count and times[made] < at - 1e-6:
                        if held is None:
                            held = (frame, None)  # the media starts after `start`
                        emit()
                    held = (frame, None)
                    if made >= count:
                        break
        if held is None:
            raise NoPicture("no picture in the asked time range")
        while made < count:
            emit()
        body = sink.finish()
    finally:
        if isinstance(sink, WebpFrames):
            sink.close()
    return Rendered(body, request.format.media_type)


# -- storyboards -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Tile:
    start: float  # the time range it stands for on the timeline
    end: float
    x: int  # its place on the sheet
    y: int


@dataclass(frozen=True, slots=True)
class StoryboardPlan:
    tile_size: tuple[int, int]
    columns: int
    rows: int
    tiles: tuple[Tile, ...]

    @property
    def sheet_size(self) -> tuple[int, int]:
        return (self.columns * self.tile_size[0], self.rows * self.tile_size[1])


def plan_storyboard(timeline: Timeline, source: tuple[int, int]) -> StoryboardPlan:
    """Tiles at regular times over the whole timeline, in rows of STORYBOARD_COLUMNS; a
    live window's as `_live_plan` places them."""
    size = layout(source, STORYBOARD_TILE_WIDTH, None, FitMode.PRESERVE).canvas
    if timeline.live:
        return _live_plan(timeline, size)
    span = max(0.0, timeline.end - timeline.start)
    count = max(1, min(STORYBOARD_MAX_TILES, int(span / STORYBOARD_MIN_INTERVAL)))
    step = span / count if span > 0 else 1.0
    columns = min(count, STORYBOARD_COLUMNS)
    tiles = tuple(Tile(start=timeline.start + index * step,
                       end=timeline.start + (index + 1) * step,
                       x=(index % columns) * size[0], y=(index // columns) * size[1])
                  for index in range(count))
    return StoryboardPlan(size, columns, math.ceil(count / columns), tiles)


def _live_plan(timeline: Timeline, size: tuple[int, int]) -> StoryboardPlan:
    """A live window's tiles stand for whole steps of STORYBOARD_MIN_INTERVAL on the media
    timeline, and step k always has the place k mod STORYBOARD_MAX_TILES on a sheet of
    them all. The window moves between a player's fetch of the WebVTT and its fetch of the
    sheet; with places fixed by time, every cue the WebVTT names still points at its own
    tile on a later sheet (until the window has moved on by the sheet's whole length),
    and the places of steps no longer in the window are left black."""
    step = STORYBOARD_MIN_INTERVAL
    first = math.ceil(timeline.start / step - 1e-9)
    last = max(first, math.floor(timeline.end / step + 1e-9) - 1)
    first = max(first, last - STORYBOARD_MAX_TILES + 1)  # the newest, if it is longer
    columns = STORYBOARD_COLUMNS
    tiles = []
    for k in range(first, last + 1):
        place = k % STORYBOARD_MAX_TILES
        tiles.append(Tile(start=k * step, end=(k + 1) * step,
                          x=(place % columns) * size[0], y=(place // columns) * size[1]))
    return StoryboardPlan(size, columns, math.ceil(STORYBOARD_MAX_TILES / columns),
                          tuple(tiles))


def _source_size(timeline: Timeline, reader: MediaReader) -> tuple[int, int]:
    with open_segment(reader, timeline.entries[0]) as segment:
        if segment.coded_size is not None:
            return segment.coded_size
        packet = segment.keyframe_at(None)
        frame = segment.decode_keyframes([packet]).get(packet.pts)
        if frame is None:
            raise NoPicture("the keyframe did not decode")
        return int(frame.width), int(frame.height)


def _timestamp(seconds: float) -> str:
    """A WebVTT timestamp (W3C WebVTT 4.2: hh:mm:ss.ttt)."""
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def render_storyboard_vtt(timeline: Timeline, reader: MediaReader,
                          request: StoryboardRequest) -> Rendered:
    """The WebVTT that maps each tile's time range to its place on the sheet, as Mux Player
    and hls.js-based players read it: a cue per tile whose text is
    `storyboard.{format}#xywh=x,y,w,h` (the Media Fragments URI 1.0 spatial dimension),
    relative to the WebVTT's own URL."""
    if not timeline.entries:
        raise MediaGone("no media")
    plan = plan_storyboard(timeline, _source_size(timeline, reader))
    width, height = plan.tile_size
    lines = ["WEBVTT", ""]
    for tile in plan.tiles:
        lines += [f"{_timestamp(tile.start)} --> {_timestamp(tile.end)}",
                  f"storyboard.{request.format.value}#xywh={tile.x},{tile.y},{width},{height}",
                  ""]
    return Rendered("\n".join(lines).encode("utf-8"), "text/vtt; charset=utf-8")


def render_storyboard(timeline: Timeline, reader: MediaReader,
                      request: StoryboardRequest) -> Rendered:
    """The tile sheet: for each tile, the keyframe at or before its start."""
    if not timeline.entries:
        raise MediaGone("no media")
    plan = plan_storyboard(timeline, _source_size(timeline, reader))
    sheet = Image.new("RGB", plan.sheet_size, _BLACK)
    fit = Transform(width=plan.tile_size[0], height=plan.tile_size[1], fit=FitMode.PAD)
    by_entry: dict[SegmentEntry, list[Tile]] = {}
    for tile in plan.tiles:
        by_entry.setdefault(timeline.at(tile.start), []).append(tile)
    for entry, tiles in by_entry.items():
        with open_segment(reader, entry) as segment:
            chosen = [segment.keyframe_at(tile.start - entry.start) for tile in tiles]
            frames = segment.decode_keyframes(list({p.pts: p for p in chosen}.values()))
            pictures: dict[int, Image.Image] = {}
            for tile, packet in zip(tiles, chosen, strict=True):
                frame = frames.get(packet.pts)
                if frame is None:
                    continue  # left black: one undecodable keyframe spoils one tile
                if packet.pts not in pictures:
                    pictures[packet.pts] = picture(frame, fit)
                sheet.paste(pictures[packet.pts], (tile.x, tile.y))
    return Rendered(encode(sheet, request.format), request.format.media_type)
