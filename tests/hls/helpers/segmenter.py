"""What test_segmenter.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

import math
from collections.abc import Sequence

from relay.media.units import AudioConfig, Codec, MediaFrame, TrackKind, VideoConfig

VIDEO, AUDIO = TrackKind.VIDEO, TrackKind.AUDIO


def video_config(rate: float | None = 30.0, record: bytes = b"\x01avcC") -> VideoConfig:
    return VideoConfig(codec=Codec.H264, record=record, width=1280, height=720,
                       codecs="avc1.64001f", frame_rate=rate)


def audio_config(rate: int = 48000, codecs: str = "mp4a.40.2") -> AudioConfig:
    return AudioConfig(codec=Codec.AAC, record=b"\x11\x90", sample_rate=rate, channels=2,
                       codecs=codecs)


#: x264-like composition offsets with two B-frames, in frames: I P B B P B B ...
BFRAME_PATTERN = (1, 3, 1, 1)


def video_frames(seconds: float, *, fps: float = 30.0, gop: float = 1.0, start: int = 0,
                 bframes: bool = False, tag: str = "v") -> list[MediaFrame]:
    """`seconds` of video at `fps`, a keyframe every `gop` seconds, dts rounded to ms."""
    count, per_gop, period = round(seconds * fps), round(gop * fps), 1000 / fps
    frames = []
    for i in range(count):
        dts = start + round(i * period)
        offset = round(BFRAME_PATTERN[i % 4] * period) if bframes else 0
        frames.append(MediaFrame(VIDEO, dts, dts + offset, i % per_gop == 0,
                                 f"{tag}{i}".encode()))
    return frames


def audio_frames(seconds: float, *, rate: int = 48000, start: int = 0, samples: int = 1024,
                 tag: str = "a") -> list[MediaFrame]:
    """`seconds` of AAC frames at `rate`, dts rounded to ms as an FLV muxer writes them."""
    count = math.ceil(seconds * rate / samples)
    return [MediaFrame(AUDIO, start + round(i * samples * 1000 / rate),
                       start + round(i * samples * 1000 / rate), True, f"{tag}{i}".encode())
            for i in range(count)]


def interleave(*tracks: Sequence[MediaFrame]) -> list[MediaFrame]:
    """Frames in dts order (video first at equal dts), as an RTMP muxer sends them."""
    return sorted((f for track in tracks for f in track),
                  key=lambda f: (f.dts, f.kind is AUDIO))
