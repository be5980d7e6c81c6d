"""FLV audio and video tag bodies (relay/media/flv.py), and through their sequence headers
the codec configurations (h264.py, hevc.py, aac.py).

Input: byte 0 bit 0 picks audio (1) or video (0); bytes 1..4 are the message timestamp (the
unwrapped dts, big-endian); the rest is the tag body, as an RTMP audio or video message
carries it.

Allowed: `FlvError` with a bounded one-line reason (the server logs the first one of a
session). Findings: any other exception; a frame whose data is not the tail of the body, or
empty; a composition offset outside the signed 24-bit range; a configuration whose record is
not the tail of the body, whose size is outside 0..MAX_DIMENSION (0 only for AV1 / VP9, which
are not parsed), whose frame rate is not a positive finite number, whose codecs string is not
printable ASCII, or an audio configuration without a rate or channels.
"""

from __future__ import annotations

import math

from fuzz.common import Finding, check_reason
from relay.media.flv import (
    AudioTagUnit,
    FlvError,
    VideoTagUnit,
    parse_audio_tag,
    parse_video_tag,
)
from relay.media.units import (
    MAX_DIMENSION,
    AudioConfig,
    Codec,
    MediaFrame,
    TrackKind,
    VideoConfig,
)

_SI24 = 1 << 23


def check_codecs(codecs: str) -> None:
    if not codecs or not all(0x21 <= ord(c) < 0x7F for c in codecs):
        raise Finding(f"codecs string {codecs[:80]!r} is not printable ASCII")


def check_video_config(config: VideoConfig) -> None:
    unparsed = config.codec in (Codec.AV1, Codec.VP9)
    low = 0 if unparsed else 1
    if not (low <= config.width <= MAX_DIMENSION and low <= config.height <= MAX_DIMENSION):
        raise Finding(f"{config.codec} size {config.width}x{config.height}")
    if config.frame_rate is not None and not (
            math.isfinite(config.frame_rate) and config.frame_rate > 0):
        raise Finding(f"{config.codec} frame rate {config.frame_rate}")
    check_codecs(config.codecs)


def check_audio_config(config: AudioConfig) -> None:
    if config.sample_rate <= 0 or config.channels <= 0:
        raise Finding(f"AAC rate {config.sample_rate}, channels {config.channels}")
    check_codecs(config.codecs)


def check_tag(type_id: int, payload: bytes, timestamp: int) -> None:
    """Parse one audio (8) or video (9) tag body and check what comes out."""
    unit: VideoTagUnit | AudioTagUnit
    try:
        if type_id == 9:
            unit = parse_video_tag(payload, timestamp)
        else:
            unit = parse_audio_tag(payload, timestamp)
    except FlvError as exc:
        check_reason(exc)
        return
    if isinstance(unit, MediaFrame):
        kind = TrackKind.VIDEO if type_id == 9 else TrackKind.AUDIO
        if unit.kind is not kind or unit.dts != timestamp:
            raise Finding(f"frame of kind {unit.kind}, dts {unit.dts} from a {kind} tag at "
                          f"{timestamp}")
        if not unit.data or not payload.endswith(unit.data):
            raise Finding("frame data is empty or not the tail of the tag body")
        if not -_SI24 <= unit.pts - unit.dts < _SI24:
            raise Finding(f"composition offset {unit.pts - unit.dts}")
    elif isinstance(unit, VideoConfig | AudioConfig):
        if not payload.endswith(unit.record):
            raise Finding("configuration record is not the tail of the tag body")
        if isinstance(unit, VideoConfig):
            if type_id != 9:
                raise Finding("a video configuration from an audio tag")
            check_video_config(unit)
        else:
            if type_id != 8:
                raise Finding("an audio configuration from a video tag")
            check_audio_config(unit)


def check(data: bytes) -> None:
    if len(data) < 5:
        return
    type_id = 8 if data[0] & 1 else 9
    check_tag(type_id, data[5:], int.from_bytes(data[1:5], "big"))
