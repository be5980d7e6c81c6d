"""What test_vectors.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from relay.media.flv import EndOfSequence, Ignored, parse_audio_tag, parse_video_tag
from relay.media.units import AudioConfig, Codec, MediaFrame, VideoConfig

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "media"


TAG_AUDIO = 8


TAG_VIDEO = 9


TAG_SCRIPT = 18


#: Vectors keep the first tags of an encode up to this size (and at least the headers).
VECTOR_BUDGET = 64 * 1024


@dataclass(frozen=True)
class FlvTag:
    type: int
    timestamp: int
    body: bytes


def read_flv(data: bytes) -> list[FlvTag]:
    """The tags of a whole FLV file (no encryption, stream id 0)."""
    assert data[:3] == b"FLV", "not an FLV file"
    assert data[3] == 1, f"FLV version {data[3]}"
    pos = int.from_bytes(data[5:9], "big")
    assert int.from_bytes(data[pos : pos + 4], "big") == 0, "PreviousTagSize0 is not 0"
    pos += 4
    tags = []
    while pos < len(data):
        assert pos + 11 <= len(data), "truncated tag header"
        tag_type = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        timestamp = int.from_bytes(data[pos + 4 : pos + 7], "big") | data[pos + 7] << 24
        body = data[pos + 11 : pos + 11 + size]
        assert len(body) == size, "truncated tag body"
        previous = int.from_bytes(data[pos + 11 + size : pos + 15 + size], "big")
        assert previous == 11 + size, f"PreviousTagSize {previous} after a {size}-byte tag"
        tags.append(FlvTag(tag_type, timestamp, body))
        pos += 15 + size
    return tags


def is_header_tag(tag: FlvTag) -> bool:
    """Script data, or an AVC / AAC / enhanced sequence header."""
    if tag.type == TAG_SCRIPT:
        return True
    if tag.type == TAG_VIDEO:
        if tag.body[0] & 0x80:
            return tag.body[0] & 0x0F == 0
        return len(tag.body) > 1 and tag.body[1] == 0
    return len(tag.body) > 1 and tag.body[1] == 0


@dataclass(frozen=True)
class Vector:
    name: str
    #: ffmpeg arguments after `ffmpeg -hide_banner -loglevel error -y`, before the output.
    ffmpeg: tuple[str, ...]
    #: "flv" when ffmpeg writes the FLV; "hevc-mp4" when the FLV is built from an MP4.
    source: str
    video: VideoConfig
    audio: AudioConfig | None
    budget: int = VECTOR_BUDGET
    #: Whether coded frames fit in the budget (AVC-Intra frames do not).
    has_frames: bool = True

    @property
    def path(self) -> Path:
        return VECTORS / f"{self.name}.flv"

    def command(self, output: str) -> list[str]:
        return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *self.ffmpeg, output]


def _video(codec: Codec, width: int, height: int, codecs: str, rate: float) -> VideoConfig:
    return VideoConfig(codec=codec, record=b"", width=width, height=height, codecs=codecs,
                       frame_rate=rate)


def _audio(rate: int, channels: int) -> AudioConfig:
    return AudioConfig(codec=Codec.AAC, record=b"", sample_rate=rate, channels=channels,
                       codecs="mp4a.40.2")


_X265_QUIET = ("-x265-params", "log-level=error")


VECTOR_LIST = (
    Vector(
        "h264_high_1280x720_30fps_aac_48k_stereo",
        ("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i",
         "sine=sample_rate=48000", "-t", "2", "-c:v", "libx264", "-profile:v", "high",
         "-g", "30", "-c:a", "aac", "-ac", "2", "-f", "flv"),
        "flv", _video(Codec.H264, 1280, 720, "avc1.64001f", 30.0), _audio(48000, 2)),
    Vector(
        # 360 rows are 22.5 macroblocks: the SPS crops 8 rows off a 368-row picture.
        "h264_baseline_640x360_25fps_aac_44k_mono",
        ("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-f", "lavfi", "-i",
         "sine=sample_rate=44100", "-t", "2", "-c:v", "libx264", "-profile:v", "baseline",
         "-g", "25", "-c:a", "aac", "-ac", "1", "-f", "flv"),
        "flv", _video(Codec.H264, 640, 360, "avc1.42c01e", 25.0), _audio(44100, 1)),
    Vector(
        # 854 columns crop 10 off 864; 30000/1001 fps from VUI timing.
        "h264_main_854x480_29.97fps",
        ("-f", "lavfi", "-i", "testsrc2=size=854x480:rate=30000/1001", "-t", "2",
         "-c:v", "libx264", "-profile:v", "main", "-g", "30", "-f", "flv"),
        "flv", _video(Codec.H264, 854, 480, "avc1.4d401f", 30000 / 1001), None),
    Vector(
        # 4:4:4 crops in luma samples: 850x478 from 864x480.
        "h264_high444_850x478_60fps",
        ("-f", "lavfi", "-i", "testsrc2=size=850x478:rate=60", "-t", "1", "-c:v", "libx264",
         "-pix_fmt", "yuv444p", "-profile:v", "high444", "-g", "60", "-f", "flv"),
        "flv", _video(Codec.H264, 850, 478, "avc1.f4001f", 60.0), None),
    Vector(
        # MBAFF (frame_mbs_only_flag 0): 280 rows from 9 map units of 32, cropped by 8.
        "h264_high_interlaced_352x280_25fps",
        ("-f", "lavfi", "-i", "testsrc2=size=352x280:rate=25", "-t", "1", "-c:v", "libx264",
         "-flags", "+ildct+ilme", "-g", "25", "-f", "flv"),
        "flv", _video(Codec.H264, 352, 280, "avc1.640015", 25.0), None),
    Vector(
        # AVC-Intra 100 carries its scaling lists in the SPS. libx264 cannot write global
        # headers in that mode, so the raw stream is remuxed; only the headers are kept.
        "h264_avcintra100_1280x720_50fps",
        ("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=50", "-t", "0.1", "-c:v",
         "libx264", "-pix_fmt", "yuv422p10le", "-x264-params", "avcintra-class=100",
         "-f", "h264"),
        "h264-remux", _video(Codec.H264, 1280, 720, "avc1.7a1029", 50.0), None,
        budget=2048, has_frames=False),
    Vector(
        # Level forced to 3.1 as in ISO 14496-15's example "hvc1.1.6.L93.B0"; x265 leaves
        # general_non_packed_constraint_flag clear, so its constraint byte is 0x90, not 0xB0.
        "hevc_main_640x360_30fps_enhanced",
        ("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-t", "1", "-c:v", "libx265",
         "-x265-params", "log-level=error:level-idc=3.1", "-tag:v", "hvc1", "-g", "30",
         "-f", "mp4"),
        "hevc-mp4", _video(Codec.HEVC, 640, 360, "hvc1.1.6.L93.90", 30.0), None),
    Vector(
        # Main 10, 854 columns from a conformance window on 856.
        "hevc_main10_854x480_29.97fps_enhanced",
        ("-f", "lavfi", "-i", "testsrc2=size=854x480:rate=30000/1001", "-t", "1",
         "-c:v", "libx265", "-pix_fmt", "yuv420p10le", *_X265_QUIET, "-tag:v", "hvc1",
         "-g", "30", "-f", "mp4"),
        "hevc-mp4", _video(Codec.HEVC, 854, 480, "hvc1.2.4.L90.90", 30000 / 1001), None),
)


@dataclass
class Parsed:
    video: list[VideoConfig]
    audio: list[AudioConfig]
    frames: list[tuple[FlvTag, MediaFrame]]
    ends: int
    ignored: list[str]


def parse_all(data: bytes) -> Parsed:
    parsed = Parsed([], [], [], 0, [])
    for tag in read_flv(data):
        if tag.type == TAG_SCRIPT:
            continue
        unit = (parse_video_tag if tag.type == TAG_VIDEO else parse_audio_tag)(
            tag.body, tag.timestamp)
        if isinstance(unit, VideoConfig):
            parsed.video.append(unit)
        elif isinstance(unit, AudioConfig):
            parsed.audio.append(unit)
        elif isinstance(unit, MediaFrame):
            parsed.frames.append((tag, unit))
        elif isinstance(unit, EndOfSequence):
            parsed.ends += 1
        else:
            assert isinstance(unit, Ignored)
            parsed.ignored.append(unit.reason)
    return parsed
