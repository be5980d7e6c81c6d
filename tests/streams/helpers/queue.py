"""What test_queue.py shares with other test modules: kept here so no test module imports
another."""

from __future__ import annotations

from relay.media.units import AudioConfig, Codec, MediaFrame, TrackKind, VideoConfig

VIDEO_CONFIG = VideoConfig(Codec.H264, b"avcC-1", 320, 240, "avc1.64001f", 30.0)


AUDIO_CONFIG = AudioConfig(Codec.AAC, b"\x12\x10", 44100, 2, "mp4a.40.2")


def video(dts: int, key: bool = False, size: int = 100) -> MediaFrame:
    return MediaFrame(TrackKind.VIDEO, dts, dts, key, bytes(size))


def audio(dts: int, size: int = 10) -> MediaFrame:
    return MediaFrame(TrackKind.AUDIO, dts, dts, True, bytes(size))
